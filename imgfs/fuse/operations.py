"""The FUSE requests answered from an image's tree: look-ups, attributes, listings, reads, links, xattrs.

Each handler gets the worker that replies, the request's ``unique`` and node id, and the request buffer
(its fixed part at ``kernel.IN_HEADER.size``). Open, opendir and flush answer ENOSYS: the kernel then stops
sending them (and release) for good, keeps every file's pages cached across opens and caches listings, which
spares two or three round trips per file. Domain errors become errno here: an ``ImageError`` is EIO plus one
log line naming the path; nothing that would write is ever allowed (EROFS).
"""

from __future__ import annotations

import collections
import errno
import itertools
import logging
import os
import struct
import threading
from typing import Callable, Optional

from imgfs.errors import ImageError
from imgfs.filesystems.base import Filesystem, Node
from imgfs.fuse import kernel
from imgfs.fuse.inodes import ENOATTR, TIMEOUT, Entry, Inode, Inodes, errno_of, may_execute, pack_entry
from imgfs.fuse.session import Handler, Worker
from imgfs.image import OpenedImage
from imgfs.options import MountOptions

log = logging.getLogger("imgfs.fuse")

BODY = kernel.IN_HEADER.size  # where a request's own structure starts
PREFETCH_ENTRIES = 50_000  # directory entries parsed ahead of a walk, at most
SPLICE_MIN = 32 << 10  # smaller reads are cheaper copied than spliced (one syscall against three)
PUSH_FILE_MAX = 64 << 10  # files up to this size are pushed into the page cache ahead of their reads
PUSH_DIRECTORY_MAX = 16 << 20  # bytes pushed per directory, at most
NEGATIVE_ENTRY = kernel.ENTRY_OUT.pack(0, 0, TIMEOUT, TIMEOUT, 0, 0) + bytes(kernel.ATTR.size)
NO_ENTRY = bytes(kernel.ENTRY_OUT.size + kernel.ATTR.size)  # "." and "..": no attributes, no lookup counted
ATTR_OUT_HEAD = kernel.ATTR_OUT.pack(TIMEOUT, 0, 0)
ENCODING, ERRORS = "utf-8", "surrogateescape"
PADDING = [bytes(n) for n in range(8)]
WANTED = (kernel.ASYNC_READ | kernel.SPLICE_WRITE | kernel.DO_READDIRPLUS | kernel.READDIRPLUS_AUTO
          | kernel.NO_OPEN_SUPPORT | kernel.NO_OPENDIR_SUPPORT | kernel.PARALLEL_DIROPS | kernel.MAX_PAGES
          | kernel.CACHE_SYMLINKS | kernel.INIT_EXT)


class ImgfsOperations:
    """Answers the kernel's requests from ``image``'s tree."""

    def __init__(self, image: OpenedImage, options: MountOptions, mountpoint: str = "") -> None:
        self.image = image
        self.tree = image.tree
        self.options = options
        self.mountpoint = mountpoint
        self.inodes = Inodes(self.tree)
        self.has_xattrs = any(fs.has_xattrs for fs in self.tree.filesystems)
        self.flags = WANTED
        self._prefetching = False
        self._once = threading.Lock()  # requests are served by several threads: the prefetch starts once
        self.pusher = Pusher(self)
        self.notifier: Optional[Callable[[int, int, bytes], bool]] = None  # set by the session: notify-store
        self.handlers: dict[int, Handler] = {
            kernel.LOOKUP: self.lookup, kernel.FORGET: self.forget, kernel.BATCH_FORGET: self.batch_forget,
            kernel.GETATTR: self.getattr, kernel.READLINK: self.readlink, kernel.READ: self.read,
            kernel.READDIR: self.readdir, kernel.READDIRPLUS: self.readdirplus, kernel.STATFS: self.statfs,
            kernel.GETXATTR: self.getxattr, kernel.LISTXATTR: self.listxattr, kernel.ACCESS: self.access,
            kernel.OPEN: self.no_open, kernel.OPENDIR: self.no_open, kernel.FLUSH: self.no_open,
            kernel.RELEASE: self.done, kernel.RELEASEDIR: self.done, kernel.INTERRUPT: self.ignore,
        }

    def init(self, kernel_flags: int) -> int:
        """The INIT flags we want (the session keeps those the kernel offers)."""
        return self.flags

    def where(self, opcode: int, nodeid: int, request: bytearray, size: int) -> str:
        """The path a request is about, for debug lines (a LOOKUP's with the name looked up)."""
        inode = self.inodes.find(nodeid)
        path = inode.path() if inode is not None else "?"
        if opcode == kernel.LOOKUP:
            name = bytes(request[BODY : size - 1]).decode(ENCODING, ERRORS)
            path = f"{path.rstrip('/')}/{name}"
        return path

    def failed(self, exc: BaseException, opcode: int, nodeid: int) -> int:
        """The errno for a request that raised ``exc``; a damaged image or a bug gets one log line."""
        code = errno_of(exc)
        if code == errno.EIO:
            inode = self.inodes.find(nodeid)
            where = inode.path() if inode is not None else f"node {nodeid}"
            what = kernel.NAMES.get(opcode, str(opcode)).lower()
            if isinstance(exc, ImageError):
                log.error("%s %s: %s", what, where, exc)
            else:
                log.error("%s %s: unexpected %s: %s", what, where, type(exc).__name__, exc,
                          exc_info=log.isEnabledFor(logging.DEBUG))
        return code

    # -- names and attributes -------------------------------------------------------------------------

    def lookup(self, worker: Worker, unique: int, nodeid: int, request: bytearray, size: int) -> None:
        parent = self.inodes.get(nodeid)
        name = bytes(request[BODY : size - 1]).decode(ENCODING, ERRORS)
        index = self.inodes.index(parent, name) if parent.node.is_dir else -1
        if index < 0:
            worker.reply(unique, NEGATIVE_ENTRY)  # cached by the kernel as "no such entry"
            return
        _, node, fs = self.inodes.listing(parent)[index]
        check_empty(node, fs)
        shown = self.tree.attributes(node, fs)
        worker.reply(unique, pack_entry(self.inodes.child(parent, name, index, node, fs, shown.ino), shown))

    def forget(self, worker: Worker, unique: int, nodeid: int, request: bytearray, size: int) -> None:
        self.inodes.forget(nodeid, kernel.FORGET_IN.unpack_from(request, BODY)[0])

    def batch_forget(self, worker: Worker, unique: int, nodeid: int, request: bytearray, size: int) -> None:
        count = kernel.BATCH_FORGET_IN.unpack_from(request, BODY)[0]
        start = BODY + kernel.BATCH_FORGET_IN.size
        for forgotten, nlookup in struct.iter_unpack("<QQ", request[start : start + count * kernel.FORGET_ONE.size]):
            self.inodes.forget(forgotten, nlookup)

    def getattr(self, worker: Worker, unique: int, nodeid: int, request: bytearray, size: int) -> None:
        inode = self.inodes.get(nodeid)
        shown = self.tree.attributes(inode.node, inode.fs)
        worker.reply(unique, ATTR_OUT_HEAD + pack_entry(nodeid, shown)[kernel.ENTRY_OUT.size :])

    def readlink(self, worker: Worker, unique: int, nodeid: int, request: bytearray, size: int) -> None:
        target = self.inodes.get(nodeid).node.target
        if target is None:
            worker.error(unique, errno.EINVAL)
        else:
            worker.reply(unique, target)

    def access(self, worker: Worker, unique: int, nodeid: int, request: bytearray, size: int) -> None:
        """W_OK is EROFS; X_OK follows the mode bits as the kernel's own check would; R_OK is granted, since
        FUSE lets only the mounting user in without allow_other (which brings default_permissions)."""
        inode = self.inodes.get(nodeid)
        mask = kernel.ACCESS_IN.unpack_from(request, BODY)[0]
        _, _, _, _, uid, gid, _, _, _ = kernel.IN_HEADER.unpack_from(request)
        if mask & os.W_OK:
            worker.error(unique, errno.EROFS)
        elif mask & os.X_OK and not may_execute(self.tree.attributes(inode.node, inode.fs), uid, gid):
            worker.error(unique, errno.EACCES)
        else:
            worker.reply(unique)

    def statfs(self, worker: Worker, unique: int, nodeid: int, request: bytearray, size: int) -> None:
        block = self.image.fs.block_size or 2048
        blocks = -(-self.image.stream.size // block)
        worker.reply(unique, kernel.KSTATFS.pack(blocks, 0, 0, 0, 0, block, 255, block, 0))

    # -- extended attributes --------------------------------------------------------------------------

    def getxattr(self, worker: Worker, unique: int, nodeid: int, request: bytearray, size: int) -> None:
        if not self.has_xattrs:
            worker.error(unique, errno.ENOSYS)  # once, and the kernel stops asking (ls asks twice per file)
            return
        wanted = kernel.GETXATTR_IN.unpack_from(request, BODY)[0]
        name = bytes(request[BODY + kernel.GETXATTR_IN.size : size - 1]).decode(ENCODING, ERRORS)
        inode = self.inodes.get(nodeid)
        if not name.startswith(inode.fs.xattr_prefixes):
            worker.error(unique, errno.EOPNOTSUPP)  # ls stops asking this mount (a label, an ACL) after one
            return
        value = self.tree.shown_xattrs(inode.node, inode.fs, inode.path).get(name)
        if value is None:
            worker.error(unique, ENOATTR)
        else:
            self._sized(worker, unique, wanted, value)

    def listxattr(self, worker: Worker, unique: int, nodeid: int, request: bytearray, size: int) -> None:
        if not self.has_xattrs:
            worker.error(unique, errno.ENOSYS)
            return
        inode = self.inodes.get(nodeid)
        shown = self.tree.shown_xattrs(inode.node, inode.fs, inode.path)
        names = b"".join(name.encode(ENCODING, ERRORS) + b"\0" for name in shown)
        self._sized(worker, unique, kernel.GETXATTR_IN.unpack_from(request, BODY)[0], names)

    @staticmethod
    def _sized(worker: Worker, unique: int, wanted: int, value: bytes) -> None:
        """The value, or its size when asked with size 0, or ERANGE when it does not fit."""
        if wanted == 0:
            worker.reply(unique, kernel.GETXATTR_OUT.pack(len(value), 0))
        elif len(value) > wanted:
            worker.error(unique, errno.ERANGE)
        else:
            worker.reply(unique, value)

    # -- open, close: not needed ----------------------------------------------------------------------

    def no_open(self, worker: Worker, unique: int, nodeid: int, request: bytearray, size: int) -> None:
        worker.error(unique, errno.ENOSYS)

    def done(self, worker: Worker, unique: int, nodeid: int, request: bytearray, size: int) -> None:
        worker.reply(unique)

    def ignore(self, worker: Worker, unique: int, nodeid: int, request: bytearray, size: int) -> None:
        pass

    # -- data -----------------------------------------------------------------------------------------

    def read(self, worker: Worker, unique: int, nodeid: int, request: bytearray, size: int) -> None:
        """Plain extents of SPLICE_MIN bytes or more are spliced from the image; everything else is copied."""
        _, offset, length, _, _, _, _ = kernel.READ_IN.unpack_from(request, BODY)
        stream = self.inodes.stream(nodeid)
        count = max(0, min(length, stream.size - offset))
        worker.reply_read(unique, stream, offset, count,
                          stream.file_ranges(offset, count) if count >= SPLICE_MIN else None)
        if offset == 0 and stream.size <= PUSH_FILE_MAX:
            directory = self.inodes.directory_of(nodeid)
            if directory is not None:
                self.pusher.read_one_of(directory)

    # -- listings -------------------------------------------------------------------------------------

    def readdir(self, worker: Worker, unique: int, nodeid: int, request: bytearray, size: int) -> None:
        self._readdir(worker, unique, nodeid, request, plus=False)

    def readdirplus(self, worker: Worker, unique: int, nodeid: int, request: bytearray, size: int) -> None:
        self._readdir(worker, unique, nodeid, request, plus=True)

    def _readdir(self, worker: Worker, unique: int, nodeid: int, request: bytearray, plus: bool) -> None:
        """Entries from index ``offset`` on, as many as fit; each entry's offset is the index of the next.
        READDIRPLUS gives each entry's attributes, so that ``ls -l`` and ``cp -r`` need no LOOKUP; the kernel
        asks for it when a walk stats what it lists (READDIRPLUS_AUTO), plain READDIR for ``find``."""
        _, offset, room, _, _, _, _ = kernel.READ_IN.unpack_from(request, BODY)
        directory = self.inodes.get(nodeid)
        entries = self._listing(directory)
        records, used, index = [], 0, offset
        while index < len(entries):
            record = self._record(directory, index, entries[index], plus)
            if used + len(record) > room:
                if plus and index >= 2:
                    self.inodes.forget(kernel.ENTRY_OUT.unpack_from(record)[0], 1)  # not sent: not looked up
                break
            records.append(record)
            used += len(record)
            index += 1
        worker.reply(unique, b"".join(records))

    def _listing(self, directory: Inode) -> list[Entry]:
        """The entries of ``directory``, "." and ".." first (``Inodes.listing``); the first listing below the
        root starts the prefetch."""
        if directory.parent is not None and not self._prefetching:
            with self._once:
                if not self._prefetching:
                    self._start_prefetch()
        return self.inodes.listing(directory)

    def _start_prefetch(self) -> None:
        """Once a walk of the tree begins (a directory below the root is listed), parse the rest ahead of it in
        the background. Not earlier: reads right after the mount would wait for the GIL."""
        self._prefetching = True
        threading.Thread(target=self._prefetch, name="imgfs-prefetch", daemon=True).start()

    def _prefetch(self) -> None:
        """Parse directories breadth first, so that the walk finds them ready; bounded, so that a huge image is
        not read whole into memory. ``Tree.walk`` enters each directory once; a damaged one is reported when
        someone lists it."""
        try:
            for _ in itertools.islice(self.tree.walk("/", on_error=_quiet, breadth_first=True), PREFETCH_ENTRIES):
                pass
        except Exception as exc:  # noqa: BLE001 - a reader's bug: the entry that meets it reports it again
            log.debug("prefetch stopped: %s: %s", type(exc).__name__, exc)

    def _record(self, directory: Inode, index: int, entry: Entry, plus: bool) -> bytes:
        name, node, fs = entry
        raw = name.encode(ENCODING, ERRORS)
        if not plus:  # a name, an inode number and a type: no attributes to make (a million, for a big find)
            head = kernel.DIRENT.pack(self.tree.shown_ino(node, fs), index + 1, len(raw),
                                      kernel.dirent_type(node.mode)) + raw
            return head + PADDING[-len(head) % 8]
        shown = self.tree.attributes(node, fs)
        head = kernel.DIRENT.pack(shown.ino, index + 1, len(raw), kernel.dirent_type(shown.mode)) + raw
        head = (NO_ENTRY if index < 2 or not readable(node, fs)
                else pack_entry(self.inodes.child(directory, name, index, node, fs, shown.ino), shown)) + head
        return head + PADDING[-len(head) % 8]


def _quiet(path: str, exc: Exception) -> None:
    log.debug("prefetch skipped %s: %s", path, exc)


def check_empty(node: Node, fs: Filesystem) -> None:
    """An empty file is never read (the kernel knows there is nothing to ask for), so one that cannot be
    opened (a damaged entry) fails here, at look-up, where its EIO still reaches the user."""
    if node.size == 0 and node.is_file:
        fs.open(node)


def readable(node: Node, fs: Filesystem) -> bool:
    """False for an empty file that cannot be opened: listed without attributes, so that the kernel looks it
    up (and gets EIO) before anyone opens it."""
    try:
        check_empty(node, fs)
    except Exception:  # noqa: BLE001 - the look-up that follows reports it
        return False
    return True


class Pusher:
    """Small files stored into the kernel's page cache before they are read.

    Reading one small file of a directory (from its start) suggests that its small siblings come next: ``cp -r``,
    ``tar``, a file manager's thumbnails. They are pushed in listing order with FUSE's notify-store, from a
    thread of their own, so that their reads find the pages cached and need no round trip at all. Only files
    the kernel holds an inode for (listed with attributes) can be stored; ``ls -l`` and ``find`` read nothing
    and push nothing. A directory is pushed once, and at most PUSH_DIRECTORY_MAX bytes of it.
    """

    def __init__(self, operations: ImgfsOperations) -> None:
        self.operations = operations
        self._done: set[int] = set()  # directories pushed (by node id)
        self._queue: collections.deque[Inode] = collections.deque()
        self._wake = threading.Event()
        self._lock = threading.Lock()
        self._thread: Optional[threading.Thread] = None
        self.stored = 0  # files stored (a statistic)

    def read_one_of(self, directory: Inode) -> None:
        if directory.nodeid in self._done:
            return
        with self._lock:  # reads come from several threads
            if directory.nodeid in self._done:
                return
            self._done.add(directory.nodeid)
            self._queue.append(directory)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="imgfs-push", daemon=True)
                self._thread.start()
        self._wake.set()

    def _run(self) -> None:
        while True:
            self._wake.wait()
            self._wake.clear()
            while self._queue:
                try:
                    self._push(self._queue.popleft())
                except Exception as exc:  # noqa: BLE001 - pushing is only a head start: reads still work
                    log.debug("push skipped: %s", exc)

    def _push(self, directory: Inode) -> None:
        """The directory's small files, in listing order, until one cannot be stored: the kernel holds no
        inode for it (the directory was listed without attributes), so it holds none for the others either."""
        inodes, budget, writer = self.operations.inodes, PUSH_DIRECTORY_MAX, self.operations.notifier
        for index, (_, node, _) in enumerate(inodes.listing(directory)):
            if budget <= 0 or writer is None:
                return
            if index < 2 or not 0 < node.size <= PUSH_FILE_MAX or not node.is_file:
                continue
            nodeid = inodes.entry_id(directory, index)
            if inodes.is_open(nodeid):
                continue  # read already
            stream = inodes.stream(nodeid)  # opened and kept, as its reads would
            data = stream.pread(0, stream.size)
            if not writer(nodeid, 0, data):
                return
            self.stored += 1
            budget -= len(data)
