"""The disk inside a UDIF image, as a stream: every partition's runs laid out at their sectors.

It is composed of the ``io`` primitives: an ``ExtentStream`` whose extents are holes (zero and ignore
runs, gaps between partitions: they cost nothing), slices of the data fork (raw runs, read straight from
the image: the OS page cache holds them), and pieces of one ``ChunkedStream`` that holds the compressed
runs one after the other, each decoded whole, once, into the mount's ``BlockCache`` (single-flight).
A ``ReadAheadStream`` over it decodes the next chunks ahead of a sequential reader in worker threads.

A chunk that cannot be decoded (its bytes run past the end of the image, it decodes to more or fewer
bytes than stated) is ``CorruptImage`` for the reads that touch it, naming the partition, the chunk and
its byte offset in the image; the rest of the disk reads normally.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple, Optional

from imgfs.containers.dmg import codecs
from imgfs.containers.dmg.structs import COMPRESSED, HOLES, LAYER, RAW, codec_name
from imgfs.errors import CorruptImage
from imgfs.io.cache import BlockCache
from imgfs.io.chunked import ChunkedStream
from imgfs.io.readahead import AHEAD, ReadAhead, ReadAheadStream
from imgfs.io.stream import Extent, ExtentStream, SliceStream, Stream, Unreadable

MAX_CHUNK_SIZE = 64 << 20  # decoded; hdiutil writes 1 MiB chunks, and a bigger one would defeat the cache


class Piece(NamedTuple):
    """A stretch of the disk: ``length`` bytes at ``start`` made by one run (or a gap between partitions)."""

    start: int
    length: int
    kind: int  # a run type from structs; gaps are ZERO
    source: int  # byte offset of the run's data in the data fork
    source_length: int
    table: int  # index of its blkx table, -1 for a gap
    run: int  # index of the run in its table


class UdifDisk(ExtentStream):
    """The decoded disk. ``data`` is the data fork (offsets of runs count from its start); ``data_at`` is
    where it starts in the image file, for error messages (None when it spans several segment files)."""

    def __init__(self, data: Stream, data_at: Optional[int], pieces: Sequence[Piece], size: int,
                 names: Sequence[str], cache: BlockCache, name: str = "udif",
                 read_ahead: Optional[ReadAhead] = None) -> None:
        self.data = data
        self.data_at = data_at
        self.pieces = list(pieces)
        self.cache = cache
        self._names = list(names)
        self.compressed = [i for i, p in enumerate(self.pieces) if p.kind in COMPRESSED]
        starts, end = [], 0
        for i in self.compressed:
            starts.append(end)
            end += self.pieces[i].length
        self.chunks = ChunkedStream(end, starts, lambda j: self.decode(self.compressed[j]), cache, name=name)
        biggest = max((self.pieces[i].length for i in self.compressed), default=0)
        # decoding ahead pays only when the cache holds the chunks ahead besides the ones being read
        self.read_ahead = ReadAheadStream(self.chunks, self._worth_decoding_ahead, read_ahead) \
            if cache.max_bytes >= (AHEAD + 2) * biggest else None
        super().__init__(self._lay_out(starts), name=name)
        self.size = max(self.size, size)

    def _lay_out(self, starts: list[int]) -> list[Extent]:
        decoded: Stream = self.read_ahead or self.chunks
        at = dict(zip(self.compressed, starts))
        extents: list[Extent] = []
        for i, piece in enumerate(self.pieces):
            if piece.kind in HOLES:
                extents.append(Extent(piece.length, None))
            elif piece.kind == RAW:
                extents += self._raw_extents(piece)
            else:
                extents.append(Extent(piece.length, decoded, at[i]))
        return extents

    def _raw_extents(self, piece: Piece) -> list[Extent]:
        """A raw run: its bytes in the data fork; a run that stores fewer bytes than it covers fails past them."""
        stored = min(piece.length, piece.source_length)
        extents = [Extent(stored, SliceStream(self.data, piece.source, stored, name=self.name))]
        if stored < piece.length:
            error = CorruptImage(f"{self.where(piece)} stores {piece.source_length} bytes for {piece.length}",
                                 layer=LAYER, offset=self.image_offset(piece.source))
            extents.append(Extent(piece.length - stored, Unreadable(piece.length - stored, error)))
        return extents

    def _worth_decoding_ahead(self, j: int) -> bool:
        return self.pieces[self.compressed[j]].kind in codecs.RELEASES_GIL

    # -- chunks -------------------------------------------------------------------------------------

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
