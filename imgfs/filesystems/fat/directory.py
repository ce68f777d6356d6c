"""FAT directory entries: 8.3 names with their NT case flags, VFAT long names, the volume label.

A directory is an array of 32-byte entries ending at the first entry whose name starts with 0x00.
A long name is a run of entries (attribute 0x0F) stored last part first just before its 8.3 entry, each
carrying the checksum of the 8.3 name; a run that is incomplete, out of order or whose checksum does not
match the 8.3 entry that follows is left over from another name (written by a tool that knows nothing of
long names), so it is ignored and the 8.3 name is shown, as Windows and Linux do.

8.3 names are decoded with code page 437 (Linux's default ``codepage=437``, and Windows' in the US);
Windows NT's flags in byte 12 say when the base (0x08) or extension (0x10) was lower case, so that
``readme.txt`` needs no long name. Timestamps are local time: see ``dostime``.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import NamedTuple, Optional

from imgfs.filesystems.fat.dostime import local_ns

ENTRY_SIZE = 32
ATTR_VOLUME_ID, ATTR_DIRECTORY, ATTR_LONG_NAME = 0x08, 0x10, 0x0F
CASE_LOWER_BASE, CASE_LOWER_EXT = 0x08, 0x10
DELETED, KANJI_E5, LAST_LONG_PART = 0xE5, 0x05, 0x40
MAX_LONG_PARTS = 20  # 255 UTF-16 units, 13 per entry
DOT_NAMES = (b".          ", b"..         ")

# name, attributes, NT case flags, (creation time skipped), access date, cluster high, write time,
# write date, cluster low, size
_SHORT = struct.Struct("<11sBB5xHHHHHI")


class Entry(NamedTuple):
    name: str
    offset: int  # byte offset of the 8.3 entry in the volume: the inode number
    is_dir: bool
    cluster: int
    size: int
    mtime_ns: int
    atime_ns: int


class Listing(NamedTuple):
    entries: list[Entry]
    label: Optional[str]  # the first volume-label entry (meaningful in the root only)
    label_mtime_ns: int
    orphans: int  # long-name runs that were ignored


def lfn_checksum(short: bytes) -> int:
    """The checksum of an 11-byte 8.3 name that each of its long-name entries carries."""
    total = 0
    for byte in short:
        total = (((total & 1) << 7) | (total >> 1)) + byte & 0xFF
    return total


def short_name(raw: bytes, case: int) -> str:
    base, ext = raw[:8].rstrip(b" "), raw[8:11].rstrip(b" ")
    if base[:1] == b"\x05":  # a name that really starts with E5 is stored as 05, since E5 means deleted
        base = b"\xe5" + base[1:]
    name = base.decode("cp437")
    if case & CASE_LOWER_BASE:
        name = name.lower()
    if not ext:
        return name
    suffix = ext.decode("cp437")
    return f"{name}.{suffix.lower() if case & CASE_LOWER_EXT else suffix}"


def long_name(parts: list[bytes]) -> str:
    """The name from the parts of a long-name run, in the order they were stored (last part first)."""
    raw = b"".join(reversed(parts))
    end = raw.find(b"\x00\x00")
    while end >= 0 and end & 1:  # the terminator is one whole UTF-16 unit
        end = raw.find(b"\x00\x00", end + 1)
    if end >= 0:
        raw = raw[:end]
    else:  # exactly 13 units per part: no terminator, maybe FFFF padding from a sloppy writer
        while raw[-2:] == b"\xff\xff":
            raw = raw[:-2]
    return raw.decode("utf-16-le", "replace")


def parse_directory(data: bytes, locate: Callable[[int], int], fat32: bool) -> Listing:
    """Every file and directory entry of one directory's bytes, in on-disk order."""
    entries: list[Entry] = []
    label: Optional[str] = None
    label_mtime = orphans = 0
    unpack = _SHORT.unpack_from
    parts: list[bytes] = []
    checksum = expect = 0
    for pos in range(0, len(data) - ENTRY_SIZE + 1, ENTRY_SIZE):
        first = data[pos]
        if first == 0:
            break
        if first == DELETED:
            orphans += bool(parts)
            parts = []
            continue
        if data[pos + 11] & 0x3F == ATTR_LONG_NAME:
            piece = data[pos + 1 : pos + 11] + data[pos + 14 : pos + 26] + data[pos + 28 : pos + 32]
            seq = first & ~LAST_LONG_PART
            if first & LAST_LONG_PART and 1 <= seq <= MAX_LONG_PARTS:
                orphans += bool(parts)
                parts, checksum, expect = [piece], data[pos + 13], seq - 1
            elif parts and seq == expect and seq >= 1 and data[pos + 13] == checksum:
                parts.append(piece)
                expect -= 1
            else:
                orphans += 1
                parts = []
            continue
        raw, attr, case, access, high, wtime, wdate, low, size = unpack(data, pos)
        name = None
        if parts:
            if expect == 0 and lfn_checksum(raw) == checksum:
                name = long_name(parts)
            else:
                orphans += 1
            parts = []
        if attr & ATTR_VOLUME_ID:
            if label is None and not attr & ATTR_DIRECTORY:
                label, label_mtime = raw.decode("cp437").rstrip(" \x00"), local_ns(wdate, wtime)
            continue
        if raw in DOT_NAMES:
            continue
        mtime = local_ns(wdate, wtime)
        entries.append(Entry(name or short_name(raw, case), locate(pos), bool(attr & ATTR_DIRECTORY),
                             (high << 16 | low) if fat32 else low, size, mtime, local_ns(access) or mtime))
    return Listing(entries, label, label_mtime, orphans)
