"""The mounted tree: nodes, the filesystem interface, and path look-up across volumes.

A ``Node`` carries what ``stat`` shows; a ``Filesystem`` fills in a directory's children on first
need and gives the bytes of a file as a ``Stream``. A ``Tree`` is one filesystem at the root, or a
``VirtualFilesystem`` of folders (one per volume) with other filesystems mounted in them. Nothing here
knows about FUSE.
"""

from __future__ import annotations

import stat
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Optional

from imgfs.io.stream import Stream

DEFAULT_FILE_MODE = stat.S_IFREG | 0o444
DEFAULT_DIR_MODE = stat.S_IFDIR | 0o555
VOLUME_INO_SHIFT = 48  # inode numbers of volume N are N << 48 plus the volume's own number


@dataclass(frozen=True)
class FsOptions:
    """What a filesystem reader is told when it opens a volume."""

    namespace: str = "auto"  # ISO 9660: which directory tree
    uid: int = 0  # owner of entries the filesystem gives no owner
    gid: int = 0
    ino_base: int = 0  # added to every inode number, so that volumes of one disk never collide
    start_sector: int = 0  # optical discs: the session's first 2048-byte sector (VDs at +16, UDF anchor at +256)


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


class VirtualFilesystem(Filesystem):
    """Folders and files made up by imgfs: one folder per volume, raw views of partitions."""

    kind = "volumes"

    def __init__(self, total_size: int, mtime_ns: int = 0, ino_base: int = 0) -> None:
        super().__init__()
        self.empty_reason = ""  # why there is nothing to show, when that is so
        self.total_size = total_size
        self._mtime_ns = mtime_ns
        self._next_ino = ino_base + 1
        self.root = self.make_dir()

    def _ino(self) -> int:
        ino, self._next_ino = self._next_ino, self._next_ino + 1
        return ino

    def make_dir(self) -> Node:
        node = Node("", DEFAULT_DIR_MODE, 0, self._ino(), 2, mtime_ns=self._mtime_ns)
        node.children = {}
        return node

    def add_dir(self, parent: Node, name: str) -> Node:
        """The folder ``name`` of ``parent``, made when it is not there yet."""
        assert parent.children is not None
        node = parent.children.get(name)
        if node is None:
            node = parent.children[name] = self.make_dir()
            node.name = name
        return node

    def add_file(self, parent: Node, name: str, stream: Stream) -> Node:
        node = Node(name, DEFAULT_FILE_MODE, stream.size, self._ino(), mtime_ns=self._mtime_ns, handle=stream)
        assert parent.children is not None
        parent.children[name] = node
        return node

    def _load_children(self, node: Node) -> dict[str, Node]:
        return {}

    def open(self, node: Node) -> Stream:
        if not isinstance(node.handle, Stream):
            raise IsADirectoryError(node.name)
        return node.handle


class Tree:
    """Path look-up over a top filesystem and the filesystems mounted in its folders.

    ``mount`` shows a filesystem as a folder of a virtual directory; ``graft`` adds a node of another
    filesystem to any directory, even one of a real filesystem (the ``Track NN.wav`` files beside a
    mixed-mode disc's data, the ``.imgfs`` folder of raw views). An entry of the directory itself wins
    over a grafted one of the same name.
    """

    def __init__(self, fs: Filesystem) -> None:
        self.fs = fs
        self.root = fs.root
        self._mounts: dict[int, Filesystem] = {}  # id(node) -> the filesystem it belongs to, where it changes
        self._grafts: dict[int, dict[str, Node]] = {}  # id(directory) -> extra entries

    def mount(self, parent: Node, name: str, fs: Filesystem) -> None:
        """Show ``fs`` as the folder ``name`` of a virtual directory ``parent``."""
        assert parent.children is not None
        parent.children[name] = fs.root
        self._mounts[id(fs.root)] = fs

    def graft(self, parent: Node, name: str, node: Node, fs: Filesystem) -> None:
        """Show ``node`` of ``fs`` as ``name`` in the directory ``parent``."""
        self._grafts.setdefault(id(parent), {})[name] = node
        self._mounts[id(node)] = fs

    @property
    def filesystems(self) -> list[Filesystem]:
        return [self.fs, *{id(fs): fs for fs in self._mounts.values()}.values()]

    def entries(self, node: Node, fs: Filesystem) -> dict[str, Node]:
        """The children of directory ``node`` of ``fs``, with what is grafted there."""
        kids = fs.children(node)
        extra = self._grafts.get(id(node))
        if extra:
            kids = {**extra, **kids}
        return kids

    def resolve(self, path: str) -> tuple[Node, Filesystem]:
        node, fs = self.root, self.fs
        for part in path.split("/"):
            if not part or part == ".":
                continue
            if not node.is_dir:
                raise NotADirectoryError(path)
            child = self.entries(node, fs).get(part)
            if child is None:
                raise FileNotFoundError(path)
            node = child
            fs = self._mounts.get(id(node), fs)
        return node, fs

    def lookup(self, path: str) -> Node:
        return self.resolve(path)[0]

    def children(self, path: str) -> dict[str, Node]:
        node, fs = self.resolve(path)
        if not node.is_dir:
            raise NotADirectoryError(path)
        return self.entries(node, fs)

    def open(self, path: str) -> Stream:
        node, fs = self.resolve(path)
        if node.is_dir:
            raise IsADirectoryError(path)
        return fs.open(node)

    def xattrs(self, path: str) -> dict[str, bytes]:
        node, fs = self.resolve(path)
        return fs.xattrs(node)

    def walk(self, path: str = "/") -> Iterator[tuple[str, Node]]:
        """(path, node) for every node below ``path``, depth first, in directory order."""
        prefix = path.rstrip("/")
        for name, child in self.children(path).items():
            child_path = f"{prefix}/{name}"
            yield child_path, child
            if child.is_dir:
                yield from self.walk(child_path)

