"""Opening an image: from the file, through detection and the partition map, to the tree.

One disk: the filesystem at the root. A partitioned disk: one folder per partition that holds a
filesystem imgfs reads, named ``N LABEL`` (the partition number, then the filesystem's label or else
the partition's name), and a raw ``N.img`` file for every other partition with data, so that its
bytes can still be copied. A disk with exactly one partition, holding a readable filesystem, shows
that filesystem at the root.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from dataclasses import dataclass, field
from typing import Any, Optional

from imgfs.containers.split import open_disk
from imgfs.errors import ImageError, UnsupportedFormat
from imgfs.io.cache import BlockCache
from imgfs.io.stream import Stream
from imgfs.registry import Format, detect, load
from imgfs.tree import VOLUME_INO_SHIFT, Filesystem, FsOptions, Tree, VirtualFilesystem
from imgfs.volumes import Partition, PartitionTable

log = logging.getLogger(__name__)

DEFAULT_CACHE_SIZE = 64 << 20


@dataclass
class OpenedImage:
    path: str
    stream: Stream
    cache: BlockCache
    fs: Filesystem  # the filesystem at the root (a VirtualFilesystem for a partitioned disk)
    tree: Tree
    layers: list[dict[str, Any]] = field(default_factory=list)

    def close(self) -> None:
        _close(self.stream)

    def require_content(self) -> None:
        """Refuse, in one line, an image in which nothing at all can be shown."""
        reason = getattr(self.fs, "empty_reason", "")
        if reason:
            raise UnsupportedFormat(reason)


@dataclass
class Volume:
    partition: Partition
    stream: Stream
    fs: Optional[Filesystem]
    fmt: Optional[Format]
    why_raw: str = ""

    @property
    def folder(self) -> str:
        if self.fs is None:
            return f"{self.partition.number}.img"
        label = (self.fs.label or self.partition.name).strip().replace("/", "_").replace("\0", "")
        return f"{self.partition.number} {label}" if label else str(self.partition.number)


def open_image(path: str, options: FsOptions = FsOptions(), cache_size: int = DEFAULT_CACHE_SIZE) -> OpenedImage:
    """Detect and open ``path``; any problem is an ``ImageError`` that names the layer."""
    stream = open_disk(path)
    cache = BlockCache(cache_size)
    layers: list[dict[str, Any]] = [{"layer": "file", "path": path, "size": stream.size,
                                     **({"segments": len(stream.parts)} if hasattr(stream, "parts") else {})}]
    try:
        fmt = detect(stream)
        if fmt.kind == "volumes":
            fs, tree = _open_volumes(path, stream, load(fmt.opener or "")(stream), cache, options, layers)
        else:
            fs = _open_filesystem(fmt, stream, cache, options)
            tree = Tree(fs)
            layers.append({"layer": fmt.name, "description": fmt.description, **fs.describe()})
    except BaseException:
        _close(stream)
        raise
    return OpenedImage(path, stream, cache, fs, tree, layers)


def _close(stream: Stream) -> None:
    for part in getattr(stream, "parts", [stream]):
        close = getattr(part, "close", None)
        if close:
            close()


def _open_filesystem(fmt: Format, stream: Stream, cache: BlockCache, options: FsOptions) -> Filesystem:
    return load(fmt.opener or "")(stream, cache, options)


def _open_volumes(path: str, disk: Stream, table: PartitionTable, cache: BlockCache, options: FsOptions,
                  layers: list[dict[str, Any]]) -> tuple[Filesystem, Tree]:
    layers.append(table.describe())
    volumes = [_volume(disk, part, cache, options) for part in table.partitions if _holds_data(part)]
    for vol in volumes:
        layer = {"layer": vol.fmt.name if vol.fs and vol.fmt else "raw", "partition": vol.partition.number,
                 "shown_as": vol.folder}
        layer.update(vol.fs.describe() if vol.fs else {"reason": vol.why_raw})
        layers.append(layer)
    if len(volumes) == 1 and volumes[0].fs is not None:
        return volumes[0].fs, Tree(volumes[0].fs)
    top = VirtualFilesystem(disk.size, os.stat(path).st_mtime_ns)
    if not volumes:
        top.empty_reason = (f"{table.scheme}: no partition has data in this image ({disk.size} bytes): the "
                            f"{len(table.partitions)} listed lie beyond its end or are the map's own entries; a "
                            "partition table without its partitions (imgfs info lists them)")
    tree = Tree(top)
    for vol in volumes:
        if vol.fs is None:
            top.add_file(top.root, vol.folder, vol.stream)
        else:
            tree.mount(top.root, vol.folder, vol.fs)
    return top, tree


def _holds_data(part: Partition) -> bool:
    """A partition to show: one with bytes in the image that is not a map's own bookkeeping."""
    return part.available > 0 and part.details.get("volume", True) and part.type_id != "0xee"


def _volume(disk: Stream, part: Partition, cache: BlockCache, options: FsOptions) -> Volume:
    stream = part.stream(disk)
    try:
        fmt = detect(stream, kinds=("filesystem",))
        fs = _open_filesystem(fmt, stream, cache,
                              dataclasses.replace(options, ino_base=part.number << VOLUME_INO_SHIFT))
    except UnsupportedFormat as exc:
        return Volume(part, stream, None, None, "no filesystem recognised" if exc.layer is None else str(exc))
    except ImageError as exc:
        log.warning("partition %d: %s; shown as %d.img", part.number, exc, part.number)
        return Volume(part, stream, None, None, str(exc))
    return Volume(part, stream, fs, fmt)
