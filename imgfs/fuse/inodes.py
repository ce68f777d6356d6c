"""The inodes the kernel knows, and what a request answers when it fails.

The kernel names files by node id. A node id is the inode number ``stat`` shows (the tree's, unique across
the volumes of an image), but for the root (always 1) and for the rare directory whose number another one
already holds. Each inode the kernel knows has an ``Inode`` here, made once with its reply bytes packed
(``entry``), and dropped when the kernel forgets it.
"""

from __future__ import annotations

import errno
import itertools
import os
import stat
import struct
import threading
from typing import Optional

from imgfs.errors import ImageError
from imgfs.filesystems.base import Filesystem, Node
from imgfs.fuse import kernel
from imgfs.io.stream import Stream
from imgfs.tree import Attributes, Tree

TIMEOUT = 86400  # seconds: the image cannot change while mounted
BLKSIZE = 4096
SYNTHETIC_ID = 1 << 63  # node ids made up for directories whose inode number is taken
ENOATTR = getattr(errno, "ENOATTR", errno.ENODATA)
_PATH_ERRORS = {FileNotFoundError: errno.ENOENT, NotADirectoryError: errno.ENOTDIR,
                IsADirectoryError: errno.EISDIR, PermissionError: errno.EACCES}


class Inode:
    """What the kernel knows as one node id: the node and its filesystem, where it was found, how often.

    Kept small (seven slots, nothing packed ahead): a walk of a million files makes a million of them."""

    __slots__ = ("node", "fs", "nodeid", "nlookup", "stream", "parent", "name")

    def __init__(self, node: Node, fs: Filesystem, nodeid: int, parent: Optional[Inode], name: str) -> None:
        self.node, self.fs, self.nodeid = node, fs, nodeid
        self.nlookup = 0
        self.stream: Optional[Stream] = None  # opened on the first read
        self.parent, self.name = parent, name  # the name: the tree's own string, shared

    def path(self) -> str:
        """The path it was first found under (for log lines; a hard link has others)."""
        parts, inode = [], self
        while inode is not None and inode.parent is not None:
            parts.append(inode.name)
            inode = inode.parent
        return "/" + "/".join(reversed(parts))


_ENTRY = struct.Struct(kernel.ENTRY_OUT.format + kernel.ATTR.format[1:])  # fuse_entry_out, attr included


def pack_entry(nodeid: int, shown: Attributes) -> bytes:
    """``fuse_entry_out`` for ``shown``: valid a day, its ``fuse_attr`` at ``kernel.ENTRY_OUT.size``."""
    atime_ns, mtime_ns, ctime_ns = shown.atime_ns, shown.mtime_ns, shown.ctime_ns
    return _ENTRY.pack(nodeid, 0, TIMEOUT, TIMEOUT, 0, 0, shown.ino, shown.size, (shown.size + 511) >> 9,
                       atime_ns // 1_000_000_000, mtime_ns // 1_000_000_000, ctime_ns // 1_000_000_000,
                       atime_ns % 1_000_000_000, mtime_ns % 1_000_000_000, ctime_ns % 1_000_000_000, shown.mode,
                       shown.nlink, shown.uid, shown.gid, shown.rdev & 0xFFFFFFFF, BLKSIZE, 0)


class Inodes:
    """The node ids the kernel holds, with their lookup counts; a node id lives until the kernel forgets it."""

    def __init__(self, tree: Tree) -> None:
        self.tree = tree
        self._lock = threading.Lock()  # lookup counts change from several threads
        self._synthetic = itertools.count(SYNTHETIC_ID)
        self._synthetic_ids: dict[int, int] = {}  # id(node) -> its made-up node id
        root = Inode(tree.root, tree.fs, kernel.ROOT_ID, None, "")
        root.nlookup = 1 << 62  # the root is never forgotten
        self.table: dict[int, Inode] = {kernel.ROOT_ID: root}
        self.root = root

    def get(self, nodeid: int) -> Inode:
        inode = self.table.get(nodeid)
        if inode is None:
            raise FileNotFoundError(f"node {nodeid}")  # the kernel forgot it and asks again: cannot happen
        return inode

    def child(self, parent: Inode, name: str, node: Node, fs: Filesystem, ino: int) -> Inode:
        """The inode of ``node`` (entry ``name`` of ``parent``, inode number ``ino``), counted as one more
        lookup."""
        nodeid = ino if ino != kernel.ROOT_ID else SYNTHETIC_ID - 1
        with self._lock:
            inode = self.table.get(nodeid)
            if inode is not None and inode.node is not node and (
                    stat.S_IFMT(inode.node.mode) != stat.S_IFMT(node.mode) or node.is_dir):
                # the same number for another directory (or another type): the kernel must see two inodes
                nodeid = self._synthetic_ids.setdefault(id(node), next(self._synthetic))
                inode = self.table.get(nodeid)
            if inode is None:
                inode = self.table[nodeid] = Inode(node, fs, nodeid, parent, name)
            inode.nlookup += 1
        return inode

    def forget(self, nodeid: int, count: int) -> None:
        with self._lock:
            inode = self.table.get(nodeid)
            if inode is not None and nodeid != kernel.ROOT_ID:
                inode.nlookup -= count
                if inode.nlookup <= 0:
                    del self.table[nodeid]


def errno_of(exc: BaseException) -> int:
    """The errno a failed request answers with; anything unexpected is EIO."""
    for kind, code in _PATH_ERRORS.items():
        if isinstance(exc, kind):
            return code
    if isinstance(exc, OSError) and exc.errno and not isinstance(exc, ImageError):
        return exc.errno
    return errno.EIO


def may_execute(shown: Attributes, caller_uid: int, caller_gid: int) -> bool:
    """X_OK as the kernel decides it from the mode bits: root may run anything with an x bit (and enter any
    directory); anyone else needs the x bit of the class they fall in (owner, group, others)."""
    mode, uid, gid = shown.mode, shown.uid, shown.gid
    if caller_uid == 0:
        return stat.S_ISDIR(mode) or bool(mode & 0o111)
    if caller_uid == uid:
        return bool(mode & stat.S_IXUSR)
    if caller_gid == gid or gid in _groups_of(caller_uid):
        return bool(mode & stat.S_IXGRP)
    return bool(mode & stat.S_IXOTH)


def _groups_of(uid: int) -> set[int]:
    """The supplementary groups of the caller: ours when it is us (the common case), else none known."""
    return set(os.getgroups()) if uid == os.getuid() else set()
