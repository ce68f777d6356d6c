"""Volume descriptors and directory records (ECMA-119 sections 8 and 9)."""

from __future__ import annotations

import calendar
import functools
import struct
from collections.abc import Iterator
from typing import NamedTuple, Optional

from imgfs.errors import CorruptImage, UnsupportedFormat
from imgfs.io.stream import Stream

SYSTEM_AREA_SIZE = 32768
MAX_DESCRIPTORS = 64  # a real set has a handful; stop scanning garbage long before the disc ends

VD_BOOT, VD_PRIMARY, VD_SUPPLEMENTARY, VD_PARTITION, VD_TERMINATOR = 0, 1, 2, 3, 255
JOLIET_ESCAPES = {b"%/@": 1, b"%/C": 2, b"%/E": 3}

FLAG_HIDDEN, FLAG_DIRECTORY, FLAG_ASSOCIATED, FLAG_MULTI_EXTENT = 0x01, 0x02, 0x04, 0x80

# length, extended-attribute length, extent (LE), data length (LE), date, flags, file unit size,
# interleave gap, volume sequence number (LE), name length; the big-endian copies are skipped.
_RECORD = struct.Struct("<BBI4xI4x7sBBBH2xB")
RECORD_HEADER_SIZE = _RECORD.size  # 33
unpack_record = _RECORD.unpack_from  # (data, position): the fields above, as a tuple


class VolumeDescriptor(NamedTuple):
    kind: str  # "primary", "joliet", "enhanced" (ISO 9660:1999) or "supplementary"
    sector: int
    block_size: int
    space_blocks: int
    volume_id: str
    system_id: str
    root_record: bytes
    joliet_level: int = 0
    path_table_size: int = 0
    path_table_lba: int = 0  # the little-endian (type L) path table


class Record(NamedTuple):
    """One directory record, with where it lies, for error messages and inode numbers."""

    offset: int  # byte offset of the record in the image
    extent: int  # first logical block of the data (extended attribute record excluded)
    size: int
    date: bytes
    flags: int
    unit_blocks: int  # interleaving: file unit size in blocks (0: not interleaved)
    gap_blocks: int
    name: bytes
    system_use: bytes


def decode_a_chars(raw: bytes) -> str:
    return raw.decode("latin-1").rstrip(" \x00")


def read_descriptors(stream: Stream, start_sector: int = 0) -> list[VolumeDescriptor]:
    """Every usable volume descriptor of the set starting at sector 16 of the session at ``start_sector``."""
    found: list[VolumeDescriptor] = []
    base = start_sector * 2048 + SYSTEM_AREA_SIZE
    for index in range(MAX_DESCRIPTORS):
        offset = base + index * 2048
        raw = stream.pread(offset, 2048)
        if len(raw) < 2048 or raw[1:6] != b"CD001":
            if index == 0:
                raise UnsupportedFormat(f"no ISO 9660 volume descriptor (CD001) at byte {base + 1}", layer="iso9660")
            raise CorruptImage("volume descriptor set ends without a terminator", layer="iso9660",
                               offset=offset)
        vd_type = raw[0]
        if vd_type == VD_TERMINATOR:
            break
        if vd_type in (VD_PRIMARY, VD_SUPPLEMENTARY):
            found.append(_parse_descriptor(raw, start_sector + index + 16, offset))
    if not found:
        raise UnsupportedFormat("no primary or supplementary volume descriptor", layer="iso9660",
                                offset=base)
    return found


def _parse_descriptor(raw: bytes, sector: int, offset: int) -> VolumeDescriptor:
    block_size = struct.unpack_from("<H", raw, 128)[0]
    if block_size not in (512, 1024, 2048):
        raise CorruptImage(f"logical block size {block_size} is not 512, 1024 or 2048", layer="iso9660",
                           offset=offset + 128)
    space_blocks = struct.unpack_from("<I", raw, 80)[0]
    root = raw[156:190]
    if raw[0] == VD_PRIMARY:
        kind, level = "primary", 0
    else:
        level = JOLIET_ESCAPES.get(raw[88:91], 0)
        kind = "joliet" if level else ("enhanced" if raw[6] == 2 else "supplementary")
    text = (lambda b: b.decode("utf-16-be", "replace").rstrip(" \x00")) if level else decode_a_chars
    table_size, table_lba = struct.unpack_from("<I", raw, 132)[0], struct.unpack_from("<I", raw, 140)[0]
    return VolumeDescriptor(kind, sector, block_size, space_blocks, text(raw[40:72]), text(raw[8:40]),
                            root, level, table_size, table_lba)


@functools.lru_cache(maxsize=8192)  # a disc has few distinct dates, and this is the hot path of a listing
def parse_date(raw: bytes) -> int:
    """A 7-byte recording date (years since 1900, ..., GMT offset in 15 minutes) as ns since 1970."""
    if len(raw) < 7 or raw[1] == 0:
        return 0
    year, month, day, hour, minute, second = raw[0] + 1900, raw[1], raw[2], raw[3], raw[4], raw[5]
    if not (1 <= month <= 12 and 1 <= day <= 31 and hour < 24 and minute < 60 and second < 61):
        return 0
    gmt_offset = raw[6] - 256 if raw[6] > 127 else raw[6]
    seconds = calendar.timegm((year, month, day, hour, minute, second)) - gmt_offset * 900
    return seconds * 1_000_000_000


def parse_long_date(raw: bytes) -> int:
    """A 17-byte date ("YYYYMMDDHHMMSScc" and the GMT offset) as ns since 1970."""
    try:
        digits = raw[:16].decode("ascii")
        year, month, day = int(digits[0:4]), int(digits[4:6]), int(digits[6:8])
        hour, minute, second, cent = int(digits[8:10]), int(digits[10:12]), int(digits[12:14]), int(digits[14:16])
    except (UnicodeDecodeError, ValueError):
        return 0
    if year == 0 or not (1 <= month <= 12 and 1 <= day <= 31):
        return 0
    gmt_offset = raw[16] - 256 if raw[16] > 127 else raw[16]
    seconds = calendar.timegm((year, month, day, hour, minute, second)) - gmt_offset * 900
    return seconds * 1_000_000_000 + cent * 10_000_000


_new = tuple.__new__


def parse_record(raw: bytes, pos: int, image_offset: int, su_skip: int = 0) -> Record:
    (_length, ear, extent, size, date, flags, unit, gap, _volseq, name_len) = _RECORD.unpack_from(raw, pos)
    end = pos + raw[pos]
    name_end = pos + RECORD_HEADER_SIZE + name_len
    if name_end > end:
        raise CorruptImage("directory record name runs past the record", layer="iso9660", offset=image_offset)
    su_start = name_end + (1 - name_len % 2) + su_skip
    return _new(Record, (image_offset, extent + ear, size, date, flags, unit, gap,  # faster than Record(...)
                         raw[pos + RECORD_HEADER_SIZE:name_end], raw[su_start:end] if su_start < end else b""))


def iter_records(data: bytes, block_size: int, image_offset: int, su_skip: int = 0) -> Iterator[Record]:
    """The records of a directory extent."""
    for pos, _ in record_spans(data, block_size, image_offset):
        yield parse_record(data, pos, image_offset + pos, su_skip)


def record_spans(data: bytes, block_size: int, image_offset: int) -> Iterator[tuple[int, int]]:
    """(position, length) of each record of a directory extent; a zero length byte pads to the next logical
    block, and a record that does not fit is CorruptImage."""
    pos, end = 0, len(data)
    while pos < end:
        length = data[pos]
        if length == 0:
            pos = (pos // block_size + 1) * block_size
            continue
        if length < RECORD_HEADER_SIZE + 1 or pos + length > end:
            raise CorruptImage(f"directory record of length {length} does not fit", layer="iso9660",
                               offset=image_offset + pos)
        yield pos, length
        pos += length


def clean_iso_name(raw: bytes) -> str:
    """A plain ISO 9660 identifier: ``;1`` version and a trailing dot dropped, case kept."""
    name = raw.decode("utf-8", "surrogateescape")
    semi = name.rfind(";")
    if semi > 0 and name[semi + 1 :].isdigit():
        name = name[:semi]
    if name.endswith(".") and len(name) > 1:
        name = name[:-1]
    return name


def clean_joliet_name(raw: bytes) -> str:
    name = raw.decode("utf-16-be", "replace")
    semi = name.rfind(";")
    if semi > 0 and name[semi + 1 :].isdigit():
        name = name[:semi]
    return name


def root_record(vd: VolumeDescriptor) -> Optional[Record]:
    raw = vd.root_record
    if raw[0] < RECORD_HEADER_SIZE + 1:
        return None
    return parse_record(raw, 0, vd.sector * 2048 + 156)
