"""Fresh mounts of an image by imgfs, fuseiso, fuse2fs or ntfs-3g, always unmounted again.

Every measurement of a FUSE reader gets its own mount: the kernel keeps a mounted file's pages
(imgfs asks for kernel_cache), so a second read on the same mount would measure memory, not the
daemon. Mount points live under one directory, so that a run killed with SIGKILL leaves nothing
that the next run cannot find and unmount.
"""

from __future__ import annotations

import os
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from benchlib import subject

# IMGFS_BENCH_MNT: a folder of its own, for a run beside another one (each unmounts what it finds there)
MOUNT_ROOT = Path(os.environ.get("IMGFS_BENCH_MNT", "/tmp/imgfs-bench-mnt"))
FUSE_READERS = ("imgfs", "fuseiso")


@dataclass
class Mount:
    path: Path
    pid: Optional[int]  # the daemon serving it
    ready_s: float  # mount command until the mount point has been listed once

    def rss_peak_mib(self) -> Optional[float]:
        """VmHWM of the daemon: its peak resident set since it started."""
        if self.pid is None:
            return None
        try:
            status = Path(f"/proc/{self.pid}/status").read_text()
        except OSError:
            return None
        for line in status.splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        return None


def mount_command(reader: str, image: Path, mnt: Path) -> list[str]:
    if reader == "imgfs":
        return [*subject.COMMAND, str(image), str(mnt)]  # returns once the kernel has called init
    if reader == "fuse2fs":
        return ["fuse2fs", str(image), str(mnt), "-o", "ro,fakeroot"]
    if reader == "ntfs-3g":
        return ["ntfs-3g", "-o", "ro", str(image), str(mnt)]
    # -p: fuseiso removes the mount point on exit, we make a fresh one for every mount anyway;
    # -n: do not write ~/.mtab.fuseiso, which we do not need.
    return ["fuseiso", "-n", "-p", str(image), str(mnt)]


@contextmanager
def mounted(reader: str, image: Path, command: Optional[list[str]] = None,
            env: Optional[dict[str, str]] = None) -> Iterator[Mount]:
    """Mount ``image`` with ``reader`` on a new mount point; unmount on the way out, whatever happens.

    ``command`` (then given IMAGE and MNT) replaces the reader's usual mount command, ``env`` its environment:
    how the DMG part runs an instrumented imgfs daemon."""
    MOUNT_ROOT.mkdir(parents=True, exist_ok=True)
    mnt = Path(tempfile.mkdtemp(prefix=f"{reader}-", dir=MOUNT_ROOT))
    pid = None
    try:
        start = time.perf_counter()
        argv = [*command, str(image), str(mnt)] if command else mount_command(reader, image, mnt)
        subprocess.run(argv, check=True, stdin=subprocess.DEVNULL, env=env)
        wait_until_mounted(mnt)
        subprocess.run(["ls", str(mnt)], check=True, stdout=subprocess.DEVNULL)
        ready = time.perf_counter() - start
        pid = daemon_pid(mnt)
        yield Mount(mnt, pid, ready)
    finally:
        unmount(reader, mnt, pid)


def is_mounted(mnt: Path) -> bool:
    with open("/proc/mounts") as f:
        return any(line.split()[1] == str(mnt) for line in f)


def wait_until_mounted(mnt: Path, timeout: float = 30.0) -> None:
    """fuseiso, fuse2fs and ntfs-3g daemonize before the kernel has the mount; poll for it (imgfs is there
    already)."""
    deadline = time.monotonic() + timeout
    while not is_mounted(mnt):
        if time.monotonic() > deadline:
            raise RuntimeError(f"{mnt} did not appear in /proc/mounts within {timeout} s")
        time.sleep(0.0005)


def daemon_pid(mnt: Path) -> Optional[int]:
    """The live process whose command line names the mount point: the daemon serving it."""
    wanted = str(mnt).encode()
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            argv = Path(entry.path, "cmdline").read_bytes().split(b"\0")
            state = Path(entry.path, "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if wanted in argv and state != "Z":
            return int(entry.name)
    return None


def unmount_command(reader: str) -> list[str]:
    return [*subject.COMMAND, "umount"] if reader == "imgfs" else ["fusermount", "-u"]


def unmount(reader: str, mnt: Path, pid: Optional[int]) -> None:
    """Unmount (lazily if it stays busy); wait for the daemon to exit so that it disturbs nothing after."""
    for attempt in range(10):
        if not is_mounted(mnt):
            break
        cmd = unmount_command(reader) if attempt < 5 else ["fusermount3", "-u", "-z"]
        subprocess.run([*cmd, str(mnt)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.05 * attempt)
    if pid is not None:
        wait_for_exit(pid)
    if not is_mounted(mnt):
        remove_mount_point(mnt)


def remove_mount_point(mnt: Path) -> None:
    try:
        mnt.rmdir()  # rmdir, never a recursive delete: it could be a mount after all
    except OSError:
        pass  # already gone: fuseiso -p removes its mount point itself


def wait_for_exit(pid: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            return
        if state == "Z":
            return
        time.sleep(0.005)
    os.kill(pid, signal.SIGTERM)  # a daemon that outlives its mount is one we started: stop it


def unmount_stale(log) -> None:
    """Mounts left under MOUNT_ROOT by a run that was killed before it could clean up."""
    with open("/proc/mounts") as f:
        stale = [Path(line.split()[1]) for line in f if line.split()[1].startswith(f"{MOUNT_ROOT}/")]
    for mnt in stale:
        log(f"unmounting stale {mnt}")
        subprocess.run(["fusermount3", "-u", "-z", str(mnt)], stderr=subprocess.DEVNULL)
    if MOUNT_ROOT.exists():
        for leftover in MOUNT_ROOT.iterdir():
            if not is_mounted(leftover):
                remove_mount_point(leftover)
