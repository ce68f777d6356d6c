"""exFAT directory entries (specification section 6 and 7): entry sets, and the root's special entries.

A file or directory is an entry set: a File entry (0x85) naming how many secondary entries follow, a
Stream Extension (0xC0: where the data is, how long it is, how much of it is valid) and File Name entries
(0xC1, 15 UTF-16 units each), possibly followed by benign vendor entries. The File entry carries a
checksum of the whole set; a set whose checksum or structure is wrong is skipped (the specification
calls it invalid), with a warning, and the rest of the directory still lists. Entry types below 0x80
are deleted or unused; 0x00 ends the directory.

Names are shown as stored. The up-case table and the name hash exist for case-insensitive look-ups;
imgfs's look-ups come from the kernel with exact names (Linux is case-sensitive), so neither is needed.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import NamedTuple, Optional

from imgfs.filesystems.fat.dostime import exfat_ns

ENTRY_SIZE = 32
END, BITMAP, UPCASE, LABEL, FILE = 0x00, 0x81, 0x82, 0x83, 0x85
STREAM, NAME = 0xC0, 0xC1
ATTR_DIRECTORY = 0x10
FLAG_NO_FAT_CHAIN = 0x02
NAME_UNITS_PER_ENTRY = 15

# type, secondary count, set checksum, attributes, create/modify/access timestamps, create and modify
# 10 ms increments, create/modify/access UTC offsets
_FILE = struct.Struct("<BBHH2xIIIBBBBB7x")
# type, flags, name length, name hash, valid data length, first cluster, data length
_STREAM = struct.Struct("<BBxBH2xQ4xIQ")
_ALLOCATION = struct.Struct("<20xIQ")  # first cluster and data length of the bitmap and up-case entries


class Entry(NamedTuple):
    name: str
    offset: int  # byte offset of the File entry in the volume: the inode number
    is_dir: bool
    cluster: int
    contiguous: bool  # NoFatChain: the clusters follow on from the first, and the FAT is not used
    size: int  # DataLength
    valid_size: int  # ValidDataLength: bytes past it read as zeros
    mtime_ns: int
    atime_ns: int


class Listing(NamedTuple):
    entries: list[Entry]
    label: Optional[str]
    bitmaps: list[tuple[int, int]]  # (first cluster, length) of each allocation bitmap
    upcase: Optional[tuple[int, int]]
    bad_sets: list[tuple[int, str]]  # (offset, why) of each entry set that was skipped


def set_checksums(blob: bytes, length: int) -> list[int]:
    """The 16-bit checksums of entry sets of ``length`` bytes laid end to end in ``blob``, leaving out each
    set's checksum field (bytes 2 and 3).

    The checksum (rotate right, add the next byte) is strictly serial within a set and costs a Python loop
    step per byte, which made it most of the time of a listing. Sets of one length are therefore summed
    side by side: each set gets a 32-bit lane of one big integer, and each step rotates every lane and
    adds the next byte of every set at once (a 16-bit sum plus a byte never carries out of its lane).
    """
    count = len(blob) // length
    lanes = count * 4
    low15 = int.from_bytes(b"\xff\x7f\x00\x00" * count, "little")
    bit0 = int.from_bytes(b"\x01\x00\x00\x00" * count, "little")
    low16 = int.from_bytes(b"\xff\xff\x00\x00" * count, "little")
    column = bytearray(lanes)
    total = 0
    for index in range(length):
        if index in (2, 3):
            continue
        column[0::4] = blob[index::length]  # byte ``index`` of every set, one per lane
        total = (((total >> 1) & low15) | ((total & bit0) << 15)) + int.from_bytes(column, "little") & low16
    return list(memoryview(total.to_bytes(lanes, "little")).cast("I"))


def _structure_error(data: bytes, pos: int) -> Optional[str]:
    """Why the set at ``pos`` cannot be a file's entry set, before its checksum is looked at; a set that
    passes holds only secondary entries, so skipping it whole (if its checksum fails) loses nothing."""
    secondaries = data[pos + 1]
    end = pos + (secondaries + 1) * ENTRY_SIZE
    if not 2 <= secondaries <= 18:
        return f"secondary count: expected 2..18, got {secondaries}"
    if end > len(data):
        return "the entry set runs past the end of the directory"
    if data[pos + ENTRY_SIZE] != STREAM:
        return f"expected a stream extension (C0) after the file entry, got {data[pos + ENTRY_SIZE]:02X}"
    name_entries = -(-data[pos + ENTRY_SIZE + 3] // NAME_UNITS_PER_ENTRY)
    if name_entries == 0 or name_entries > secondaries - 1:
        return f"name length {data[pos + ENTRY_SIZE + 3]} does not fit {secondaries - 1} file name entries"
    first_name = pos + 2 * ENTRY_SIZE
    for at in range(first_name, end, ENTRY_SIZE):
        kind = data[at]
        if at < first_name + name_entries * ENTRY_SIZE and kind != NAME:
            return f"expected a file name entry (C1), got {kind:02X}"
        if kind < 0xC0:  # a primary or a deleted entry inside the set: the secondary count is wrong
            return f"expected a secondary entry, got {kind:02X}"
    return None


def _entry(data: bytes, pos: int, locate: Callable[[int], int]) -> Entry:
    _, _, _, attributes, _, mtime, atime, _, mtime_cs, _, mtime_off, atime_off = _FILE.unpack_from(data, pos)
    _, flags, name_length, _, valid, cluster, size = _STREAM.unpack_from(data, pos + ENTRY_SIZE)
    first_name = pos + 2 * ENTRY_SIZE
    end = first_name + -(-name_length // NAME_UNITS_PER_ENTRY) * ENTRY_SIZE
    raw = b"".join([data[at + 2 : at + ENTRY_SIZE] for at in range(first_name, end, ENTRY_SIZE)])
    mtime = exfat_ns(mtime, mtime_cs, mtime_off)
    return Entry(raw[: name_length * 2].decode("utf-16-le", "replace"), locate(pos),
                 bool(attributes & ATTR_DIRECTORY), cluster, bool(flags & FLAG_NO_FAT_CHAIN), size, valid, mtime,
                 exfat_ns(atime, 0, atime_off) or mtime)


def _checked(data: bytes, groups: dict[int, list[int]], bad: list[tuple[int, str]],
             locate: Callable[[int], int]) -> set[int]:
    """The positions of the sets whose checksum is right; the others go to ``bad``."""
    good = set()
    for length, positions in groups.items():
        sums = set_checksums(b"".join([data[pos : pos + length] for pos in positions]), length)
        for pos, actual in zip(positions, sums):
            stored = data[pos + 2] | data[pos + 3] << 8
            if actual == stored:
                good.add(pos)
            else:
                bad.append((locate(pos), f"set checksum: expected {stored:04X}, got {actual:04X}"))
    return good


def parse_directory(data: bytes, locate: Callable[[int], int]) -> Listing:
    """Every valid entry set of one directory's bytes, in on-disk order, and the root's special entries."""
    groups: dict[int, list[int]] = {}  # set length in bytes -> where such sets start
    order: list[int] = []
    bitmaps: list[tuple[int, int]] = []
    bad: list[tuple[int, str]] = []
    label: Optional[str] = None
    upcase: Optional[tuple[int, int]] = None
    pos, limit = 0, len(data) - ENTRY_SIZE
    while pos <= limit:
        kind = data[pos]
        if kind == FILE:
            why = _structure_error(data, pos)
            if why is None:
                length = (data[pos + 1] + 1) * ENTRY_SIZE
                groups.setdefault(length, []).append(pos)
                order.append(pos)
                pos += length
                continue
            bad.append((locate(pos), why))
        elif kind == END:
            break
        elif kind == LABEL and label is None:
            units = min(data[pos + 1], 11)
            label = data[pos + 2 : pos + 2 + units * 2].decode("utf-16-le", "replace")
        elif kind == BITMAP:
            cluster, length = _ALLOCATION.unpack_from(data, pos)
            bitmaps.append((cluster, length))
        elif kind == UPCASE:
            cluster, length = _ALLOCATION.unpack_from(data, pos)
            upcase = (cluster, length)
        pos += ENTRY_SIZE  # deleted entries (below 0x80), GUID, padding and stray secondaries
    good = _checked(data, groups, bad, locate)
    entries = [_entry(data, pos, locate) for pos in order if pos in good]
    return Listing(entries, label, bitmaps, upcase, bad)
