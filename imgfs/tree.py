"""The mounted tree: path look-up across the filesystems of one image, and what ``stat`` shows.

A ``Tree`` has one filesystem at its root: a volume's own, or a ``VirtualFilesystem`` of folders made
by the assembler (one per volume) with other filesystems mounted in them. Any directory can also have
entries grafted into it from elsewhere (the ``Track NN.wav`` files beside a mixed-mode disc's data, the
``.imgfs`` folder of raw views). Nothing here knows about FUSE or about any format.

This is the one place where the user's presentation options apply (``Presentation``): ``uid=``, ``gid=``
and ``umask=``, the owner of entries whose format records none, and inode numbers that never collide
between the volumes of one image (each filesystem gets its own range above 2**48).
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Callable, NamedTuple, Optional

from imgfs.errors import ImageError
from imgfs.filesystems.base import DEFAULT_DIR_MODE, DEFAULT_FILE_MODE, MAX_INO, Filesystem, Node
from imgfs.io.stream import Stream

log = logging.getLogger(__name__)

VOLUME_INO_SHIFT = 48  # a filesystem's inode numbers are its own plus its index << 48
_new = tuple.__new__
XATTR_NAME_MAX = 255  # bytes, as Linux takes them

ErrorHandler = Callable[[str, Exception], None]  # (the path of a directory that cannot be listed, why)


class Walked(NamedTuple):
    """One entry met by ``Tree.walk_entries``."""

    path: str
    node: Node
    fs: Filesystem


def _showable_xattr(name: str) -> bool:
    try:
        return "\0" not in name and len(name.encode("utf-8", "surrogateescape")) <= XATTR_NAME_MAX
    except UnicodeEncodeError:  # a lone surrogate from a damaged UTF-16 name: no bytes can show it
        return False


def _log_error(path: str, exc: Exception) -> None:
    log.warning("%s: %s", path, exc)


@dataclass(frozen=True)
class Presentation:
    """How entries are shown: the mount options that change what ``stat`` says."""

    uid: Optional[int] = None  # uid=: every entry's owner
    gid: Optional[int] = None
    umask: int = 0  # umask=: permission bits removed from every mode
    default_uid: int = 0  # the owner of entries whose format records none: the mounting user
    default_gid: int = 0


class Attributes(NamedTuple):
    """What ``stat`` shows of a node, after the presentation options."""

    ino: int
    mode: int
    nlink: int
    uid: int
    gid: int
    size: int
    rdev: int
    atime_ns: int
    mtime_ns: int
    ctime_ns: int


class VirtualFilesystem(Filesystem):
    """Folders and files made up by imgfs: one folder per volume, raw views, files beside a disc's data."""

    kind = "volumes"

    def __init__(self, total_size: int = 0, mtime_ns: int = 0) -> None:
        super().__init__()
        self.empty_reason = ""  # why there is nothing to show, when that is so
        self.total_size = total_size
        self._mtime_ns = mtime_ns
        self._next_ino = 1
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
    """Path look-up over a root filesystem and the filesystems mounted or grafted below it.

    ``mount`` shows a filesystem as a folder of a virtual directory; ``graft`` adds a node of another
    filesystem to any directory, even one of a real filesystem. An entry of the directory itself wins over
    a grafted one of the same name.
    """

    def __init__(self, root: Optional[Filesystem] = None, presentation: Presentation = Presentation()) -> None:
        self.presentation = presentation
        self._mounts: dict[int, Filesystem] = {}  # id(node) -> the filesystem it belongs to, where it changes
        self._grafts: dict[int, dict[str, Node]] = {}  # id(directory) -> extra entries
        self._bases: dict[int, int] = {}  # id(filesystem) -> what is added to its inode numbers
        self.set_root(root or VirtualFilesystem())

    # -- building ----------------------------------------------------------------------------------------

    def set_root(self, fs: Filesystem) -> None:
        self.fs: Filesystem = fs
        self.root = fs.root
        self._bases[id(fs)] = 0

    def _adopt(self, fs: Filesystem) -> None:
        if id(fs) not in self._bases:
            self._bases[id(fs)] = len(self._bases) << VOLUME_INO_SHIFT  # the root has 0

    def mount(self, parent: Node, name: str, fs: Filesystem) -> None:
        """Show ``fs`` as the folder ``name`` of a virtual directory ``parent``."""
        assert parent.children is not None
        parent.children[name] = fs.root
        self._mounts[id(fs.root)] = fs
        self._adopt(fs)

    def graft(self, parent: Node, name: str, node: Node, fs: Filesystem) -> None:
        """Show ``node`` of ``fs`` as ``name`` in the directory ``parent``."""
        self._grafts.setdefault(id(parent), {})[name] = node
        self._mounts[id(node)] = fs
        self._adopt(fs)

    @property
    def filesystems(self) -> list[Filesystem]:
        return [self.fs, *{id(fs): fs for fs in self._mounts.values() if fs is not self.fs}.values()]

    # -- looking up ----------------------------------------------------------------------------------------

    def entries(self, node: Node, fs: Filesystem) -> dict[str, Node]:
        """The children of directory ``node`` of ``fs``, with what is grafted there."""
        kids = fs.children(node)
        extra = self._grafts.get(id(node))
        if extra:
            kids = {**extra, **kids}
        return kids

    def listing(self, node: Node, fs: Filesystem) -> list[tuple[str, Node, Filesystem]]:
        """(name, node, its filesystem) for every entry of directory ``node``."""
        mounts = self._mounts
        return [(name, child, mounts.get(id(child), fs)) for name, child in self.entries(node, fs).items()]

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
        return self.shown_xattrs(node, fs, lambda: path)

    @staticmethod
    def shown_xattrs(node: Node, fs: Filesystem, where: Callable[[], str]) -> dict[str, bytes]:
        """The node's extended attributes that Linux can show (the mount, extraction): a name with a NUL, over 255
        bytes or not writable as bytes (a damaged attribute record) would break the whole list, and one outside
        ``fs.xattr_prefixes`` could not be read back; it is left out, with a log line naming ``where()``."""
        found = fs.xattrs(node)
        prefixes = fs.xattr_prefixes
        if all(name.startswith(prefixes) and _showable_xattr(name) for name in found):
            return found
        shown = {name: value for name, value in found.items() if name.startswith(prefixes) and _showable_xattr(name)}
        log.warning("%s: extended attributes Linux cannot show are left out: %s", where(),
                    ", ".join(repr(name[:40]) for name in found if name not in shown))
        return shown

    def walk(self, path: str = "/", *, on_error: Optional[ErrorHandler] = None,
             breadth_first: bool = False) -> Iterator[tuple[str, Node]]:
        """(path, node) for every node below ``path``: see ``walk_entries``."""
        for entry in self.walk_entries(path, on_error=on_error, breadth_first=breadth_first):
            yield entry.path, entry.node

    def walk_entries(self, path: str = "/", *, on_error: Optional[ErrorHandler] = None,
                     breadth_first: bool = False) -> Iterator[Walked]:
        """Every entry below ``path`` with its filesystem, depth first in directory order (or breadth first).

        The one walker of imgfs (``ls -R``, extraction, the mount's prefetch): it always ends, in time linear in
        the number of directories. Each directory (``Filesystem.directory_key``) is entered once, however many
        entries lead to it: the filesystems already show a looping directory as empty, and this also covers
        directory hard links (HFS+) and what is grafted or mounted; a second entry is yielded, not entered.
        A directory that cannot be listed is reported to ``on_error(its path, the error)`` (by default a log
        line) and skipped; the walk goes on. A ``path`` that does not resolve raises, as ``children`` does."""
        report = on_error or _log_error
        node, fs = self.resolve(path)
        if not node.is_dir:
            raise NotADirectoryError(path)
        entered = {(id(fs), fs.directory_key(node))}
        # Directories to enter, each listed only when its turn comes: a breadth-first walk of a thousand folders
        # holds their names, not a thousand listings.
        pending: deque[list] = deque()
        pending.append([path.rstrip("/"), node, fs, None])
        while pending:
            top = pending[0] if breadth_first else pending[-1]
            where, listing = top[0], top[3]
            if listing is None:
                listing = top[3] = self._listing_or_report(where or "/", top[1], top[2], report)
                top[1] = top[2] = None  # the node is not needed any more: a listing dropped meanwhile can go
            item = next(listing, None)
            if item is None:
                pending.popleft() if breadth_first else pending.pop()
                continue
            name, child, child_fs = item
            child_path = f"{where}/{name}"
            yield Walked(child_path, child, child_fs)
            key = (id(child_fs), child_fs.directory_key(child)) if child.is_dir else None
            if key is not None and key not in entered:
                entered.add(key)
                pending.append([child_path, child, child_fs, None])

    def _listing_or_report(self, path: str, node: Node, fs: Filesystem,
                           report: ErrorHandler) -> Iterator[tuple[str, Node, Filesystem]]:
        try:
            return iter(self.listing(node, fs))
        except (ImageError, OSError) as exc:
            report(path or "/", exc)
            return iter(())

    # -- what stat shows ------------------------------------------------------------------------------

    def attributes(self, node: Node, fs: Filesystem) -> Attributes:
        """``node`` as ``stat`` shows it: the inode number in its filesystem's range, owners and mode after
        ``uid=``, ``gid=`` and ``umask=``."""
        shown = self.presentation
        uid = shown.uid if shown.uid is not None else (node.uid if node.uid is not None else shown.default_uid)
        gid = shown.gid if shown.gid is not None else (node.gid if node.gid is not None else shown.default_gid)
        # tuple.__new__: a NamedTuple's own constructor costs twice as much, once per entry of every listing
        return _new(Attributes, (self.shown_ino(node, fs), node.mode & ~shown.umask,
                                 node.nlink, uid, gid, node.size, node.rdev, node.atime_ns, node.mtime_ns,
                                 node.ctime_ns))

    def shown_ino(self, node: Node, fs: Filesystem) -> int:
        """``node``'s inode number as ``stat`` shows it: in its filesystem's range (all a plain directory
        listing needs of it, with the type bits of its mode, which no option changes)."""
        ino, base = node.ino, self._bases.get(id(fs), 0)
        if base or ino > MAX_INO:
            return (ino & MAX_INO) + base
        return ino  # the node's own int: the mount keeps one for every inode the kernel holds (a million, 32 MB)

    def stat_path(self, path: str) -> Attributes:
        node, fs = self.resolve(path)
        return self.attributes(node, fs)
