"""Mounting: ``imgfs IMAGE MOUNTPOINT [-o OPTIONS] [-f] [-d] [-s]`` and ``mount.imgfs`` (as mount(8) runs it).

The command returns once the mount is ready; a background daemon then serves it. Logging goes to stderr
in the foreground, else to ``logfile=``, else syslog, else a file under ``$XDG_STATE_HOME/imgfs``.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Callable, Optional

from imgfs import __version__
from imgfs.cli.common import UsageError, error_line, fail, open_for_user
from imgfs.cli.mounts import prepare_mountpoint, warn_if_not_empty
from imgfs.errors import ImageError
from imgfs.image import OpenedImage
from imgfs.options import MountOptions, parse_options

log = logging.getLogger("imgfs")

READY = b"\0imgfs-ready\0"
SYSLOG_SOCKET = "/dev/log"


def helper_argv(argv: list[str]) -> Optional[list[str]]:
    """``mount.imgfs SPEC DIR [-sfnv] [-o OPTIONS]``, as mount(8) runs helpers for ``-t imgfs``, as the
    arguments of ``imgfs``; None for a fake mount (-f), which has nothing to do."""
    positional: list[str] = []
    groups: list[str] = []
    fake = False
    args = iter(argv)
    for arg in args:
        if arg == "-o":
            groups.append(next(args, ""))
        elif arg.startswith("-o"):
            groups.append(arg[2:])
        elif arg.startswith("-") and len(arg) > 1:
            fake = fake or "f" in arg[1:]  # -f: fake; -s, -n, -v: nothing to do for a FUSE mount
        else:
            positional.append(arg)
    return None if fake else positional + [item for g in groups for item in ("-o", g)]


def parse_mount_args(argv: list[str], usage: str = "") -> tuple[list[str], list[str], bool, bool]:
    positional: list[str] = []
    groups: list[str] = []
    foreground = debug = single = False
    args = iter(argv)
    for arg in args:
        if arg in ("-h", "--help"):
            print(usage)
            raise SystemExit(0)
        if arg in ("-V", "--version"):
            print(f"imgfs {__version__}")
            raise SystemExit(0)
        if arg == "-o":
            value = next(args, None)
            if value is None:
                raise UsageError("-o needs a value")
            groups.append(value)
        elif arg.startswith("-o"):
            groups.append(arg[2:])
        elif arg == "-f":
            foreground = True
        elif arg == "-d":
            foreground = debug = True
        elif arg == "-s":
            single = True
        elif arg == "--":
            positional.extend(args)
        elif arg.startswith("-") and len(arg) > 1:
            raise UsageError(f"unknown flag {arg}")
        else:
            positional.append(arg)
    if single:
        groups.append("single_threaded")
    return positional, groups, foreground, debug


def mount_main(argv: list[str], usage: str = "") -> int:
    positional, groups, foreground, debug = parse_mount_args(argv, usage)
    if len(positional) != 2:
        raise UsageError("expected IMAGE and MOUNTPOINT" if positional or groups else "no image given")
    image_path, mountpoint = positional
    options = parse_options(groups)
    if options.debug:
        foreground = debug = True
    try:
        prepare_mountpoint(mountpoint)
        image = open_for_user(image_path, options)
        image.require_content()
    except ImageError as exc:
        return fail(error_line(exc, image_path))
    return mount_opened(image, mountpoint, options, foreground, debug)


def mount_opened(image: OpenedImage, mountpoint: str, options: MountOptions, foreground: bool = False,
                 debug: bool = False, on_exit: Optional[Callable[[], None]] = None) -> int:
    """Serve ``image`` on ``mountpoint``: in the foreground until unmounted, or in a daemon once the mount is
    ready. ``on_exit`` runs in whichever process served, once the mount has ended."""
    warn_if_not_empty(mountpoint)
    if foreground:
        setup_logging(debug=debug, logfile=options.logfile, to_stderr=True)
        _tune_malloc()
        from imgfs.fuse import serve

        try:
            serve(image, mountpoint, options, debug=debug)
        finally:
            if on_exit is not None:
                on_exit()
        return 0
    return _serve_in_background(image, mountpoint, options, on_exit)


def _serve_in_background(image: OpenedImage, mountpoint: str, options: MountOptions,
                         on_exit: Optional[Callable[[], None]] = None) -> int:
    """Fork; the child mounts and tells the parent through a pipe once the kernel has called init.

    Until then the child's stderr is that pipe too, so that a libfuse complaint reaches the user as
    the reason; the parent returns only when the mount is ready (0) or has failed (1).
    """
    from imgfs.fuse import serve  # import before fork: errors show here, in the parent

    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_end)
        _child(image, mountpoint, options, write_end, serve, on_exit)
    os.close(write_end)
    chunks = []
    while chunk := os.read(read_end, 65536):
        chunks.append(chunk)
    os.close(read_end)
    output = b"".join(chunks)
    if READY in output:
        return 0
    os.waitpid(pid, 0)
    lines = [line.strip() for line in output.decode("utf-8", "replace").splitlines() if line.strip()]
    reason = lines[-1] if lines else "the FUSE mount failed"
    return fail(f"cannot mount {image.path} on {mountpoint}: {reason}")


def _child(image: OpenedImage, mountpoint: str, options: MountOptions, pipe: int, serve: Callable,
           on_exit: Optional[Callable[[], None]] = None) -> None:
    code = 1
    try:
        os.setsid()
        devnull = os.open(os.devnull, os.O_RDWR)
        os.dup2(devnull, 0)
        os.dup2(devnull, 1)
        os.dup2(pipe, 2)
        setup_logging(debug=False, logfile=options.logfile, to_stderr=False)
        _tune_malloc()

        def ready() -> None:
            os.write(pipe, READY)
            os.dup2(devnull, 2)
            os.close(pipe)

        serve(image, mountpoint, options, on_ready=ready)
        code = 0
    except BaseException as exc:  # noqa: BLE001 - report through the pipe, exit quietly
        try:
            os.write(pipe, f"\n{exc}\n".encode())
        except OSError:
            pass
    finally:
        if on_exit is not None:
            try:
                on_exit()
            except Exception:  # noqa: BLE001 - nothing to report to
                pass
        os._exit(code)


def setup_logging(debug: bool, logfile: Optional[str], to_stderr: bool, level: int = logging.INFO) -> None:
    root = logging.getLogger()
    root.setLevel(logging.DEBUG if debug else level)
    root.handlers[:] = [_log_handler(logfile, to_stderr)]


def _log_handler(logfile: Optional[str], to_stderr: bool, syslog: str = SYSLOG_SOCKET) -> logging.Handler:
    """stderr in the foreground; else ``logfile=``; else syslog; else a file under $XDG_STATE_HOME (containers
    often have no /dev/log, and a background mount's log lines would be lost)."""
    if not logfile and not to_stderr and not os.path.exists(syslog):
        try:
            os.makedirs(os.path.dirname(state_log_path()), mode=0o700, exist_ok=True)
            return _file_handler(state_log_path())
        except OSError:  # no home to write in (a system user): the mount goes on without a log
            return logging.NullHandler()
    if logfile:
        handler: logging.Handler = _file_handler(logfile)
    elif to_stderr:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("imgfs: %(levelname)s: %(message)s"))
    else:
        from logging.handlers import SysLogHandler  # a socket module and more: only background mounts need it

        handler = SysLogHandler(address=syslog)
        handler.setFormatter(logging.Formatter(f"imgfs[{os.getpid()}]: %(levelname)s: %(message)s"))
    return handler


def _file_handler(path: str) -> logging.Handler:
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s imgfs[%(process)d] %(levelname)s: %(message)s"))
    return handler


def state_log_path() -> str:
    """``$XDG_STATE_HOME/imgfs/imgfs.log`` (``~/.local/state/imgfs/imgfs.log`` by default)."""
    state = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return os.path.join(state, "imgfs", "imgfs.log")


def _tune_malloc() -> None:
    """Keep glibc from trimming and growing the heap around every 128 KiB read buffer, and from giving each
    decoding thread its own arena (each holding freed chunks: tens of MiB over the cache size)."""
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-1, 64 << 20)  # M_TRIM_THRESHOLD
        libc.mallopt(-3, 16 << 20)  # M_MMAP_THRESHOLD
        libc.mallopt(-8, 2)  # M_ARENA_MAX: decoding threads would each keep an arena of freed chunks
    except (OSError, AttributeError):
        pass
