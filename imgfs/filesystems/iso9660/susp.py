"""System Use Sharing Protocol (IEEE P1281) and Rock Ridge (IEEE P1282) entries of one record.

This runs once per directory entry while a directory is listed, so the loop is written flat.
"""

from __future__ import annotations

import functools
import struct
from typing import Callable, Optional

from imgfs.errors import CorruptImage
from imgfs.filesystems.base import makedev
from imgfs.filesystems.iso9660.records import parse_date, parse_long_date

MAX_CONTINUATIONS = 256  # per record; a real one needs one or two
MAX_CONTINUATION_SIZE = 65536

_LE32 = struct.Struct("<I")
_PX = struct.Struct("<I4xI4xI4xI")  # mode, links, uid, gid (the big-endian copies skipped)
_CE = struct.Struct("<I4xI4xI")  # block, offset, length

# SL component flags
SL_CONTINUE, SL_CURRENT, SL_PARENT, SL_ROOT = 0x01, 0x02, 0x04, 0x08
# TF flags: which times follow, in this order, and whether they use the 17-byte form
TF_CREATION, TF_MODIFY, TF_ACCESS, TF_ATTRIBUTES, TF_LONG_FORM = 0x01, 0x02, 0x04, 0x08, 0x80

ReadArea = Callable[[int, int, int], bytes]  # (block, offset, length) -> bytes


class RockRidge:
    """What the Rock Ridge entries of one record say; ``None`` or 0 where nothing was said.

    The defaults are class attributes, so that making one costs nothing per field (one per entry)."""

    seen = False  # any RRIP entry at all
    name: Optional[bytes] = None
    mode: Optional[int] = None
    nlink = uid = gid = 0
    rdev: Optional[int] = None
    symlink: Optional[bytes] = None
    mtime = atime = ctime = 0
    child_lba: Optional[int] = None
    relocated = False
    zf: Optional[tuple[bytes, int, int, int]] = None  # algorithm, header size, log2 block, size


def parse(area: bytes, read_area: ReadArea, offset: int) -> RockRidge:
    """Walk the entries of a system use area and its continuation areas (CE), loops refused."""
    rr = RockRidge()
    name: Optional[bytes] = None
    link: Optional[_SymlinkBuilder] = None
    seen_areas: Optional[set[tuple[int, int]]] = None
    while True:
        next_area = None
        pos, end = 0, len(area)
        while pos + 4 <= end:
            length = area[pos + 2]
            if length < 4 or pos + length > end:
                break  # padding or a damaged tail: the entries before it stand
            sig = area[pos : pos + 2]
            if sig == b"PX" and length >= 36:
                rr.mode, rr.nlink, rr.uid, rr.gid = _PX.unpack_from(area, pos + 4)
                rr.seen = True
            elif sig == b"TF" and length >= 5:
                rr.mtime, rr.atime, rr.ctime = _times(area[pos + 4 : pos + length])
                rr.seen = True
            elif sig == b"NM" and length >= 5:
                flags = area[pos + 4]
                part = b"." if flags & 0x02 else b".." if flags & 0x04 else area[pos + 5 : pos + length]
                name = part if name is None else name + part
                rr.seen = True
            elif sig == b"SL" and length >= 5:
                link = link or _SymlinkBuilder()
                link.add(area[pos + 5 : pos + length])
                rr.seen = True
            elif sig == b"CE" and length >= 28:
                block, inner, size = _CE.unpack_from(area, pos + 4)
                seen_areas = seen_areas or set()
                if (block, inner) in seen_areas or len(seen_areas) >= MAX_CONTINUATIONS:
                    raise CorruptImage("Rock Ridge continuation areas (CE) form a loop", layer="rockridge",
                                       offset=offset)
                seen_areas.add((block, inner))
                next_area = read_area(block, inner, min(size, MAX_CONTINUATION_SIZE))
            elif sig == b"ST":
                break
            else:
                _rare_entry(rr, sig, area[pos + 4 : pos + length])
            pos += length
        if next_area is None:
            break
        area = next_area
    if name is not None:
        rr.name = name
    if link is not None:
        rr.symlink = link.result()
    return rr


NO_TIMES = (0, 0, 0)
Plain = tuple[Optional[tuple[int, int, int, int]], tuple[int, int, int], Optional[bytes]]
_NOT_PLAIN = frozenset((b"CE", b"SL", b"PN", b"CL", b"RE", b"ZF"))  # what parse acts on beyond PX, TF and NM


def plain(data: bytes, pos: int, end: int) -> Optional[Plain]:
    """The system use area ``data[pos:end]`` of an ordinary entry, read in place: (PX's mode, links, uid and gid
    or None, TF's modify, access and change times, NM's name or None). None when the area holds a symlink, a
    continuation area, a relocation, zisofs, a device number or a name in several NM entries or with flags:
    ``parse`` reads those. Entries ``parse`` ignores (RR; AL, the attribute lists xorriso writes) are ignored
    here too. Most entries of a disc are ordinary, and this is the hot path of a listing."""
    px: Optional[tuple[int, int, int, int]] = None
    times: tuple[int, int, int] = NO_TIMES
    name: Optional[bytes] = None
    while pos + 4 <= end:
        length = data[pos + 2]
        if length < 4 or pos + length > end:
            break  # padding or a damaged tail: the entries before it stand (as in parse)
        sig = data[pos : pos + 2]
        if sig == b"PX" and length >= 36:
            px = _PX.unpack_from(data, pos + 4)
        elif sig == b"TF" and length >= 5:
            times = _times(data[pos + 4 : pos + length])
        elif sig == b"NM" and length >= 5:
            if name is not None or data[pos + 4]:
                return None
            name = data[pos + 5 : pos + length]
        elif sig == b"ST":
            break
        elif sig in _NOT_PLAIN:
            return None
        pos += length
    return px, times, name


def _rare_entry(rr: RockRidge, sig: bytes, body: bytes) -> None:
    if sig == b"PN" and len(body) >= 16:
        rr.seen = True
        high, low = _LE32.unpack_from(body, 0)[0], _LE32.unpack_from(body, 8)[0]
        # as Linux isofs: a 32-bit old-style dev_t when the high word is unused
        rr.rdev = makedev(low >> 8, low & 0xFF) if high == 0 and low & ~0xFF else makedev(high, low)
    elif sig == b"CL" and len(body) >= 4:
        rr.seen = True
        rr.child_lba = _LE32.unpack_from(body, 0)[0]
    elif sig == b"RE":
        rr.seen = True
        rr.relocated = True
    elif sig == b"ZF" and len(body) >= 12:
        rr.seen = True
        rr.zf = (body[0:2], body[2], body[3], _LE32.unpack_from(body, 4)[0])
    elif sig in (b"RR", b"PL"):
        rr.seen = True


@functools.lru_cache(maxsize=8192)  # most entries of a disc carry the same few TF entries
def _times(body: bytes) -> tuple[int, int, int]:
    """(modify, access, attribute change) times of a TF entry, ns since 1970; 0 where absent."""
    flags = body[0]
    width = 17 if flags & TF_LONG_FORM else 7
    parse_one = parse_long_date if flags & TF_LONG_FORM else parse_date
    times = [0, 0, 0, 0]
    pos = 1
    for index, bit in enumerate((TF_CREATION, TF_MODIFY, TF_ACCESS, TF_ATTRIBUTES)):
        if flags & bit:
            if pos + width > len(body):
                break
            times[index] = parse_one(body[pos : pos + width])
            pos += width
    return times[1], times[2], times[3]


class _SymlinkBuilder:
    """SL components joined byte for byte: "." and ".." and "/" flags, empty components kept."""

    __slots__ = ("parts", "open_component")

    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self.open_component = False  # the last component continues in the next SL entry

    def add(self, data: bytes) -> None:
        pos = 0
        while pos + 2 <= len(data):
            flags, length = data[pos], data[pos + 1]
            text = data[pos + 2 : pos + 2 + length]
            if flags & SL_ROOT:
                text = b""
            elif flags & SL_CURRENT:
                text = b"."
            elif flags & SL_PARENT:
                text = b".."
            if self.open_component and self.parts:
                self.parts[-1] += text
            else:
                self.parts.append(text)
            self.open_component = bool(flags & SL_CONTINUE)
            pos += 2 + length

    def result(self) -> bytes:
        if self.parts == [b""]:
            return b"/"
        return b"/".join(self.parts)
