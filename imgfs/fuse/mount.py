"""Mounting and unmounting through ``fusermount3``, for root and for everyone else alike.

``fusermount3`` (setuid root, from the fuse3 package) opens ``/dev/fuse``, mounts it and hands the open
descriptor back over a Unix socket named by ``$_FUSE_COMMFD``. It checks what an unprivileged user may do
(``allow_other`` needs ``user_allow_other`` in /etc/fuse.conf, the mount point must be the user's), and
says why it refuses on its standard error: that line is the reason we report, word for word.
"""

from __future__ import annotations

import os
import socket
import subprocess
from typing import Optional

FUSERMOUNT = "fusermount3"


class MountError(Exception):
    """The kernel or fusermount3 refused the mount; the message is fusermount3's own reason."""


def escape(value: str) -> str:
    """An option value with its commas and backslashes escaped, as fusermount3 reads them (fsname=)."""
    return value.replace("\\", "\\\\").replace(",", "\\,")


class Mounted:
    """An open ``/dev/fuse`` descriptor mounted on ``mountpoint``; ``helper`` is the fusermount3 that stays
    to unmount when we die (``auto_unmount``), else None."""

    def __init__(self, fd: int, mountpoint: str, helper: Optional[subprocess.Popen] = None,
                 control: Optional[socket.socket] = None) -> None:
        self.fd = fd
        self.mountpoint = mountpoint
        self.helper = helper
        self._control = control  # auto_unmount: fusermount3 unmounts when this socket closes

    def unmount(self) -> None:
        """Detach the mount (lazily: a reader still inside keeps it until it leaves); the kernel then ends
        the session, and reads of ``fd`` fail with ENODEV."""
        subprocess.run([FUSERMOUNT, "-u", "-q", "-z", "--", self.mountpoint], stdin=subprocess.DEVNULL,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        if self._control is not None:
            self._control.close()
        if self.helper is not None and self.helper.poll() is None:
            self.helper.wait()  # it unmounts once our end of its socket is closed


def mount(mountpoint: str, options: list[str]) -> Mounted:
    """Mount FUSE on ``mountpoint`` with the kernel and fusermount3 ``options`` (already escaped)."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    stays = "auto_unmount" in options
    try:
        try:
            helper = subprocess.Popen(
                [FUSERMOUNT, "-o", ",".join(options), "--", mountpoint], stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, pass_fds=(theirs.fileno(),), close_fds=True,
                env={**os.environ, "_FUSE_COMMFD": str(theirs.fileno())})
        except FileNotFoundError:
            raise MountError(f"{FUSERMOUNT} not found: install the fuse3 package") from None
        finally:
            theirs.close()
        fd = _receive_fd(ours)
        if fd is not None and stays:
            return Mounted(fd, mountpoint, helper, control=ours)  # it stays, watching our end of the socket
        _, err = helper.communicate()
        if fd is None or helper.returncode:
            if fd is not None:
                os.close(fd)
            raise MountError(_reason(err, helper.returncode))
        ours.close()
        return Mounted(fd, mountpoint)
    except BaseException:
        ours.close()
        raise


def _receive_fd(sock: socket.socket) -> Optional[int]:
    try:
        _, fds, _, _ = socket.recv_fds(sock, 1, 1, socket.MSG_CMSG_CLOEXEC)
    except OSError:
        return None
    return fds[0] if fds else None


def _reason(stderr: bytes, returncode: Optional[int]) -> str:
    lines = [line.strip() for line in stderr.decode("utf-8", "replace").splitlines() if line.strip()]
    return lines[-1] if lines else f"{FUSERMOUNT} failed (exit status {returncode})"
