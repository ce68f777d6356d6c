"""Shared test helpers: the installed imgfs command, real FUSE mounts, and tree comparison."""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import stat
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Optional

import pytest

IMGFS = os.environ.get("IMGFS") or shutil.which("imgfs") or "/opt/imgfs/bin/imgfs"


def run_imgfs(*args: str, check: bool = False, **kwargs) -> subprocess.CompletedProcess:
    done = subprocess.run([IMGFS, *args], capture_output=True, text=True, timeout=120, **kwargs)
    if check and done.returncode != 0:
        raise AssertionError(f"imgfs {' '.join(args)} failed ({done.returncode}): {done.stderr}")
    return done


def is_mounted(mountpoint: Path) -> bool:
    target = os.path.realpath(mountpoint)
    with open("/proc/mounts") as mounts:
        return any(line.split()[1] == target for line in mounts)


def unmount(mountpoint: Path) -> None:
    for _ in range(50):
        if not is_mounted(mountpoint):
            return
        done = subprocess.run(["fusermount3", "-u", str(mountpoint)], capture_output=True)
        if done.returncode == 0:
            return
        time.sleep(0.1)
    subprocess.run(["fusermount3", "-uz", str(mountpoint)], capture_output=True)


@contextlib.contextmanager
def mounted(image: Path, mountpoint: Path, *options: str) -> Iterator[Path]:
    mountpoint.mkdir(parents=True, exist_ok=True)
    args = [str(image), str(mountpoint)]
    if options:
        args += ["-o", ",".join(options)]
    run_imgfs(*args, check=True)
    try:
        assert is_mounted(mountpoint), "imgfs returned before the mount was ready"
        yield mountpoint
    finally:
        unmount(mountpoint)


@pytest.fixture
def mount(tmp_path: Path):
    """``with mount(image, *options) as root:`` mounts in a fresh directory and always unmounts."""
    counter = iter(range(1000))

    def _mount(image: Path, *options: str):
        return mounted(image, tmp_path / f"mnt{next(counter)}", *options)

    return _mount


def daemon_pid(*markers: str) -> int:
    """The imgfs process whose command line holds every one of ``markers`` (a mount point, an image)."""
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmdline = (proc / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if any(b"imgfs" in part for part in cmdline[:2]) and all(m.encode() in cmdline for m in markers):
                return int(proc.name)
    raise AssertionError(f"no imgfs daemon for {markers}")


def read_errno(path: Path) -> int:
    """The errno of reading a file that must fail."""
    with pytest.raises(OSError) as caught:
        path.read_bytes()
    return caught.value.errno


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def tree_entries(root: Path) -> dict[str, os.stat_result]:
    """Every path below ``root`` (relative, '/'-separated) with its lstat, symlinks not followed."""
    found = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            full = Path(dirpath) / name
            found[str(full.relative_to(root))] = full.lstat()
    return found


def compare_trees(source: Path, mounted_root: Path, *, modes: bool = True, owners: bool = True,
                  nlink: bool = True, mtime: bool = True, hardlinks: bool = True,
                  rename: Optional[dict[str, str]] = None, ignore: frozenset[str] = frozenset()) -> int:
    """Assert that the mounted tree shows exactly the source tree, but for top-level names in ``ignore`` on
    either side (a filesystem's own, like ext's lost+found); returns the number of entries."""
    want = {path: st for path, st in tree_entries(source).items() if path.split("/")[0] not in ignore}
    if rename:
        want = {rename.get(path, path): st for path, st in want.items()}
    got = {path: st for path, st in tree_entries(mounted_root).items() if path.split("/")[0] not in ignore}
    assert sorted(got) == sorted(want), f"names differ: missing {sorted(set(want) - set(got))[:5]}, " \
                                        f"extra {sorted(set(got) - set(want))[:5]}"
    reverse = {v: k for k, v in (rename or {}).items()}
    for path, expected in want.items():
        actual = got[path]
        src, mnt = source / reverse.get(path, path), mounted_root / path
        assert stat.S_IFMT(actual.st_mode) == stat.S_IFMT(expected.st_mode), f"{path}: type differs"
        if modes:
            assert stat.S_IMODE(actual.st_mode) == stat.S_IMODE(expected.st_mode), \
                f"{path}: mode {oct(actual.st_mode)} != {oct(expected.st_mode)}"
        if owners:
            assert (actual.st_uid, actual.st_gid) == (expected.st_uid, expected.st_gid), f"{path}: owner"
        if mtime and not stat.S_ISDIR(expected.st_mode):
            assert abs(actual.st_mtime - expected.st_mtime) < 1.0, f"{path}: mtime {actual.st_mtime}"
        if stat.S_ISLNK(expected.st_mode):
            assert os.readlink(bytes(mnt)) == os.readlink(bytes(src)), f"{path}: symlink target"
            assert actual.st_size == len(os.readlink(bytes(src)))
        elif stat.S_ISREG(expected.st_mode):
            assert actual.st_size == expected.st_size, f"{path}: size {actual.st_size} != {expected.st_size}"
            assert sha256_of(mnt) == sha256_of(src), f"{path}: content differs"
            if nlink:
                assert actual.st_nlink == expected.st_nlink, f"{path}: nlink {actual.st_nlink}"
        elif stat.S_ISCHR(expected.st_mode) or stat.S_ISBLK(expected.st_mode):
            assert actual.st_rdev == expected.st_rdev, f"{path}: rdev"
    if hardlinks:
        _compare_hardlinks(want, got)
    return len(want)


def _compare_hardlinks(want: dict[str, os.stat_result], got: dict[str, os.stat_result]) -> None:
    """Paths that share an inode in the source share one in the mount, and no others do."""
    def groups(entries: dict[str, os.stat_result]) -> set[frozenset[str]]:
        by_inode: dict[int, set[str]] = {}
        for path, st in entries.items():
            if stat.S_ISREG(st.st_mode) and st.st_size:
                by_inode.setdefault(st.st_ino, set()).add(path)
        return {frozenset(paths) for paths in by_inode.values()}

    assert groups(got) == groups(want), "hard-link groups differ"
