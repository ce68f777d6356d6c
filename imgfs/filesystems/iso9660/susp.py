"""System Use Sharing Protocol (IEEE P1281) and Rock Ridge (IEEE P1282) entries of one record."""

from __future__ import annotations

import os
import struct
from typing import Callable, Optional

from imgfs.errors import CorruptImage
from imgfs.filesystems.iso9660.records import parse_date, parse_long_date

MAX_CONTINUATIONS = 256  # per record; a real one needs one or two
MAX_CONTINUATION_SIZE = 65536

_LE32 = struct.Struct("<I")

# SL component flags
SL_CONTINUE, SL_CURRENT, SL_PARENT, SL_ROOT = 0x01, 0x02, 0x04, 0x08
# TF flags: which times follow, in this order, and whether they use the 17-byte form
TF_CREATION, TF_MODIFY, TF_ACCESS, TF_ATTRIBUTES, TF_LONG_FORM = 0x01, 0x02, 0x04, 0x08, 0x80

ReadArea = Callable[[int, int, int], bytes]  # (block, offset, length) -> bytes


class RockRidge:
    """What the Rock Ridge entries of one record say; ``None`` where nothing was said."""

    __slots__ = ("seen", "name", "mode", "nlink", "uid", "gid", "serial", "rdev", "symlink", "mtime",
                 "atime", "ctime", "child_lba", "relocated", "zf", "sp_skip")

    def __init__(self) -> None:
        self.seen = False  # any RRIP entry at all
        self.name: Optional[bytes] = None
        self.mode: Optional[int] = None
        self.nlink = self.uid = self.gid = self.serial = 0
        self.rdev: Optional[int] = None
        self.symlink: Optional[bytes] = None
        self.mtime = self.atime = self.ctime = 0
        self.child_lba: Optional[int] = None
        self.relocated = False
        self.zf: Optional[tuple[bytes, int, int, int]] = None  # algorithm, header size, log2 block, size
        self.sp_skip: Optional[int] = None


def parse(area: bytes, read_area: ReadArea, offset: int) -> RockRidge:
    """Walk the entries of a system use area and its continuation areas (CE), loops refused."""
    rr = RockRidge()
    name_parts: list[bytes] = []
    link = _SymlinkBuilder()
    seen_areas: set[tuple[int, int]] = set()
    while area is not None:
        next_area = None
        pos = 0
        while pos + 4 <= len(area):
            sig, length = area[pos : pos + 2], area[pos + 2]
            if length < 4 or pos + length > len(area):
                break  # padding or a damaged tail: the entries before it stand
            body = area[pos + 4 : pos + length]
            if sig == b"ST":
                break
            if sig == b"CE" and len(body) >= 24:
                block, inner, size = _LE32.unpack_from(body, 0)[0], _LE32.unpack_from(body, 8)[0], \
                    _LE32.unpack_from(body, 16)[0]
                key = (block, inner)
                if key in seen_areas or len(seen_areas) >= MAX_CONTINUATIONS:
                    raise CorruptImage("Rock Ridge continuation areas (CE) form a loop", layer="rockridge",
                                       offset=offset)
                seen_areas.add(key)
                next_area = read_area(block, inner, min(size, MAX_CONTINUATION_SIZE))
            else:
                _entry(rr, sig, body, name_parts, link)
            pos += length
        area = next_area  # type: ignore[assignment]
    if name_parts:
        rr.name = b"".join(name_parts)
    rr.symlink = link.result()
    return rr


def _entry(rr: RockRidge, sig: bytes, body: bytes, name_parts: list[bytes], link: _SymlinkBuilder) -> None:
    if sig == b"PX" and len(body) >= 32:
        rr.seen = True
        rr.mode = _LE32.unpack_from(body, 0)[0]
        rr.nlink = _LE32.unpack_from(body, 8)[0]
        rr.uid = _LE32.unpack_from(body, 16)[0]
        rr.gid = _LE32.unpack_from(body, 24)[0]
        if len(body) >= 40:
            rr.serial = _LE32.unpack_from(body, 32)[0]
    elif sig == b"NM" and len(body) >= 1:
        rr.seen = True
        flags = body[0]
        if flags & 0x02:
            name_parts.append(b".")
        elif flags & 0x04:
            name_parts.append(b"..")
        else:
            name_parts.append(body[1:])
    elif sig == b"SL" and len(body) >= 1:
        rr.seen = True
        link.add(body[1:])
    elif sig == b"TF" and len(body) >= 1:
        rr.seen = True
        _times(rr, body)
    elif sig == b"PN" and len(body) >= 16:
        rr.seen = True
        high, low = _LE32.unpack_from(body, 0)[0], _LE32.unpack_from(body, 8)[0]
        # as Linux isofs: a 32-bit old-style dev_t when the high word is unused
        rr.rdev = os.makedev(low >> 8, low & 0xFF) if high == 0 and low & ~0xFF else os.makedev(high, low)
    elif sig == b"CL" and len(body) >= 4:
        rr.seen = True
        rr.child_lba = _LE32.unpack_from(body, 0)[0]
    elif sig == b"RE":
        rr.seen = True
        rr.relocated = True
    elif sig == b"ZF" and len(body) >= 12:
        rr.seen = True
        rr.zf = (body[0:2], body[2], body[3], _LE32.unpack_from(body, 4)[0])
    elif sig == b"SP" and len(body) >= 3 and body[0:2] == b"\xbe\xef":
        rr.sp_skip = body[2]
    elif sig in (b"RR", b"PL"):
        rr.seen = True


def _times(rr: RockRidge, body: bytes) -> None:
    flags = body[0]
    width = 17 if flags & TF_LONG_FORM else 7
    parse_one = parse_long_date if flags & TF_LONG_FORM else parse_date
    pos = 1
    for bit in (TF_CREATION, TF_MODIFY, TF_ACCESS, TF_ATTRIBUTES):
        if not flags & bit:
            continue
        if pos + width > len(body):
            return
        value = parse_one(body[pos : pos + width])
        if bit == TF_MODIFY:
            rr.mtime = value
        elif bit == TF_ACCESS:
            rr.atime = value
        elif bit == TF_ATTRIBUTES:
            rr.ctime = value
        pos += width


class _SymlinkBuilder:
    """SL components joined byte for byte: "." and ".." and "/" flags, empty components kept."""

    __slots__ = ("parts", "open_component", "any")

    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self.open_component = False  # the last component continues in the next SL entry
        self.any = False

    def add(self, data: bytes) -> None:
        self.any = True
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

    def result(self) -> Optional[bytes]:
        if not self.any:
            return None
        if self.parts == [b""]:
            return b"/"
        return b"/".join(self.parts)
