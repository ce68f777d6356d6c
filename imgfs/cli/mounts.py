"""The mount table as imgfs sees it: which folders hold imgfs mounts, live or dead; the checks made on a
mount point before mounting on it; and unmounting."""

from __future__ import annotations

import errno
import os
import pwd
import sys
from dataclasses import dataclass
from typing import Optional

from imgfs.errors import ImageError

FSTYPE = "fuse.imgfs"  # what /proc/self/mountinfo says of an imgfs mount (FUSE's type and imgfs's subtype)
MOUNTINFO = "/proc/self/mountinfo"
DEAD = (errno.ENOTCONN, errno.ECONNABORTED)  # what stat says of a FUSE mount whose daemon has gone


class MountPointError(ImageError):
    """A mount point that cannot be mounted on: the one line says why and what to do."""


@dataclass(frozen=True)
class MountEntry:
    source: str  # an imgfs mount's image, as an absolute path
    target: str  # the mount point
    fstype: str
    options: tuple[str, ...]  # the superblock's options: FUSE's user_id=, group_id=, ...

    @property
    def is_imgfs(self) -> bool:
        return self.fstype == FSTYPE

    @property
    def owner(self) -> Optional[int]:
        """The user who mounted a FUSE filesystem (its ``user_id=``)."""
        for option in self.options:
            if option.startswith("user_id="):
                return int(option[8:])
        return None


def _unescape(field: str) -> str:
    """mountinfo writes space, tab, newline and backslash in paths as octal escapes (``\\040``)."""
    if "\\" not in field:
        return field
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and field[i + 1 : i + 4].isdigit():
            out.append(chr(int(field[i + 1 : i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def mount_table(path: str = MOUNTINFO) -> list[MountEntry]:
    entries = []
    with open(path, encoding="utf-8", errors="surrogateescape") as table:
        for line in table:
            fields = line.split()
            if "-" not in fields:
                continue
            dash = fields.index("-")
            if len(fields) < dash + 4:
                continue
            entries.append(MountEntry(_unescape(fields[dash + 2]), _unescape(fields[4]), fields[dash + 1],
                                      tuple(fields[dash + 3].split(","))))
    return entries


def canonical(path: str) -> str:
    """``path`` as the mount table writes it: absolute, its folder's symlinks resolved, the last part kept as is
    (resolving a dead mount point itself would fail)."""
    absolute = os.path.abspath(path)
    return os.path.join(os.path.realpath(os.path.dirname(absolute)), os.path.basename(absolute)) \
        if absolute != "/" else "/"


def entry_at(path: str) -> Optional[MountEntry]:
    """The mount on top at ``path``, if ``path`` is a mount point."""
    target = canonical(path)
    found = [entry for entry in mount_table() if entry.target == target]
    return found[-1] if found else None


def imgfs_mounts() -> list[MountEntry]:
    return [entry for entry in mount_table() if entry.is_imgfs]


def is_dead(path: str) -> bool:
    """Whether ``path`` is a FUSE mount whose daemon has gone. ``statfs`` always asks the daemon: ``stat``
    may be answered from the kernel's attribute cache for a while after the daemon died."""
    try:
        os.statvfs(path)
    except OSError as exc:
        return exc.errno in DEAD
    return False


def prepare_mountpoint(path: str) -> None:
    """Refuse, in one line, a folder that cannot take the mount; clear the user's own dead imgfs mount."""
    entry = entry_at(path)
    if entry is not None and is_dead(path):
        _clear_dead(path, entry)
    elif entry is not None and entry.is_imgfs:
        raise MountPointError(f"{path} is already an imgfs mount of {entry.source}: `imgfs close {path}` "
                              "unmounts it")
    try:
        os.stat(path)
    except FileNotFoundError:
        raise MountPointError(f"mount point {path} does not exist") from None
    except OSError as exc:
        raise MountPointError(f"mount point {path}: {exc.strerror}") from None
    if not os.path.isdir(path):
        raise MountPointError(f"mount point {path} is not a directory")


def _clear_dead(path: str, entry: MountEntry) -> None:
    """A dead mount (its daemon was killed): the user's own imgfs mount is unmounted; anything else is named."""
    owner = entry.owner
    if entry.is_imgfs and owner == os.getuid():
        unmount(path, lazy=True)
        print(f"imgfs: {path} held a dead imgfs mount of {entry.source} (its daemon had ended): unmounted it",
              file=sys.stderr)
        return
    what = f"an imgfs mount of {entry.source}" if entry.is_imgfs else f"a {entry.fstype} mount of {entry.source}"
    whose = f" that belongs to {_user_name(owner)}" if owner is not None and owner != os.getuid() else ""
    how = f"`fusermount3 -uz {path}`" if owner == os.getuid() else \
        f"`umount -l {path}`" if os.getuid() == 0 else f"`umount -l {path}` as root"
    raise MountPointError(f"mount point {path} is {what}{whose} whose daemon has ended (transport endpoint "
                          f"not connected): clear it with {how}")


def _user_name(uid: int) -> str:
    try:
        return f"user {pwd.getpwuid(uid).pw_name}"
    except KeyError:
        return f"user {uid}"


def warn_if_not_empty(path: str) -> None:
    """Mounting over files hides them until the image is unmounted: say so, and go ahead."""
    try:
        with os.scandir(path) as entries:
            count = sum(1 for _ in entries)
    except OSError:
        return
    if count:
        print(f"imgfs: warning: {path} is not empty: its {count} entr{'y is' if count == 1 else 'ies are'} "
              "hidden until the image is unmounted", file=sys.stderr)


class UnmountError(Exception):
    pass


def unmount(path: str, lazy: bool = False) -> None:
    """fusermount3 -u (any user's own FUSE mount), else umount(8) (root); the tool's reason on failure."""
    import shutil
    import subprocess
    errors = []
    for tool in ("fusermount3", "fusermount"):
        if shutil.which(tool):
            done = subprocess.run([tool, "-uz" if lazy else "-u", path], capture_output=True, text=True)
            if done.returncode == 0:
                return
            errors += done.stderr.strip().splitlines()
            break
    if os.getuid() == 0 or not errors:
        done = subprocess.run(["umount", *(["-l"] if lazy else []), path], capture_output=True, text=True)
        if done.returncode == 0:
            return
        errors += done.stderr.strip().splitlines()
    raise UnmountError(errors[-1] if errors else f"cannot unmount {path}")
