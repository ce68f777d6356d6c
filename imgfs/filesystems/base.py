"""What every filesystem reader builds: ``Node``s, and a ``Filesystem`` that lists them and opens them.

A reader imports this module and ``imgfs.layer``, never the assembly (``imgfs.image``, ``imgfs.tree``).

* Inode numbers are the reader's own, unique within its volume and below 2**48 (an ext inode, an
  HFS+ CNID, a byte offset in an ISO): the tree adds a base per volume so that volumes never collide.
* An owner the format does not record is ``None``: the tree shows the mounting user (or ``uid=``).
* Permissions are the format's own; the tree applies ``umask=``.
* A reader never sets ``node.children`` itself: ``children`` does, once per directory, with what
  ``_load_children`` returned after two checks that every format gets alike. Names are made safe
  (``imgfs.filesystems.names``: never empty, ``.``, ``..``, nor holding ``/`` or NUL). And a directory
  shown a second time (its own ancestor, or one reached again through a directory link: one whose
  ``directory_key`` was met before) lists as empty, with one log line, so that every walk ends. A format
  whose directories may rightly be reached from several places (HFS+ directory hard links, which Time
  Machine makes) sets ``directory_links``: it refuses loops itself, and ``Tree.walk`` still enters each
  directory once.
* The listings kept are bounded: once more than ``RESIDENT_ENTRIES`` entries of parsed directories are held,
  the oldest listings are dropped and parsed again when next needed (a tree of a million files need not be
  held whole). So ``_load_children`` must give the same entries, in the same order, every time it runs, and
  a reader must not rely on one ``Node`` object per entry: a directory listed again has new ones.
"""

from __future__ import annotations

import copy
import logging
import stat
import threading
from collections import deque
from collections.abc import Hashable
from typing import Any, Optional

from imgfs.filesystems.names import sanitize
from imgfs.io.stream import Stream
from imgfs.layer import Layer

log = logging.getLogger(__name__)

DEFAULT_FILE_MODE = stat.S_IFREG | 0o444
DEFAULT_DIR_MODE = stat.S_IFDIR | 0o555
MAX_INO = (1 << 48) - 1  # a reader's inode numbers stay below this; the tree uses the bits above
# Entries of parsed directories held per filesystem (about 300 bytes each) before the oldest listings are dropped.
RESIDENT_ENTRIES = 200_000
_TOP = object()  # the "parent" of a filesystem's root in the record of where each directory was shown


class Node:
    __slots__ = ("name", "mode", "size", "ino", "nlink", "uid", "gid", "mtime_ns", "atime_ns", "ctime_ns",
                 "rdev", "target", "children", "handle")

    def __init__(self, name: str, mode: int, size: int = 0, ino: int = 0, nlink: int = 1,
                 uid: Optional[int] = None, gid: Optional[int] = None, mtime_ns: int = 0,
                 atime_ns: Optional[int] = None, ctime_ns: Optional[int] = None, rdev: int = 0,
                 target: Optional[bytes] = None, handle: Any = None) -> None:
        self.name = name
        self.mode = mode
        self.size = size
        self.ino = ino
        self.nlink = nlink
        self.uid = uid  # None: the format records no owner
        self.gid = gid
        self.mtime_ns = mtime_ns
        self.atime_ns = mtime_ns if atime_ns is None else atime_ns
        self.ctime_ns = mtime_ns if ctime_ns is None else ctime_ns
        self.rdev = rdev
        self.target = target  # symlink target, byte for byte
        self.children: Optional[dict[str, Node]] = None  # filled by the filesystem on first need
        self.handle = handle  # the filesystem's own: extents, a directory's location, ...

    @property
    def is_dir(self) -> bool:
        return stat.S_ISDIR(self.mode)

    @property
    def is_file(self) -> bool:
        return stat.S_ISREG(self.mode)

    @property
    def is_symlink(self) -> bool:
        return stat.S_ISLNK(self.mode)

    def __repr__(self) -> str:
        return f"Node({self.name!r}, {stat.filemode(self.mode)}, size={self.size}, ino={self.ino})"


class Filesystem(Layer):
    """A volume's tree; subclasses implement ``_load_children`` and ``open``."""

    kind = "filesystem"
    has_xattrs = False  # a filesystem that can have extended attributes says so
    # The prefixes of every attribute name it can show. A name outside them is not supported (EOPNOTSUPP) rather
    # than absent: `ls -l` then stops asking each file for its SELinux label and POSIX ACL, a round trip each.
    xattr_prefixes: tuple[str, ...] = ("user.",)
    block_size = 2048
    total_size = 0
    root: Node
    # The namespaces this volume offers (-o namespace=), richest first; empty when it has one tree only.
    namespaces: tuple[str, ...] = ()
    namespace = ""  # the one shown
    directory_links = False  # True: a directory may be listed in several places; the reader refuses loops itself

    def __init__(self) -> None:
        self._load_lock = threading.Lock()
        # directory_key of every directory listed as an entry so far -> the directory_key of the one listing it
        self._shown_dirs: dict[Hashable, Hashable] = {}
        self._resident: deque[tuple[Node, int]] = deque()  # directories parsed, oldest first, with their sizes
        self._resident_entries = 0

    def children(self, node: Node) -> dict[str, Node]:
        kids = node.children
        if kids is None:
            with self._load_lock:  # one parse of a directory, even when threads race for it
                kids = node.children
                if kids is None:
                    kids = self._load_children(node)
                    self._check_listing(node, kids)
                    node.children = kids
                    if node is not getattr(self, "root", None):  # the root stays (a mount or graft point)
                        self._keep(node, len(kids) + 1)  # an empty listing costs its node too
        return kids

    def _keep(self, node: Node, count: int) -> None:
        """Hold ``node``'s listing, and drop the oldest ones beyond ``RESIDENT_ENTRIES`` entries in all (never
        the one just parsed): a walk of a huge tree keeps a bounded part of it, and what it left behind is
        parsed again if someone asks. Users of a listing hold the dict itself, which stays whole."""
        resident = self._resident
        resident.append((node, count))
        self._resident_entries += count
        while self._resident_entries > RESIDENT_ENTRIES and len(resident) > 1:
            old, old_count = resident.popleft()
            old.children = None
            self._resident_entries -= old_count

    def _load_children(self, node: Node) -> dict[str, Node]:
        raise NotImplementedError

    def directory_key(self, node: Node) -> Hashable:
        """What identifies a directory within the volume: two entries with one key are one directory. The
        inode number, unless a format numbers its entries otherwise (FAT: by directory entry)."""
        return node.ino

    def _check_listing(self, node: Node, kids: dict[str, Node]) -> None:
        """Safe names; and every directory shown once only, so that no walk of the tree can loop."""
        changed = sanitize(kids)
        if changed:
            some = ", ".join(f"{old!r} as {new!r}" for old, new in changed[:3])
            more = f" and {len(changed) - 3} more" if len(changed) > 3 else ""
            log.warning("%s: %s: names no filesystem may show are escaped: %s%s", self._title, _where(node), some,
                        more)
        if self.directory_links:
            return
        shown = self._shown_dirs
        if not shown and getattr(self, "root", None) is not None:
            shown[self.directory_key(self.root)] = _TOP
        here = self.directory_key(node)
        listed: set[Hashable] = set()  # the directories of this listing: one shown twice in it is shown once
        for name, kid in kids.items():
            if not kid.is_dir:
                continue
            key = self.directory_key(kid)
            where = shown.setdefault(key, here)
            if where == here and key != here and key not in listed:  # first shown here (or listed here again)
                listed.add(key)
                continue
            log.warning("%s: %s: directory %r is shown elsewhere already (it is its own ancestor, or a directory "
                        "link reaches it again): it is shown empty here", self._title, _where(node), name)
            kids[name] = empty = copy.copy(kid)
            empty.children = {}

    @property
    def _title(self) -> str:
        return f"{self.kind} {self.label!r}" if self.label else self.kind

    def open(self, node: Node) -> Stream:
        raise NotImplementedError

    def xattrs(self, node: Node) -> dict[str, bytes]:
        return {}

    def describe(self) -> dict[str, Any]:
        return {"filesystem": self.kind, "label": self.label}


def makedev(major: int, minor: int) -> int:
    """A device number from the major and minor a format records, in glibc's encoding (``os.makedev``'s), for
    any 32-bit values: ``os.makedev`` refuses those over 2**31 - 1, which only a damaged image holds."""
    major &= 0xFFFFFFFF
    minor &= 0xFFFFFFFF
    return (minor & 0xFF) | ((major & 0xFFF) << 8) | ((minor & ~0xFF) << 12) | ((major & ~0xFFF) << 32)


def _where(node: Node) -> str:
    return f"directory {node.name!r} (inode {node.ino})" if node.name else "the root directory"
