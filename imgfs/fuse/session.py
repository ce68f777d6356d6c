"""The FUSE session: worker threads that read requests from ``/dev/fuse`` and write the replies.

No libfuse: the kernel protocol is a request header and a fixed structure per opcode, so a request costs
one ``readv``, one ``struct`` unpack and one ``write``. Replies to reads of plain extents are spliced: the
reply header goes into a pipe, the image's page-cache pages are spliced in after it, and the pipe is
spliced into ``/dev/fuse``, so that Python never touches those bytes. Everything else (decoded data, holes,
a pipe too small for the request) is read into a buffer kept per thread and written from there.

The session knows nothing of images: ``Operations`` (``imgfs.fuse.operations``) answers the requests.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import threading
from collections.abc import Sequence
from typing import Callable, Optional, Protocol

from imgfs.fuse import kernel
from imgfs.fuse.mount import Mounted

log = logging.getLogger("imgfs.fuse")

PAGE = 4096
MAX_PAGES = 256  # the kernel's default limit (fs.fuse.max_pages_limit): 1 MiB requests
REQUEST_BUFFER = 64 << 10  # requests are small: headers, names (replies to reads go the other way)
F_SETPIPE_SZ, F_GETPIPE_SZ = 1031, 1032
Piece = tuple[int, int, int]  # (fd, offset in it, length): bytes a reply may splice straight from a file


class Readable(Protocol):
    def readinto(self, offset: int, buf: memoryview) -> int: ...


# a request's handler: (the worker that replies, unique, node id, the request buffer, the request's length)
Handler = Callable[["Worker", int, int, bytearray, int], None]


class Operations(Protocol):
    handlers: dict[int, Handler]

    def failed(self, exc: BaseException, opcode: int, nodeid: int) -> int: ...

    def where(self, opcode: int, nodeid: int, request: bytearray, size: int) -> str: ...

    def init(self, kernel_flags: int) -> int: ...


class Session:
    """Serve ``operations`` on a mounted ``/dev/fuse`` with ``threads`` threads until it is unmounted."""

    def __init__(self, mounted: Mounted, operations: Operations, threads: int = 1, debug: bool = False,
                 on_ready: Optional[Callable[[], None]] = None, only_uids: Optional[set[int]] = None) -> None:
        self.mounted = mounted
        self.only_uids = only_uids  # allow_root: root and the mounting user; anyone else gets EACCES
        self.fd = mounted.fd
        self.operations = operations
        self.threads = max(1, threads)
        self.debug = debug
        self.on_ready = on_ready
        self.ready = threading.Event()
        self.max_read = MAX_PAGES * PAGE
        self.splice = hasattr(os, "splice")
        self.pipe_size = _pipe_capacity(self.max_read + 3 * PAGE)
        self.spliced = 0  # replies spliced (a statistic: counted without a lock, it may miss a few)

    # -- the loop -------------------------------------------------------------------------------------

    def run(self) -> None:
        """Every thread reads requests from ``/dev/fuse`` and answers what it reads, as libfuse's threads do: a
        slow read (decoding) holds up only its own thread. It also doubles small reads against a single
        serving thread (buffered random 4 KiB reads, median of nine mounts: 40k/s against 20k/s here): the
        round trip is mostly the kernel waking each side, and is cheapest when the daemon runs on the
        reader's processor, which several waiting threads make likelier (README, "Performance")."""
        others = [threading.Thread(target=self._serve, name=f"fuse-worker-{n}", daemon=True)
                  for n in range(1, self.threads)]
        for thread in others:
            thread.start()
        try:
            self._serve()
        finally:
            for thread in others:
                thread.join(timeout=5)

    def _serve(self) -> None:
        worker = Worker(self)
        buffer, fd = worker.request, self.fd
        unpack = kernel.IN_HEADER.unpack_from
        handlers, debug, only = self.operations.handlers, self.debug, self.only_uids
        try:
            while True:
                try:
                    size = os.readv(fd, [buffer])
                except OSError as exc:
                    if exc.errno in (errno.ENOENT, errno.EINTR, errno.EAGAIN):
                        continue  # a request interrupted before we read it
                    if exc.errno in (errno.ENODEV, errno.ECONNABORTED, errno.EBADF):
                        return  # unmounted
                    raise
                length, opcode, unique, nodeid, uid, _, pid, _, _ = unpack(buffer)
                if debug:
                    log.debug("%s %s (node %d, uid %d, pid %d)", kernel.NAMES.get(opcode, opcode),
                              self.operations.where(opcode, nodeid, buffer, size), nodeid, uid, pid)
                handler = handlers.get(opcode)
                if only is not None and uid not in only and handler is not None and opcode not in kernel.NO_REPLY:
                    worker.error(unique, errno.EACCES)
                    continue
                try:
                    if handler is not None:
                        handler(worker, unique, nodeid, buffer, size)
                    elif opcode == kernel.INIT:
                        self._init(worker, unique, buffer)
                    elif opcode == kernel.DESTROY:
                        worker.reply(unique)
                        return
                    elif opcode not in kernel.NO_REPLY:
                        worker.error(unique, errno.EROFS if opcode in kernel.WRITING else errno.ENOSYS)
                except Exception as exc:  # noqa: BLE001 - the daemon must survive anything
                    code = self.operations.failed(exc, opcode, nodeid)
                    if opcode not in kernel.NO_REPLY:
                        worker.error(unique, code)
        finally:
            worker.close()

    def _init(self, worker: Worker, unique: int, request: bytearray) -> None:
        major, minor, max_readahead, flags, flags2 = kernel.INIT_IN.unpack_from(request, kernel.IN_HEADER.size)
        if major != kernel.KERNEL_VERSION or minor < kernel.MIN_MINOR_VERSION:
            log.error("the kernel speaks FUSE %d.%d; imgfs needs 7.%d or later", major, minor,
                      kernel.MIN_MINOR_VERSION)
            worker.error(unique, errno.EPROTO)
            return
        if flags & kernel.INIT_EXT:
            flags |= flags2 << 32
        want = self.operations.init(flags) & flags
        if not want & kernel.SPLICE_WRITE:
            self.splice = False
        worker.reply(unique, kernel.INIT_OUT.pack(
            kernel.KERNEL_VERSION, min(minor, kernel.MINOR_VERSION), max_readahead, want & 0xFFFFFFFF,
            16, 12, PAGE, 1, MAX_PAGES, 0, want >> 32))
        self.ready.set()
        if self.on_ready is not None:
            self.on_ready()


    def store(self, nodeid: int, offset: int, data: bytes) -> bool:
        """Put ``data`` into the kernel's page cache of ``nodeid`` at ``offset`` before anyone asks: the read
        that follows needs no round trip. False when the kernel no longer knows the inode."""
        head = kernel.OUT_HEADER.size + kernel.NOTIFY_STORE_OUT.size
        message = kernel.OUT_HEADER.pack(head + len(data), kernel.NOTIFY_STORE, 0) + \
            kernel.NOTIFY_STORE_OUT.pack(nodeid, offset, len(data), 0)
        try:
            os.writev(self.fd, [message, data])
        except OSError:
            return False
        return True


def _pipe_capacity(wanted: int) -> int:
    """The size a splice pipe can get here: ``wanted`` if allowed (root), else fs.pipe-max-size."""
    read_end, write_end = os.pipe()
    try:
        for size in (wanted, _pipe_max_size()):
            try:
                return fcntl.fcntl(write_end, F_SETPIPE_SZ, size)
            except OSError:
                continue
        return fcntl.fcntl(write_end, F_GETPIPE_SZ)
    finally:
        os.close(read_end)
        os.close(write_end)


def _pipe_max_size() -> int:
    try:
        with open("/proc/sys/fs/pipe-max-size") as f:
            return int(f.read())
    except (OSError, ValueError):
        return 64 << 10


class Worker:
    """One serving thread's buffers and its way of replying."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self.fd = session.fd
        self.request = bytearray(max(REQUEST_BUFFER, kernel.MIN_READ_BUFFER))
        self._data = bytearray(kernel.OUT_HEADER.size + session.max_read)
        self._view = memoryview(self._data)
        self._pipe: Optional[tuple[int, int]] = None

    def close(self) -> None:
        self._drop_pipe()

    def reply(self, unique: int, payload: bytes = b"") -> None:
        self._write(kernel.OUT_HEADER.pack(kernel.OUT_HEADER.size + len(payload), 0, unique) + payload)

    def error(self, unique: int, code: int) -> None:
        self._write(kernel.OUT_HEADER.pack(kernel.OUT_HEADER.size, -code, unique))

    def _write(self, message: bytes | memoryview) -> None:
        try:
            os.write(self.fd, message)
        except OSError as exc:
            # ENOENT: the request was interrupted meanwhile; the others: unmounted meanwhile
            if exc.errno not in (errno.ENOENT, errno.ENODEV, errno.ECONNABORTED, errno.EBADF):
                raise

    def reply_read(self, unique: int, stream: Readable, offset: int, length: int,
                   pieces: Optional[Sequence[Piece]]) -> None:
        """Reply to a read of ``length`` bytes at ``offset`` of ``stream``: spliced from ``pieces`` (where those
        bytes lie in files) when given and they fit the pipe, else read into this thread's buffer."""
        if pieces and self.session.splice and self._splice(unique, length, pieces):
            return
        head = kernel.OUT_HEADER.size
        count = stream.readinto(offset, self._view[head : head + length])
        kernel.OUT_HEADER.pack_into(self._data, 0, head + count, 0, unique)
        self._write(self._view[: head + count])

    def _splice(self, unique: int, length: int, pieces: Sequence[Piece]) -> bool:
        # a pipe holds one page (or part of one) per slot: the header takes a slot, each piece its pages
        slots = 1 + sum((offset % PAGE + count + PAGE - 1) // PAGE for _, offset, count in pieces)
        if slots * PAGE > self.session.pipe_size:
            return False
        read_end, write_end = self._pipe or self._new_pipe()
        head = kernel.OUT_HEADER.size
        try:
            os.write(write_end, kernel.OUT_HEADER.pack(head + length, 0, unique))
            for fd, offset, count in pieces:
                while count:
                    moved = os.splice(fd, write_end, count, offset_src=offset, flags=os.SPLICE_F_NONBLOCK)
                    if moved <= 0:
                        raise OSError(errno.EIO, "the image ended inside a spliced extent")
                    offset += moved
                    count -= moved
            os.splice(read_end, self.fd, head + length)
        except OSError as exc:
            self._drop_pipe()  # whatever is left in it is garbage now
            if exc.errno == errno.ENOENT:
                return True  # the request was interrupted: nothing to reply to
            if exc.errno in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
                self.session.splice = False  # this kernel cannot: buffers from now on
            return False
        self.session.spliced += 1
        return True

    def _new_pipe(self) -> tuple[int, int]:
        read_end, write_end = os.pipe2(os.O_CLOEXEC)
        try:
            fcntl.fcntl(write_end, F_SETPIPE_SZ, self.session.pipe_size)
        except OSError:
            self.session.pipe_size = fcntl.fcntl(write_end, F_GETPIPE_SZ)
        self._pipe = (read_end, write_end)
        return self._pipe

    def _drop_pipe(self) -> None:
        if self._pipe is not None:
            for end in self._pipe:
                os.close(end)
            self._pipe = None
