"""HFS+ and HFSX as a lazy tree: the catalog B-tree is read one folder at a time.

At mount only the volume header, the B-tree header nodes and the root folder are read. A folder's
children are the catalog's leaf records keyed by its CNID; B-tree nodes are kept parsed in the mount's
``BlockCache``. A file's data fork is an ``ExtentStream`` over the volume (more than eight extents
continue in the extents overflow B-tree); a decmpfs-compressed file is a ``ChunkedStream`` whose 64 KiB
chunks inflate on first read (see ``decmpfs``).

What is shown:

* Names are stored decomposed (NFD) in UTF-16; they are shown in NFC, a stored '/' as ':' (the POSIX
  view that macOS gives), NUL as U+2400. A look-up by the NFD form finds the entry too (``NameMap``).
* Inode numbers are CNIDs. A file hard link (an 'hlnk'/'hfs+' file pointing to
  ``iNode<n>`` in "\\0\\0\\0\\0HFS+ Private Data") shows the indirect node: its CNID, data, owner, mode,
  times and link count. A directory hard link ('fdrp'/'MACS', Time Machine) shows the folder
  ``dir_<n>`` of ".HFS+ Private Directory Data\\r". Those two folders, and the journal files of a
  journaled volume, are hidden from the root. Directories show one link (as the oracle readers do).
* Modes, owners and times come from the catalog (mtime is contentModDate, ctime attributeModDate, atime
  accessDate). A record whose mode is 0 (never set) shows 0755 for folders, 0644 for files, owned by
  the mounting user. Device files show their rdev; symlinks their target, byte for byte.
* Extended attributes are shown in the ``user.`` namespace, the only one an unprivileged Linux user can
  read: ``user.com.apple.FinderInfo`` (32 bytes, when not all zero once macOS's private fields are
  cleared, as macOS shows it), ``user.com.apple.ResourceFork`` (when the resource fork is not empty), and
  every attribute of the attributes B-tree as ``user.<its name>``; a name that already starts with
  ``user.``, ``trusted.`` or ``security.`` (written by Linux) is shown as it is. The decmpfs attribute
  (and the resource fork holding compressed data) of a compressed file are hidden: compression is
  transparent. Values over 64 KiB, which Linux cannot pass through getxattr, are left out.

The journal is not replayed: a journaled volume with unreplayed transactions is shown as its main area
stands, with a warning.
"""

from __future__ import annotations

import logging
import stat
from typing import Any, NamedTuple, Optional

from imgfs.errors import CorruptImage, ImageError
from imgfs.filesystems import decmpfs
from imgfs.filesystems.base import Filesystem, Node, makedev
from imgfs.filesystems.hfsplus import attributes as attrs
from imgfs.filesystems.hfsplus import catalog as cat
from imgfs.filesystems.hfsplus.btree import BTree
from imgfs.filesystems.hfsplus.finderinfo import FINDER_INFO, RESOURCE_FORK, XATTR_SIZE_MAX, shown_finder_info
from imgfs.filesystems.hfsplus.forks import Allocation, ExtentFormat, Run, volume_offset
from imgfs.filesystems.hfsplus.unicode import KEY_COMPARE_BINARY, encode, shown
from imgfs.filesystems.hfsplus.volume import (
    EXTENT_RECORD_SIZE,
    Fork,
    extent_key,
    journal_pending,
    open_volume,
    parse_extents,
)
from imgfs.filesystems.names import NameMap
from imgfs.io.stream import ExtentStream, Stream
from imgfs.layer import OpenContext

log = logging.getLogger(__name__)

EXTENTS_FILE, CATALOG_FILE, ATTRIBUTES_FILE = 3, 4, 8
DATA, RESOURCE = 0x00, 0xFF
MAX_SYMLINK_SIZE = 4096
SHOWN_AS_IS = ("user.", "trusted.", "security.")
_DEVICES = (stat.S_IFCHR, stat.S_IFBLK)
_FILE_KINDS = (stat.S_IFREG, stat.S_IFLNK, stat.S_IFCHR, stat.S_IFBLK, stat.S_IFIFO, stat.S_IFSOCK)
EXTENT_FORMAT = ExtentFormat(extent_key, parse_extents, EXTENT_RECORD_SIZE)


class DirHandle(NamedTuple):
    """A folder: its CNID, the parent its thread record must name, the directory-hard-link targets above
    it (a link to one of them would be a loop), and what its attributes need from its record."""

    cnid: int
    parent: int
    links: tuple[int, ...] = ()
    finder_info: bytes = b""  # as com.apple.FinderInfo shows it; empty when that is all zeros
    has_attributes: bool = False  # the record's flags say the attributes B-tree has some


class FileHandle(NamedTuple):
    """A file: the catalog key of the record that holds its data (an indirect node for a hard link), and
    what its attributes need from that record, so that listing them reads no catalog node."""

    parent: int
    name: bytes
    cnid: int
    finder_info: bytes = b""
    has_attributes: bool = False
    resource_size: int = 0
    compressed: bool = False


class HfsPlusFilesystem(Filesystem):
    kind = "hfs+"
    has_xattrs = True
    xattr_prefixes = SHOWN_AS_IS
    namespaces = ("hfsplus",)  # the Apple side of an ISO 9660 + HFS+ hybrid disc (-o namespace=hfsplus)
    namespace = "hfsplus"
    directory_links = True  # Time Machine's directory hard links: shown wherever they are; loops refused below

    def __init__(self, stream: Stream, ctx: OpenContext) -> None:
        super().__init__()
        self.cache = ctx.cache
        self.volume, self.header, self.offset = open_volume(stream)
        header = self.header
        self.block_size = header.block_size
        self.total_size = header.block_size * header.total_blocks
        self._name = stream.name
        self._open_trees()
        root_thread = self._thread(cat.ROOT_FOLDER)
        if root_thread.parent != cat.ROOT_PARENT:
            raise CorruptImage(f"the root folder's thread names parent {root_thread.parent}, expected "
                               f"{cat.ROOT_PARENT}", layer="hfs+")
        self.label = shown(root_thread.name)
        self._private_files = self._private(cat.PRIVATE_DATA)
        self._private_dirs = self._private(cat.PRIVATE_DIR_DATA)
        root = self._record(cat.ROOT_PARENT, root_thread.name)
        if root is None or root.kind != cat.FOLDER or root.cnid != cat.ROOT_FOLDER:
            raise CorruptImage("the root folder's record is missing or is not folder 2", layer="hfs+")
        self.root = self._dir_node("", root, cat.ROOT_PARENT, ())
        self.children(self.root)  # a broken root fails the mount, not the first ls
        self._warn_about_state()  # only once the mount will happen: a refusal stays one line

    # -- forks and B-trees ---------------------------------------------------------------------------

    def _open_trees(self) -> None:
        header = self.header
        self.allocation = Allocation(header.block_size, header.total_blocks, 0, "hfs+", EXTENT_FORMAT,
                                     report_offset=self.offset)
        self.extents = self._tree(header.extents_file, EXTENTS_FILE, "extents overflow", extent_key)
        self.allocation.overflow_tree = self.extents  # the extents file itself cannot overflow
        self.catalog = self._tree(header.catalog_file, CATALOG_FILE, "catalog", cat.key_of(True))
        self.case_sensitive = header.signature == "HX" and self.catalog.header.compare_type == KEY_COMPARE_BINARY
        self.catalog.key_of = cat.key_of(not self.case_sensitive)
        self.attributes: Optional[BTree] = None
        if header.attributes_file.logical_size:
            self.attributes = self._tree(header.attributes_file, ATTRIBUTES_FILE, "attributes", attrs.key_of)

    def _tree(self, fork: Fork, cnid: int, name: str, key_of: Any) -> BTree:
        runs = self._fork_runs(fork, cnid, DATA, f"the {name} file")
        stream = ExtentStream.over(self.volume, runs, name=f"{self._name}:{name} file")
        return BTree(stream, self.cache, name, key_of, lambda offset: self.offset + volume_offset(runs, offset))

    def _fork(self, fork: Fork, cnid: int, fork_type: int, what: str) -> ExtentStream:
        return ExtentStream.over(self.volume, self._fork_runs(fork, cnid, fork_type, what), name=f"{self._name}:{what}")

    def _fork_runs(self, fork: Fork, cnid: int, fork_type: int, what: str) -> list[Run]:
        """A fork's byte runs: its extents, continued in the extents overflow file past the eighth."""
        return self.allocation.fork_runs(fork.extents, fork.total_blocks, fork.logical_size, cnid, fork_type, what)

    # -- catalog -------------------------------------------------------------------------------------

    def _record(self, parent: int, name: bytes) -> Optional[cat.Entry]:
        record = self.catalog.find(cat.search_key(parent, name, not self.case_sensitive))
        if record is None:
            return None
        return cat.parse_entry(record.data, record.offset) if cat.record_type(record.data) in (cat.FOLDER, cat.FILE) \
            else None

    def _thread(self, cnid: int) -> cat.Thread:
        record = self.catalog.find((cnid, ""))
        if record is None or cat.record_type(record.data) not in (cat.FOLDER_THREAD, cat.FILE_THREAD):
            raise CorruptImage(f"CNID {cnid} has no thread record in the catalog", layer="hfs+")
        return cat.parse_thread(record.data, record.offset)

    def _private(self, name: str) -> int:
        entry = self._record(cat.ROOT_FOLDER, name.encode("utf-16-be"))
        return entry.cnid if entry is not None and entry.kind == cat.FOLDER else 0

    def _entries(self, parent: int) -> list[tuple[bytes, cat.Entry]]:
        found = []
        for record in self.catalog.walk((parent, "")):
            key_parent, name = cat.split_key(record.key, record.offset)
            if key_parent != parent:
                break
            if cat.record_type(record.data) in (cat.FOLDER, cat.FILE):
                found.append((name, cat.parse_entry(record.data, record.offset)))
        return found

    # -- nodes ---------------------------------------------------------------------------------------

    def _load_children(self, node: Node) -> dict[str, Node]:
        handle = node.handle
        if not isinstance(handle, DirHandle):
            raise NotADirectoryError(node.name)
        thread = self._thread(handle.cnid)
        if thread.parent != handle.parent:
            raise CorruptImage(f"folder CNID {handle.cnid}'s thread names parent {thread.parent}, but it is listed "
                               f"in folder {handle.parent}", layer="hfs+")
        hidden = self._hidden() if handle.cnid == cat.ROOT_FOLDER else set()
        kids: NameMap[Node] = NameMap()
        for raw, entry in self._entries(handle.cnid):
            if raw in hidden:
                continue
            child = self._child(raw, entry, handle)
            if child is None:
                continue
            name = child.name
            if name in kids:
                name = raw.decode("utf-16-be", "replace").replace("/", ":").replace("\0", "\u2400")
                log.warning("%s: two entries of folder %d are shown as %r; the second is shown as %r",
                            self._name, handle.cnid, child.name, name)
                if name in kids:
                    continue
                child.name = name
            kids[name] = child
        return kids

    def _hidden(self) -> set[bytes]:
        names = {encode(cat.PRIVATE_DATA), cat.PRIVATE_DIR_DATA.encode("utf-16-be")}
        if self.header.journaled:
            names |= {".journal".encode("utf-16-be"), ".journal_info_block".encode("utf-16-be")}
        return names

    def _child(self, raw: bytes, entry: cat.Entry, parent: DirHandle) -> Optional[Node]:
        name = shown(raw)
        try:
            if entry.kind == cat.FOLDER:
                return self._dir_node(name, entry, parent.cnid, parent.links)
            if entry.file_type == cat.DIR_LINK and self._private_dirs:
                return self._dir_link(name, entry, parent)
            if entry.file_type == cat.HARD_LINK and self._private_files:
                return self._hard_link(name, entry)
            return self._file_node(name, entry, parent.cnid, raw)
        except ImageError as exc:
            log.warning("%s: %r (CNID %d) skipped: %s", self._name, name, entry.cnid, exc)
            return None

    def _owner_and_mode(self, entry: cat.Entry, default: int) -> tuple[Optional[int], Optional[int], int]:
        if entry.mode == 0:  # no BSD information: no owner
            return None, None, default
        return entry.owner, entry.group, entry.mode

    def _dir_node(self, name: str, entry: cat.Entry, parent: int, links: tuple[int, ...]) -> Node:
        uid, gid, mode = self._owner_and_mode(entry, stat.S_IFDIR | 0o755)
        mode = stat.S_IFDIR | stat.S_IMODE(mode)
        handle = DirHandle(entry.cnid, parent, links, shown_finder_info(entry.finder_info),
                           bool(entry.flags & cat.HAS_ATTRIBUTES))
        return Node(name, mode, 0, entry.cnid, 1, uid, gid, *_times(entry), handle=handle)

    def _file_node(self, name: str, entry: cat.Entry, parent: int, key_name: bytes, nlink: int = 1) -> Node:
        default = stat.S_IFLNK | 0o755 if entry.file_type == cat.SYMLINK else stat.S_IFREG | 0o644
        uid, gid, mode = self._owner_and_mode(entry, default)
        kind = stat.S_IFMT(mode)
        if kind not in _FILE_KINDS:
            kind = stat.S_IFREG
        mode = kind | stat.S_IMODE(mode)
        assert entry.data_fork is not None and entry.resource_fork is not None
        handle = FileHandle(parent, key_name, entry.cnid, shown_finder_info(entry.finder_info),
                            bool(entry.flags & cat.HAS_ATTRIBUTES), entry.resource_fork.logical_size, entry.compressed)
        size, target, rdev = entry.data_fork.logical_size, None, 0
        if kind == stat.S_IFLNK:
            if size > MAX_SYMLINK_SIZE:
                raise CorruptImage(f"symlink target of {size} bytes (at most {MAX_SYMLINK_SIZE})", layer="hfs+")
            target = self._fork(entry.data_fork, entry.cnid, DATA, f"symlink {name!r}").pread(0, size)
        elif kind in _DEVICES:
            size, rdev = 0, makedev((entry.special >> 24) & 0xFF, entry.special & 0xFFFFFF)
        elif kind != stat.S_IFREG:
            size = 0
        elif entry.compressed:
            size = self._compressed_size(entry, name)
        elif size > self.total_size:  # reading it gives EIO: its extents cannot hold it
            log.warning("%s: %r (CNID %d) says %d bytes, more than the volume holds", self._name, name, entry.cnid,
                        size)
            size = 0
        return Node(name, mode, size, entry.cnid, nlink, uid, gid, *_times(entry), rdev,
                    target, handle)

    def _compressed_size(self, entry: cat.Entry, name: str) -> int:
        try:
            value = self._attribute(entry.cnid, decmpfs.ATTRIBUTE)
            if value is None:
                raise CorruptImage(f"no {decmpfs.ATTRIBUTE} attribute", layer="hfs+")
            size = decmpfs.parse_header(value).size
            if size > decmpfs.MAX_SIZE:
                raise CorruptImage(f"{decmpfs.ATTRIBUTE} says {size} bytes", layer="hfs+")
            return size
        except ImageError as exc:
            log.warning("%s: compressed file %r (CNID %d) cannot be read: %s", self._name, name, entry.cnid, exc)
            return 0

    def _hard_link(self, name: str, link: cat.Entry) -> Optional[Node]:
        inode_name = f"iNode{link.special}".encode("utf-16-be")
        target = self._record(self._private_files, inode_name)
        if target is None or target.kind != cat.FILE or target.file_type == cat.HARD_LINK:
            raise CorruptImage(f"hard link to iNode{link.special}, which is not a file in the private folder",
                               layer="hfs+")
        return self._file_node(name, target, self._private_files, inode_name, max(1, target.special))

    def _dir_link(self, name: str, link: cat.Entry, parent: DirHandle) -> Optional[Node]:
        target = self._record(self._private_dirs, f"dir_{link.special}".encode("utf-16-be"))
        if target is None or target.kind != cat.FOLDER:
            raise CorruptImage(f"directory hard link to dir_{link.special}, which is not a folder in the private "
                               "directory folder", layer="hfs+")
        if target.cnid in parent.links:
            raise CorruptImage(f"directory hard link to folder {target.cnid}, which contains it: a loop",
                               layer="hfs+")
        return self._dir_node(name, target, self._private_dirs, (*parent.links, target.cnid))

    # -- data ----------------------------------------------------------------------------------------

    def _entry(self, handle: FileHandle) -> cat.Entry:
        """A file's catalog record, found again by its key."""
        entry = self._record(handle.parent, handle.name) or self._scan(handle)
        if entry is None or entry.cnid != handle.cnid:
            raise CorruptImage(f"the catalog record of CNID {handle.cnid} cannot be found again", layer="hfs+")
        return entry

    def _scan(self, handle: FileHandle) -> Optional[cat.Entry]:
        """A record the keyed look-up missed: the folder's records in order, compared by bytes. Only a
        volume whose names are not in the order its key compare type says needs this."""
        for raw, entry in self._entries(handle.parent):
            if raw == handle.name:
                log.warning("%s: catalog key of %r is out of order; found by a scan", self._name, shown(raw))
                return entry
        return None

    def open(self, node: Node) -> Stream:
        handle = node.handle
        if not isinstance(handle, FileHandle):
            raise IsADirectoryError(node.name)
        entry = self._entry(handle)
        assert entry.data_fork is not None and entry.resource_fork is not None
        label = f"{self._name}:{node.name}"
        if entry.compressed:
            value = self._attribute(entry.cnid, decmpfs.ATTRIBUTE)
            if value is None:
                raise CorruptImage(f"{node.name!r} is compressed but has no {decmpfs.ATTRIBUTE} attribute",
                                   layer="hfs+")
            fork = self._fork(entry.resource_fork, entry.cnid, RESOURCE, f"{node.name!r}'s resource fork")
            return decmpfs.open_compressed(value, fork, self.cache, label)
        return self._fork(entry.data_fork, entry.cnid, DATA, repr(node.name))

    # -- extended attributes -------------------------------------------------------------------------

    def _attribute_records(self, cnid: int) -> dict[str, list[attrs.Attribute]]:
        found: dict[str, list[attrs.Attribute]] = {}
        if self.attributes is None:
            return found
        for record in self.attributes.walk((cnid, "", 0)):
            owner, attribute = attrs.parse(record.key, record.data, record.offset)
            if owner != cnid:
                break
            found.setdefault(attribute.name, []).append(attribute)
        return found

    def _value(self, cnid: int, name: str, records: list[attrs.Attribute], limit: int) -> Optional[bytes]:
        """An attribute's value, or None when it is bigger than ``limit``."""
        first = records[0]
        if first.kind == attrs.INLINE:
            value = first.inline or b""
            return value if len(value) <= limit else None
        if first.kind != attrs.FORK_DATA or first.fork is None:
            raise CorruptImage(f"attribute {name!r} of CNID {cnid} starts with an extents record", layer="hfs+")
        fork = first.fork
        if fork.logical_size > limit:
            return None
        extents = list(fork.extents)
        for more in records[1:]:
            if more.kind == attrs.EXTENTS and more.fork is not None:
                extents += more.fork.extents
        runs = self.allocation.runs(extents, fork.logical_size, f"attribute {name!r} of CNID {cnid}")
        return ExtentStream.over(self.volume, runs).pread(0, fork.logical_size)

    def _attribute(self, cnid: int, name: str) -> Optional[bytes]:
        records = self._attribute_records(cnid).get(name)
        return None if records is None else self._value(cnid, name, records, decmpfs.MAX_INLINE_SIZE)

    def xattrs(self, node: Node) -> dict[str, bytes]:
        handle = node.handle
        if not (node.is_dir or node.is_file) or not isinstance(handle, (DirHandle, FileHandle)):
            return {}  # Linux keeps user.* attributes to files and folders
        shown_attrs: dict[str, bytes] = {}
        if handle.finder_info:
            shown_attrs[_xattr_name(FINDER_INFO)] = handle.finder_info
        compressed = isinstance(handle, FileHandle) and handle.compressed
        if isinstance(handle, FileHandle) and 0 < handle.resource_size <= XATTR_SIZE_MAX and not compressed:
            entry = self._entry(handle)
            assert entry.resource_fork is not None
            fork = self._fork(entry.resource_fork, entry.cnid, RESOURCE, f"{node.name!r}'s resource fork")
            shown_attrs[_xattr_name(RESOURCE_FORK)] = fork.pread(0, entry.resource_fork.logical_size)
        if handle.has_attributes:
            for name, records in self._attribute_records(handle.cnid).items():
                if compressed and name == decmpfs.ATTRIBUTE:
                    continue
                value = self._value(handle.cnid, name, records, XATTR_SIZE_MAX)
                if value is not None:
                    shown_attrs.setdefault(_xattr_name(name), value)
        return shown_attrs

    # -- the rest ------------------------------------------------------------------------------------

    def _warn_about_state(self) -> None:
        header = self.header
        if self.volume.size < self.total_size:
            log.warning("%s: the image is %d bytes shorter than its HFS+ volume; files past the end give EIO",
                        self._name, self.total_size - self.volume.size)
        if not header.journaled:
            return
        try:
            pending = journal_pending(self.volume, header)
        except ImageError as exc:
            log.warning("%s: the HFS+ journal cannot be read (%s); it is not replayed", self._name, exc)
            return
        if pending:
            log.warning("%s: the HFS+ journal holds transactions that were not replayed; imgfs does not replay "
                        "the journal, so the latest changes may be missing", self._name)

    def describe(self) -> dict[str, Any]:
        return {"filesystem": self.kind, "type": "hfsx" if self.header.signature == "HX" else "hfs+",
                "label": self.label, "case_sensitive": self.case_sensitive,
                **({"embedded_at": self.offset} if self.offset else {}), **self.header.describe()}


def _times(entry: cat.Entry) -> tuple[int, int, int]:
    """mtime, atime, ctime: contentModDate, accessDate, attributeModDate."""
    return (cat.hfs_time_ns(entry.modify_date), cat.hfs_time_ns(entry.access_date),
            cat.hfs_time_ns(entry.change_date))


def _xattr_name(name: str) -> str:
    return name if name.startswith(SHOWN_AS_IS) else "user." + name

