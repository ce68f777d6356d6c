"""The UDF filesystem as a lazy tree.

At mount: the recognition sequence, an anchor, the volume descriptors, the partitions (VAT, sparing
table, metadata file), the file set descriptor and the root directory. Every other directory is read
the first time it is listed or looked up; a file's extents are worked out when it is opened, and its
bytes are an ``ExtentStream`` over the partitions, never copied.

Inode numbers are the ICB address of the entry (partition reference and block), so
hard links (directory entries naming one ICB) share one, and ``nlink`` is the entry's link count.
"""

from __future__ import annotations

import logging
import stat
from typing import Any, NamedTuple, Optional

from imgfs.errors import CorruptImage, ImageError
from imgfs.filesystems.base import Filesystem, Node, makedev
from imgfs.filesystems.udf.descriptors import (
    LAYER,
    TAG_FSD,
    TAG_TD,
    Address,
    FileSet,
    next_fsd_extent,
    parse_fsd,
    read_tag,
    revision_text,
    tag_ident,
)
from imgfs.filesystems.udf.directory import (
    FID_DELETED,
    FID_DIRECTORY,
    FID_PARENT,
    device_numbers,
    file_name,
    iter_fids,
    symlink_target,
)
from imgfs.filesystems.udf.icb import FLAG_SETGID, FLAG_SETUID, FLAG_STICKY, FileEntry, IcbReader
from imgfs.filesystems.udf.logical import LogicalVolumeLayout
from imgfs.filesystems.udf.volume import find_volume
from imgfs.io.stream import Stream
from imgfs.layer import OpenContext

log = logging.getLogger(__name__)

MAX_DIRECTORY_SIZE = 1 << 28
MAX_SYMLINK_SIZE = 1 << 16
MAX_FILE_SETS = 256  # file set descriptors read (WORM media append them)
NO_ID = 0xFFFFFFFF  # uid/gid "not specified"
INO_PARTITION_SHIFT = 32

# ICB file types (ECMA-167 4/14.6.6, UDF 2.3.5.2) and the kind of node each is
_KINDS = {0: stat.S_IFREG, 4: stat.S_IFDIR, 5: stat.S_IFREG, 6: stat.S_IFBLK, 7: stat.S_IFCHR, 9: stat.S_IFIFO,
          10: stat.S_IFSOCK, 12: stat.S_IFLNK, 249: stat.S_IFREG}


class Unreadable(NamedTuple):
    """The handle of an entry whose file entry cannot be read: listing or reading it gives the error."""

    error: ImageError


class DirHandle(NamedTuple):
    """A directory: its ICB, and the directory it was reached from (to refuse loops of directories)."""

    icb: Address
    entry: Address  # the newest file entry of that ICB
    parent: Optional[DirHandle]


class UdfFilesystem(Filesystem):
    kind = "udf"

    def __init__(self, stream: Stream, ctx: OpenContext) -> None:
        super().__init__()
        disc, start = stream.origin()  # a later session's structures address the whole disc
        self.stream = stream = disc
        self.cache = ctx.cache
        self.volume = find_volume(stream, start // 2048)
        lvd = self.volume.logical
        assert lvd is not None
        self.block_size = self.volume.sector_size
        self.total_size = stream.size
        self.layout = LogicalVolumeLayout(stream, self.volume)
        self.icb = IcbReader(self.layout.views, self.block_size)
        self.file_set = self._file_set()
        pvd_label = self.volume.primary.volume_id if self.volume.primary else ""
        self.label = (lvd.label or pvd_label).strip()
        self.namespaces = ("udf",)
        self.namespace = "udf"
        root = self._node("", self.file_set.root.where, None)
        if root is None or not root.is_dir:
            raise CorruptImage("the root directory's entry is not a directory", layer=LAYER,
                               offset=self.icb.where(self.file_set.root.where))
        self.root = root
        self.children(self.root)  # a broken root fails the mount, not the first ls
        for warning in self.volume.warnings + self.layout.warnings:
            log.warning("%s: %s", stream.name, warning)

    # -- the file set ------------------------------------------------------------------------------

    def _file_set(self) -> FileSet:
        """The prevailing file set descriptor (the highest number) of the sequence the volume points to."""
        lvd = self.volume.logical
        assert lvd is not None
        extent, best = lvd.file_set, None
        seen: set[Address] = set()
        while extent.where not in seen and len(seen) < MAX_FILE_SETS:  # the first extent's length may be 0
            seen.add(extent.where)
            following = None
            for index in range(min(MAX_FILE_SETS, max(1, extent.length // self.block_size))):
                where = Address(extent.where.partition, extent.where.block + index)
                data = self._read_fsd_block(where, best is None)
                if data is None or tag_ident(data) == TAG_TD:
                    break
                fsd = parse_fsd(data)
                if best is None or fsd.number >= best.number:
                    best = fsd
                following = next_fsd_extent(data)
                if following.length:
                    break
            if following is None or not following.length:
                break
            extent = following
        if best is None:
            raise CorruptImage("no file set descriptor", layer=LAYER, offset=self.icb.where(lvd.file_set.where))
        return best

    def _read_fsd_block(self, where: Address, first: bool) -> Optional[bytes]:
        """A file set descriptor; the first one must be there (through the metadata mirror if need be)."""
        try:
            data = self.icb.read_block(where)
            read_tag(data, self.icb.where(where) or 0, expect=(TAG_FSD, TAG_TD) if not first else (TAG_FSD,))
            return data
        except ImageError:
            mirror = self.layout.mirrors.get(where.partition)
            if not first:
                return None
            if mirror is None:
                raise
        self.layout.warnings.append("the UDF file set descriptor is unreadable through the metadata file; using "
                                    "its mirror")
        self.layout.views[where.partition] = mirror
        data = self.icb.read_block(where)
        read_tag(data, self.icb.where(where) or 0, expect=(TAG_FSD,))
        return data

    # -- nodes -------------------------------------------------------------------------------------

    def _ino(self, icb: Address) -> int:
        return (icb.partition << INO_PARTITION_SHIFT | icb.block) + 1

    def _node(self, name: str, icb: Address, parent: Optional[DirHandle]) -> Optional[Node]:
        entry = self.icb.entry(icb)
        kind = _KINDS.get(entry.file_type)
        if kind is None:
            log.warning("%s: UDF entry %r has file type %d, which is not a file; skipped", self.stream.name, name,
                        entry.file_type)
            return None
        mode = kind | _permissions(entry)
        uid = None if entry.uid == NO_ID else entry.uid
        gid = None if entry.gid == NO_ID else entry.gid
        size, target, rdev = entry.size, None, 0
        handle: Any = entry.address  # a file's: its newest entry; a directory's: a DirHandle
        if kind == stat.S_IFDIR:
            handle = DirHandle(icb, entry.address, parent)
        elif kind == stat.S_IFLNK:
            target = symlink_target(self.icb.read_all(entry, MAX_SYMLINK_SIZE, "a symbolic link"))
            size = len(target)
        elif kind in (stat.S_IFBLK, stat.S_IFCHR):
            numbers = device_numbers(entry.ea)
            rdev, size = (makedev(*numbers) if numbers else 0), 0
        elif kind != stat.S_IFREG:
            size = 0
        return Node(name, mode, size, self._ino(icb), max(1, entry.links), uid, gid, entry.mtime_ns, entry.atime_ns,
                    entry.ctime_ns, rdev, target, handle)

    def _load_children(self, node: Node) -> dict[str, Node]:
        if isinstance(node.handle, Unreadable):
            raise node.handle.error
        handle: DirHandle = node.handle
        entry = self.icb.entry(handle.entry)
        data = self.icb.read_all(entry, MAX_DIRECTORY_SIZE, f"directory {node.name or '/'}")
        kids: dict[str, Node] = {}
        for fid in iter_fids(data, lambda pos: self.icb.locate(entry, pos)):
            if fid.characteristics & (FID_PARENT | FID_DELETED) or not fid.name:
                continue
            name = _unique(file_name(fid.name), kids)
            if name is None:
                continue
            if _is_ancestor(fid.icb.where, handle):
                log.warning("%s: UDF directory entry %r leads back to a directory above it (a loop); skipped",
                            self.stream.name, name)
                continue
            try:
                child = self._node(name, fid.icb.where, handle)
            except ImageError as exc:
                log.warning("%s: UDF entry %r of %r is unreadable (it gives EIO): %s", self.stream.name, name,
                            node.name or "/", exc)
                child = self._unreadable(name, fid.icb.where, fid.characteristics, exc)
            if child is not None:
                kids[name] = child
        return kids

    def _unreadable(self, name: str, icb: Address, characteristics: int, error: ImageError) -> Node:
        """A stand-in for an entry whose file entry cannot be read: there, but EIO when listed or read."""
        mode = stat.S_IFDIR | 0o555 if characteristics & FID_DIRECTORY else stat.S_IFREG | 0o444
        return Node(name, mode, 0, self._ino(icb), 1, None, None, handle=Unreadable(error))

    # -- data --------------------------------------------------------------------------------------

    def open(self, node: Node) -> Stream:
        if isinstance(node.handle, Unreadable):
            raise node.handle.error
        if not node.is_file or not isinstance(node.handle, Address):
            raise IsADirectoryError(node.name)
        entry: FileEntry = self.icb.entry(node.handle)
        return self.icb.stream(entry, f"{self.stream.name}:{node.name}")

    def describe(self) -> dict[str, Any]:
        lvd = self.volume.logical
        assert lvd is not None
        return {
            "filesystem": "udf",
            "namespace": "udf",
            "namespaces": list(self.namespaces),
            "label": self.label,
            "revision": revision_text(lvd.revision),
            "recognition": self.volume.nsr,
            "block_size": self.block_size,
            "anchor_sector": self.volume.anchor_sector,
            "descriptor_sequence": self.volume.sequence,
            "volume_id": self.volume.primary.volume_id if self.volume.primary else "",
            "logical_volume_id": lvd.label,
            "file_set_id": self.file_set.label,
            "partition_maps": self.layout.details,
            "udf_partitions": [{"number": pd.number, "start": pd.start, "length": pd.length, "access": pd.access_type}
                           for pd in self.volume.partitions.values()],
        }


def _permissions(entry: FileEntry) -> int:
    """POSIX permission bits from UDF's (owner, group, other: each execute, write, read, chattr, delete)."""
    perms = entry.permissions
    mode = (perms >> 10 & 7) << 6 | (perms >> 5 & 7) << 3 | perms & 7
    flags = entry.icb_flags
    if flags & FLAG_SETUID:
        mode |= stat.S_ISUID
    if flags & FLAG_SETGID:
        mode |= stat.S_ISGID
    if flags & FLAG_STICKY:
        mode |= stat.S_ISVTX
    return mode


def _is_ancestor(icb: Address, handle: Optional[DirHandle]) -> bool:
    while handle is not None:
        if handle.icb == icb:
            return True
        handle = handle.parent
    return False


def _unique(name: str, kids: dict[str, Node]) -> Optional[str]:
    """The name to show; UDF names are unique, but made-safe ones ('/' to '_') may clash: keep both."""
    if name in ("", ".", ".."):
        return None
    if name not in kids:
        return name
    for n in range(2, 1000):
        candidate = f"{name}~{n}"
        if candidate not in kids:
            log.warning("two UDF entries are named %r; showing one as %r", name, candidate)
            return candidate
    return None
