"""An APFS volume as a lazy tree: one directory's records read when it is first listed.

What is shown:

* Names as stored (APFS keeps them byte for byte, in whatever normalization they were written); on a
  normalization-insensitive volume a look-up by the other Unicode form finds the entry too.
* Inode numbers are APFS object ids (the root folder is 2): hard links are directory records that name
  the same inode, so they share its number, and the inode's link count is ``st_nlink``. A folder's link
  count is its number of children (as 7-Zip and libfsapfs show it), at least 1.
* Modes, owners and nanosecond times from the inode (mtime: modification, ctime: change, atime:
  access). Device files show their device number, FIFOs and sockets their type; symlinks the target
  stored in ``com.apple.fs.symlink``.
* Extended attributes in the ``user.`` namespace, like HFS+: every attribute, inline or in a data
  stream of its own, including ``com.apple.ResourceFork`` and ``com.apple.FinderInfo``. Hidden: the
  filesystem's own (``com.apple.fs.symlink``), and a compressed file's ``com.apple.decmpfs`` and
  resource fork (compression is transparent). Values over 64 KiB, which Linux cannot pass through
  getxattr, are left out.
* A decmpfs-compressed file shows its uncompressed size and decodes chunk by chunk (``decmpfs``).
"""

from __future__ import annotations

import logging
import stat
from collections.abc import Sequence
from typing import Any, NamedTuple, Optional

from imgfs.errors import CorruptImage, ImageError
from imgfs.filesystems import decmpfs
from imgfs.filesystems.apfs import records as rec
from imgfs.filesystems.apfs.objects import LAYER
from imgfs.filesystems.apfs.snapshots import snapshot_tree, snapshots
from imgfs.filesystems.apfs.volume import VolumeTree
from imgfs.filesystems.base import MAX_INO, Filesystem, Node, makedev
from imgfs.filesystems.names import NameMap
from imgfs.io.stream import Stream
from imgfs.layer import Progress, View, no_progress

log = logging.getLogger(__name__)

XATTR_SIZE_MAX = 65536  # what getxattr can return on Linux
SYMLINK_XATTR, RESOURCE_FORK = "com.apple.fs.symlink", "com.apple.ResourceFork"
# macOS attribute names have no namespace: every one is shown as user.NAME (one already named user.* as it is).
# Not trusted.* or security.* as stored: an image's SELinux label means nothing to this machine, and a
# filesystem without them answers ls's label look-ups "not supported" once instead of once per file.
SHOWN_AS_IS = ("user.",)
MAX_SYMLINK_SIZE = 4096
_FILE_TYPES = (stat.S_IFREG, stat.S_IFLNK, stat.S_IFCHR, stat.S_IFBLK, stat.S_IFIFO, stat.S_IFSOCK)


_new = tuple.__new__


class Handle(NamedTuple):
    ino: int
    private_id: int  # the data stream's id (shared by clones)
    size: int  # the data stream's size
    compressed: bool
    has_xattrs: Optional[bool] = None  # known from the listing; None: to be looked up


class ApfsFilesystem(Filesystem):
    kind = "apfs"
    has_xattrs = True
    xattr_prefixes = SHOWN_AS_IS
    checks = "Fletcher-64 checksums of every node of the volume's filesystem tree"

    def __init__(self, tree: VolumeTree, details: Optional[dict[str, Any]] = None) -> None:
        super().__init__()
        self.volume = tree
        sb = tree.superblock
        self.label = sb.name
        self.block_size = tree.blocks.block_size
        self.total_size = tree.blocks.block_count * tree.blocks.block_size
        self._details = details or {}
        root = tree.inode(rec.ROOT_DIR_INO)
        if not stat.S_ISDIR(root.mode):
            raise CorruptImage(f"{tree.name}: the root inode is not a folder (mode {root.mode:o})", layer=LAYER)
        self.root = self._node("", root)
        self.children(self.root)  # a broken root fails the mount, not the first ls

    # -- the tree ------------------------------------------------------------------------------------

    def _load_children(self, node: Node) -> dict[str, Node]:
        handle = node.handle
        assert isinstance(handle, Handle)
        children: dict[str, Node] = NameMap() if self.volume.superblock.hashed_names else {}
        entries = list(self.volume.entries(handle.ino))
        inodes = self.volume.inodes([entry.file_id for entry in entries])
        make = self._node
        for raw, file_id, kind in entries:
            name = raw.decode("utf-8", "surrogateescape")  # as the mount encodes names back to the kernel
            if "/" in name:
                name = name.replace("/", ":")
            if not name or name in (".", "..") or "\0" in name:
                continue
            found = inodes.get(file_id)
            if found is None:
                raise CorruptImage(f"{self.volume.name}: {name!r} names inode {file_id}, which is missing",
                                   layer=LAYER)
            children[name] = make(name, found[0], kind, found[1])
        return children

    def _node(self, name: str, inode: rec.Inode, dt: int = 0, has_xattrs: Optional[bool] = None) -> Node:
        (_parent, private_id, _created, mtime, ctime, atime, _flags, nlink, _class, _generation, bsd_flags, uid, gid,
         mode, _pad, _uncompressed, ino, stream_size, device) = inode  # one unpacking: a listing makes thousands
        kind = mode & 0o170000
        if not kind:
            mode |= rec.DT_TO_MODE.get(dt, stat.S_IFREG)
            kind = mode & 0o170000
        size, target, rdev, compressed = stream_size, None, 0, False
        if kind == stat.S_IFREG:
            if bsd_flags & rec.UF_COMPRESSED:
                compressed = True
                size = self._compressed_size(inode)
        elif kind == stat.S_IFLNK:
            target = self._symlink(inode)
            size = len(target)
        else:
            size = 0
            if kind == stat.S_IFCHR or kind == stat.S_IFBLK:
                rdev = makedev(device >> 24 & 0xFF, device & 0xFFFFFF)
        handle = _new(Handle, (ino, private_id, stream_size, compressed, has_xattrs))
        return Node(name, mode, size, ino if ino <= MAX_INO else _shown_ino(ino), nlink if nlink > 0 else 1, uid, gid,
                    mtime, atime, ctime, rdev, target, handle)

    def _symlink(self, inode: rec.Inode) -> bytes:
        xattr = self.volume.xattr(inode.ino, SYMLINK_XATTR)
        if xattr is None:
            raise CorruptImage(f"{self.volume.name}: symlink inode {inode.ino} has no {SYMLINK_XATTR}", layer=LAYER)
        return rec.symlink_target(self.volume.read_xattr(inode.ino, xattr, MAX_SYMLINK_SIZE))

    def _compressed_size(self, inode: rec.Inode) -> int:
        xattr = self.volume.xattr(inode.ino, decmpfs.ATTRIBUTE)
        value = None if xattr is None else self.volume.read_xattr(inode.ino, xattr, decmpfs.MAX_INLINE_SIZE)
        if value is None:
            raise CorruptImage(f"{self.volume.name}: compressed inode {inode.ino} has no usable "
                               f"{decmpfs.ATTRIBUTE}", layer=LAYER)
        size = decmpfs.parse_header(value, LAYER).size
        if size > decmpfs.MAX_SIZE:
            raise CorruptImage(f"{decmpfs.ATTRIBUTE} of inode {inode.ino} says {size} bytes", layer=LAYER)
        return size

    # -- data ----------------------------------------------------------------------------------------

    def open(self, node: Node) -> Stream:
        handle = node.handle
        assert isinstance(handle, Handle)
        what = f"inode {handle.ino} ({node.name!r})"
        if not handle.compressed:
            return self.volume.data_stream(handle.private_id, handle.size, what)
        value = self._attribute_value(handle.ino, decmpfs.ATTRIBUTE, decmpfs.MAX_INLINE_SIZE)
        if value is None:
            raise CorruptImage(f"{what} is compressed but has no {decmpfs.ATTRIBUTE}", layer=LAYER)
        fork_xattr = self.volume.xattr(handle.ino, RESOURCE_FORK)
        fork = self.volume.open_xattr(handle.ino, fork_xattr) if fork_xattr is not None else None
        return decmpfs.open_compressed(value, fork, self.volume.cache, f"{self.volume.blocks.name}:{what}", LAYER)

    def _attribute_value(self, ino: int, name: str, limit: int) -> Optional[bytes]:
        xattr = self.volume.xattr(ino, name)
        return None if xattr is None else self.volume.read_xattr(ino, xattr, limit)

    def xattrs(self, node: Node) -> dict[str, bytes]:
        handle = node.handle
        if not isinstance(handle, Handle) or not (node.is_dir or node.is_file) or handle.has_xattrs is False:
            return {}  # Linux keeps user.* attributes to files and folders
        shown: dict[str, bytes] = {}
        for xattr in self.volume.xattrs(handle.ino):
            if xattr.flags & rec.XATTR_FS_OWNED and xattr.name == SYMLINK_XATTR:
                continue
            if handle.compressed and xattr.name in (decmpfs.ATTRIBUTE, RESOURCE_FORK):
                continue
            value = self.volume.read_xattr(handle.ino, xattr, XATTR_SIZE_MAX)
            if value is not None:
                shown.setdefault(xattr.name if xattr.name.startswith(SHOWN_AS_IS) else "user." + xattr.name, value)
        return shown

    def verify(self, progress: Progress = no_progress) -> list[str]:
        problems: list[str] = []
        trees = [self.volume.tree] + ([self.volume.fext] if self.volume.fext is not None else [])
        for tree in trees:
            count = tree.check_all(problems)
            progress(f"{self.label}: {tree.name} B-tree", count, count)
        return problems

    def views(self) -> Sequence[View]:
        """Each snapshot's tree, read-only as all is: ``snapshots/VOLUME/SNAPSHOT NAME``."""
        found: list[View] = []
        seen: set[str] = set()
        volume = (self.label or "volume").replace("/", ":")
        for snap in snapshots(self.volume):
            name = snap.name.replace("/", ":")
            if name in seen or name in (".", ".."):
                name = f"{name} ({snap.xid})"
            seen.add(name)
            try:
                tree = ApfsFilesystem(snapshot_tree(self.volume, snap), {"snapshot": snap.name, "xid": snap.xid})
            except ImageError as exc:
                log.warning("apfs: snapshot %r of %r cannot be read: %s", snap.name, self.label, exc)
                continue
            found.append(View(f"snapshots/{volume}/{name}", tree))
        return found

    def describe(self) -> dict[str, Any]:
        sb = self.volume.superblock
        return {"filesystem": self.kind, "label": self.label, "uuid": sb.uuid_text, "roles": sb.roles,
                "case_sensitive": not sb.case_insensitive, "encrypted": sb.encrypted, "sealed": sb.sealed,
                "files": sb.files, "folders": sb.folders, "symlinks": sb.symlinks, "snapshots": sb.snapshots,
                "formatted_by": sb.formatted_by, **self._details}


def _shown_ino(ino: int) -> int:
    """APFS object ids are below 2**60; the tree takes inode numbers below 2**48."""
    return ino if ino <= MAX_INO else (ino & MAX_INO) ^ (ino >> 48)
