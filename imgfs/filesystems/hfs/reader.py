"""Classic HFS (Mac OS Standard) as a lazy tree: the catalog B-tree is read one folder at a time.

At mount only the master directory block, the two B-tree header nodes, the bad-block file's extents and
the root folder are read. B-tree nodes are shared with HFS+'s reader (``hfsplus.btree``: 512-byte nodes,
one-byte key lengths) and kept in the mount's ``BlockCache``; fork extents continue in the extents
overflow B-tree past the third (``hfsplus.forks``).

What is shown:

* Names are 31 MacRoman bytes, shown in Unicode with the Mac's '/' as ':' as on HFS+.
* Inode numbers are CNIDs. HFS records no owner (the mounting user is shown) and no permissions: folders
  are 0755, files 0644, or 0444 when the Finder's "locked" flag is set (as Linux's hfs driver shows them).
* mtime (also atime and ctime) is the record's modification date, in local time (see ``mdb``).
* ``user.com.apple.FinderInfo`` (the 32 bytes of FInfo + FXInfo, or DInfo + DXInfo for a folder) and
  ``user.com.apple.ResourceFork`` (when not empty) exactly as the HFS+ reader shows them.
* Blocks listed in the bad-block file (CNID 5) hold no file's data; a file whose extents claim one is
  damaged, and reading it is EIO.

Loops in damaged catalogs are refused: a folder whose record appears below itself is skipped, every
B-tree walk stops at a node seen before, and a folder's thread record must name the folder it is in.
"""

from __future__ import annotations

import bisect
import logging
import stat
from typing import Any, NamedTuple

from imgfs.errors import CorruptImage
from imgfs.filesystems.base import Filesystem, Node
from imgfs.filesystems.hfs import catalog as cat
from imgfs.filesystems.hfs.mdb import EXTENT_RECORD, hfs_local_time_ns, parse_extents, read_mdb
from imgfs.filesystems.hfsplus.btree import BTree
from imgfs.filesystems.hfsplus.finderinfo import FINDER_INFO, RESOURCE_FORK, XATTR_SIZE_MAX, shown_finder_info
from imgfs.filesystems.hfsplus.forks import Allocation, ExtentFormat, Run, volume_offset
from imgfs.io.stream import ExtentStream, Stream
from imgfs.layer import OpenContext

log = logging.getLogger(__name__)

DIR_MODE, FILE_MODE, LOCKED_MODE = stat.S_IFDIR | 0o755, stat.S_IFREG | 0o644, stat.S_IFREG | 0o444
EXTENT_FORMAT = ExtentFormat(cat.extent_key, parse_extents, EXTENT_RECORD.size)


class DirHandle(NamedTuple):
    cnid: int
    parent: int
    ancestors: tuple[int, ...]  # the folders above it: a child among them is a loop
    finder_info: bytes


class FileHandle(NamedTuple):
    entry: cat.Entry
    finder_info: bytes


class HfsFilesystem(Filesystem):
    kind = "hfs"
    has_xattrs = True
    namespaces = ("hfs",)  # the Mac side of an ISO 9660 + HFS hybrid disc (-o namespace=hfs)
    namespace = "hfs"

    def __init__(self, stream: Stream, ctx: OpenContext) -> None:
        super().__init__()
        self.volume = stream
        self._name = stream.name
        self.mdb = mdb = read_mdb(stream)
        self.block_size = mdb.block_size
        self.total_size = mdb.block_size * mdb.block_count
        self.label = cat.shown(mdb.name)
        self.allocation = Allocation(mdb.block_size, mdb.block_count, mdb.first_block_offset, "hfs", EXTENT_FORMAT)
        blocks = -(-mdb.extents_size // mdb.block_size)
        self.extents = self._tree(ctx, mdb.extents_extents, blocks, mdb.extents_size, cat.EXTENTS_FILE,
                                  "extents overflow", cat.extent_key)
        self.allocation.overflow_tree = self.extents
        blocks = -(-mdb.catalog_size // mdb.block_size)
        self.catalog = self._tree(ctx, mdb.catalog_extents, blocks, mdb.catalog_size, cat.CATALOG_FILE, "catalog",
                                  cat.key_of)
        self.bad_blocks = self._bad_blocks()
        self.root = self._root()
        self.children(self.root)  # a broken root fails the mount, not the first ls

    def _tree(self, ctx: OpenContext, extents: tuple[tuple[int, int], ...], blocks: int, size: int, cnid: int,
              name: str, key_of: Any) -> BTree:
        runs = self.allocation.fork_runs(extents, blocks, size, cnid, cat.DATA_FORK, f"the {name} file")
        stream = ExtentStream.over(self.volume, runs, name=f"{self._name}:{name} file")
        return BTree(stream, ctx.cache, name, key_of, lambda offset: volume_offset(runs, offset), layer="hfs")

    def _bad_blocks(self) -> list[tuple[int, int]]:
        """The bad-block file's extents, sorted: (first block, block count)."""
        found: list[tuple[int, int]] = []
        for record in self.extents.walk((cat.BAD_BLOCK_FILE, cat.DATA_FORK, 0)):
            file_id, fork_type, _ = cat.extent_key(record.key)
            if (file_id, fork_type) != (cat.BAD_BLOCK_FILE, cat.DATA_FORK) or len(found) > self.mdb.block_count:
                break
            found += parse_extents(record.data) if len(record.data) >= EXTENT_RECORD.size else ()
        return sorted(found)

    def _root(self) -> Node:
        thread = self._thread(cat.ROOT_FOLDER)
        if thread.parent != cat.ROOT_PARENT:
            raise CorruptImage(f"the root folder's thread names parent {thread.parent}, expected {cat.ROOT_PARENT}",
                               layer="hfs")
        for _name, entry in self._entries(cat.ROOT_PARENT):
            if entry.kind == cat.FOLDER and entry.cnid == cat.ROOT_FOLDER:
                return self._dir_node("", entry, cat.ROOT_PARENT, ())
        raise CorruptImage("the root folder's record is missing or is not folder 2", layer="hfs")

    # -- catalog -------------------------------------------------------------------------------------

    def _thread(self, cnid: int) -> cat.Thread:
        record = self.catalog.find((cnid, b""))
        if record is None or cat.record_type(record.data) not in (cat.FOLDER_THREAD, cat.FILE_THREAD):
            raise CorruptImage(f"CNID {cnid} has no thread record in the catalog", layer="hfs")
        return cat.parse_thread(record.data, record.offset)

    def _entries(self, parent: int) -> list[tuple[bytes, cat.Entry]]:
        found = []
        for record in self.catalog.walk((parent, b"")):
            if not record.key:  # a deleted record (key length 0)
                continue
            key_parent, name = cat.split_key(record.key, record.offset)
            if key_parent != parent:
                break
            if cat.record_type(record.data) in (cat.FOLDER, cat.FILE):
                found.append((name, cat.parse_entry(record.data, record.offset)))
        return found

    def _load_children(self, node: Node) -> dict[str, Node]:
        handle = node.handle
        if not isinstance(handle, DirHandle):
            raise NotADirectoryError(node.name)
        thread = self._thread(handle.cnid)
        if thread.parent != handle.parent:
            raise CorruptImage(f"folder CNID {handle.cnid}'s thread names parent {thread.parent}, but it is listed "
                               f"in folder {handle.parent}", layer="hfs")
        ancestors = (*handle.ancestors, handle.cnid)
        kids: dict[str, Node] = {}
        for raw, entry in self._entries(handle.cnid):
            name = cat.shown(raw)
            if entry.kind == cat.FOLDER and entry.cnid in ancestors:
                log.warning("%s: folder %r (CNID %d) inside itself: a loop in the catalog, skipped", self._name,
                            name, entry.cnid)
                continue
            if name in kids:
                log.warning("%s: two entries of folder %d are named %r; the second is skipped", self._name,
                            handle.cnid, name)
                continue
            if entry.kind == cat.FOLDER:
                kids[name] = self._dir_node(name, entry, handle.cnid, ancestors)
            else:
                kids[name] = self._file_node(name, entry)
        return kids

    def _dir_node(self, name: str, entry: cat.Entry, parent: int, ancestors: tuple[int, ...]) -> Node:
        handle = DirHandle(entry.cnid, parent, ancestors, shown_finder_info(entry.finder_info))
        return Node(name, DIR_MODE, 0, entry.cnid, 1, mtime_ns=hfs_local_time_ns(entry.modify_date), handle=handle)

    def _file_node(self, name: str, entry: cat.Entry) -> Node:
        assert entry.data_fork is not None
        size = entry.data_fork.logical_size
        if size > self.total_size:  # reading it gives EIO: its extents cannot hold it
            log.warning("%s: %r (CNID %d) says %d bytes, more than the volume holds", self._name, name, entry.cnid,
                        size)
            size = 0
        mode = LOCKED_MODE if entry.locked else FILE_MODE
        handle = FileHandle(entry, shown_finder_info(entry.finder_info))
        return Node(name, mode, size, entry.cnid, 1, mtime_ns=hfs_local_time_ns(entry.modify_date), handle=handle)

    # -- data ----------------------------------------------------------------------------------------

    def _fork(self, entry: cat.Entry, fork_type: int, what: str) -> ExtentStream:
        fork = entry.data_fork if fork_type == cat.DATA_FORK else entry.resource_fork
        assert fork is not None
        blocks = -(-fork.logical_size // self.block_size)
        runs = self.allocation.fork_runs(fork.extents, blocks, fork.logical_size, entry.cnid, fork_type, what)
        self._check_bad_blocks(runs, what)
        return ExtentStream.over(self.volume, runs, name=f"{self._name}:{what}")

    def _check_bad_blocks(self, runs: list[Run], what: str) -> None:
        if not self.bad_blocks:
            return
        for offset, length in runs:
            assert offset is not None
            first = (offset - self.mdb.first_block_offset) // self.block_size
            last = first + -(-length // self.block_size)
            i = bisect.bisect_right(self.bad_blocks, (last, 0)) - 1
            if i >= 0 and self.bad_blocks[i][0] + self.bad_blocks[i][1] > first:
                raise CorruptImage(f"{what} uses allocation block {max(first, self.bad_blocks[i][0])}, which the "
                                   "bad-block file lists", layer="hfs", offset=offset)

    def open(self, node: Node) -> Stream:
        handle = node.handle
        if not isinstance(handle, FileHandle):
            raise IsADirectoryError(node.name)
        return self._fork(handle.entry, cat.DATA_FORK, repr(node.name))

    def xattrs(self, node: Node) -> dict[str, bytes]:
        handle = node.handle
        found: dict[str, bytes] = {}
        if isinstance(handle, (DirHandle, FileHandle)) and handle.finder_info:
            found["user." + FINDER_INFO] = handle.finder_info
        if isinstance(handle, FileHandle):
            fork = handle.entry.resource_fork
            assert fork is not None
            if 0 < fork.logical_size <= XATTR_SIZE_MAX:
                what = f"{node.name!r}'s resource fork"
                found["user." + RESOURCE_FORK] = self._fork(handle.entry, cat.RESOURCE_FORK, what).pread(
                    0, fork.logical_size)
        return found

    def describe(self) -> dict[str, Any]:
        return {"filesystem": self.kind, "label": self.label, **self.mdb.describe(),
                "bad_blocks": sum(count for _, count in self.bad_blocks)}

