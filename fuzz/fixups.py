"""Checksums put right after a mutation, for formats that check them: otherwise nearly every mutation of such
a format's metadata is refused at its checksum, and the fuzzer never gets past it.

A fixup is applied to every block a sparse input stores something in (whole blocks, at the format's block
size): an APFS object's Fletcher-64 (its first 8 bytes), a UDF descriptor tag's checksum and CRC (a tag at
the start of a block), an NTFS record's update sequence at the end of each sector. The fixed bytes are what
the target opens, and what a reproducer is written as.
"""

from __future__ import annotations

import binascii
import struct
from collections.abc import Iterable
from typing import Callable

from encoding import decode_sparse, sparse_runs

from imgfs.filesystems.apfs.objects import fletcher64

UDF_TAGS = frozenset(range(1, 10)) | frozenset(range(256, 267))


def fix_apfs(block: bytearray) -> None:
    block[:8] = fletcher64(bytes(block)).to_bytes(8, "little")


def fix_udf(block: bytearray) -> None:
    ident, crc_length = struct.unpack_from("<H", block)[0], struct.unpack_from("<H", block, 10)[0]
    if ident not in UDF_TAGS:
        return
    if 16 + crc_length <= len(block):
        struct.pack_into("<H", block, 8, binascii.crc_hqx(bytes(block[16 : 16 + crc_length]), 0))
    block[4] = (sum(block[0:4]) + sum(block[5:16])) & 0xFF


def fix_ntfs(block: bytearray) -> None:
    """NTFS records end each 512-byte sector with their update sequence number (the bytes that belong there
    are kept in the record's update sequence array): put it back where a mutation changed it."""
    if block[:4] == b"INDX":
        _fix_sectors(block, 0, len(block))
    for start in range(0, len(block), 1024):
        if block[start : start + 4] == b"FILE":
            _fix_sectors(block, start, 1024)


def _fix_sectors(block: bytearray, start: int, size: int) -> None:
    usa_offset, usa_count = struct.unpack_from("<HH", block, start + 4)
    if not 1 <= usa_count <= size // 512 + 1 or usa_offset + 2 * usa_count > size:
        return
    usn = bytes(block[start + usa_offset : start + usa_offset + 2])
    for sector in range(1, usa_count):
        end = start + sector * 512
        block[end - 2 : end] = usn


FIXUPS: dict[str, tuple[int, Callable[[bytearray], None]]] = {
    "apfs": (4096, fix_apfs), "udf": (2048, fix_udf), "ntfs": (4096, fix_ntfs)}


def image_runs(data: bytes, fixup: str = "") -> tuple[int, list[tuple[int, bytes]]]:
    """(image size, [(offset, bytes)] in order) of a sparse input, checksums put right when ``fixup`` names a
    format of ``FIXUPS``."""
    size, chunks = decode_sparse(data)
    runs = list(sparse_runs(size, chunks))
    if fixup not in FIXUPS or not runs:
        return size, runs
    block_size, fix = FIXUPS[fixup]
    blocks = _blocks(runs, block_size)
    for block in blocks.values():
        if any(block):
            fix(block)
    return size, _merged(((n * block_size, bytes(b)) for n, b in sorted(blocks.items())), size)


def _blocks(runs: list[tuple[int, bytes]], block_size: int) -> dict[int, bytearray]:
    """Every block a run touches, whole (zeros where no run is)."""
    blocks: dict[int, bytearray] = {}
    for offset, body in runs:
        for number in range(offset // block_size, -(-(offset + len(body)) // block_size)):
            block = blocks.setdefault(number, bytearray(block_size))
            start = max(offset, number * block_size)
            end = min(offset + len(body), (number + 1) * block_size)
            block[start - number * block_size : end - number * block_size] = body[start - offset : end - offset]
    return blocks


def _merged(blocks: Iterable[tuple[int, bytes]], size: int) -> list[tuple[int, bytes]]:
    runs: list[tuple[int, bytes]] = []
    for offset, body in blocks:
        body = body[: max(0, size - offset)]
        if runs and runs[-1][0] + len(runs[-1][1]) == offset:
            runs[-1] = (runs[-1][0], runs[-1][1] + body)
        elif body:
            runs.append((offset, body))
    return runs
