"""What ``-o rawviews`` shows of an NTFS volume under ``.imgfs/``: the metafiles and System Volume Information.

* ``metafiles/$MFT``, ``metafiles/$LogFile``, ... : each metafile's unnamed data stream, and each named one
  as ``NAME:STREAM`` (``$Secure:$SDS``, ``$BadClus:$Bad``, ``$UpCase:$Info``); ``$Extend`` is a folder of its
  own ($UsnJrnl:$J, $ObjId, ...). These are the bytes as stored; none is decoded further.
* ``System Volume Information``: the folder as it is, which the tree shows empty.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from imgfs.errors import ImageError
from imgfs.filesystems.base import Filesystem, Node
from imgfs.filesystems.ntfs.nodes import DirHandle
from imgfs.filesystems.ntfs.record import DATA
from imgfs.filesystems.ntfs.values import DOS
from imgfs.io.stream import Stream
from imgfs.layer import View

if TYPE_CHECKING:
    from imgfs.filesystems.ntfs.reader import NtfsFilesystem

log = logging.getLogger(__name__)

MAX_DEPTH = 4  # $Extend\$RmMetadata\$TxfLog\... is as deep as metafiles go
MAX_VIEWS = 1000


class Subtree(Filesystem):
    """One folder of an NTFS volume shown whole, as a filesystem of its own (a raw view)."""

    kind = "ntfs"

    def __init__(self, owner: NtfsFilesystem, node: Node) -> None:
        super().__init__()
        self.owner = owner
        self.label = node.name
        self.block_size, self.total_size, self.has_xattrs = owner.block_size, owner.total_size, True
        self.xattr_prefixes = owner.xattr_prefixes
        handle: DirHandle = node.handle
        self.root = Node("", node.mode, 0, node.ino, 1, None, None, node.mtime_ns, node.atime_ns, node.ctime_ns,
                         handle=handle._replace(hidden=False))

    def _load_children(self, node: Node) -> dict[str, Node]:
        return self.owner._load_children(node)

    def open(self, node: Node) -> Stream:
        return self.owner.open(node)

    def xattrs(self, node: Node) -> dict[str, bytes]:
        return self.owner.xattrs(node)


def raw_views(fs: NtfsFilesystem) -> list[View]:
    views: list[View] = []
    _metafiles(fs, 5, "metafiles", 0, views)
    svi = fs.children(fs.root).get("System Volume Information")
    if svi is not None and svi.is_dir:
        views.append(View("System Volume Information", Subtree(fs, svi)))
    return views


def _metafiles(fs: NtfsFilesystem, folder: int, path: str, depth: int, views: list[View]) -> None:
    """The streams of the metafiles in ``folder`` (records below 16 in the root, everything in $Extend)."""
    try:
        entries = fs._entries(folder)
    except ImageError as exc:
        log.warning("%s: metafile folder %s skipped: %s", fs.name, path, exc)
        return
    for entry in entries:
        if entry.key.namespace == DOS or entry.record == folder or len(views) >= MAX_VIEWS:
            continue
        if folder == 5 and entry.record >= 16:
            continue
        name = f"{path}/{entry.key.name}"
        if entry.key.is_directory:
            if depth < MAX_DEPTH:
                _metafiles(fs, entry.record, name, depth + 1, views)
            continue
        try:
            attrs = fs.mft.attributes(fs.mft.record(entry.record))
            for stream in sorted({a.name for a in attrs if a.type == DATA}):
                segments = [a for a in attrs if a.type == DATA and a.name == stream]
                shown = f"{name}:{stream}" if stream else name
                views.append(View(shown, fs.mft.attribute_stream(segments, f"{fs.name}:{shown}")))
        except ImageError as exc:
            log.warning("%s: metafile %s skipped: %s", fs.name, name, exc)
