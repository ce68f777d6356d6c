"""A UDIF (.dmg) writer for tests, written from the format's description (libyal's libmodi notes, Jonathan
Levin's "Demystifying the DMG file format"), not from imgfs's reader. 7-Zip and dmg2img check it.

``write_udif(out, disk)`` chunks a raw disk image (bytes, or a file read chunk by chunk, so that big
images never sit in memory), compresses each chunk with a codec (all-zero chunks become zero-fill or
"ignore" runs), and writes the data fork, the block tables (in an XML plist, a binary resource fork as
old images have it, or both), the checksums and the koly trailer. Options place the image after other
data, give the data fork an offset, put the koly block first, or split the image into segments.
"""

from __future__ import annotations

import bz2
import itertools
import lzma
import os
import plistlib
import struct
import uuid
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Union

import lzfse

SECTOR = 512
ZERO, RAW, IGNORE, COMMENT, TERMINATOR = 0x0, 0x1, 0x2, 0x7FFFFFFE, 0xFFFFFFFF
TYPES = {"raw": RAW, "adc": 0x80000004, "zlib": 0x80000005, "bzip2": 0x80000006, "lzfse": 0x80000007,
         "xz": 0x80000008, "lzma-alone": 0x80000008}
CODECS = tuple(TYPES)


# -- ADC encoder -----------------------------------------------------------------------------------------


def adc_compress(data: bytes) -> bytes:
    """A valid ADC stream (greedy, far from optimal): literal runs of up to 128 bytes, short matches (3..18
    bytes, up to 1024 back) and long ones (4..67 bytes, up to 65536 back), found by their first 3 bytes."""
    out = bytearray()
    last: dict[bytes, int] = {}
    literal_start = i = 0
    n = len(data)
    while i < n:
        length, distance = _adc_match(data, i, last)
        if length < 3:
            i += 1
            continue
        _adc_literals(out, data, literal_start, i)
        if length <= 18 and distance < 1024:
            out += bytes([((length - 3) << 2) | (distance >> 8), distance & 0xFF])
        else:
            out += bytes([0x40 | (length - 4), distance >> 8, distance & 0xFF])
        for j in range(i + 1, min(i + length, n - 2)):
            last[data[j : j + 3]] = j
        i += length
        literal_start = i
    _adc_literals(out, data, literal_start, n)
    return bytes(out)


def _adc_match(data: bytes, i: int, last: dict[bytes, int]) -> tuple[int, int]:
    key = data[i : i + 3]
    if len(key) < 3:
        return 0, 0
    j = last.get(key)
    last[key] = i
    if j is None or i - j > 65536:
        return 0, 0
    length, limit = 3, min(67, len(data) - i)
    while length < limit and data[j + length] == data[i + length]:
        length += 1
    distance = i - j - 1
    if length == 3 and distance >= 1024:
        return 0, 0  # a 3-byte match only has the short code
    return length, distance


def _adc_literals(out: bytearray, data: bytes, start: int, end: int) -> None:
    for at in range(start, end, 128):
        piece = data[at : min(end, at + 128)]
        out.append(0x80 | (len(piece) - 1))
        out += piece


COMPRESSORS: dict[str, Callable[[bytes], bytes]] = {
    "raw": bytes,
    "adc": adc_compress,
    "zlib": lambda d: zlib.compress(d, 6),
    "bzip2": lambda d: bz2.compress(d, 9),
    "lzfse": lzfse.compress,
    "xz": lambda d: lzma.compress(d, format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC32),
    "lzma-alone": lambda d: lzma.compress(d, format=lzma.FORMAT_ALONE),
}


# -- layout ------------------------------------------------------------------------------------------------


@dataclass
class Partition:
    """One blkx entry: ``sectors`` sectors of the disk from ``first``."""

    name: str
    first: int
    sectors: int
    id: int = 0
    runs: list[tuple[int, int, int, int, int, int]] = field(default_factory=list)  # the mish entries
    crc: int = 0


@dataclass
class Written:
    path: Path
    partitions: list[Partition]
    data_fork_length: int
    image_offset: int  # where the UDIF image starts in the file
    segments: list[Path]


Source = Union[bytes, Path, str]


def write_udif(out: Union[Path, str], disk: Source, codec: Union[str, Sequence[str]] = "zlib",
               chunk_sectors: int = 2048, partitions: Optional[Sequence[tuple[str, int, int]]] = None,
               zeros: str = "zero", metadata: str = "xml", prefix: bytes = b"", data_fork_offset: int = 0,
               leading_koly: bool = False, comments: bool = False, segment_size: Optional[int] = None,
               checksums: bool = True, raw_fallback: bool = True,
               edit: Optional[Callable[[list[Partition], Fork], None]] = None) -> Written:
    """Write ``disk`` (bytes, or a file) as a UDIF image at ``out``.

    ``codec``: one of ``CODECS``, or a list used in turn chunk by chunk. ``zeros``: "zero" (type 0),
    "ignore" (type 2) or "data" (compress zero chunks like the rest). ``raw_fallback``: store a chunk that
    does not shrink as a raw run, as hdiutil does (off: every chunk in its codec, shrinking or not).
    ``metadata``: "xml", "rsrc" (only a binary resource fork) or "both". ``prefix``: other data before the
    image (its offsets stay relative to its own start). ``data_fork_offset``: padding inside the image
    before the data fork. ``leading_koly``: the koly block first, the data after it. ``segment_size``:
    split into ``out`` and ``NAME.002.dmgpart``, ... each holding that many bytes of the data fork.
    ``edit(partitions, fork)`` may change the runs (tuples: type, comment, sector, sectors, offset, length)
    and the data fork before they are written: how tests make damaged images."""
    out = Path(out)
    size = len(disk) if isinstance(disk, bytes) else os.path.getsize(disk)
    assert size % SECTOR == 0, "the disk must be whole sectors"
    total = size // SECTOR
    layout = [Partition(name, first, count, i - 1) for i, (name, first, count) in
              enumerate(partitions or [("whole disk (Apple_HFS : 0)", 0, total)])]
    codecs = itertools.cycle([codec] if isinstance(codec, str) else list(codec))
    head = 512 if leading_koly else data_fork_offset  # bytes of the image before its data fork
    with open(out, "w+b") as file, _reader(disk) as read:
        file.write(prefix + bytes(head))
        fork = Fork(file, len(prefix) + head)
        for part in layout:
            _fill(part, read, fork, codecs, chunk_sectors, zeros, comments, raw_fallback)
        if edit is not None:
            edit(layout, fork)
        return _finish(file, out, fork, layout, total, metadata, len(prefix), head, leading_koly, segment_size,
                       checksums)


class Fork:
    """The data fork, written straight into the output file at its place (big images never sit in memory).
    ``fork += data`` appends; ``fork[a:b] = data`` overwrites (for damaged images); ``len(fork)``."""

    def __init__(self, file, start: int) -> None:  # noqa: ANN001
        self.file, self.start, self.length = file, start, 0

    def __iadd__(self, data: bytes) -> Fork:
        os.pwrite(self.file.fileno(), data, self.start + self.length)
        self.length += len(data)
        return self

    def __len__(self) -> int:
        return self.length

    def __setitem__(self, where: slice, data: bytes) -> None:
        assert where.stop - where.start == len(data) and where.stop <= self.length
        os.pwrite(self.file.fileno(), data, self.start + where.start)

    def read(self, offset: int, length: int) -> bytes:
        return os.pread(self.file.fileno(), length, self.start + offset)

    def crc(self, end: Optional[int] = None) -> int:
        crc, end = 0, self.length if end is None else end
        for at in range(0, end, 1 << 20):
            crc = zlib.crc32(self.read(at, min(1 << 20, end - at)), crc)
        return crc


class _reader:
    """``read(offset, length)`` over bytes or a file."""

    def __init__(self, disk: Source) -> None:
        self.disk = disk
        self.file = None if isinstance(disk, bytes) else open(disk, "rb")  # noqa: SIM115

    def __enter__(self) -> Callable[[int, int], bytes]:
        if self.file is None:
            data = self.disk
            assert isinstance(data, bytes)
            return lambda offset, length: data[offset : offset + length]
        file = self.file
        return lambda offset, length: os.pread(file.fileno(), length, offset)

    def __exit__(self, *exc: object) -> None:
        if self.file is not None:
            self.file.close()


def _fill(part: Partition, read: Callable[[int, int], bytes], fork: Fork, codecs: Iterator[str],
          chunk_sectors: int, zeros: str, comments: bool, raw_fallback: bool) -> None:
    crc = 0
    if comments:
        part.runs.append((COMMENT, int.from_bytes(b"+beg", "big"), 0, 0, len(fork), 0))
    for sector in range(0, part.sectors, chunk_sectors):
        count = min(chunk_sectors, part.sectors - sector)
        data = read((part.first + sector) * SECTOR, count * SECTOR)
        if zeros != "data" and data.count(0) == len(data):
            kind = ZERO if zeros == "zero" else IGNORE
            part.runs.append((kind, 0, sector, count, len(fork), 0))
            if kind == ZERO:
                crc = zlib.crc32(data, crc)
            continue
        name = next(codecs)
        packed = COMPRESSORS[name](data)
        if raw_fallback and len(packed) >= len(data):
            name, packed = "raw", data  # as hdiutil does: a chunk that does not shrink is stored
        part.runs.append((TYPES[name], 0, sector, count, len(fork), len(packed)))
        fork += packed
        crc = zlib.crc32(data, crc)
    if comments:
        part.runs.append((COMMENT, int.from_bytes(b"+end", "big"), part.sectors, 0, len(fork), 0))
    part.runs.append((TERMINATOR, 0, part.sectors, 0, len(fork), 0))
    part.crc = crc


# -- structures ------------------------------------------------------------------------------------------


def checksum(value: Optional[int]) -> bytes:
    """A UDIFChecksum: type 2 (CRC32), 32 bits, the value; or all zeros for none."""
    if value is None:
        return bytes(136)
    return struct.pack(">II", 2, 32) + value.to_bytes(4, "big") + bytes(124)


def mish(part: Partition, checksums: bool) -> bytes:
    head = struct.pack(">4sIQQQII24s", b"mish", 1, part.first, part.sectors, 0, 0x208, 0, b"")
    head += checksum(part.crc if checksums else None) + struct.pack(">I", len(part.runs))
    return head + b"".join(struct.pack(">IIQQQQ", *run) for run in part.runs)


def plist(layout: Sequence[Partition], checksums: bool) -> bytes:
    entries = [{"Attributes": "0x0050", "CFName": p.name, "Data": mish(p, checksums), "ID": str(p.id),
                "Name": p.name} for p in layout]
    return plistlib.dumps({"resource-fork": {"blkx": entries}})


def resource_fork(layout: Sequence[Partition], checksums: bool) -> bytes:
    """The classic Mac OS resource fork: header, data (blkx resources back to back), map, names."""
    data = b"".join(struct.pack(">I", len(m)) + m for m in (mish(p, checksums) for p in layout))
    names = b"".join(bytes([len(p.name.encode("mac_roman"))]) + p.name.encode("mac_roman") for p in layout)
    type_list = struct.pack(">H", 0) + struct.pack(">4sHH", b"blkx", len(layout) - 1, 2 + 8)
    refs, data_at, name_at = b"", 0, 0
    for part in layout:
        refs += struct.pack(">hHI4x", part.id, name_at, (0x50 << 24) | data_at)
        data_at += 4 + len(mish(part, checksums))
        name_at += 1 + len(part.name.encode("mac_roman"))
    map_body = type_list + refs
    map_length = 28 + len(map_body) + len(names)
    header = struct.pack(">IIII", 0x100, 0x100 + len(data), len(data), map_length)
    resource_map = header + bytes(8) + struct.pack(">HH", 0x1C, 28 + len(map_body)) + map_body + names
    return header.ljust(0x100, b"\0") + data + resource_map


def koly(*, data_fork: tuple[int, int], rsrc: tuple[int, int], xml: tuple[int, int], sectors: int,
         data_crc: Optional[int], master_crc: Optional[int], segment: tuple[int, int] = (1, 1),
         running_offset: int = 0, segment_id: bytes = b"\0" * 16) -> bytes:
    block = struct.pack(">4sIIIQQQQQII16s", b"koly", 4, 512, 1, running_offset, data_fork[0], data_fork[1],
                        rsrc[0], rsrc[1], segment[0], segment[1], segment_id)
    block += checksum(data_crc) + struct.pack(">QQ", *xml) + bytes(120) + checksum(master_crc)
    block += struct.pack(">IQ", 1, sectors) + bytes(12)
    assert len(block) == 512
    return block


# -- the file ----------------------------------------------------------------------------------------------


def _finish(file, out: Path, fork: Fork, layout: list[Partition], sectors: int, metadata: str,  # noqa: ANN001
            prefix: int, head: int, leading_koly: bool, segment_size: Optional[int], checksums: bool) -> Written:
    master = zlib.crc32(b"".join(p.crc.to_bytes(4, "big") for p in layout)) if checksums else None
    count = 1 if not segment_size else max(1, -(-len(fork) // segment_size))
    seg_id = uuid.uuid4().bytes
    segments = [_segment(out, fork, n, count, segment_size or 0, sectors, seg_id) for n in range(2, count + 1)]
    first = min(len(fork), segment_size or len(fork))  # the bytes of the data fork in this file
    data_crc = fork.crc(first) if checksums and count == 1 else None
    xml = plist(layout, checksums) if metadata in ("xml", "both") else b""
    rsrc = resource_fork(layout, checksums) if metadata in ("rsrc", "both") else b""
    xml_span = (head + first, len(xml)) if xml else (0, 0)
    rsrc_span = (head + first + len(xml), len(rsrc)) if rsrc else (0, 0)
    trailer = koly(data_fork=(head, first), rsrc=rsrc_span, xml=xml_span, sectors=sectors, data_crc=data_crc,
                   master_crc=master, segment=(1, count), segment_id=seg_id)
    file.truncate(prefix + head + first)
    file.seek(0, os.SEEK_END)
    file.write(xml + rsrc)
    if leading_koly:
        os.pwrite(file.fileno(), trailer, prefix)
    else:
        file.write(trailer)
    return Written(out, layout, len(fork), prefix, segments)


def _segment(first: Path, fork: Fork, number: int, count: int, size: int, sectors: int, seg_id: bytes) -> Path:
    piece = fork.read((number - 1) * size, size)
    path = first.with_name(f"{first.name[:-4]}.{number:03d}.dmgpart")
    path.write_bytes(piece + koly(data_fork=(0, len(piece)), rsrc=(0, 0), xml=(0, 0), sectors=sectors, data_crc=None,
                                  master_crc=None, segment=(number, count), running_offset=(number - 1) * size,
                                  segment_id=seg_id))
    return path
