"""The ext2/3/4 superblock and group descriptors: where everything else is found.

Layouts follow the kernel's ext4 on-disk documentation and libyal's "Extended File System (EXT)"
notes. Every number that later sizes a read or an allocation is checked here, once, so that the rest
of the reader can trust it: block size, blocks and inodes per group, inode size, descriptor size.
"""

from __future__ import annotations

import struct
import uuid
from dataclasses import dataclass
from typing import Any, Optional

from imgfs.errors import CorruptImage, UnsupportedFormat
from imgfs.io.stream import Stream

SUPERBLOCK_OFFSET = 1024
SUPERBLOCK_SIZE = 1024
MAGIC = 0xEF53
ROOT_INO = 2

# s_state
STATE_CLEAN = 0x1
STATE_ERRORS = 0x2

# s_feature_compat
COMPAT_HAS_JOURNAL = 0x4
COMPAT_SPARSE_SUPER2 = 0x200
COMPAT_NAMES = {0x1: "dir_prealloc", 0x2: "imagic_inodes", 0x4: "has_journal", 0x8: "ext_attr",
                0x10: "resize_inode", 0x20: "dir_index", 0x40: "lazy_bg", 0x80: "exclude_inode",
                0x100: "exclude_bitmap", 0x200: "sparse_super2", 0x400: "fast_commit", 0x800: "stable_inodes",
                0x1000: "orphan_file"}

# s_feature_incompat
INCOMPAT_COMPRESSION = 0x1
INCOMPAT_FILETYPE = 0x2
INCOMPAT_RECOVER = 0x4
INCOMPAT_JOURNAL_DEV = 0x8
INCOMPAT_META_BG = 0x10
INCOMPAT_EXTENTS = 0x40
INCOMPAT_64BIT = 0x80
INCOMPAT_EA_INODE = 0x400
INCOMPAT_LARGEDIR = 0x4000
INCOMPAT_INLINE_DATA = 0x8000
INCOMPAT_NAMES = {0x1: "compression", 0x2: "filetype", 0x4: "needs_recovery", 0x8: "journal_dev", 0x10: "meta_bg",
                  0x40: "extent", 0x80: "64bit", 0x100: "mmp", 0x200: "flex_bg", 0x400: "ea_inode",
                  0x1000: "dirdata", 0x2000: "metadata_csum_seed", 0x4000: "large_dir", 0x8000: "inline_data",
                  0x10000: "encrypt", 0x20000: "casefold"}
# What this reader understands; anything else may change the layout of what it reads, so it refuses
# (compression was never in mainline; a journal device holds no files).
INCOMPAT_READABLE = 0x2 | 0x4 | 0x10 | 0x40 | 0x80 | 0x100 | 0x200 | 0x400 | 0x1000 | 0x2000 | 0x4000 | 0x8000 \
    | 0x10000 | 0x20000

# s_feature_ro_compat
RO_COMPAT_SPARSE_SUPER = 0x1
RO_COMPAT_HUGE_FILE = 0x8
RO_COMPAT_BIGALLOC = 0x200  # the bitmap counts clusters, so a group may hold more blocks than bits
RO_COMPAT_NAMES = {0x1: "sparse_super", 0x2: "large_file", 0x4: "btree_dir", 0x8: "huge_file", 0x10: "uninit_bg",
                   0x20: "dir_nlink", 0x40: "extra_isize", 0x80: "has_snapshot", 0x100: "quota", 0x200: "bigalloc",
                   0x400: "metadata_csum", 0x800: "replica", 0x1000: "read-only", 0x2000: "project",
                   0x4000: "shared_blocks", 0x8000: "verity", 0x10000: "orphan_present"}

# Features an ext3 driver could not mount: their presence makes the filesystem "ext4" (as blkid says).
EXT3_INCOMPAT = INCOMPAT_FILETYPE | INCOMPAT_RECOVER | INCOMPAT_META_BG
EXT3_RO_COMPAT = 0x1 | 0x2 | 0x4

_FIELDS = struct.Struct("<IIIIIIIIIIIIIHHHHHHIIIIHHIHHIII16s16s64s")  # offsets 0 .. 200
_LATER = struct.Struct("<HIII")  # s_desc_size (254), s_default_mount_opts, s_first_meta_bg, s_mkfs_time
_BACKUP_BGS = struct.Struct("<II")  # s_backup_bgs at 0x24C (sparse_super2)


@dataclass(frozen=True)
class Superblock:
    inodes_count: int
    blocks_count: int
    first_data_block: int
    log_block_size: int
    blocks_per_group: int
    inodes_per_group: int
    mtime: int
    wtime: int
    magic: int
    state: int
    rev_level: int
    inode_size: int
    compat: int
    incompat: int
    ro_compat: int
    uuid: bytes
    volume_name: bytes
    last_mounted: bytes
    desc_size: int
    first_meta_bg: int
    mkfs_time: int
    backup_bgs: tuple[int, int]

    @classmethod
    def parse(cls, buf: bytes) -> Superblock:
        (inodes, blocks_lo, _r, _free_b, _free_i, first_data, log_bs, _log_cs, bpg, _cpg, ipg, mtime, wtime,
         _mnt, _max_mnt, magic, state, _errors, _minor, _lastcheck, _interval, _os, rev, _resuid, _resgid,
         _first_ino, inode_size, _bg_nr, compat, incompat, ro_compat, fs_uuid, name, mounted) = _FIELDS.unpack_from(buf)
        desc_size, _opts, first_meta_bg, mkfs_time = _LATER.unpack_from(buf, 254)
        blocks_hi = struct.unpack_from("<I", buf, 336)[0] if incompat & INCOMPAT_64BIT else 0
        if rev == 0:
            inode_size, compat, incompat, ro_compat = 128, 0, 0, 0  # the good old revision has none of these
        return cls(inodes, blocks_lo | blocks_hi << 32, first_data, log_bs, bpg, ipg, mtime, wtime, magic, state,
                   rev, inode_size, compat, incompat, ro_compat, fs_uuid, name, mounted, desc_size, first_meta_bg,
                   mkfs_time, _BACKUP_BGS.unpack_from(buf, 0x24C))

    @property
    def block_size(self) -> int:
        return 1024 << self.log_block_size

    @property
    def group_count(self) -> int:
        return -(-(self.blocks_count - self.first_data_block) // self.blocks_per_group)

    @property
    def descriptor_size(self) -> int:
        return self.desc_size if self.incompat & INCOMPAT_64BIT else 32

    @property
    def label(self) -> str:
        return self.volume_name.split(b"\0", 1)[0].decode("utf-8", "replace")

    @property
    def version(self) -> str:
        """ext4 when an ext3 driver could not read it, ext3 with a journal, else ext2 (as blkid decides)."""
        if self.incompat & ~EXT3_INCOMPAT or self.ro_compat & ~EXT3_RO_COMPAT:
            return "ext4"
        return "ext3" if self.compat & COMPAT_HAS_JOURNAL else "ext2"

    @property
    def needs_recovery(self) -> bool:
        return bool(self.incompat & INCOMPAT_RECOVER)

    def problems(self) -> Optional[str]:
        """Why these numbers cannot describe a filesystem, or None; the probe and the reader share it."""
        if self.magic != MAGIC:
            return f"bad magic: expected 0x{MAGIC:04X}, got 0x{self.magic:04X}"
        if self.rev_level > 1:
            return f"revision level: expected 0 or 1, got {self.rev_level}"
        if self.log_block_size > 6:
            return f"block size: expected 1 KiB to 64 KiB (log 0..6), got log {self.log_block_size}"
        bits_per_block = self.block_size * 8  # a group's bitmaps are one block each
        most_blocks = bits_per_block << 16 if self.ro_compat & RO_COMPAT_BIGALLOC else bits_per_block
        if not 8 <= self.blocks_per_group <= most_blocks:
            return f"blocks per group: expected 8..{most_blocks}, got {self.blocks_per_group}"
        if not 1 <= self.inodes_per_group <= bits_per_block:
            return f"inodes per group: expected 1..{bits_per_block}, got {self.inodes_per_group}"
        isz = self.inode_size
        if isz < 128 or isz & (isz - 1) or isz > self.block_size:
            return f"inode size: expected a power of two from 128 to {self.block_size}, got {isz}"
        if self.first_data_block >= self.blocks_count or self.first_data_block > 1:
            return f"first data block: expected 0 or 1 below {self.blocks_count} blocks, got {self.first_data_block}"
        if self.inodes_count == 0 or self.inodes_count > self.group_count * self.inodes_per_group:
            return (f"inode count: expected 1..{self.group_count * self.inodes_per_group} "
                    f"({self.group_count} groups), got {self.inodes_count}")
        dsz = self.descriptor_size
        if dsz < 32 or dsz & (dsz - 1) or dsz > self.block_size or (dsz < 64 and dsz != 32):
            return f"group descriptor size: expected 32, or a power of two from 64 to {self.block_size}, got {dsz}"
        return None

    def unsupported(self) -> Optional[str]:
        """Why the reader must not try this filesystem, or None."""
        unknown = self.incompat & ~INCOMPAT_READABLE
        if not unknown:
            return None
        names = [INCOMPAT_NAMES.get(bit, f"0x{bit:x}") for bit in _bits(unknown)]
        return f"ext features imgfs cannot read: {', '.join(names)}"

    def has_super(self, group: int) -> bool:
        """Whether a group starts with a backup superblock (and, without meta_bg, descriptor copies)."""
        if group == 0:
            return True
        if self.compat & COMPAT_SPARSE_SUPER2:
            return group in self.backup_bgs
        if group == 1 or not self.ro_compat & RO_COMPAT_SPARSE_SUPER:
            return True
        if group & 1 == 0:
            return False
        return any(_is_power_of(group, base) for base in (3, 5, 7))

    def features(self) -> list[str]:
        """Feature names as mke2fs and dumpe2fs spell them: compatible, incompatible, then read-only ones."""
        return (_names(self.compat, COMPAT_NAMES) + _names(self.incompat, INCOMPAT_NAMES)
                + _names(self.ro_compat, RO_COMPAT_NAMES))

    def describe(self) -> dict[str, Any]:
        return {
            "filesystem": self.version,
            "label": self.label,
            "uuid": str(uuid.UUID(bytes=self.uuid)),
            "block_size": self.block_size,
            "inode_size": self.inode_size,
            "blocks": self.blocks_count,
            "inodes": self.inodes_count,
            "groups": self.group_count,
            "volume_size": self.blocks_count * self.block_size,
            "features": self.features(),
            "needs_recovery": self.needs_recovery,
            "clean": bool(self.state & STATE_CLEAN) and not self.state & STATE_ERRORS,
            "last_mounted": self.last_mounted.split(b"\0", 1)[0].decode("utf-8", "replace"),
        }


def _bits(value: int) -> list[int]:
    return [1 << i for i in range(value.bit_length()) if value >> i & 1]


def _names(value: int, table: dict[int, str]) -> list[str]:
    return [table.get(bit, f"0x{bit:x}") for bit in _bits(value)]


def _is_power_of(n: int, base: int) -> bool:
    while n % base == 0:
        n //= base
    return n == 1


def read_superblock(stream: Stream) -> Superblock:
    buf = stream.pread(SUPERBLOCK_OFFSET, SUPERBLOCK_SIZE)
    if len(buf) < SUPERBLOCK_SIZE:
        raise CorruptImage(f"the image is truncated: it ends at byte {stream.size}, inside the superblock",
                           layer="ext", offset=SUPERBLOCK_OFFSET)
    sb = Superblock.parse(buf)
    problem = sb.problems()
    if problem:
        raise CorruptImage(f"superblock: {problem}", layer="ext", offset=SUPERBLOCK_OFFSET)
    reason = sb.unsupported()
    if reason:
        raise UnsupportedFormat(reason, layer="ext")
    return sb


def probe(stream: Stream) -> bool:
    """A closer look once the magic matched: do the superblock's numbers make sense?"""
    if stream.size < SUPERBLOCK_OFFSET + SUPERBLOCK_SIZE:
        return False
    return Superblock.parse(stream.pread(SUPERBLOCK_OFFSET, SUPERBLOCK_SIZE)).problems() is None


class GroupTable:
    """Where each block group's inode table is, read from the group descriptors on first need."""

    def __init__(self, sb: Superblock, read_block: Any) -> None:
        self.sb = sb
        self._read_block = read_block  # (block number) -> bytes, through the metadata cache
        self._per_block = sb.block_size // sb.descriptor_size
        self._wide = sb.incompat & INCOMPAT_64BIT and sb.descriptor_size >= 64
        self._tables: dict[int, int] = {}

    def descriptor_block(self, group: int) -> int:
        """The block holding ``group``'s descriptor: right after the superblock, or with meta_bg in the
        first group of each meta group (past that group's backup superblock)."""
        sb, index = self.sb, group // self._per_block
        # The superblock is always at byte 1024: block 1 with 1 KiB blocks, even when bigalloc makes the
        # first data block 0.
        superblock_block = SUPERBLOCK_OFFSET // sb.block_size
        if not sb.incompat & INCOMPAT_META_BG or index < sb.first_meta_bg:
            return superblock_block + 1 + index
        first = index * self._per_block
        start = first * sb.blocks_per_group + sb.first_data_block
        if first == 0:
            return superblock_block + 1
        return start + (1 if sb.has_super(first) else 0)

    def inode_table(self, group: int) -> int:
        block = self._tables.get(group)
        if block is None:
            where = self.descriptor_block(group)
            data = self._read_block(where)
            pos = (group % self._per_block) * self.sb.descriptor_size
            block = struct.unpack_from("<I", data, pos + 8)[0]
            if self._wide:
                block |= struct.unpack_from("<I", data, pos + 40)[0] << 32
            if not 0 < block < self.sb.blocks_count:
                raise CorruptImage(f"group {group}'s inode table: expected a block below {self.sb.blocks_count}, "
                                   f"got {block}", layer="ext", offset=where * self.sb.block_size + pos + 8)
            self._tables[group] = block
        return block
