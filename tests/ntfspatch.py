"""Damaging NTFS images on purpose, located with ntfsinfo (an independent reader), never with imgfs.

Records are read with their fixups undone and written back with them redone, so that a patch damages only
what it means to damage.
"""

from __future__ import annotations

import re
import struct
import subprocess
from pathlib import Path


def _ntfsinfo(image: Path, *args: str) -> str:
    return subprocess.run(["ntfsinfo", "-v", *args, str(image)], capture_output=True, text=True, check=True).stdout


def ntfsinfo(image: Path, path: str) -> str:
    """ntfsinfo's dump of one file."""
    return _ntfsinfo(image, "-F", path)


def cluster_size(image: Path) -> int:
    with open(image, "rb") as f:
        head = f.read(16)
    return int.from_bytes(head[11:13], "little") * head[13]


def record_number(image: Path, path: str) -> int:
    match = re.search(r"Dumping Inode (\d+)", _ntfsinfo(image, "-F", path))
    assert match, f"ntfsinfo does not find {path}"
    return int(match.group(1))


def runlist(image: Path, *args: str, attribute: str = "$DATA") -> list[tuple[int, int, int]]:
    """(VCN, LCN or -1, clusters) of the first ``attribute`` that ntfsinfo dumps with a run list."""
    text = _ntfsinfo(image, *args)
    start = text.index(f"Dumping attribute {attribute}")
    block = text[text.index("Runlist:", start):].split("\n")[1:]
    runs = []
    for line in block:
        fields = line.split()
        if len(fields) != 3 or not fields[0].startswith("0x"):
            break
        lcn = -1 if fields[1] == "<HOLE>" or not fields[1].startswith("0x") else int(fields[1], 16)
        runs.append((int(fields[0], 16), lcn, int(fields[2], 16)))
    return runs


def record_offset(image: Path, number: int, size: int = 1024) -> int:
    cluster = cluster_size(image)
    position = number * size
    for vcn, lcn, length in runlist(image, "-i", "0"):
        if vcn * cluster <= position < (vcn + length) * cluster:
            return lcn * cluster + position - vcn * cluster
    raise AssertionError(f"record {number} is past the MFT's runs")


def read_fixed(image: Path, offset: int, size: int) -> bytearray:
    """A multi-sector structure (a record, an index block) with its fixups undone."""
    buf = bytearray(read(image, offset, size))
    usa, count = struct.unpack_from("<HH", buf, 4)
    for i in range(1, count):
        buf[i * 512 - 2 : i * 512] = buf[usa + 2 * i : usa + 2 * i + 2]
    return buf


def write_fixed(image: Path, offset: int, buf: bytearray) -> None:
    """Write a structure back with its fixups redone, so that only the intended bytes differ."""
    buf = bytearray(buf)
    usa, count = struct.unpack_from("<HH", buf, 4)
    for i in range(1, count):
        buf[usa + 2 * i : usa + 2 * i + 2] = buf[i * 512 - 2 : i * 512]
        buf[i * 512 - 2 : i * 512] = buf[usa : usa + 2]
    patch(image, offset, bytes(buf))


def read_record(image: Path, number: int) -> bytearray:
    return read_fixed(image, record_offset(image, number), 1024)


def write_record(image: Path, number: int, buf: bytearray) -> None:
    write_fixed(image, record_offset(image, number), buf)


def index_blocks(image: Path, path: str, size: int = 4096) -> list[int]:
    """Where each block of a folder's $INDEX_ALLOCATION lies."""
    cluster = cluster_size(image)
    return [lcn * cluster + at for _, lcn, count in runlist(image, "-F", path, attribute="$INDEX_ALLOCATION")
            for at in range(0, count * cluster, size)]


def node_entries(buf: bytes, node: int) -> list[tuple[int, int, int]]:
    """(offset, length, flags) of each entry of the index node whose header is at ``node``."""
    found = []
    pos = node + struct.unpack_from("<I", buf, node)[0]
    while True:
        length, _, flags = struct.unpack_from("<HHI", buf, pos + 8)
        found.append((pos, length, flags))
        if flags & 2:
            return found
        pos += length


def entry_name(buf: bytes, pos: int) -> str:
    key = pos + 16
    return buf[key + 66 : key + 66 + 2 * buf[key + 64]].decode("utf-16-le")


def attributes(buf: bytes) -> list[tuple[int, int, int]]:
    """(offset, type, length) of each attribute of a record."""
    found = []
    pos = struct.unpack_from("<H", buf, 20)[0]
    while struct.unpack_from("<I", buf, pos)[0] != 0xFFFFFFFF:
        kind, length = struct.unpack_from("<II", buf, pos)
        found.append((pos, kind, length))
        pos += length
    return found


def attribute_at(buf: bytes, kind: int, nth: int = 0) -> int:
    return [pos for pos, k, _ in attributes(buf) if k == kind][nth]


def resident_value(buf: bytes, pos: int) -> tuple[int, int]:
    """(offset in the record, length) of a resident attribute's value."""
    length, offset = struct.unpack_from("<IH", buf, pos + 16)
    return pos + offset, length


def patch(image: Path, offset: int, data: bytes) -> None:
    with open(image, "r+b") as f:
        f.seek(offset)
        f.write(data)


def read(image: Path, offset: int, length: int) -> bytes:
    with open(image, "rb") as f:
        f.seek(offset)
        return f.read(length)
