"""Checking a UDIF image's checksums: ``imgfs verify IMAGE`` and ``-o verify``, not every mount.

A UDIF image may hold three kinds of CRC32 (checksum type 2; other types are reported as not checked):

* the data fork's, over its bytes as stored;
* each partition's (blkx table), over its decoded bytes in order, leaving out "ignore" runs (free space);
* the master checksum, over the partitions' checksums one after the other.

Every chunk is decoded once on the way (without going through the mount's cache), so a chunk that
does not decode is reported too.
"""

from __future__ import annotations

import zlib
from typing import TYPE_CHECKING, Callable

from imgfs.containers.dmg.structs import HOLES, IGNORE, LAYER, RAW, Checksum
from imgfs.errors import ImageError
from imgfs.layer import Progress, no_progress

if TYPE_CHECKING:
    from imgfs.containers.dmg.udif import UdifImage

_STEP = 1 << 20
_CRC32_POLYNOMIAL = 0xEDB88320  # reflected, as zlib.crc32


def verify_image(image: UdifImage, progress: Progress = no_progress) -> list[str]:
    koly = image.trailer.koly
    problems = []
    if koly.segment_count <= 1:
        problems += _check("the data fork", koly.data_checksum, lambda: _data_fork_crc(image))
    total = sum(p.length for p in image.pieces if p.table >= 0 and p.kind != IGNORE)
    done = [0]

    def advance(size: int) -> None:
        done[0] += size
        progress("checking the checksums", done[0], total)

    for index, table in enumerate(image.tables):
        problems += _check(f"partition {table.name!r}", table.checksum,
                           lambda i=index: _partition_crc(image, i, advance))
    master = b"".join(t.checksum.digest() for t in image.tables)
    problems += _check("the master checksum", koly.master_checksum, lambda: zlib.crc32(master))
    return problems


def _check(what: str, expected: Checksum, compute) -> list[str]:
    if expected.kind == 0:
        return []
    if not expected.is_crc32:
        return [f"{LAYER}: {what}: checksum type {expected.kind} ({expected.bits} bits) is not checked"]
    try:
        actual = compute()
    except ImageError as exc:
        return [f"{what}: cannot be checked: {exc}"]
    if actual != expected.crc32:
        return [f"{LAYER}: {what}: CRC32 is {actual:08x}, the image says {expected.crc32:08x}"]
    return []


def _data_fork_crc(image: UdifImage) -> int:
    koly = image.trailer.koly
    start = image.trailer.base + koly.data_fork_offset
    crc = 0
    for at in range(start, start + koly.data_fork_length, _STEP):
        want = min(_STEP, start + koly.data_fork_length - at)
        data = image.file.pread(at, want)
        if len(data) < want:
            raise ImageError(f"the data fork runs past the end of the image at byte {at + len(data)}", layer=LAYER)
        crc = zlib.crc32(data, crc)
    return crc


def _partition_crc(image: UdifImage, table: int, advance: Callable[[int], None]) -> int:
    crc = 0
    for i, piece in enumerate(image.pieces):
        if piece.table != table or piece.kind == IGNORE:
            continue
        advance(piece.length)  # in bytes of the disk, for the progress line
        if piece.kind in HOLES:
            crc = crc32_of_zeros(piece.length, crc)
        elif piece.kind == RAW:
            for at in range(0, piece.length, _STEP):
                crc = zlib.crc32(image.pread(piece.start + at, min(_STEP, piece.length - at)), crc)
        else:
            crc = zlib.crc32(image.decode(i), crc)
    return crc


def crc32_of_zeros(length: int, crc: int = 0) -> int:
    """``zlib.crc32(bytes(length), crc)`` in time logarithmic in ``length``: a zero run may claim petabytes.

    Feeding a zero bit to the CRC register is a linear map over GF(2), a 32x32 bit matrix (as zlib's
    crc32_combine uses it); feeding 2**k zero bytes is that map raised to the power 8 * 2**k, one squaring
    after another. The register is the CRC with its bits inverted, before and after."""
    register = crc ^ 0xFFFFFFFF
    k = 0
    while length:
        if length & 1:
            register = _gf2_times(_zero_bytes_operator(k), register)
        length >>= 1
        k += 1
    return register ^ 0xFFFFFFFF


def _gf2_times(matrix: tuple[int, ...], vector: int) -> int:
    total, row = 0, 0
    while vector:
        if vector & 1:
            total ^= matrix[row]
        vector >>= 1
        row += 1
    return total


_operators: tuple[tuple[int, ...], ...] = ()  # [k]: feeding 2**k zero bytes; replaced whole, never changed


def _zero_bytes_operator(k: int) -> tuple[int, ...]:
    global _operators
    known = _operators
    if len(known) <= k:  # made once, up to the longest run met (threads racing here only repeat the work)
        grown = list(known)
        if not grown:
            one_byte = (_CRC32_POLYNOMIAL, *(1 << (n - 1) for n in range(1, 32)))  # one zero bit
            for _ in range(3):
                one_byte = tuple(_gf2_times(one_byte, one_byte[n]) for n in range(32))
            grown.append(one_byte)
        while len(grown) <= k:
            last = grown[-1]
            grown.append(tuple(_gf2_times(last, last[n]) for n in range(32)))
        _operators = known = tuple(grown)
    return known[k]
