"""Opening an image: from the file, through detection, to the tree that is mounted or listed."""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any

from imgfs.io.cache import BlockCache
from imgfs.io.stream import FileStream
from imgfs.registry import detect
from imgfs.tree import Filesystem, FsOptions, Tree

DEFAULT_CACHE_SIZE = 64 << 20


@dataclass
class OpenedImage:
    path: str
    stream: FileStream
    cache: BlockCache
    fs: Filesystem
    tree: Tree
    layers: list[dict[str, Any]] = field(default_factory=list)

    def close(self) -> None:
        self.stream.close()


def open_image(path: str, options: FsOptions = FsOptions(), cache_size: int = DEFAULT_CACHE_SIZE) -> OpenedImage:
    """Detect and open ``path``; any problem is an ``ImageError`` that names the layer."""
    stream = FileStream(path)
    try:
        fmt = detect(stream)
        module_name, _, class_name = (fmt.opener or "").partition(":")
        opener = getattr(importlib.import_module(module_name), class_name)
        cache = BlockCache(cache_size)
        fs = opener(stream, cache, options)
    except BaseException:
        stream.close()
        raise
    layers = [{"layer": "file", "path": path, "size": stream.size},
              {"layer": fmt.name, "description": fmt.description, **fs.describe()}]
    return OpenedImage(path, stream, cache, fs, Tree(fs), layers)
