"""What every filesystem reader builds: ``Node``s, and a ``Filesystem`` that lists them and opens them.

A reader imports this module and ``imgfs.layer``, never the assembly (``imgfs.image``, ``imgfs.tree``).

* Inode numbers are the reader's own, unique within its volume and below 2**48 (an ext inode, an
  HFS+ CNID, a byte offset in an ISO): the tree adds a base per volume so that volumes never collide.
* An owner the format does not record is ``None``: the tree shows the mounting user (or ``uid=``).
* Permissions are the format's own; the tree applies ``umask=``.
"""

from __future__ import annotations

import stat
import threading
from typing import Any, Optional

from imgfs.io.stream import Stream
from imgfs.layer import Layer

DEFAULT_FILE_MODE = stat.S_IFREG | 0o444
DEFAULT_DIR_MODE = stat.S_IFDIR | 0o555
MAX_INO = (1 << 48) - 1  # a reader's inode numbers stay below this; the tree uses the bits above


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
    block_size = 2048
    total_size = 0
    root: Node
    # The namespaces this volume offers (-o namespace=), richest first; empty when it has one tree only.
    namespaces: tuple[str, ...] = ()
    namespace = ""  # the one shown

    def __init__(self) -> None:
        self._load_lock = threading.Lock()

    def children(self, node: Node) -> dict[str, Node]:
        kids = node.children
        if kids is None:
            with self._load_lock:  # one parse of a directory, even when threads race for it
                kids = node.children
                if kids is None:
                    kids = self._load_children(node)
                    node.children = kids
        return kids

    def _load_children(self, node: Node) -> dict[str, Node]:
        raise NotImplementedError

    def open(self, node: Node) -> Stream:
        raise NotImplementedError

    def xattrs(self, node: Node) -> dict[str, bytes]:
        return {}

    def describe(self) -> dict[str, Any]:
        return {"filesystem": self.kind, "label": self.label}
