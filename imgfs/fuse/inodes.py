"""The inodes the kernel knows, and what a request answers when it fails.

The kernel names files by node id. A directory's node id is the inode number ``stat`` shows (the tree's,
unique across the volumes of an image), but for the root (always 1) and for the rare directory whose number
another one already holds; each directory the kernel knows has an ``Inode`` here, dropped when the kernel
forgets it. Any other entry (a file, a link, a device) keeps nothing here: its node id says where it is,
its directory and its place in that directory's listing (``ENTRY_ID | slot << 32 | index``), and the listing
is made again if it was dropped (listings are kept up to ``LISTED_ENTRIES`` entries, and the tree parses a
directory again when it must). So a walk of a million files costs this module a few bytes per directory, not
two objects per file.
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
ENTRY_ID = 1 << 62  # node ids of entries that are not directories: ENTRY_ID | directory slot << 32 | index
INDEX_BITS = 32
SYNTHETIC_ID = 1 << 63  # node ids made up for directories whose inode number is taken (or reaches ENTRY_ID)
LISTED_ENTRIES = 65_536  # entries of directory listings kept (each holds its node), beyond the tree's own
OPEN_STREAMS = 4096  # files whose opened stream is kept for the next read
ENOATTR = getattr(errno, "ENOATTR", errno.ENODATA)
_PATH_ERRORS = {FileNotFoundError: errno.ENOENT, NotADirectoryError: errno.ENOTDIR,
                IsADirectoryError: errno.EISDIR, PermissionError: errno.EACCES}

Entry = tuple[str, Node, Filesystem]  # a listing's entry: its name, its node, the node's filesystem


class Inode:
    """One node id: the node and its filesystem, the directory it was found in and its name there.

    Kept for directories (and the root) while the kernel holds them; an entry of another kind gets one made
    for the request that names it (``Inodes.get``), and ``slot`` 0."""

    __slots__ = ("node", "fs", "nodeid", "nlookup", "parent", "name", "slot")

    def __init__(self, node: Node, fs: Filesystem, nodeid: int, parent: Optional[Inode], name: str) -> None:
        self.node, self.fs, self.nodeid = node, fs, nodeid
        self.nlookup = 0
        self.parent, self.name = parent, name  # the name: the tree's own string, shared
        self.slot = 0  # a directory's number in its entries' node ids, given when it first names one

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
    """What each node id the kernel holds stands for; a directory's lives until the kernel forgets it."""

    def __init__(self, tree: Tree) -> None:
        self.tree = tree
        self._lock = threading.Lock()  # requests come from several threads
        self._synthetic = itertools.count(SYNTHETIC_ID)
        self._synthetic_ids: dict[tuple[int, str], int] = {}  # (parent's node id, name) -> a made-up node id
        self._slots = itertools.count(1)
        self._by_slot: dict[int, Inode] = {}
        self._listings: dict[int, list[Entry]] = {}  # directory node id -> its entries, "." and ".." first
        self._listed = 0  # entries in _listings
        self._indexes: dict[int, dict[str, int]] = {}  # directory node id -> name -> index, for look-ups
        self._streams: dict[int, Stream] = {}  # node id -> the file opened for its reads
        root = Inode(tree.root, tree.fs, kernel.ROOT_ID, None, "")
        root.nlookup = 1 << 62  # the root is never forgotten
        self.table: dict[int, Inode] = {kernel.ROOT_ID: root}
        self.root = root

    # -- node ids -------------------------------------------------------------------------------------

    def get(self, nodeid: int) -> Inode:
        """The inode ``nodeid`` stands for: a directory's own, or one made for an entry of another kind."""
        inode = self.table.get(nodeid)
        if inode is not None:
            return inode
        if nodeid & ENTRY_ID and not nodeid & SYNTHETIC_ID:
            directory = self._by_slot.get((nodeid ^ ENTRY_ID) >> INDEX_BITS)
            if directory is not None:
                entries = self.listing(directory)
                index = nodeid & ((1 << INDEX_BITS) - 1)
                if 2 <= index < len(entries):
                    name, node, fs = entries[index]
                    return Inode(node, fs, nodeid, directory, name)
        raise FileNotFoundError(f"node {nodeid}")  # the kernel forgot it and asks again: cannot happen

    def find(self, nodeid: int) -> Optional[Inode]:
        """``get``, or None (for log lines, which must not fail)."""
        try:
            return self.get(nodeid)
        except Exception:  # noqa: BLE001 - a directory that cannot be parsed again: the line says "?"
            return None

    def directory_of(self, nodeid: int) -> Optional[Inode]:
        """The directory an entry's node id names, if the kernel still holds it."""
        if nodeid & ENTRY_ID and not nodeid & SYNTHETIC_ID:
            return self._by_slot.get((nodeid ^ ENTRY_ID) >> INDEX_BITS)
        return None

    def entry_id(self, directory: Inode, index: int) -> int:
        """The node id of entry ``index`` (of ``listing(directory)``), which is not a directory."""
        slot = directory.slot
        if not slot:
            with self._lock:
                slot = directory.slot
                if not slot:
                    slot = next(self._slots)
                    if slot >> (62 - INDEX_BITS):  # a billion directories: their node ids would run out
                        raise OSError(errno.EOVERFLOW, "too many directories listed")
                    directory.slot = slot
                    self._by_slot[slot] = directory
        return ENTRY_ID | slot << INDEX_BITS | index

    def child(self, parent: Inode, name: str, index: int, node: Node, fs: Filesystem, ino: int) -> int:
        """The node id of ``node`` (entry ``index``, named ``name``, of ``parent``, inode number ``ino``),
        counted as one more lookup when it is a directory."""
        if not node.is_dir:
            return self.entry_id(parent, index)
        nodeid = ino if ino != kernel.ROOT_ID and ino < ENTRY_ID else 0
        with self._lock:
            inode = self.table.get(nodeid)
            if not nodeid or inode is not None and inode.node is not node and (
                    inode.parent is not parent or inode.name != name):
                # The same number for a directory found elsewhere (a loop shown empty, a directory link): the
                # kernel must see two inodes, or it refuses the second (ELOOP). The same entry of the same
                # directory (a new Node once the listing was parsed anew) keeps its inode.
                nodeid = self._synthetic_ids.setdefault((parent.nodeid, name), next(self._synthetic))
                inode = self.table.get(nodeid)
            if inode is None:
                inode = self.table[nodeid] = Inode(node, fs, nodeid, parent, name)
            inode.nlookup += 1
        return nodeid

    def forget(self, nodeid: int, count: int) -> None:
        """The kernel drops ``count`` lookups of ``nodeid``; an entry that is no directory had none counted."""
        with self._lock:
            inode = self.table.get(nodeid)
            if inode is not None and nodeid != kernel.ROOT_ID:
                inode.nlookup -= count
                if inode.nlookup <= 0:
                    del self.table[nodeid]
                    if inode.slot:
                        del self._by_slot[inode.slot]
                    self._drop_listing(nodeid)
            elif nodeid & ENTRY_ID and not nodeid & SYNTHETIC_ID:
                self._streams.pop(nodeid, None)

    # -- listings and open files ----------------------------------------------------------------------

    def listing(self, directory: Inode) -> list[Entry]:
        """The entries of ``directory``, "." and ".." first: the order of its entries' node ids and of the
        offsets ``readdir`` hands out. The least recently used go beyond ``LISTED_ENTRIES`` entries in all, but
        never the last two: a folder too big for the bound stays while ``cp -r`` copies it and enters its
        subfolders one by one."""
        nodeid = directory.nodeid
        listings = self._listings
        entries = listings.get(nodeid)
        if entries is not None:
            with self._lock:  # now the last used
                if nodeid in listings:
                    listings[nodeid] = listings.pop(nodeid)
            return entries
        node, fs = directory.node, directory.fs
        if not node.is_dir:
            raise NotADirectoryError(directory.path())
        parent = directory.parent or directory
        entries = [(".", node, fs), ("..", parent.node, parent.fs), *self.tree.listing(node, fs)]
        with self._lock:
            kept = listings.get(nodeid)
            if kept is not None:
                return kept  # another thread listed it meanwhile: one list, so one order of indexes
            listings[nodeid] = entries
            self._listed += len(entries)
            while self._listed > LISTED_ENTRIES and len(listings) > 2:
                self._drop_listing(next(iter(listings)))
        return entries

    def _drop_listing(self, nodeid: int) -> None:
        dropped = self._listings.pop(nodeid, None)
        if dropped is not None:
            self._listed -= len(dropped)
            self._indexes.pop(nodeid, None)

    def index(self, directory: Inode, name: str) -> int:
        """Where entry ``name`` is in ``listing(directory)``, or -1."""
        entries = self.listing(directory)
        names = self._indexes.get(directory.nodeid)
        if names is None:  # one made from an earlier listing holds too: a listing made again is the same
            names = {entry[0]: index for index, entry in enumerate(entries[2:], 2)}
            with self._lock:
                if self._listings.get(directory.nodeid) is entries:  # dropped with it, never alone
                    self._indexes[directory.nodeid] = names
        index = names.get(name, -1)
        if index < 0:  # a name the format finds under another spelling (HFS+ and APFS: NFD for NFC)
            kids = self.tree.entries(directory.node, directory.fs)
            found = kids.get(name)
            if found is not None:
                index = names.get(next((shown for shown, node in kids.items() if node is found), ""), -1)
        return index

    def stream(self, nodeid: int) -> Stream:
        """The opened file of ``nodeid``, opened on its first read and kept for the next ones."""
        stream = self._streams.get(nodeid)
        if stream is None:
            inode = self.get(nodeid)
            if inode.node.is_dir:
                raise IsADirectoryError(inode.path())
            stream = inode.fs.open(inode.node)
            with self._lock:
                streams = self._streams
                streams[nodeid] = stream
                if len(streams) > OPEN_STREAMS:
                    del streams[next(iter(streams))]
        return stream

    def is_open(self, nodeid: int) -> bool:
        return nodeid in self._streams


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
