"""The disk inside a UDIF image, as a stream: every partition's runs laid out at their sectors.

A read touches only the runs under it. Zero and ignore runs (and gaps between partitions) are holes
that cost nothing; raw runs are read straight from the image (the OS page cache holds them); compressed
runs are decoded whole, once, into the mount's ``BlockCache`` (single-flight: two threads asking for one
chunk decode it once). A sequential reader has the next chunks decoded ahead in worker threads.

A chunk that cannot be decoded (its bytes run past the end of the image, it decodes to more or fewer
bytes than stated) is ``CorruptImage`` for the reads that touch it, naming the partition, the chunk and
its byte offset in the image; the rest of the disk reads normally.
"""

from __future__ import annotations

import bisect
import functools
from collections.abc import Iterator, Sequence
from typing import NamedTuple, Optional

from imgfs.containers.dmg import codecs
from imgfs.containers.dmg.readahead import READ_AHEAD, ReadAhead
from imgfs.containers.dmg.structs import COMPRESSED, HOLES, LAYER, RAW, codec_name
from imgfs.errors import CorruptImage
from imgfs.io.cache import BlockCache, new_cache_id
from imgfs.io.stream import Stream

MAX_CHUNK_SIZE = 64 << 20  # decoded; hdiutil writes 1 MiB chunks, and a bigger one would defeat the cache
SEQUENTIAL_SLACK = 1 << 20  # a read this close to where the last one ended counts as sequential
AHEAD = 2  # compressed chunks decoded ahead of a sequential reader
SCAN_LIMIT = 64  # runs looked at to find them (holes and raw runs between cost nothing to skip)
_ZEROS = memoryview(bytes(1 << 20))


class Piece(NamedTuple):
    """A stretch of the disk: ``length`` bytes at ``start`` made by one run (or a gap between partitions)."""

    start: int
    length: int
    kind: int  # a run type from structs; gaps are ZERO
    source: int  # byte offset of the run's data in the data fork
    source_length: int
    table: int  # index of its blkx table, -1 for a gap
    run: int  # index of the run in its table


class UdifDisk(Stream):
    """The decoded disk. ``data`` is the data fork (offsets of runs count from its start); ``data_at`` is
    where it starts in the image file, for error messages (None when it spans several segment files)."""

    def __init__(self, data: Stream, data_at: Optional[int], pieces: Sequence[Piece], size: int,
                 names: Sequence[str], cache: BlockCache, name: str = "udif",
                 read_ahead: Optional[ReadAhead] = READ_AHEAD) -> None:
        self.size = size
        self.name = name
        self.data = data
        self.data_at = data_at
        self.pieces = list(pieces)
        self._starts = [p.start for p in self.pieces]
        self._names = list(names)
        self._cache = cache
        self._key = new_cache_id()
        biggest = max((p.length for p in self.pieces if p.kind in COMPRESSED), default=0)
        # decoding ahead pays only when the cache holds the chunks ahead besides the ones being read
        self._read_ahead = read_ahead if cache.max_bytes >= (AHEAD + 2) * biggest else None
        self._last_end = -1

    # -- reading ------------------------------------------------------------------------------------

    def pread(self, offset: int, length: int) -> bytes:
        n = self._clamp(offset, length)
        if n == 0:
            return b""
        parts = []
        last = -1
        for i, piece, inner, count in self._walk(offset, n):
            if piece.kind in HOLES:
                parts.append(bytes(count))
            elif piece.kind == RAW:
                parts.append(self._raw(piece, inner, count))
            else:
                data = self.chunk(i)
                parts.append(data if count == len(data) else data[inner : inner + count])
                last = i
        self._after_read(offset, n, last)
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def readinto(self, offset: int, buf: memoryview) -> int:
        n = self._clamp(offset, len(buf))
        buf = memoryview(buf)
        done, last = 0, -1
        for i, piece, inner, count in self._walk(offset, n):
            target = buf[done : done + count]
            if piece.kind in HOLES:
                _fill_zeros(target)
            elif piece.kind == RAW:
                self._check_raw(piece, inner + count)
                got = self.data.readinto(piece.source + inner, target)
                if got < count:
                    raise self._past_end(piece, piece.source + inner + got)
            else:
                target[:] = memoryview(self.chunk(i))[inner : inner + count]
                last = i
            done += count
        self._after_read(offset, n, last)
        return n

    def _walk(self, offset: int, n: int) -> Iterator[tuple[int, Piece, int, int]]:
        """(piece index, piece, offset inside it, byte count) for each piece under a clamped read."""
        i = bisect.bisect_right(self._starts, offset) - 1
        done = 0
        while done < n:
            piece = self.pieces[i]
            inner = offset + done - piece.start
            count = min(piece.length - inner, n - done)
            yield i, piece, inner, count
            done += count
            i += 1

    def _raw(self, piece: Piece, inner: int, count: int) -> bytes:
        self._check_raw(piece, inner + count)
        data = self.data.pread(piece.source + inner, count)
        if len(data) < count:
            raise self._past_end(piece, piece.source + inner + len(data))
        return data

    def _check_raw(self, piece: Piece, end: int) -> None:
        if end > piece.source_length:
            raise CorruptImage(f"{self.where(piece)} stores {piece.source_length} bytes for {piece.length}",
                               layer=LAYER, offset=self.image_offset(piece.source))

    # -- chunks -------------------------------------------------------------------------------------

    def chunk(self, i: int) -> bytes:
        """The decoded bytes of compressed piece ``i``, from the cache or decoded now."""
        return self._cache.get((self._key, i), lambda: self.decode(i))

    def decode(self, i: int) -> bytes:
        """Decode compressed piece ``i`` (bypassing the cache: ``verify`` uses this too)."""
        piece = self.pieces[i]
        if piece.length > MAX_CHUNK_SIZE:
            raise CorruptImage(f"{self.where(piece)} decodes to {piece.length} bytes, more than imgfs decodes "
                               f"in one piece ({MAX_CHUNK_SIZE})", layer=LAYER, offset=self.image_offset(piece.source))
        data = self.data.pread(piece.source, piece.source_length)
        if len(data) < piece.source_length:
            raise self._past_end(piece, piece.source + len(data))
        try:
            return codecs.decode(piece.kind, data, piece.length)
        except codecs.DecodeError as exc:
            raise CorruptImage(f"{self.where(piece)}: {exc}", layer=LAYER,
                               offset=self.image_offset(piece.source)) from None

    def where(self, piece: Piece) -> str:
        return (f"chunk {piece.run} of partition {self._names[piece.table]!r} ({codec_name(piece.kind)}, "
                f"{piece.source_length} bytes for disk bytes {piece.start}-{piece.start + piece.length - 1})")

    def image_offset(self, source: int) -> Optional[int]:
        return None if self.data_at is None else self.data_at + source

    def _past_end(self, piece: Piece, at: int) -> CorruptImage:
        end = piece.source + piece.source_length
        return CorruptImage(f"{self.where(piece)} runs past the end of the image (its data ends at data fork byte "
                            f"{end}, the data fork at {self.data.size})", layer=LAYER, offset=self.image_offset(at))

    # -- read-ahead ---------------------------------------------------------------------------------

    def _after_read(self, offset: int, n: int, last: int) -> None:
        sequential = abs(offset - self._last_end) <= SEQUENTIAL_SLACK
        self._last_end = offset + n
        if sequential and last >= 0 and self._read_ahead is not None:
            self._decode_ahead(last)

    def _decode_ahead(self, last: int) -> None:
        wanted = 0
        for i in range(last + 1, min(last + 1 + SCAN_LIMIT, len(self.pieces))):
            kind = self.pieces[i].kind
            if kind not in COMPRESSED:
                continue
            if kind not in codecs.RELEASES_GIL:
                return  # a pure-Python decoder in another thread only slows the reader
            key = (self._key, i)
            if key not in self._cache and self._read_ahead is not None:
                self._read_ahead.submit(key, functools.partial(self.chunk, i))
            wanted += 1
            if wanted >= AHEAD:
                return


def _fill_zeros(target: memoryview) -> None:
    for at in range(0, len(target), len(_ZEROS)):
        piece = target[at : at + len(_ZEROS)]
        piece[:] = _ZEROS[: len(piece)]
