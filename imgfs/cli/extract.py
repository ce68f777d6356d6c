"""``imgfs extract IMAGE [PATH] DEST``: copy files out of an image without mounting it, as ``7z x`` and
``bsdtar -x`` do.

The whole image goes into DEST; a PATH (file or folder) goes into DEST under its own name. Modes, times,
symbolic links, hard links and device files are kept, owners too when run as root, and extended
attributes where DEST can hold them. A name that could lead out of DEST (empty, ``.``, ``..``, one with
``/`` or NUL) is refused, and nothing is ever written through a symbolic link: every entry is made inside
its folder's descriptor with O_NOFOLLOW/O_EXCL. A damaged entry fails alone, with one line; the rest goes on.

The tree is walked first (directories are made as they are found), then the files are written: small ones
by the main thread, large ones in pieces by a few threads (reads and writes, and decoders, release the GIL).
"""

from __future__ import annotations

import argparse
import errno
import os
import stat
import sys
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Union

from imgfs.cli.commands import USER_ERRORS as PATH_ERRORS
from imgfs.cli.commands import add_options_argument, resolve
from imgfs.cli.common import open_for_user
from imgfs.cli.helper import Helper
from imgfs.cli.progress import terminal_progress
from imgfs.errors import ImageError
from imgfs.filesystems.base import Filesystem, Node
from imgfs.image import OpenedImage
from imgfs.io.stream import Stream
from imgfs.layer import Progress, no_progress
from imgfs.options import parse_options
from imgfs.tree import Tree

PIECE_SIZE = 4 << 20  # a large file is copied in pieces of this size, a few at once (decoders run in parallel)
SMALL_SIZE = 2 * PIECE_SIZE  # files up to this size are copied whole by the main thread
SHARE_FILES = 2000  # fewer small files than this are not worth a second process
MAX_PENDING = 8  # large files being copied at once (each holds a descriptor)
THREADS = min(4, os.cpu_count() or 1)  # more only crowd the memory bus when the pieces need no decoding
NEW_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
DIRECTORY = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
IS_ROOT = os.geteuid() == 0
USER = (os.geteuid(), os.getegid())


class ExtractError(Exception):
    pass


USER_ERRORS = (ExtractError, *PATH_ERRORS)


def add_arguments(name: str, parser: argparse.ArgumentParser) -> None:
    parser.add_argument("image", help="the image file (or folder, for a sparse bundle)")
    parser.add_argument("paths", nargs="+", metavar="[PATH] DEST",
                        help="what to copy (default: everything) and the folder to copy it into (made if missing)")
    parser.add_argument("-f", "--force", action="store_true", help="replace files that already exist in DEST")
    add_options_argument(parser)


def run(name: str, args: argparse.Namespace) -> int:
    if len(args.paths) > 2:
        raise ExtractError("expected at most PATH and DEST after the image")
    path, dest = ("/", args.paths[0]) if len(args.paths) == 1 else args.paths
    image = open_for_user(args.image, parse_options(args.options))
    try:
        image.require_content()
        return Extraction(image, dest, args.force, terminal_progress()).run(path)
    finally:
        image.close()


@dataclass
class Entry:
    """One thing to make: ``name`` in the folder ``parent`` (an index into ``Extraction.folders``)."""

    parent: int
    name: str
    node: Node
    fs: Filesystem
    shown: str  # its path in the image, for messages


@dataclass
class _Large:
    """A large file whose pieces the threads are copying."""

    entry: Entry
    fd: int
    mode: int
    size: int
    pieces: list[Future[int]]


@dataclass
class Extraction:
    image: OpenedImage
    dest: str
    force: bool = False
    progress: Progress = no_progress
    folders: list[str] = field(default_factory=list)  # the folders made, as paths: entries point into this
    failures: int = 0
    skipped: dict[str, int] = field(default_factory=dict)  # what DEST could not take, by reason
    done_size: int = 0
    total_size: int = 0
    _restore_later: list[tuple[int, Node, Filesystem]] = field(default_factory=list)  # folders: mode, times
    _pending: list[_Large] = field(default_factory=list)  # large files being copied by the threads
    _pool: ThreadPoolExecutor = field(init=False)
    _helper_done: int = 0  # the bytes the second process has written, as it last said

    @property
    def tree(self) -> Tree:
        return self.image.tree

    def run(self, path: str) -> int:
        node, fs = resolve(self.tree, path)
        top = "/" + "/".join(part for part in path.split("/") if part not in ("", "."))
        os.makedirs(self.dest, exist_ok=True)
        self.folders.append(self.dest)
        # DEST itself keeps its own mode and times
        if node.is_dir and top == "/":
            files = self._walk(0, node, fs, "")
        else:
            files = []
            entry = Entry(0, os.path.basename(top), node, fs, top)
            if node.is_dir:
                files = self._folder(entry)
            elif self._check(entry):
                files = [entry]
        self.total_size = sum(e.node.size for e in files)
        self.progress("extracting", 0, self.total_size)  # the clock starts
        umask = os.umask(0)  # the image's modes, exactly
        try:
            self._write_files(files)
            self._finish_folders()
        finally:
            os.umask(umask)
        self.progress("extracting", self.total_size, self.total_size)
        for reason, count in self.skipped.items():
            print(f"imgfs: warning: {count} {reason}", file=sys.stderr)
        return 1 if self.failures else 0

    # -- the walk: folders made as they are found, everything else listed -----------------------------------

    def _walk(self, index: int, node: Node, fs: Filesystem, shown: str) -> list[Entry]:
        files: list[Entry] = []
        try:
            listing = self.tree.listing(node, fs)
        except ImageError as exc:
            self._failed(shown or "/", str(exc))
            return files
        for name, child, child_fs in listing:
            entry = Entry(index, name, child, child_fs, f"{shown}/{name}")
            if not self._check(entry):
                continue
            if child.is_dir:
                files += self._folder(entry)
            else:
                files.append(entry)
        return files

    def _folder(self, entry: Entry) -> list[Entry]:
        path = os.path.join(self.folders[entry.parent], entry.name)
        try:
            os.mkdir(path, 0o700)  # its own mode once it is filled
        except FileExistsError:
            if not stat.S_ISDIR(os.lstat(path).st_mode):  # never follow a symbolic link out of DEST
                self._failed(entry.shown, f"{path} exists and is not a folder")
                return []
        except OSError as exc:
            self._failed(entry.shown, exc.strerror or str(exc))
            return []
        self.folders.append(path)
        index = len(self.folders) - 1
        self._restore_later.append((index, entry.node, entry.fs))
        return self._walk(index, entry.node, entry.fs, entry.shown)

    def _check(self, entry: Entry) -> bool:
        """Refuse a name that is not one plain component: it could write outside DEST."""
        name = entry.name
        if name in ("", ".", "..") or "/" in name or "\0" in name:
            self._failed(entry.shown, f"refused: the name {name!r} would lead out of the destination folder")
            return False
        return True

    def _failed(self, shown: str, reason: str) -> None:
        self.failures += 1
        print(f"imgfs: {shown}: {reason}", file=sys.stderr)

    # -- files, links, devices -----------------------------------------------------------------------------

    def _write_files(self, entries: list[Entry]) -> None:
        """Each entry in walk order. With many small files, a second process writes half of them (per file, the
        work is Python and system calls: one process cannot use two processors); large files go in pieces to
        threads while the rest goes on."""
        mine, theirs = _share(entries)
        helper = Helper.start(lambda report: self._helper_share(theirs, report)) if theirs else None
        if helper is None:
            mine = entries
        links: dict[int, str] = {}  # inode number -> the path its first name was written to
        with ThreadPoolExecutor(THREADS) as self._pool:
            try:
                self._write_list(mine, links, helper)
            finally:
                while self._pending:
                    self._finish_large(self._pending.pop(0))
        if helper is not None:
            result = helper.join()
            self._helper_done = helper.done
            self.failures += result.get("failures", 0)
            for reason, count in result.get("skipped", {}).items():
                self.skipped[reason] = self.skipped.get(reason, 0) + count
            if "error" in result:
                self._failed(self.dest, f"the second process failed: {result['error']}")

    def _write_list(self, entries: list[Entry], links: dict[int, str], helper: Optional[Helper] = None) -> None:
        dir_fd, dir_index = -1, -1
        try:
            for count, entry in enumerate(entries):
                if entry.parent != dir_index:
                    if dir_fd >= 0:
                        os.close(dir_fd)
                    dir_fd, dir_index = os.open(self.folders[entry.parent], DIRECTORY), entry.parent
                self._write_entry(entry, dir_fd, links)
                if helper is not None and count % 256 == 0:
                    self._helper_done = helper.poll()
        finally:
            if dir_fd >= 0:
                os.close(dir_fd)

    def _helper_share(self, entries: list[Entry], report: Callable[[int], None]) -> dict[str, Any]:
        """What the second process does: its share of small files, its progress through ``report``."""
        calls = iter(range(1 << 62))

        def progress(what: str, done: int, total: int) -> None:
            if next(calls) % 128 == 127:
                report(self.done_size)

        self.progress = progress
        self.done_size, self.failures, self.skipped = 0, 0, {}
        self._write_list(entries, {})
        report(self.done_size)
        return {"failures": self.failures, "skipped": self.skipped}

    def _write_entry(self, entry: Entry, dir_fd: int, links: dict[int, str]) -> None:
        node = entry.node
        mode = node.mode & ~self.tree.presentation.umask  # as the tree shows it (-o umask=)
        ino = self.tree.attributes(node, entry.fs).ino if node.nlink > 1 else 0  # unique across volumes
        if ino in links:
            self._link(entry, dir_fd, links[ino])
            return
        try:
            if self.force:
                self._remove_old(entry.name, dir_fd)
            if node.is_file:
                self._file(entry, dir_fd, mode)
            else:
                self._special(entry, dir_fd, mode)
        except ImageError as exc:
            self._failed(entry.shown, str(exc))
            _unlink(entry.name, dir_fd)
            return
        except OSError as exc:
            if exc.errno == errno.EPERM and not (node.is_file or node.is_symlink):
                self._skip("device files left out (only root may make them)")
            else:
                self._failed(entry.shown, _os_reason(exc))
            return
        if ino:
            links[ino] = os.path.join(self.folders[entry.parent], entry.name)

    def _file(self, entry: Entry, dir_fd: int, mode: int) -> None:
        """A small file whole, now; a large one in pieces by the threads, finished later (``_finish_large``)."""
        stream = entry.fs.open(entry.node)
        fd = os.open(entry.name, NEW_FILE, mode & 0o1777, dir_fd=dir_fd)  # set-id bits after chown
        size = stream.size
        if size > SMALL_SIZE:
            pieces = [self._pool.submit(_copy_piece, stream, fd, offset, min(PIECE_SIZE, size - offset))
                      for offset in range(0, size, PIECE_SIZE)]
            self._pending.append(_Large(entry, fd, mode, size, pieces))
            if len(self._pending) > MAX_PENDING:
                self._finish_large(self._pending.pop(0))
            return
        try:
            data = stream.pread(0, size)
            if len(data) != size:
                raise ImageError(f"read {len(data)} of {size} bytes: the image ends early")
            if size:
                os.write(fd, data)
            self._file_attributes(entry, fd, mode)
        finally:
            os.close(fd)
        self._advance(size)

    def _finish_large(self, large: _Large) -> None:
        entry = large.entry
        try:
            for piece in large.pieces:
                self._advance(piece.result())
            os.ftruncate(large.fd, large.size)  # a hole at the end is a length too
            self._file_attributes(entry, large.fd, large.mode)
        except (ImageError, OSError) as exc:
            for piece in large.pieces:
                piece.cancel()
            self._failed(entry.shown, _os_reason(exc) if isinstance(exc, OSError) else str(exc))
            _unlink(os.path.join(self.folders[entry.parent], entry.name), None)
        finally:
            os.close(large.fd)

    def _special(self, entry: Entry, dir_fd: int, mode: int) -> None:
        """A symbolic link or a device file, a FIFO, a socket: made by name inside its folder."""
        node, name = entry.node, entry.name
        if node.is_symlink:
            os.symlink(node.target or b"", name, dir_fd=dir_fd)
        else:
            os.mknod(name, mode, node.rdev, dir_fd=dir_fd)
        if IS_ROOT and node.uid is not None and (node.uid, node.gid) != USER:
            os.chown(name, node.uid, node.gid if node.gid is not None else -1, dir_fd=dir_fd, follow_symlinks=False)
        if entry.fs.has_xattrs:
            self._xattrs(node, entry.fs, entry.shown, os.path.join(self.folders[entry.parent], name))
        os.utime(name, ns=(node.atime_ns, node.mtime_ns), dir_fd=dir_fd, follow_symlinks=False)

    def _file_attributes(self, entry: Entry, fd: int, mode: int) -> None:
        """Owner (as root), set-id bits, extended attributes and times of a file, through its descriptor."""
        node = entry.node
        if IS_ROOT and node.uid is not None and (node.uid, node.gid) != USER:
            os.fchown(fd, node.uid, node.gid if node.gid is not None else -1)
        if mode & 0o6000:
            os.fchmod(fd, stat.S_IMODE(mode))  # after chown, which clears them
        if entry.fs.has_xattrs:
            self._xattrs(node, entry.fs, entry.shown, fd)
        os.utime(fd, ns=(node.atime_ns, node.mtime_ns))

    def _link(self, entry: Entry, dir_fd: int, first: str) -> None:
        try:
            if self.force:
                self._remove_old(entry.name, dir_fd)
            os.link(first, entry.name, dst_dir_fd=dir_fd, follow_symlinks=False)
        except OSError as exc:
            self._failed(entry.shown, _os_reason(exc))

    def _remove_old(self, name: str, dir_fd: int) -> None:
        try:
            if not stat.S_ISDIR(os.lstat(name, dir_fd=dir_fd).st_mode):
                os.unlink(name, dir_fd=dir_fd)
        except FileNotFoundError:
            pass

    def _advance(self, size: int) -> None:
        self.done_size += size
        if self.progress is not no_progress:
            self.progress("extracting", self.done_size + self._helper_done, self.total_size)

    def _skip(self, reason: str) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + 1

    # -- attributes ------------------------------------------------------------------------------------------

    def _xattrs(self, node: Node, fs: Filesystem, shown: str, target: Union[int, str]) -> None:
        try:
            attributes = self.tree.shown_xattrs(node, fs, lambda: shown)
        except ImageError as exc:
            self._failed(shown, f"extended attributes: {exc}")
            return
        for key, value in attributes.items():
            try:
                if isinstance(target, int):
                    os.setxattr(target, key, value)
                else:
                    os.setxattr(target, key, value, follow_symlinks=False)
            except OSError as exc:
                self._skip("extended attributes left out: the destination does not keep them"
                           if exc.errno in (errno.ENOTSUP, errno.EOPNOTSUPP) else
                           f"extended attributes left out: {exc.strerror}")

    def _finish_folders(self) -> None:
        """Each folder's owner, mode, attributes and times, deepest first (filling a folder changes its times,
        and a read-only folder could not be filled)."""
        for index, node, fs in reversed(self._restore_later):
            path = self.folders[index]
            try:
                if IS_ROOT and node.uid is not None:
                    os.chown(path, node.uid, node.gid if node.gid is not None else -1, follow_symlinks=False)
                if fs.has_xattrs:
                    self._xattrs(node, fs, path, path)
                os.chmod(path, stat.S_IMODE(self.tree.attributes(node, fs).mode), follow_symlinks=False)
                os.utime(path, ns=(node.atime_ns, node.mtime_ns), follow_symlinks=False)
            except OSError as exc:
                self._failed(path, _os_reason(exc))


_buffers = threading.local()  # one piece buffer per copying thread: fresh ones would cost page faults


def _share(entries: list[Entry]) -> tuple[list[Entry], list[Entry]]:
    """The entries this process writes, and those a second one may: half of the small files that have one
    name (hard links stay together here), the later half, so that each keeps its folders together."""
    small = [i for i, e in enumerate(entries) if e.node.is_file and e.node.nlink == 1 and e.node.size <= SMALL_SIZE]
    if len(small) < SHARE_FILES or (os.cpu_count() or 1) < 2:
        return entries, []
    theirs = set(small[len(small) // 2 :])
    return [e for i, e in enumerate(entries) if i not in theirs], [entries[i] for i in sorted(theirs)]


def _copy_piece(stream: Stream, fd: int, offset: int, length: int) -> int:
    buffer = getattr(_buffers, "buffer", None)
    if buffer is None:
        buffer = _buffers.buffer = bytearray(PIECE_SIZE)
    view = memoryview(buffer)[:length]
    got = stream.readinto(offset, view)
    if got != length:
        raise ImageError(f"read {got} of {length} bytes at {offset}: the image ends early")
    if not _zeros(buffer, length):  # an all-zero piece is left as a hole (a sparse file)
        written = 0
        while written < length:
            written += os.pwrite(fd, view[written:], offset + written)
    return length


def _zeros(buffer: bytearray, length: int) -> bool:
    """Whether a piece is all zeros: one probe answers for almost every piece of data."""
    return buffer[0] == buffer[length - 1] == buffer[length // 2] == 0 and buffer.count(0, 0, length) == length


def _unlink(name: str, dir_fd: Optional[int]) -> None:
    try:
        os.unlink(name, dir_fd=dir_fd)
    except OSError:
        pass


def _os_reason(exc: OSError) -> str:
    if exc.errno == errno.EEXIST:
        return "exists already (-f replaces it)"
    return exc.strerror or str(exc)
