"""The attributes B-tree: extended attributes, keyed by (file CNID, name, start block).

A value is either inline in its leaf record (type 0x10), or a fork of its own (0x20: a fork descriptor
with eight extents), continued by extent records (0x30) keyed by the same name and the allocation block
they start at. Names compare as raw UTF-16 units (binary), so a file's attributes are the leaf records
from key (CNID, "") on.
"""

from __future__ import annotations

import struct
from typing import NamedTuple, Optional

from imgfs.errors import CorruptImage
from imgfs.filesystems.hfsplus.unicode import unit_string
from imgfs.filesystems.hfsplus.volume import FORK_SIZE, Fork, parse_extents

KEY = struct.Struct(">HIIH")  # pad, fileID, startBlock, name length
INLINE, FORK_DATA, EXTENTS = 0x10, 0x20, 0x30
INLINE_HEAD = struct.Struct(">I8xI")  # recordType, reserved, size
MAX_NAME_UNITS = 127


def key_of(raw: bytes) -> tuple[int, str, int]:
    if len(raw) < KEY.size:
        return 0, "", 0
    _pad, cnid, start, length = KEY.unpack_from(raw)
    return cnid, unit_string(raw[KEY.size : KEY.size + 2 * length]), start


class Attribute(NamedTuple):
    name: str
    start_block: int
    kind: int
    inline: Optional[bytes]  # INLINE: the value
    fork: Optional[Fork]  # FORK_DATA: the value's fork; EXTENTS: more extents (logical size 0)


def parse(key: bytes, data: bytes, where: int) -> tuple[int, Attribute]:
    """(file CNID, the attribute) of one leaf record."""
    if len(key) < KEY.size or len(data) < 4:
        raise CorruptImage("attribute record is too short", layer="hfs+", offset=where)
    _pad, cnid, start, length = KEY.unpack_from(key)
    if length > MAX_NAME_UNITS or KEY.size + 2 * length > len(key):
        raise CorruptImage(f"attribute key: a name of {length} units does not fit", layer="hfs+", offset=where)
    name = key[KEY.size : KEY.size + 2 * length].decode("utf-16-be", "replace")
    kind = int.from_bytes(data[:4], "big")
    if kind == INLINE:
        if len(data) < INLINE_HEAD.size:
            raise CorruptImage(f"attribute {name!r}: inline record is too short", layer="hfs+", offset=where)
        size = INLINE_HEAD.unpack_from(data)[1]
        if INLINE_HEAD.size + size > len(data):
            raise CorruptImage(f"attribute {name!r}: {size} bytes of value do not fit in its record",
                               layer="hfs+", offset=where)
        return cnid, Attribute(name, start, kind, bytes(data[INLINE_HEAD.size : INLINE_HEAD.size + size]), None)
    if kind == FORK_DATA and len(data) >= 8 + FORK_SIZE:
        return cnid, Attribute(name, start, kind, None, Fork.parse(data[8 : 8 + FORK_SIZE]))
    if kind == EXTENTS and len(data) >= 8 + 64:
        return cnid, Attribute(name, start, kind, None, Fork(0, 0, parse_extents(data[8 : 8 + 64])))
    raise CorruptImage(f"attribute {name!r}: unknown record type 0x{kind:x} ({len(data)} bytes)", layer="hfs+",
                       offset=where)
