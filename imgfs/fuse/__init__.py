"""The FUSE adapter: the only package that speaks to the kernel's FUSE, with no binding library.

``mount`` mounts through fusermount3, ``session`` reads requests from ``/dev/fuse`` and writes replies
(``kernel`` is the protocol), ``operations`` answers them from an image's tree (``inodes`` holds what the
kernel knows). ``serve`` puts them together, as the CLI calls it.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from typing import Callable, Optional

from imgfs.errors import ImageError
from imgfs.fuse.mount import MountError, escape, mount
from imgfs.fuse.operations import ImgfsOperations
from imgfs.fuse.session import Session
from imgfs.image import OpenedImage
from imgfs.options import MountOptions

log = logging.getLogger("imgfs.fuse")

THREADS = 4  # each reads requests itself (see Session.run); several readers are served at once
SWITCH_INTERVAL_S = 0.0005  # a request waits at most this long for the GIL behind a parse (Python's default: 5 ms)
READAHEAD_KB = 1024

__all__ = ["ImgfsOperations", "serve", "fuse_options"]


def fuse_options(image: OpenedImage, options: MountOptions) -> list[str]:
    """The kernel's and fusermount3's mount options."""
    found = ["ro", "nosuid", "nodev", f"fsname={escape(os.path.abspath(image.path))}", "subtype=imgfs"]
    if options.allow_other:
        found += ["allow_other", "default_permissions"]  # other users get the modes the image gives
    elif options.default_permissions:
        found.append("default_permissions")
    for flag in options.fuse_flags:
        # allow_root is allow_other for the kernel, with the other users turned away here (Session)
        flag = "allow_other" if flag == "allow_root" else flag
        if flag not in found:
            found.append(flag)
    return found


def serve(image: OpenedImage, mountpoint: str, options: MountOptions,
          on_ready: Optional[Callable[[], None]] = None, debug: bool = False) -> None:
    """Mount and serve until unmounted (or SIGTERM/SIGINT/SIGHUP, which unmount cleanly)."""
    where = os.path.realpath(mountpoint)
    operations = ImgfsOperations(image, options, where)
    try:
        mounted = mount(mountpoint, fuse_options(image, options))
    except MountError as exc:
        raise ImageError(str(exc)) from None

    def ready() -> None:
        raise_readahead(where, session.pipe_size)
        if on_ready is not None:
            on_ready()

    only = {0, os.getuid()} if "allow_root" in options.fuse_flags and not options.allow_other else None
    session = Session(mounted, operations, threads=1 if options.single_threaded else THREADS, debug=debug,
                      on_ready=ready, only_uids=only)
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    operations.notifier = session.store
    restore = _unmount_on_signals(mounted.unmount)
    try:
        session.run()
    finally:
        restore()
        mounted.close()


def _unmount_on_signals(unmount: Callable[[], None]) -> Callable[[], None]:
    """SIGTERM, SIGINT and SIGHUP unmount; the session then ends as after ``imgfs umount``."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    signals = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
    before = {sig: signal.signal(sig, lambda *_: unmount()) for sig in signals}

    def restore() -> None:
        for sig, handler in before.items():
            signal.signal(sig, handler)

    return restore


def raise_readahead(mountpoint: str, pipe_size: int = 0) -> None:
    """Let the kernel read ahead about 1 MiB at a time on this mount (FUSE's default is 128 KiB): fewer,
    larger READ requests stream faster. Only root may; for anyone else this quietly does nothing. A request
    must fit the splice pipe with its header and a page it starts inside: with the usual 1 MiB pipes, 1016 KiB."""
    wanted_kb = READAHEAD_KB if not pipe_size else min(READAHEAD_KB, pipe_size // 1024 - 8)
    try:
        with open("/proc/self/mountinfo") as mountinfo:
            device = next(line.split()[2] for line in mountinfo if line.split()[4] == mountpoint)
        knob = f"/sys/class/bdi/{device}/read_ahead_kb"
        with open(knob) as f:
            if int(f.read()) >= wanted_kb:
                return
        with open(knob, "w") as f:
            f.write(str(wanted_kb))
    except (OSError, StopIteration, ValueError, IndexError):
        pass
