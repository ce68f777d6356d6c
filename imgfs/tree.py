"""The mounted tree: nodes, the filesystem interface, and path look-up.

A ``Node`` carries what ``stat`` shows; a ``Filesystem`` fills in a directory's children on first
need and gives the bytes of a file as a ``Stream``. Nothing here knows about FUSE.
"""

from __future__ import annotations

import stat
import threading
from typing import Any, Optional

from imgfs.io.stream import Stream

DEFAULT_FILE_MODE = stat.S_IFREG | 0o444
DEFAULT_DIR_MODE = stat.S_IFDIR | 0o555


class Node:
    __slots__ = ("name", "mode", "size", "ino", "nlink", "uid", "gid", "mtime_ns", "atime_ns", "ctime_ns",
                 "rdev", "target", "children", "handle")

    def __init__(self, name: str, mode: int, size: int = 0, ino: int = 0, nlink: int = 1,
                 uid: int = 0, gid: int = 0, mtime_ns: int = 0, atime_ns: Optional[int] = None,
                 ctime_ns: Optional[int] = None, rdev: int = 0, target: Optional[bytes] = None,
                 handle: Any = None) -> None:
        self.name = name
        self.mode = mode
        self.size = size
        self.ino = ino
        self.nlink = nlink
        self.uid = uid
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


class Filesystem:
    """A mounted filesystem; subclasses implement ``_load_children`` and ``open``."""

    kind = "filesystem"
    has_xattrs = False  # a filesystem that can have extended attributes says so
    label = ""
    block_size = 2048
    total_size = 0
    root: Node

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


class Tree:
    """Path look-up over a filesystem's nodes."""

    def __init__(self, fs: Filesystem) -> None:
        self.fs = fs
        self.root = fs.root

    def lookup(self, path: str) -> Node:
        node = self.root
        for part in path.split("/"):
            if not part or part == ".":
                continue
            if not node.is_dir:
                raise NotADirectoryError(path)
            child = self.fs.children(node).get(part)
            if child is None:
                raise FileNotFoundError(path)
            node = child
        return node

    def children(self, node: Node) -> dict[str, Node]:
        if not node.is_dir:
            raise NotADirectoryError(node.name)
        return self.fs.children(node)

    def open(self, node: Node) -> Stream:
        if node.is_dir:
            raise IsADirectoryError(node.name)
        return self.fs.open(node)

    def walk(self, node: Optional[Node] = None, prefix: str = ""):
        """(path, node) for every node below ``node``, depth first, in directory order."""
        node = node or self.root
        for name, child in self.children(node).items():
            path = f"{prefix}/{name}"
            yield path, child
            if child.is_dir:
                yield from self.walk(child, path)
