"""Extended attributes: in the inode after ``i_extra_isize``, and in the block that ``i_file_acl`` names.

Both places hold the same entries (a 16-byte head, then the name without its prefix); values sit in
the same area, found relative to the first entry (in the inode) or to the block's start. A value may
live in an inode of its own (ea_inode); the reader fetches those.
"""

from __future__ import annotations

import struct
from typing import NamedTuple, Optional

from imgfs.errors import CorruptImage

MAGIC = 0xEA020000
HEADER_MAGIC = struct.Struct("<I")
BLOCK_HEADER = struct.Struct("<IIII")  # magic, refcount, blocks, hash (then checksum and reserved: 32 bytes)
BLOCK_HEADER_SIZE = 32
ENTRY = struct.Struct("<BBHIII")  # name_len, name_index, value_offs, value_inum, value_size, hash
MAX_VALUE_SIZE = 65536  # what the VFS lets a value be (XATTR_SIZE_MAX)

# The name index replaces a prefix on disk.
PREFIXES = {0: "", 1: "user.", 2: "system.posix_acl_access", 3: "system.posix_acl_default", 4: "trusted.",
            6: "security.", 7: "system.", 8: "system.richacl"}
INLINE_DATA_NAME = "system.data"


class Attribute(NamedTuple):
    name: str
    value: Optional[bytes]  # None: the value is in inode ``inum`` (ea_inode)
    inum: int
    size: int


def parse_ibody(area: bytes, where: int, ino: int) -> list[Attribute]:
    """Attributes in the inode's spare bytes, if the area starts with the magic number."""
    if len(area) < 4 + ENTRY.size or HEADER_MAGIC.unpack_from(area)[0] != MAGIC:
        return []  # no attributes here: the area is unused (zeros) or too small
    return _entries(area, 4, 4, where, ino)


def parse_block(block: bytes, where: int, ino: int) -> list[Attribute]:
    """Attributes in an extended attribute block; a block without the magic number is an error."""
    magic, _refcount, blocks, _hash = BLOCK_HEADER.unpack_from(block)
    if magic != MAGIC:
        raise CorruptImage(f"inode {ino}'s extended attribute block: bad magic: expected 0x{MAGIC:08X}, "
                           f"got 0x{magic:08X}", layer="ext", offset=where)
    if blocks != 1:
        raise CorruptImage(f"inode {ino}'s extended attribute block: block count: expected 1, got {blocks}",
                           layer="ext", offset=where + 8)
    return _entries(block, BLOCK_HEADER_SIZE, 0, where, ino)


def _entries(area: bytes, pos: int, value_base: int, where: int, ino: int) -> list[Attribute]:
    """Entries from ``pos`` up to the four zero bytes that end them (or the end of the area)."""
    found: list[Attribute] = []
    end = len(area)
    while pos + 4 <= end and area[pos : pos + 4] != b"\0\0\0\0":
        if pos + ENTRY.size > end:
            raise _bad(ino, "an entry runs past the end of its area", where + pos)
        name_len, index, value_offset, inum, size, _hash = ENTRY.unpack_from(area, pos)
        name_end = pos + ENTRY.size + name_len
        if name_end > end:
            raise _bad(ino, f"name length: expected at most {end - pos - ENTRY.size}, got {name_len}", where + pos)
        value: Optional[bytes] = None
        if not inum:
            start = value_base + value_offset
            if size > MAX_VALUE_SIZE or start + size > end:
                raise _bad(ino, f"value: expected within the {end} bytes of its area, got {size} bytes at {start}",
                           where + pos)
            value = area[start : start + size]
        prefix = PREFIXES.get(index)
        if prefix is not None:
            name = prefix + area[pos + ENTRY.size : name_end].decode("utf-8", "surrogateescape")
            found.append(Attribute(name, value, inum, size))
        pos = (name_end + 3) & ~3
    return found


def _bad(ino: int, what: str, offset: int) -> CorruptImage:
    return CorruptImage(f"inode {ino}'s extended attributes: {what}", layer="ext", offset=offset)
