"""ext2/3/4 inodes: the fixed 128 bytes, the extra fields after them, and what they mean for ``stat``.

An inode is parsed straight out of an inode-table block with one ``struct`` call; the reader keeps
only what a ``Node`` needs plus the raw record (its in-inode extended attributes and inline data live
in the bytes after ``i_extra_isize``).
"""

from __future__ import annotations

import struct
from typing import Optional

from imgfs.filesystems.base import makedev

GOOD_OLD_INODE_SIZE = 128
I_BLOCK_OFFSET = 40  # i_block: the block map, the extent tree root, a fast symlink or inline data
I_BLOCK_SIZE = 60

FLAG_ENCRYPT = 0x800
FLAG_INDEX = 0x1000
FLAG_HUGE_FILE = 0x40000
FLAG_EXTENTS = 0x80000
FLAG_EA_INODE = 0x200000
FLAG_INLINE_DATA = 0x10000000

S_IFMT = 0o170000
S_IFREG = 0o100000
S_IFDIR = 0o040000
S_IFLNK = 0o120000
S_IFCHR = 0o020000
S_IFBLK = 0o060000

# mode, uid, size_lo, atime, ctime, mtime, dtime, gid, links, blocks_lo, flags, osd1, i_block, generation,
# file_acl_lo, size_high, faddr, blocks_high, file_acl_high, uid_high, gid_high, checksum_lo, reserved
BASE = struct.Struct("<HHIIIIIHHIII60sIIIIHHHHHH")
# extra_isize, checksum_hi, ctime_extra, mtime_extra, atime_extra
EXTRA = struct.Struct("<HHIII")
_NO_EXTRA = (0, 0, 0, 0, 0)


class Inode:
    """One parsed inode; ``raw`` is the whole on-disk record, ``offset`` its byte offset in the volume."""

    __slots__ = ("ino", "offset", "raw", "mode", "uid", "gid", "size", "links", "flags", "block", "file_acl",
                 "blocks_512", "atime_ns", "mtime_ns", "ctime_ns", "extra_isize")

    def __init__(self, ino: int, offset: int, raw: bytes, huge_file: bool, wide_dir_size: bool,
                 block_size: int) -> None:
        (mode, uid, size_lo, atime, ctime, mtime, _dtime, gid, links, blocks_lo, flags, _osd1, block, _gen,
         acl_lo, size_hi, _faddr, blocks_hi, acl_hi, uid_hi, gid_hi, _csum, _res) = BASE.unpack_from(raw)
        self.ino = ino
        self.offset = offset
        self.raw = raw
        self.mode = mode
        self.uid = uid | uid_hi << 16
        self.gid = gid | gid_hi << 16
        self.links = links
        self.flags = flags
        self.block = block
        self.file_acl = acl_lo | acl_hi << 32
        self.size = size_lo | size_hi << 32 if mode & S_IFMT == S_IFREG or wide_dir_size else size_lo
        self.blocks_512 = _blocks(blocks_lo, blocks_hi, flags, huge_file, block_size)
        isize, _csum_hi, ctime_x, mtime_x, atime_x = _extra(raw)
        self.extra_isize = isize
        self.ctime_ns = _time_ns(ctime, ctime_x if isize >= 8 else None)
        self.mtime_ns = _time_ns(mtime, mtime_x if isize >= 12 else None)
        self.atime_ns = _time_ns(atime, atime_x if isize >= 16 else None)

    @property
    def kind(self) -> int:
        return self.mode & S_IFMT

    @property
    def xattr_area_offset(self) -> int:
        """Where the in-inode extended attributes start in ``raw``; ``len(raw)`` when there is no room."""
        return GOOD_OLD_INODE_SIZE + self.extra_isize if len(self.raw) > GOOD_OLD_INODE_SIZE else len(self.raw)

    def data_blocks(self, block_size: int) -> int:
        """Blocks that hold data (or a block map), not counting the extended-attribute block."""
        blocks = self.blocks_512 // (block_size // 512)
        return blocks - 1 if self.file_acl and blocks else blocks


def _extra(raw: bytes) -> tuple[int, int, int, int, int]:
    """The extra fields, if the record has them and ``i_extra_isize`` is sane (else none at all)."""
    room = len(raw) - GOOD_OLD_INODE_SIZE
    if room < 4:
        return _NO_EXTRA
    isize = raw[128] | raw[129] << 8
    if isize & 3 or isize > room:
        return _NO_EXTRA  # a corrupt size: trust neither the extra fields nor the attributes after them
    if isize < EXTRA.size or room < EXTRA.size:
        padded = bytes(raw[128 : 128 + isize]).ljust(EXTRA.size, b"\0")
        return EXTRA.unpack(padded)
    return EXTRA.unpack_from(raw, 128)


def _blocks(lo: int, hi: int, flags: int, huge_file: bool, block_size: int) -> int:
    """i_blocks in 512-byte units: huge_file adds 16 high bits, and HUGE_FILE_FL counts in filesystem blocks."""
    if not huge_file:
        return lo
    blocks = lo | hi << 32
    return blocks * (block_size // 512) if flags & FLAG_HUGE_FILE else blocks


def _time_ns(seconds: int, extra: Optional[int]) -> int:
    """A signed 32-bit time, widened by the extra field's two epoch bits; its upper 30 bits are nanoseconds."""
    seconds -= (seconds & 0x80000000) << 1
    if extra is None:
        return seconds * 1_000_000_000
    return (seconds + ((extra & 3) << 32)) * 1_000_000_000 + (extra >> 2)


def device_number(block: bytes) -> int:
    """A device node's number from i_block: the old 8:8 encoding in word 0, else the new 12:20 in word 1."""
    old, new = struct.unpack_from("<II", block)
    if old:
        return makedev((old >> 8) & 0xFF, old & 0xFF)
    return makedev((new >> 8) & 0xFFF, (new & 0xFF) | ((new >> 12) & 0xFFF00))
