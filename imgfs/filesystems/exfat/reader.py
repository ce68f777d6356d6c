"""exFAT as a lazy tree: the root is parsed at mount, every other directory when first listed.

A file is an ``ExtentStream`` over the volume: its clusters are one run when the entry says NoFatChain
(the FAT is not consulted, as the specification requires), otherwise the FAT chain's runs, walked at
open time with the same bounds and checks as FAT's. Bytes between ValidDataLength and DataLength were
never written and read as zeros (a hole), so only the valid part's clusters are looked up.

The allocation bitmap is only read to tell ``imgfs info`` how much of the volume is in use: a reader
needs no allocation state. Inode numbers are where each File entry lies in the volume (the root is 1).
Times honour the UTC offset the entry records, else they are local. As
with FAT, a damaged chain, entry set or directory is EIO for that file or directory only, and a
directory whose first cluster an earlier one already has is EIO rather than an endless tree.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Hashable
from typing import Any, NamedTuple, Optional

from imgfs.errors import CorruptImage, ImageError
from imgfs.filesystems.base import DEFAULT_DIR_MODE, DEFAULT_FILE_MODE, Filesystem, Node
from imgfs.filesystems.exfat.bootsector import LAYER, read_boot
from imgfs.filesystems.exfat.directory import Listing, parse_directory
from imgfs.filesystems.fat.table import FatTable, byte_runs, read_runs
from imgfs.io.stream import ExtentStream, Stream
from imgfs.layer import OpenContext

log = logging.getLogger(__name__)

ROOT_INO = 1
MAX_DIRECTORY_SIZE = 256 << 20  # the specification's limit
MAX_BITMAP_READ = 16 << 20  # larger bitmaps (volumes of over 128 Mi clusters) are not counted for `info`
MAX_KEPT_RUNS = 1024


class DirHandle(NamedTuple):
    cluster: int
    contiguous: bool
    size: int  # -1 for the root, whose length is its chain's


class FileHandle:
    __slots__ = ("cluster", "contiguous", "valid_size", "stream")

    def __init__(self, cluster: int, contiguous: bool, valid_size: int) -> None:
        self.cluster = cluster
        self.contiguous = contiguous
        self.valid_size = valid_size
        self.stream: Optional[ExtentStream] = None


class ExfatFilesystem(Filesystem):
    kind = "exfat"

    def __init__(self, stream: Stream, ctx: OpenContext) -> None:
        super().__init__()
        self.stream = stream
        self.cache = cache = ctx.cache
        self.boot = boot = read_boot(stream)
        self.block_size = boot.cluster_size
        self.total_size = boot.volume_size
        self.table = FatTable(stream, boot.fat_offset, 0, boot.cluster_count, cache, LAYER)
        self.root = Node("", DEFAULT_DIR_MODE, 0, ROOT_INO, 1, None, None,
                         handle=DirHandle(boot.root_cluster, False, -1))
        self._root: Optional[Listing] = None
        self._used: Optional[int] = None
        self.children(self.root)  # a broken root fails the mount; and it holds the label and the bitmap
        assert self._root is not None
        self.label = self._root.label or ""
        if stream.size < boot.volume_size:
            log.warning("%s: the image is %d bytes shorter than its exFAT volume; files past the end give EIO",
                        stream.name, boot.volume_size - stream.size)
        if not self._root.bitmaps or self._root.upcase is None:
            log.warning("%s: the exFAT root directory lacks its allocation bitmap or up-case table", stream.name)

    # -- clusters ----------------------------------------------------------------------------------

    def _runs(self, what: str, cluster: int, contiguous: bool, length: int) -> list[tuple[int, int]]:
        """The (first cluster, count) runs holding the first ``length`` bytes of a file or directory."""
        count = self.boot.cluster_count
        needed = -(-length // self.boot.cluster_size)
        if needed > count:
            raise CorruptImage(f"{what}: {length} bytes need {needed} clusters, the volume has {count}", layer=LAYER)
        self.table.check_cluster(cluster, what)
        if contiguous:
            if cluster + needed - 1 > count + 1:
                raise CorruptImage(f"{what}: clusters {cluster}..{cluster + needed - 1} run past the last cluster, "
                                   f"{count + 1}", layer=LAYER)
            return [(cluster, needed)]
        runs, _ = self.table.walk(cluster, needed, what)
        found = sum(n for _, n in runs)
        if found < needed:
            raise CorruptImage(f"{what}: the cluster chain ends after {found} clusters; expected {needed} for "
                               f"{length} bytes", layer=LAYER, offset=self.table.entry_offset(runs[-1][0]))
        return runs

    # -- directories -------------------------------------------------------------------------------

    def _read_directory(self, handle: DirHandle, what: str) -> tuple[bytes, Callable[[int], int]]:
        if handle.size < 0:  # the root: as long as its chain
            limit = max(1, MAX_DIRECTORY_SIZE // self.boot.cluster_size)
            runs, complete = self.table.walk(handle.cluster, limit, what)
            if not complete:
                raise CorruptImage(f"{what}: the cluster chain is longer than a directory may be", layer=LAYER,
                                   offset=self.table.entry_offset(handle.cluster))
            length = sum(n for _, n in runs) * self.boot.cluster_size
        elif handle.size == 0:
            return b"", lambda pos: pos  # nothing to read
        elif handle.cluster == 0:
            raise CorruptImage(f"{what}: {handle.size} bytes but no first cluster", layer=LAYER)
        elif handle.size > MAX_DIRECTORY_SIZE:
            raise CorruptImage(f"{what}: size {handle.size} is larger than a directory may be "
                               f"({MAX_DIRECTORY_SIZE} bytes)", layer=LAYER)
        else:
            length = handle.size
            runs = self._runs(what, handle.cluster, handle.contiguous, length)
        return read_runs(self.stream, runs, self.boot.heap_offset, self.boot.cluster_size, length, LAYER, what)

    def _load_children(self, node: Node) -> dict[str, Node]:
        handle = node.handle
        if not isinstance(handle, DirHandle):
            raise NotADirectoryError(node.name)
        what = "the root directory" if node is self.root else f"directory {node.name!r}"
        data, locate = self._read_directory(handle, what)
        listing = parse_directory(data, locate)
        if node is self.root:
            self._root = listing
        for offset, why in listing.bad_sets:
            log.warning("%s: %s: entry set at byte %d skipped: %s", self.stream.name, what, offset, why)
        return self._nodes(listing, what)

    def directory_key(self, node: Node) -> Hashable:
        """A directory is its first cluster (entries are numbered by their place): a second entry that starts
        at one already shown (an ancestor's: a loop) lists as empty. Empty directories have none."""
        handle = node.handle
        return ("cluster", handle.cluster) if isinstance(handle, DirHandle) and handle.cluster else node.ino

    def _nodes(self, listing: Listing, what: str) -> dict[str, Node]:
        kids: dict[str, Node] = {}
        for name, offset, is_dir, cluster, contiguous, size, valid, mtime, atime in listing.entries:
            if name in kids or name in (".", ".."):
                log.warning("%s: %s: entry %r at byte %d skipped (duplicate name)", self.stream.name, what, name,
                            offset)
                continue
            if is_dir:
                kids[name] = Node(name, DEFAULT_DIR_MODE, size, offset, 1, None, None, mtime, atime, mtime, 0,
                                  None, DirHandle(cluster, contiguous, size))
            else:
                kids[name] = Node(name, DEFAULT_FILE_MODE, size, offset, 1, None, None, mtime, atime, mtime, 0,
                                  None, FileHandle(cluster, contiguous, valid))
        return kids

    # -- data --------------------------------------------------------------------------------------

    def open(self, node: Node) -> Stream:
        handle = node.handle
        if not isinstance(handle, FileHandle):
            raise IsADirectoryError(node.name)
        stream = handle.stream
        if stream is None:
            runs = self._file_runs(f"file {node.name!r}", handle, node.size)
            stream = ExtentStream.over(self.stream, runs, name=f"{self.stream.name}:{node.name}")
            if len(runs) <= MAX_KEPT_RUNS:
                handle.stream = stream
        return stream

    def _file_runs(self, what: str, handle: FileHandle, size: int) -> list[tuple[Optional[int], int]]:
        """(byte offset or None for zeros, length) of each piece of the file."""
        valid = handle.valid_size
        if valid > size:
            raise CorruptImage(f"{what}: valid data length {valid} is larger than the data length {size}",
                               layer=LAYER)
        if size == 0:
            return []
        if handle.cluster == 0:
            raise CorruptImage(f"{what}: {size} bytes but no first cluster", layer=LAYER)
        pieces: list[tuple[Optional[int], int]] = []
        if valid:
            runs = self._runs(what, handle.cluster, handle.contiguous, valid)
            pieces.extend(byte_runs(runs, self.boot.heap_offset, self.boot.cluster_size, valid))
        if size > valid:
            pieces.append((None, size - valid))  # never written: zeros, whatever the clusters hold
        return pieces

    # -- information -------------------------------------------------------------------------------

    def used_bytes(self) -> Optional[int]:
        """Bytes of the cluster heap in use, counted in the allocation bitmap (None if it is unreadable)."""
        if self._used is None and self._root is not None and self._root.bitmaps:
            boot = self.boot
            index = boot.flags & 1 if boot.fat_count == 2 and len(self._root.bitmaps) > 1 else 0
            cluster, length = self._root.bitmaps[index]
            want = -(-boot.cluster_count // 8)
            if not want <= length <= MAX_BITMAP_READ:
                return None
            try:
                data, _ = read_runs(self.stream, self._runs("the allocation bitmap", cluster, False, want),
                                    self.boot.heap_offset, self.boot.cluster_size, want, LAYER,
                                    "the allocation bitmap")
            except ImageError as exc:
                log.warning("%s: %s", self.stream.name, exc)
                return None
            bits = int.from_bytes(data, "little") & ((1 << boot.cluster_count) - 1)
            self._used = bits.bit_count() * boot.cluster_size
        return self._used

    def describe(self) -> dict[str, Any]:
        boot = self.boot
        info: dict[str, Any] = {
            "filesystem": "exfat",
            "type": "exFAT",
            "label": self.label,
            "serial": f"{boot.serial >> 16:04X}-{boot.serial & 0xFFFF:04X}",
            "revision": f"{boot.revision[0]}.{boot.revision[1]:02d}",
            "cluster_size": boot.cluster_size,
            "sector_size": boot.sector_size,
            "clusters": boot.cluster_count,
            "fats": boot.fat_count,
            "volume_size": boot.volume_size,
        }
        used = self.used_bytes()
        if used is not None:
            info["used_bytes"] = used
        if boot.backup_used:
            info["boot_region"] = "backup"
        return info
