"""The ext2/3/4 filesystem as a lazy tree.

Only the superblock and the root are read at mount; each directory is parsed the first time it is
listed or looked up, and the inodes of its entries are read in one batch, one inode-table block at a
time. File data is never copied: a file is an ``ExtentStream`` over the volume, its run list worked
out from the extent tree or block map when it is opened. Metadata blocks (inode tables, group
descriptors, extent and indirect blocks, attribute blocks) go through the mount's ``BlockCache``;
file data and directory blocks do not.

Inode numbers are the ext inode numbers, so hard links share one and ``nlink`` is
the inode's own link count. The journal is not replayed: a filesystem that needs recovery is shown
as its main area stands, with a warning.
"""

from __future__ import annotations

import logging
import stat
from collections.abc import Iterable
from typing import Any, NamedTuple, Optional

from imgfs.errors import CorruptImage, EncryptedImage
from imgfs.filesystems.base import Filesystem, Node
from imgfs.filesystems.ext import xattr
from imgfs.filesystems.ext.directory import FILE_TYPE_MODES, Entry, clean_name, parse_blocks, parse_inline
from imgfs.filesystems.ext.extents import BlockSource, block_map_runs, byte_runs, extent_runs
from imgfs.filesystems.ext.inode import (
    FLAG_EA_INODE,
    FLAG_ENCRYPT,
    FLAG_EXTENTS,
    FLAG_INLINE_DATA,
    I_BLOCK_OFFSET,
    I_BLOCK_SIZE,
    Inode,
    device_number,
)
from imgfs.filesystems.ext.superblock import (
    INCOMPAT_FILETYPE,
    INCOMPAT_LARGEDIR,
    RO_COMPAT_HUGE_FILE,
    ROOT_INO,
    STATE_CLEAN,
    STATE_ERRORS,
    GroupTable,
    read_superblock,
)
from imgfs.io.cache import new_cache_id
from imgfs.io.stream import BytesStream, ExtentStream, Stream
from imgfs.layer import OpenContext

log = logging.getLogger(__name__)

MAX_DIRECTORY_SIZE = 1 << 30
MAX_SYMLINK_SIZE = 65536  # a target is at most one block (64 KiB blocks at most)
DIRECTORY_CHUNK = 1 << 20  # directory data is read this much at a time (a multiple of every block size)
# Attributes shown through getxattr/listxattr. system.* is left out: system.data is inline data (shown as
# the file's bytes), and the kernel handles system.posix_acl_* itself rather than passing them through.
SHOWN_XATTR_PREFIXES = ("user.", "trusted.", "security.")
_DEVICES = (stat.S_IFCHR, stat.S_IFBLK)
_KINDS = (stat.S_IFREG, stat.S_IFDIR, stat.S_IFLNK, stat.S_IFCHR, stat.S_IFBLK, stat.S_IFIFO, stat.S_IFSOCK)


class DirHandle(NamedTuple):
    """A directory's handle: its inode and the directory it was reached from, which its ".." must name.

    That check is what keeps a damaged image from making a loop of directories: following only entries
    whose ".." points back, every path leads up to the root by the one ".." chain.
    """

    ino: int
    parent: int


class ExtFilesystem(Filesystem):
    kind = "ext"
    has_xattrs = True
    xattr_prefixes = SHOWN_XATTR_PREFIXES

    def __init__(self, stream: Stream, ctx: OpenContext) -> None:
        super().__init__()
        self.stream = stream
        self.cache = ctx.cache
        self._cache_id = new_cache_id()
        self.sb = sb = read_superblock(stream)
        self.block_size = sb.block_size
        self.total_size = sb.blocks_count * sb.block_size
        self.label = sb.label
        self._filetype = bool(sb.incompat & INCOMPAT_FILETYPE)
        self._huge_file = bool(sb.ro_compat & RO_COMPAT_HUGE_FILE)
        self._wide_dir_size = bool(sb.incompat & INCOMPAT_LARGEDIR)
        self._source = BlockSource(sb.blocks_count, sb.block_size, self._read_block)
        self._groups = GroupTable(sb, self._read_block)
        self._table_blocks = -(-sb.inodes_per_group * sb.inode_size // sb.block_size)
        root = self._inode(ROOT_INO)
        if root.kind != stat.S_IFDIR:
            raise CorruptImage(f"the root (inode {ROOT_INO}) is not a directory: mode {root.mode:o}", layer="ext",
                               offset=root.offset)
        root_node = self._node("", root, 0, ROOT_INO)
        assert root_node is not None  # a directory always makes a node
        self.root = root_node
        self.children(self.root)  # a broken root fails the mount, not the first ls
        self._warn_about_state()  # only once the mount will happen: a refusal stays one line

    def _warn_about_state(self) -> None:
        sb, name = self.sb, self.stream.name
        if sb.needs_recovery or not sb.state & STATE_CLEAN:
            log.warning("%s: the ext filesystem %s; imgfs does not replay the journal, so the latest changes may be "
                        "missing", name, "needs journal recovery" if sb.needs_recovery else "was not cleanly unmounted")
        elif sb.state & STATE_ERRORS:
            log.warning("%s: the ext filesystem is marked as having errors", name)
        if self.stream.size < self.total_size:
            log.warning("%s: the image is %d bytes shorter than its ext filesystem; files past the end give EIO",
                        name, self.total_size - self.stream.size)

    # -- blocks and inodes ---------------------------------------------------------------------------

    def _read_block(self, block: int) -> bytes:
        """One metadata block, through the mount's cache."""
        return self.cache.get((self._cache_id, block), lambda: self._load_block(block))

    def _load_block(self, block: int) -> bytes:
        if not 0 <= block < self.sb.blocks_count:
            raise CorruptImage(f"block number: expected below {self.sb.blocks_count}, got {block}", layer="ext")
        offset = block * self.block_size
        data = self.stream.pread(offset, self.block_size)
        if len(data) < self.block_size:
            raise CorruptImage(f"the image is truncated: it ends at byte {self.stream.size}, before block {block}",
                               layer="ext", offset=offset)
        return data

    def _locate(self, ino: int) -> tuple[int, int]:
        """(block, byte offset in it) of inode ``ino``; an inode never straddles two blocks."""
        if not 1 <= ino <= self.sb.inodes_count:
            raise CorruptImage(f"inode number: expected 1..{self.sb.inodes_count}, got {ino}", layer="ext")
        group, index = divmod(ino - 1, self.sb.inodes_per_group)
        table = self._groups.inode_table(group)
        if table + self._table_blocks > self.sb.blocks_count:
            raise CorruptImage(f"group {group}'s inode table: expected it to end by block {self.sb.blocks_count}, "
                               f"got {table + self._table_blocks}", layer="ext", offset=table * self.block_size)
        byte = index * self.sb.inode_size
        return table + byte // self.block_size, byte % self.block_size

    def _parse_inode(self, ino: int, block: int, pos: int, data: bytes) -> Inode:
        raw = data[pos : pos + self.sb.inode_size]
        return Inode(ino, block * self.block_size + pos, raw, self._huge_file, self._wide_dir_size, self.block_size)

    def _inode(self, ino: int) -> Inode:
        block, pos = self._locate(ino)
        return self._parse_inode(ino, block, pos, self._read_block(block))

    def _inodes(self, inos: Iterable[int]) -> dict[int, Inode]:
        """Many inodes, each inode-table block read once. An inode that cannot be read is left out with a
        warning: its entry cannot be shown, but its neighbours can."""
        by_block: dict[int, list[tuple[int, int]]] = {}
        for ino in sorted(inos):
            try:
                block, pos = self._locate(ino)
            except CorruptImage as exc:
                log.warning("%s: inode %d skipped: %s", self.stream.name, ino, exc)
                continue
            by_block.setdefault(block, []).append((ino, pos))
        found = {}
        for block, members in by_block.items():
            try:
                data = self._read_block(block)
            except CorruptImage as exc:
                log.warning("%s: inodes %s skipped: %s", self.stream.name, [ino for ino, _ in members], exc)
                continue
            for ino, pos in members:
                found[ino] = self._parse_inode(ino, block, pos, data)
        return found

    # -- nodes ---------------------------------------------------------------------------------------

    def _node(self, name: str, inode: Inode, file_type: int, parent: int) -> Optional[Node]:
        mode = inode.mode
        kind = mode & 0o170000
        if kind not in _KINDS:
            if not mode or file_type not in FILE_TYPE_MODES:
                log.warning("%s: entry %r points to inode %d, which is not in use (mode %o); skipped",
                            self.stream.name, name, inode.ino, mode)
                return None
            kind = FILE_TYPE_MODES[file_type]  # the inode's type is garbage: the entry's hint is all there is
            mode = kind | stat.S_IMODE(mode)
        target, size, rdev = None, inode.size, 0
        handle: Any = inode.ino  # a file's handle is its inode number, a directory's a DirHandle
        if kind == stat.S_IFLNK:
            try:
                target = self._symlink_target(inode)
            except CorruptImage as exc:  # a Node's target is fixed: the link cannot give EIO by itself
                log.warning("%s: symlink %r skipped: %s", self.stream.name, name, exc)
                return None
            size = len(target)
        elif kind in _DEVICES:
            rdev, size = device_number(inode.block), 0
        elif kind == stat.S_IFDIR:
            handle = DirHandle(inode.ino, parent)
        elif kind != stat.S_IFREG:
            size = 0
        return Node(name, mode, size, inode.ino, inode.links, inode.uid, inode.gid, inode.mtime_ns,
                    inode.atime_ns, inode.ctime_ns, rdev, target, handle)

    def _symlink_target(self, inode: Inode) -> bytes:
        size = inode.size
        if size > MAX_SYMLINK_SIZE:
            raise CorruptImage(f"inode {inode.ino}'s symlink target length: expected at most {MAX_SYMLINK_SIZE}, "
                               f"got {size}", layer="ext", offset=inode.offset + 4)
        if inode.flags & FLAG_INLINE_DATA:
            return self._inline_data(inode)
        if size < I_BLOCK_SIZE and not inode.data_blocks(self.block_size):  # a fast symlink: in i_block itself
            return inode.block[:size]
        return self._data_stream(inode).pread(0, size)

    # -- directories ---------------------------------------------------------------------------------

    def _load_children(self, node: Node) -> dict[str, Node]:
        handle: DirHandle = node.handle
        inode = self._inode(handle.ino)
        if inode.kind != stat.S_IFDIR:
            raise CorruptImage(f"{node.name!r} is listed as a directory, but inode {inode.ino} is not one",
                               layer="ext", offset=inode.offset)
        entries = self._entries(inode)
        self._check_parent(inode, entries, handle.parent)
        inodes = self._inodes({ino for ino, _, _ in entries if ino != inode.ino})
        kids: dict[str, Node] = {}
        for ino, raw, file_type in entries:
            if raw in (b"", b".", b"..") or ino not in inodes:
                continue
            name = clean_name(raw)
            if name in kids:
                log.warning("%s: two entries of directory inode %d are named %r; showing the first",
                            self.stream.name, inode.ino, name)
                continue
            child = self._node(name, inodes[ino], file_type, inode.ino)
            if child is not None:
                kids[name] = child
        return kids

    @staticmethod
    def _check_parent(inode: Inode, entries: list[Entry], parent: int) -> None:
        dotdot = next((ino for ino, raw, _ in entries if raw == b".."), None)
        if dotdot != parent:
            got = "no '..' entry" if dotdot is None else f"inode {dotdot}"
            raise CorruptImage(f"directory inode {inode.ino}'s parent: expected inode {parent}, the directory it is "
                               f"listed in, got {got}", layer="ext", offset=inode.offset)

    def _entries(self, inode: Inode) -> list[Entry]:
        if inode.flags & FLAG_INLINE_DATA:
            return parse_inline(inode.block, inode.offset + I_BLOCK_OFFSET, self._ibody_value(inode, "system.data"),
                                self._filetype)
        most = min(MAX_DIRECTORY_SIZE, self.total_size)  # extents may repeat blocks: bound what is read
        if inode.size > most:
            raise CorruptImage(f"directory inode {inode.ino}'s size: expected at most {most}, got {inode.size}",
                               layer="ext", offset=inode.offset + 4)
        entries: list[Entry] = []
        for offset, length in self._byte_runs(inode):
            if offset is None:
                continue  # a hole in a directory holds no entries
            for start in range(0, length, DIRECTORY_CHUNK):
                want = min(DIRECTORY_CHUNK, length - start)
                data = self.stream.pread(offset + start, want)
                if len(data) < want:
                    raise CorruptImage(f"the image is truncated: it ends at byte {self.stream.size}, inside "
                                       f"directory inode {inode.ino}", layer="ext", offset=offset + start)
                parse_blocks(data, self.block_size, offset + start, self._filetype, entries)
        return entries

    # -- data ----------------------------------------------------------------------------------------

    def _byte_runs(self, inode: Inode) -> list[tuple[Optional[int], int]]:
        where = inode.offset + I_BLOCK_OFFSET
        if inode.flags & FLAG_EXTENTS:
            runs = extent_runs(inode.block, where, self._source, inode.ino)
        else:
            runs = block_map_runs(inode.block, where, -(-inode.size // self.block_size), self._source, inode.ino)
        return byte_runs(runs, inode.size, self.block_size, inode.ino, where)

    def _data_stream(self, inode: Inode, name: str = "") -> Stream:
        label = f"{self.stream.name}:{name or f'inode {inode.ino}'}"
        if inode.flags & FLAG_INLINE_DATA:
            return BytesStream(self._inline_data(inode), name=label)
        return ExtentStream.over(self.stream, self._byte_runs(inode), name=label)

    def _inline_data(self, inode: Inode) -> bytes:
        """Inline data: the first 60 bytes in i_block, the rest in the system.data attribute."""
        size = inode.size
        data = inode.block[: min(size, I_BLOCK_SIZE)]
        if size > I_BLOCK_SIZE:
            data += self._ibody_value(inode, "system.data")
        if len(data) < size:
            raise CorruptImage(f"inode {inode.ino}'s inline data: expected {size} bytes, got {len(data)}",
                               layer="ext", offset=inode.offset + I_BLOCK_OFFSET)
        return data[:size]

    def open(self, node: Node) -> Stream:
        if not node.is_file:
            raise IsADirectoryError(node.name)
        inode = self._inode(node.handle)  # a file's handle is its inode number
        if inode.flags & FLAG_ENCRYPT:
            raise EncryptedImage(f"{node.name!r} is encrypted (ext4 encryption); imgfs cannot decrypt it",
                                 layer="ext", offset=inode.offset)
        return self._data_stream(inode, node.name)

    # -- extended attributes -------------------------------------------------------------------------

    def _ibody(self, inode: Inode) -> list[xattr.Attribute]:
        start = inode.xattr_area_offset
        return xattr.parse_ibody(inode.raw[start:], inode.offset + start, inode.ino)

    def _ibody_value(self, inode: Inode, name: str) -> bytes:
        for attr in self._ibody(inode):
            if attr.name == name:
                return self._value(attr)
        return b""

    def _attributes(self, inode: Inode) -> list[xattr.Attribute]:
        found = self._ibody(inode)
        if inode.file_acl:
            if not 0 < inode.file_acl < self.sb.blocks_count:
                raise CorruptImage(f"inode {inode.ino}'s extended attribute block: expected a block below "
                                   f"{self.sb.blocks_count}, got {inode.file_acl}", layer="ext",
                                   offset=inode.offset + 104)
            block = self._read_block(inode.file_acl)
            found += xattr.parse_block(block, inode.file_acl * self.block_size, inode.ino)
        return found

    def _value(self, attr: xattr.Attribute) -> bytes:
        """An attribute's value, from its own inode when it is too big for the inode and block (ea_inode)."""
        if attr.value is not None:
            return attr.value
        holder = self._inode(attr.inum)
        if not holder.flags & FLAG_EA_INODE or holder.size != attr.size:
            raise CorruptImage(f"attribute {attr.name!r}: inode {attr.inum} does not hold a value of {attr.size} "
                               f"bytes (flags 0x{holder.flags:x}, size {holder.size})", layer="ext",
                               offset=holder.offset)
        return self._data_stream(holder).pread(0, attr.size)

    def xattrs(self, node: Node) -> dict[str, bytes]:
        shown: dict[str, bytes] = {}
        handle = node.handle
        for attr in self._attributes(self._inode(handle.ino if isinstance(handle, DirHandle) else handle)):
            if attr.name.startswith(SHOWN_XATTR_PREFIXES) and attr.name not in shown:
                shown[attr.name] = self._value(attr)
        return shown

    def describe(self) -> dict[str, Any]:
        return self.sb.describe()
