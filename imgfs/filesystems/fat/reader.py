"""FAT12/16/32 as a lazy tree: the root is parsed at mount, every other directory when first listed.

File data is never copied: a file is an ``ExtentStream`` over the volume, one extent per run of
contiguous clusters, built from its cluster chain the first time it is opened (and kept on the node
unless the file is badly fragmented). A damaged chain or directory is ``CorruptImage`` for that one file
or directory: EIO there, everything else still reads. A directory whose first cluster an earlier one
already has (a link back to an ancestor) is EIO too, rather than the top of an endless tree.

Inode numbers are stable byte offsets: where an entry's 8.3 directory entry lies in the volume (the root
is 1). FAT keeps no owners or permissions: files are 0444 and directories 0555, with no owner (the
mount shows the mounting user, or ``uid``/``gid``); the read-only attribute changes nothing on a
read-only mount. Times are local time (see ``dostime``); FAT's creation time is not shown (POSIX ctime
is the time of the last change, so it is shown as the modification time). The root directory has no
times of its own; it shows its volume-label entry's, else 1970.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Hashable
from typing import Any, NamedTuple, Optional

from imgfs.errors import CorruptImage
from imgfs.filesystems.base import DEFAULT_DIR_MODE, DEFAULT_FILE_MODE, Filesystem, Node
from imgfs.filesystems.fat.bootsector import LAYER, BootSector
from imgfs.filesystems.fat.directory import Listing, parse_directory
from imgfs.filesystems.fat.table import FatTable, byte_runs, read_runs
from imgfs.io.stream import ExtentStream, Stream, read_exact
from imgfs.layer import OpenContext

log = logging.getLogger(__name__)

ROOT_INO = 1
# The specification allows 65,536 entries (2 MiB) and Linux will not grow a directory past that, but
# mtools does; reading one is harmless, so the bound is only there to cap memory.
MAX_DIRECTORY_SIZE = 64 << 20
MAX_KEPT_RUNS = 1024  # a file in more pieces than this rebuilds its extent list on each open


class DirHandle(NamedTuple):
    cluster: int  # 0: the fixed root directory of FAT12/16


class FileHandle:
    __slots__ = ("cluster", "stream")

    def __init__(self, cluster: int) -> None:
        self.cluster = cluster
        self.stream: Optional[ExtentStream] = None  # built on first open; streams are stateless, so shared


class FatFilesystem(Filesystem):
    kind = "fat"

    def __init__(self, stream: Stream, ctx: OpenContext) -> None:
        super().__init__()
        self.stream = stream
        self.cache = cache = ctx.cache
        self.boot = boot = BootSector.parse(stream.pread(0, 512))
        self.fat_type = f"FAT{boot.fat_bits}"
        self.block_size = boot.cluster_size
        self.total_size = boot.volume_size
        self._max_dir_clusters = max(1, MAX_DIRECTORY_SIZE // boot.cluster_size)
        self.table = FatTable(stream, boot.fat_offset, boot.fat_bits, boot.cluster_count, cache, LAYER)
        self.root = Node("", DEFAULT_DIR_MODE, 0, ROOT_INO, 1, None, None,
                         handle=DirHandle(boot.root_cluster))
        self._root_label: Optional[str] = None
        self.children(self.root)  # a broken root fails the mount, not the first ls; and it holds the label
        self.label = boot.label if self._root_label is None else self._root_label
        if stream.size < boot.volume_size:
            log.warning("%s: the image is %d bytes shorter than its FAT volume; files past the end give EIO",
                        stream.name, boot.volume_size - stream.size)

    # -- directories -------------------------------------------------------------------------------

    def _read(self, offset: int, length: int, what: str) -> bytes:
        return read_exact(self.stream, offset, length, LAYER, what)

    def _read_directory(self, cluster: int, what: str) -> tuple[bytes, Callable[[int], int]]:
        """The directory's bytes, and where a position in them lies in the volume."""
        boot = self.boot
        if cluster == 0:
            root_offset = boot.root_offset
            return self._read(root_offset, boot.root_size, what), lambda pos: root_offset + pos
        runs, complete = self.table.walk(cluster, self._max_dir_clusters, what)
        if not complete:
            raise CorruptImage(f"{what}: the cluster chain is longer than a directory may be "
                               f"({MAX_DIRECTORY_SIZE} bytes)", layer=LAYER, offset=self.table.entry_offset(cluster))
        size = sum(count for _, count in runs) * boot.cluster_size
        return read_runs(self.stream, runs, boot.data_offset, boot.cluster_size, size, LAYER, what)

    def _load_children(self, node: Node) -> dict[str, Node]:
        handle = node.handle
        if not isinstance(handle, DirHandle):
            raise NotADirectoryError(node.name)
        what = "the root directory" if node is self.root else f"directory {node.name!r}"
        data, locate = self._read_directory(handle.cluster, what)
        listing = parse_directory(data, locate, self.boot.fat_bits == 32)
        if node is self.root:
            self._root_label = listing.label
            node.mtime_ns = node.atime_ns = node.ctime_ns = listing.label_mtime_ns  # the root has no times
        if listing.orphans:
            log.info("%s: %s: %d long names did not match their 8.3 entries; showing the 8.3 names",
                     self.stream.name, what, listing.orphans)
        return self._nodes(listing, what)

    def directory_key(self, node: Node) -> Hashable:
        """A directory is its first cluster (entries are numbered by their place): a second entry that starts
        at one already shown (an ancestor's: a loop) lists as empty."""
        return node.handle.cluster if isinstance(node.handle, DirHandle) else node.ino

    def _nodes(self, listing: Listing, what: str) -> dict[str, Node]:
        kids: dict[str, Node] = {}
        for name, offset, is_dir, cluster, size, mtime, atime in listing.entries:
            if name in kids or name in ("", ".", ".."):
                log.warning("%s: %s: entry %r at byte %d skipped (empty or duplicate name)", self.stream.name,
                            what, name, offset)
                continue
            if is_dir:
                kids[name] = Node(name, DEFAULT_DIR_MODE, 0, offset, 1, None, None, mtime, atime, mtime, 0,
                                  None, DirHandle(cluster))
            else:
                kids[name] = Node(name, DEFAULT_FILE_MODE, size, offset, 1, None, None, mtime, atime, mtime, 0,
                                  None, FileHandle(cluster))
        return kids

    # -- data --------------------------------------------------------------------------------------

    def open(self, node: Node) -> Stream:
        handle = node.handle
        if not isinstance(handle, FileHandle):
            raise IsADirectoryError(node.name)
        stream = handle.stream
        if stream is None:
            pieces = self._file_pieces(f"file {node.name!r}", handle.cluster, node.size)
            stream = ExtentStream.over(self.stream, pieces, name=f"{self.stream.name}:{node.name}")
            if len(pieces) <= MAX_KEPT_RUNS:
                handle.stream = stream
        return stream

    def _file_pieces(self, what: str, cluster: int, size: int) -> list[tuple[int, int]]:
        """(byte offset, length) of each run of the file's data; the chain is checked on the way."""
        if size == 0:
            return []
        boot = self.boot
        if cluster == 0:
            raise CorruptImage(f"{what}: {size} bytes but no first cluster", layer=LAYER)
        needed = -(-size // boot.cluster_size)
        if needed > boot.cluster_count:
            raise CorruptImage(f"{what}: size {size} needs {needed} clusters, the volume has {boot.cluster_count}",
                               layer=LAYER)
        runs, _ = self.table.walk(cluster, needed, what)
        found = sum(count for _, count in runs)
        if found < needed:
            last = runs[-1][0] + runs[-1][1] - 1
            raise CorruptImage(f"{what}: the cluster chain ends after {found} clusters; expected {needed} for "
                               f"{size} bytes", layer=LAYER, offset=self.table.entry_offset(last))
        return byte_runs(runs, boot.data_offset, boot.cluster_size, size)

    def describe(self) -> dict[str, Any]:
        boot = self.boot
        serial = None if boot.serial is None else f"{boot.serial >> 16:04X}-{boot.serial & 0xFFFF:04X}"
        return {
            "filesystem": "fat",
            "type": self.fat_type,
            "label": self.label,
            "serial": serial,
            "oem_name": boot.oem_name,
            "cluster_size": boot.cluster_size,
            "sector_size": boot.sector_size,
            "clusters": boot.cluster_count,
            "fats": boot.fat_count,
            "volume_size": boot.volume_size,
        }
