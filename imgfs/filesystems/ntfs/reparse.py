"""Symbolic links and special files in every form NTFS holds them, as Linux shows them.

Forms (libfsntfs notes "The reparse point"; Microsoft's MS-FSCC 2.1.2 for the reparse buffers):

* Windows symbolic links (tag 0xA000000C) and junctions / mount points (0xA0000003): a substitute name in
  UTF-16, relative (flag 1) or absolute ("\\??\\C:\\...", "\\??\\Volume{...}\\", "\\??\\UNC\\server\\...").
* WSL symbolic links (0xA000001D): a version (2) and the target in UTF-8; WSL FIFOs, sockets, character and
  block devices (0x80000024, 0x80000023, 0x80000025, 0x80000026) with the device number in the $LXDEV
  extended attribute. ntfs-3g writes these with ``special_files=wsl``.
* Interix (what ntfs-3g writes by default): a system file whose data is "IntxLNK\\1" and a UTF-16 target,
  "IntxCHR\\0"/"IntxBLK\\0" and a 64-bit major and minor; an empty system file is a FIFO, a one-byte one a
  socket (unless it is also hidden).

Targets come out as ntfs-3g gives them, with one difference: ntfs-3g prefixes what it resolves on the volume
with its mount point, and imgfs, which cannot know where its tree is mounted, gives the same place relative
to the link (see ``Translator``).
"""

from __future__ import annotations

import stat
import struct
from collections.abc import Sequence
from typing import Callable, NamedTuple, Optional

from imgfs.filesystems.base import makedev

TAG_MOUNT_POINT = 0xA0000003
TAG_SYMLINK = 0xA000000C
TAG_WSL_SYMLINK = 0xA000001D
TAG_WOF = 0x80000017
TAG_WSL_SOCKET = 0x80000023
TAG_WSL_FIFO = 0x80000024
TAG_WSL_CHR = 0x80000025
TAG_WSL_BLK = 0x80000026
WSL_KINDS = {TAG_WSL_SOCKET: stat.S_IFSOCK, TAG_WSL_FIFO: stat.S_IFIFO, TAG_WSL_CHR: stat.S_IFCHR,
             TAG_WSL_BLK: stat.S_IFBLK}
SPECIAL_TAGS = frozenset((TAG_MOUNT_POINT, TAG_SYMLINK, TAG_WSL_SYMLINK, *WSL_KINDS))  # what makes a link or device
SYMLINK_RELATIVE = 1

INTERIX_LINK, INTERIX_CHR, INTERIX_BLK = b"IntxLNK\x01", b"IntxCHR\x00", b"IntxBLK\x00"
INTERIX_MAX_SIZE = 8 + 2 * 4096  # the magic and a target of PATH_MAX UTF-16 units
NTFS3G_FOLDER = ".NTFS-3G"  # where ntfs-3g sends targets on other drives (a folder the user makes)

_REPARSE = struct.Struct("<IHH")
_NAMES = struct.Struct("<HHHH")


class Special(NamedTuple):
    """What a file is to Linux when it is not plain: its type, a link's target, a device's number."""

    kind: int  # stat.S_IFLNK, S_IFCHR, ...
    target: Optional[bytes] = None
    rdev: int = 0


class WindowsLink(NamedTuple):
    substitute: str  # as stored, with backslashes
    relative: bool


def reparse_tag(data: bytes) -> tuple[int, bytes]:
    """(tag, the tag's own data) of a $REPARSE_POINT value; (0, b"") when it is too short to be one."""
    if len(data) < _REPARSE.size:
        return 0, b""
    tag, size, _ = _REPARSE.unpack_from(data)
    return tag, data[_REPARSE.size : _REPARSE.size + size]


def windows_link(tag: int, payload: bytes) -> Optional[WindowsLink]:
    """A symbolic link's or junction's substitute name; None when the buffer does not hold one."""
    header = _NAMES.size + (4 if tag == TAG_SYMLINK else 0)
    if len(payload) < header:
        return None
    offset, length, _, _ = _NAMES.unpack_from(payload)
    flags = int.from_bytes(payload[8:12], "little") if tag == TAG_SYMLINK else 0
    start = header + offset
    if length % 2 or start + length > len(payload) or not length:
        return None
    name = payload[start : start + length].decode("utf-16-le", "replace")
    return WindowsLink(name, bool(flags & SYMLINK_RELATIVE))


def wsl_link(payload: bytes) -> Optional[bytes]:
    if len(payload) < 5 or int.from_bytes(payload[:4], "little") != 2:
        return None
    return payload[4:]


def wsl_device(ea: dict[bytes, bytes]) -> int:
    value = ea.get(b"$LXDEV", b"")
    if len(value) < 8:
        return 0
    return makedev(int.from_bytes(value[:4], "little"), int.from_bytes(value[4:8], "little"))


def interix(data: bytes) -> Optional[Special]:
    """An Interix symlink or device held in a system file's data; None for any other data."""
    magic = data[:8]
    if magic == INTERIX_LINK and len(data) > 8 and len(data) % 2 == 0:
        target = data[8:].decode("utf-16-le", "surrogatepass").encode("utf-8", "surrogateescape")
        return Special(stat.S_IFLNK, target)
    if magic in (INTERIX_CHR, INTERIX_BLK) and len(data) == 24:
        major, minor = struct.unpack_from("<QQ", data, 8)
        return Special(stat.S_IFCHR if magic == INTERIX_CHR else stat.S_IFBLK, rdev=makedev(major, minor))
    return None


# (directory record, name) -> the on-disk name and its record, looked up without regard to case; None if absent
Lookup = Callable[[int, str], Optional[tuple[str, int]]]
Resolved = Optional[list[str]]


class Translator:
    """Turns a Windows link's substitute name into a Linux target, resolving names on the volume.

    * relative ("..\\dir\\file"): each name is looked up from the link's folder without regard to case, as
      Windows would, and the names as stored are used ("../Dir/File"); "." and ".." are kept.
    * rooted ("\\dir\\file") and absolute ("\\??\\C:\\dir\\file", any drive letter, junctions too): looked up
      from the volume's root; found, the target is that place relative to the link ("../../Dir/File", where
      ntfs-3g gives "MOUNTPOINT/Dir/File"); not found, ".NTFS-3G/C:/dir/file" below the root (as ntfs-3g).
    * volume junctions ("\\??\\Volume{GUID}\\"): ".NTFS-3G/Volume{GUID}" below the root (as ntfs-3g).
    * UNC ("\\??\\UNC\\server\\share\\path"): "//server/share/path".
    * a relative name that is not found on the volume keeps its names as written, slashes for backslashes
      (ntfs-3g shows such a link as "unsupported reparse tag 0xa000000c").
    """

    def __init__(self, lookup: Lookup, root: int) -> None:
        self._lookup = lookup
        self._root = root

    def target(self, link: WindowsLink, folders: Sequence[int]) -> bytes:
        """``folders``: the records of the link's folder and its ancestors, the link's folder last."""
        name = link.substitute
        up = "../" * (len(folders) - 1)
        if link.relative and not name.startswith("\\"):
            parts = name.split("\\")
            found = self._resolve(list(folders), parts)
            return _join(found if found is not None else parts, "")
        if link.relative:  # rooted: from the volume's root
            found = self._resolve([self._root], name.lstrip("\\").split("\\"))
            return _join(found if found is not None else name.lstrip("\\").split("\\"), up)
        return self._absolute(name, up)

    def _absolute(self, name: str, up: str) -> bytes:
        for prefix in ("\\??\\", "\\\\?\\"):
            if name.startswith(prefix):
                name = name[len(prefix) :]
                break
        else:
            return _join(name.split("\\"), "")
        if name[:4].upper() == "UNC\\":
            return ("//" + name[4:].replace("\\", "/")).encode("utf-8", "surrogateescape")
        if len(name) >= 2 and name[1] == ":" and name[0].isalpha():
            rest = [part for part in name[2:].split("\\") if part]
            found = self._resolve([self._root], rest)
            if found is not None:
                return _join(found, up) if found else (up.rstrip("/") or ".").encode()
            return _join([NTFS3G_FOLDER, name[0].upper() + ":", *rest], up, trailing=name.endswith("\\"))
        if name.upper().startswith("VOLUME{"):
            return _join([NTFS3G_FOLDER, *[part for part in name.split("\\") if part]], up)
        return _join(name.split("\\"), up)

    def _resolve(self, folders: list[int], parts: list[str]) -> Resolved:
        """The names as stored, walking ``parts`` from the last of ``folders``; None when one is missing."""
        path = list(folders)
        found: list[str] = []
        for i, part in enumerate(parts):
            if part == ".":
                found.append(part)
                continue
            if not part:
                if i == len(parts) - 1:
                    continue  # a trailing backslash
                return None
            if part == "..":
                if len(path) < 2:
                    return None  # above the volume's root
                path.pop()
                found.append(part)
                continue
            hit = self._lookup(path[-1], part)
            if hit is None:
                return None
            found.append(hit[0])
            path.append(hit[1])
        return found


def _join(parts: Sequence[str], up: str, trailing: bool = False) -> bytes:
    text = up + "/".join(parts) + ("/" if trailing else "")
    return text.encode("utf-8", "surrogateescape")
