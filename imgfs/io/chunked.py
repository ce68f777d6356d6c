"""A stream made of chunks that decode lazily on first touch (zisofs blocks, DMG chunks)."""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from typing import Callable

from imgfs.errors import CorruptImage
from imgfs.io.cache import BlockCache, new_cache_id
from imgfs.io.stream import Stream


class ChunkedStream(Stream):
    """``starts[i]`` is where chunk ``i`` begins; ``decode(i)`` returns exactly that chunk's bytes.

    Decoded chunks live in the mount's ``BlockCache``; a read decodes only the chunks it touches.
    """

    def __init__(self, size: int, starts: Sequence[int], decode: Callable[[int], bytes],
                 cache: BlockCache, name: str = "chunks") -> None:
        if size and (not starts or starts[0] != 0):
            raise ValueError("the first chunk must start at 0")
        self.size = size
        self.name = name
        self._starts = starts
        self._decode = decode
        self._cache = cache
        self._key = new_cache_id()

    def chunk_count(self) -> int:
        return len(self._starts)

    def index(self, offset: int) -> int:
        """The chunk that holds byte ``offset``."""
        return bisect.bisect_right(self._starts, offset) - 1

    def cached(self, i: int) -> bool:
        """Whether chunk ``i`` is decoded and in the cache."""
        return (self._key, i) in self._cache

    def _chunk_length(self, i: int) -> int:
        end = self._starts[i + 1] if i + 1 < len(self._starts) else self.size
        return end - self._starts[i]

    def _load(self, i: int) -> bytes:
        data = self._decode(i)
        want = self._chunk_length(i)
        if len(data) != want:
            raise CorruptImage(f"chunk {i} decoded to {len(data)} bytes, expected {want}", layer=self.name,
                               offset=self._starts[i])
        return data

    def chunk(self, i: int) -> bytes:
        if self._chunk_length(i) == 0:
            return b""
        return self._cache.get((self._key, i), lambda: self._load(i))

    def pread(self, offset: int, length: int) -> bytes:
        n = self._clamp(offset, length)
        if n == 0:
            return b""
        i = self.index(offset)
        parts = []
        pos = offset
        while pos < offset + n:
            data = self.chunk(i)
            inner = pos - self._starts[i]
            piece = data[inner : inner + (offset + n - pos)]
            parts.append(piece)
            pos += len(piece)
            i += 1
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def readinto(self, offset: int, buf: memoryview) -> int:
        n = self._clamp(offset, len(buf))
        out = memoryview(buf)
        i, done = self.index(offset), 0
        while done < n:
            inner = offset + done - self._starts[i]
            data = memoryview(self.chunk(i))[inner : inner + n - done]
            out[done : done + len(data)] = data
            done += len(data)
            i += 1
        return n
