"""The FUSE adapter: the only module that imports mfusepy.

It maps paths to nodes, nodes to ``stat`` dicts and streams to reads. Domain errors become errno here
(an ``ImageError`` is EIO plus a log line); every call that would write gets EROFS.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import functools
import itertools
import logging
import os
import struct
import threading
from typing import Any, Callable, Optional

from imgfs.errors import ImageError
from imgfs.filesystems.base import Filesystem, Node
from imgfs.image import OpenedImage
from imgfs.io.stream import Stream
from imgfs.options import MountOptions
from imgfs.tree import Attributes

# mfusepy looks for libfuse2 first; prefer libfuse3 and fall back to libfuse2.
if "FUSE_LIBRARY_PATH" not in os.environ:
    _fuse3 = ctypes.util.find_library("fuse3")
    if _fuse3:
        os.environ["FUSE_LIBRARY_PATH"] = _fuse3

import mfusepy  # noqa: E402

log = logging.getLogger(__name__)

TIMEOUT = 86400.0  # the image cannot change while mounted
BLKSIZE = 4096
_LINUX_X86_64_STAT = {"st_dev": 0, "st_ino": 8, "st_nlink": 16, "st_mode": 24, "st_uid": 28, "st_gid": 32,
                      "st_rdev": 40, "st_size": 48, "st_blksize": 56, "st_blocks": 64, "st_atimespec": 72,
                      "st_mtimespec": 88, "st_ctimespec": 104}
_STAT: Optional[struct.Struct] = (
    struct.Struct("<QQQIII4xQqqq qq qq qq 24x")
    if ctypes.sizeof(mfusepy.c_stat) == 144
    and all(getattr(mfusepy.c_stat, name, None) is not None and getattr(mfusepy.c_stat, name).offset == offset
            for name, offset in _LINUX_X86_64_STAT.items())
    else None)
FILL_DIR_PLUS = 2  # fuse_fill_dir_flags: the stat given is complete, for READDIRPLUS
READDIR_PLUS = 1  # fuse_readdir_flags: the kernel asked for READDIRPLUS
WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND


_PATH_ERRORS = {FileNotFoundError: errno.ENOENT, NotADirectoryError: errno.ENOTDIR,
                IsADirectoryError: errno.EISDIR}


def _fuse_errors(method: Callable) -> Callable:
    """Domain errors to errno; anything unexpected to EIO with one log line, never a crash."""

    @functools.wraps(method)
    def wrapper(self, *args):
        try:
            return method(self, *args)
        except mfusepy.FuseOSError:
            raise
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError) as exc:
            raise mfusepy.FuseOSError(_PATH_ERRORS[type(exc)]) from None
        except ImageError as exc:
            log.error("%s %s: %s", method.__name__, args[0] if args else "", exc)
            raise mfusepy.FuseOSError(errno.EIO) from None
        except Exception as exc:  # noqa: BLE001 - the daemon must survive anything
            log.error("%s %s: unexpected %s: %s", method.__name__, args[0] if args else "",
                      type(exc).__name__, exc, exc_info=log.isEnabledFor(logging.DEBUG))
            raise mfusepy.FuseOSError(errno.EIO) from None

    return wrapper


def _quiet(path: str, exc: Exception) -> None:
    log.debug("prefetch skipped %s: %s", path, exc)


def _read_only(*_args: Any) -> None:
    raise mfusepy.FuseOSError(errno.EROFS)


class ImgfsOperations(mfusepy.Operations):
    use_ns = True

    def __init__(self, image: OpenedImage, options: MountOptions, mountpoint: str = "",
                 on_ready: Optional[Callable[[], None]] = None) -> None:
        self.image = image
        self.mountpoint = mountpoint
        self.tree = image.tree
        self.options = options
        self._on_ready = on_ready
        self._handles: dict[int, Stream] = {}
        self._next_handle = itertools.count(1)
        self._handles_lock = threading.Lock()
        self.ready = False  # set once the kernel has called init: the mount is up
        self._readahead_raised = False
        self._prefetch_started = False
        self._has_xattrs = any(fs.has_xattrs for fs in self.tree.filesystems)

    # -- lifecycle ----------------------------------------------------------------------------------

    def init(self, path: str) -> None:
        self.ready = True
        if self._on_ready is not None:
            self._on_ready()

    def _start_prefetch(self) -> None:
        """Once a walk of the tree begins (a directory below the root is listed), parse the rest ahead
        of it in the background. Not earlier: reads right after the mount would wait for the GIL."""
        if not self._prefetch_started:
            self._prefetch_started = True
            threading.Thread(target=self._prefetch, name="imgfs-prefetch", daemon=True).start()

    def _prefetch(self) -> None:
        """Parse directories breadth first, so that the walk finds them ready; bounded, so that a huge
        image is not read whole into memory. A damaged directory is reported when someone lists it."""
        try:
            for _ in itertools.islice(self.tree.walk("/", on_error=_quiet, breadth_first=True), PREFETCH_ENTRIES):
                pass
        except Exception as exc:  # noqa: BLE001 - a reader's bug: the entry that meets it reports it again
            log.debug("prefetch stopped: %s: %s", type(exc).__name__, exc)

    # -- attributes ---------------------------------------------------------------------------------

    def _stat(self, st: Attributes) -> dict[str, int]:
        return {
            "st_mode": st.mode,
            "st_ino": st.ino,
            "st_nlink": st.nlink,
            "st_uid": st.uid,
            "st_gid": st.gid,
            "st_size": st.size,
            "st_blocks": (st.size + 511) // 512,
            "st_blksize": BLKSIZE,
            "st_rdev": st.rdev,
            "st_mtime": st.mtime_ns,
            "st_atime": st.atime_ns,
            "st_ctime": st.ctime_ns,
        }

    def _fill(self, buf: Any, st: Attributes) -> None:
        """Attributes straight into libfuse's struct stat: once per entry of a listing, so they are packed in
        one call where the struct's layout is the known Linux x86-64 one, and set field by field elsewhere."""
        mtime, atime, ctime = (divmod(st.mtime_ns, 1_000_000_000), divmod(st.atime_ns, 1_000_000_000),
                               divmod(st.ctime_ns, 1_000_000_000))
        if _STAT is not None:
            ctypes.memmove(ctypes.addressof(buf), _STAT.pack(
                0, st.ino, st.nlink, st.mode, st.uid, st.gid, st.rdev, st.size, BLKSIZE,
                (st.size + 511) // 512, *atime, *mtime, *ctime), _STAT.size)
            return
        buf.st_mode, buf.st_ino, buf.st_nlink, buf.st_uid, buf.st_gid = st.mode, st.ino, st.nlink, st.uid, st.gid
        buf.st_size, buf.st_blocks, buf.st_blksize, buf.st_rdev = st.size, (st.size + 511) // 512, BLKSIZE, st.rdev
        buf.st_atimespec.tv_sec, buf.st_atimespec.tv_nsec = atime
        buf.st_mtimespec.tv_sec, buf.st_mtimespec.tv_nsec = mtime
        buf.st_ctimespec.tv_sec, buf.st_ctimespec.tv_nsec = ctime

    @_fuse_errors
    def getattr(self, path: str, fh: Optional[int] = None) -> dict[str, int]:
        return self._stat(self.tree.stat_path(path))

    @_fuse_errors
    def fill_stat(self, path: str, buf: Any) -> None:
        self._fill(buf, self.tree.stat_path(path))

    @_fuse_errors
    def listing(self, path: str) -> list[tuple[str, Node, Filesystem]]:
        """A directory's entries with their nodes and filesystems, "." and ".." first."""
        node, fs = self.tree.resolve(path)
        if not node.is_dir:
            raise NotADirectoryError(path)
        if path != "/":
            self._start_prefetch()
        parent, parent_fs = self.tree.resolve(path.rsplit("/", 1)[0]) if path != "/" else (node, fs)
        return [(".", node, fs), ("..", parent, parent_fs), *self.tree.listing(node, fs)]

    @_fuse_errors
    def readdir(self, path: str, fh: int) -> list:
        attributes = self.tree.attributes
        return [(name, {"st_mode": (st := attributes(node, fs)).mode, "st_ino": st.ino}, 0)
                for name, node, fs in self.listing(path)]

    @_fuse_errors
    def readlink(self, path: str) -> str:
        node = self.tree.lookup(path)
        if node.target is None:
            raise mfusepy.FuseOSError(errno.EINVAL)
        return node.target.decode("utf-8", "surrogateescape")

    @_fuse_errors
    def statfs(self, path: str) -> dict[str, int]:
        block = self.image.fs.block_size
        size = self.image.stream.size
        return {"f_bsize": block, "f_frsize": block, "f_blocks": -(-size // block), "f_bfree": 0,
                "f_bavail": 0, "f_files": 0, "f_ffree": 0, "f_favail": 0, "f_namemax": 255}

    @_fuse_errors
    def getxattr(self, path: str, name: str, position: int = 0) -> bytes:
        if not self._has_xattrs:
            # ENOSYS once, and the kernel stops asking: ls -l asks twice per file otherwise
            raise mfusepy.FuseOSError(errno.ENOSYS)
        value = self.tree.xattrs(path).get(name)
        if value is None:
            raise mfusepy.FuseOSError(mfusepy.ENOATTR)
        return value

    @_fuse_errors
    def listxattr(self, path: str) -> list[str]:
        if not self._has_xattrs:
            raise mfusepy.FuseOSError(errno.ENOSYS)
        return list(self.tree.xattrs(path))

    @_fuse_errors
    def access(self, path: str, amode: int) -> int:
        self.tree.lookup(path)
        if amode & os.W_OK:
            raise mfusepy.FuseOSError(errno.EROFS)
        return 0

    # -- data ---------------------------------------------------------------------------------------

    @_fuse_errors
    def open(self, path: str, flags: int) -> int:
        if flags & WRITE_FLAGS:
            raise mfusepy.FuseOSError(errno.EROFS)
        if not self._readahead_raised:  # not in init: the kernel sets the readahead when init has replied
            self._readahead_raised = True
            raise_readahead(self.mountpoint)
        stream = self.tree.open(path)
        handle = next(self._next_handle)
        with self._handles_lock:
            self._handles[handle] = stream
        return handle

    def _stream(self, fh: int) -> Stream:
        stream = self._handles.get(fh)
        if stream is None:
            raise mfusepy.FuseOSError(errno.EBADF)
        return stream

    @_fuse_errors
    def read(self, path: str, size: int, offset: int, fh: int) -> bytes:
        return self._stream(fh).pread(offset, size)

    @_fuse_errors
    def read_into(self, path: str, address: int, size: int, offset: int, fh: int) -> int:
        """Read straight into libfuse's buffer: no ``bytes`` made, no copy for plain extents. ``path`` is only
        for the log line of a damaged file."""
        view = memoryview((ctypes.c_char * size).from_address(address)).cast("B")
        return self._stream(fh).readinto(offset, view)

    @_fuse_errors
    def release(self, path: str, fh: int) -> int:
        with self._handles_lock:
            self._handles.pop(fh, None)
        return 0

    # -- everything that would write ----------------------------------------------------------------

    chmod = chown = create = mkdir = mknod = rename = rmdir = symlink = link = _read_only
    truncate = unlink = utimens = write = setxattr = removexattr = _read_only


class _Fuse(mfusepy.FUSE):
    """mfusepy's FUSE with the hot paths done directly: reads go into libfuse's buffer (zero-copy),
    getattr fills libfuse's struct stat, and readdir answers READDIRPLUS with full attributes, so
    that an ``ls -l`` of a directory needs no LOOKUP round trip per entry."""

    def _path(self, path: Optional[bytes]) -> str:
        return "" if path is None else path.decode(self.encoding, self.errors)

    def _wrapper(self, func, *args, **kwargs):
        # libfuse's worker threads are not Python threads: for each callback ctypes would create a
        # Python thread state and destroy it on return, which costs more than the work. Keep one.
        if not getattr(_thread_state, "kept", False):
            _PyGILState_Ensure()
            _thread_state.kept = True
        return super()._wrapper(func, *args, **kwargs)

    def read(self, path: Optional[bytes], buf, size: int, offset: int, fip) -> int:
        address = ctypes.cast(buf, ctypes.c_void_p).value or 0
        try:
            return self.operations.read_into(self._path(path), address, size, offset, fip.contents.fh)
        except mfusepy.FuseOSError as exc:
            return -(exc.errno or errno.EIO)

    def fgetattr(self, path: Optional[bytes], buf, fip) -> int:
        ctypes.memset(buf, 0, ctypes.sizeof(mfusepy.c_stat))
        self.operations.fill_stat(self._path(path), buf.contents)
        return 0

    def readdir_fuse_3(self, path: Optional[bytes], buf, filler, offset: int, fip, flags: int) -> int:
        # Offsets (entry index + 1) on every entry: libfuse 3.14 passes READDIRPLUS attributes on to the
        # kernel only in that mode; without offsets it sends them with inode 0, which the kernel ignores.
        plus = bool(flags & READDIR_PLUS)
        st = mfusepy.c_stat()
        entries = self.operations.listing(self._path(path))
        attributes = self.operations.tree.attributes
        for index in range(offset, len(entries)):
            name, node, fs = entries[index]
            shown = attributes(node, fs)
            if plus:
                self.operations._fill(st, shown)
            else:
                st.st_mode, st.st_ino = shown.mode, shown.ino
            if filler(buf, name.encode(self.encoding, self.errors), st, index + 1, FILL_DIR_PLUS if plus else 0):
                break
        return 0


READAHEAD_KB = 1024
PREFETCH_ENTRIES = 50_000


def raise_readahead(mountpoint: str) -> None:
    """Let the kernel read ahead 1 MiB at a time on this mount (FUSE's default is 128 KiB): fewer, larger
    READ requests stream faster. Only root may; for anyone else this quietly does nothing.

    ``mountpoint`` must already be resolved: from inside init, a stat of it would wait for init itself."""
    target = mountpoint
    try:
        with open("/proc/self/mountinfo") as mountinfo:
            device = next(line.split()[2] for line in mountinfo if line.split()[4] == target)
        knob = f"/sys/class/bdi/{device}/read_ahead_kb"
        with open(knob) as f:
            if int(f.read()) >= READAHEAD_KB:
                return
        with open(knob, "w") as f:
            f.write(str(READAHEAD_KB))
    except (OSError, StopIteration, ValueError, IndexError):
        pass


_thread_state = threading.local()
_PyGILState_Ensure = ctypes.pythonapi.PyGILState_Ensure
_PyGILState_Ensure.restype = ctypes.c_int
_PyGILState_Ensure.argtypes = ()


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace(",", "\\,")


def serve(image: OpenedImage, mountpoint: str, options: MountOptions,
          on_ready: Optional[Callable[[], None]] = None, debug: bool = False) -> None:
    """Mount and serve until unmounted (or SIGTERM/SIGINT, which unmount cleanly)."""
    kwargs: dict[str, Any] = {
        "foreground": True,
        "debug": debug,
        "nothreads": options.single_threaded,
        "fsname": _escape(os.path.abspath(image.path)),
        "subtype": "imgfs",
        "ro": True,
        "use_ino": True,
        "kernel_cache": True,
        "attr_timeout": TIMEOUT,
        "entry_timeout": TIMEOUT,
        "negative_timeout": TIMEOUT,
    }
    if options.allow_other:
        kwargs["allow_other"] = True
        kwargs["default_permissions"] = True  # other users get the modes the image gives
    if (mfusepy.fuse_version_major, mfusepy.fuse_version_minor) >= (3, 12):
        kwargs["max_threads"] = 16
        kwargs["max_idle_threads"] = 8  # else libfuse 3.14 warns about an unset (-1) value
    for flag in options.fuse_flags:
        kwargs[flag] = True
    operations = ImgfsOperations(image, options, os.path.realpath(mountpoint), on_ready)
    try:
        _Fuse(operations, mountpoint, **kwargs)
    except RuntimeError as exc:
        # libfuse's main returns non-zero also when a signal ended the loop (it has unmounted by then);
        # only a mount that never came up is a failure
        if not operations.ready:
            raise ImageError(f"the FUSE mount failed (libfuse error {exc})", layer="fuse") from None
