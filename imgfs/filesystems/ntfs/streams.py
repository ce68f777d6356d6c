"""An attribute's bytes as a stream: resident values, run lists with holes, LZNT1 compression units.

* A plain non-resident attribute is an ``ExtentStream`` over the volume: its runs up to the initialized size
  ("valid data length"), zeros after it up to the data size, sparse runs as holes. Nothing is copied.
* A compressed one (LZNT1, flags & 0x00FF) is cut in compression units of 2**n clusters (16 in practice), a
  ``ChunkedStream`` whose units decode on first read through the mount's cache. A unit whose clusters are all
  allocated is stored as it is; one all sparse is zeros; otherwise its allocated clusters hold LZNT1 data
  that decodes to at most the unit's size (libfsntfs notes, "Compression").
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from typing import Callable, Optional

from imgfs.codecs import DecodeError
from imgfs.errors import CorruptImage
from imgfs.filesystems.ntfs.boot import BootSector
from imgfs.filesystems.ntfs.record import FLAG_COMPRESSION_MASK, LAYER, Attribute
from imgfs.filesystems.ntfs.runs import Run, byte_runs, chain_runs, covered
from imgfs.io.cache import BlockCache
from imgfs.io.chunked import ChunkedStream
from imgfs.io.stream import BytesStream, Extent, ExtentStream, Stream, read_exact

Decompressor = Callable[[bytes, int], bytes]  # (compressed bytes, the unit's size) -> at most that many bytes


def first_segment(segments: Sequence[Attribute]) -> Attribute:
    """The segment that carries the sizes: the resident one, or the one starting at VCN 0."""
    for attr in segments:
        if attr.resident or attr.first_vcn == 0:
            return attr
    attr = segments[0]
    raise CorruptImage(f"MFT record {attr.record}: attribute 0x{attr.type:x} {attr.name!r} has no segment starting "
                       "at VCN 0", layer=LAYER, offset=attr.offset)


def is_compressed(attr: Attribute) -> bool:
    return not attr.resident and bool(attr.flags & FLAG_COMPRESSION_MASK) and attr.unit_shift > 0


def _checked_runs(segments: Sequence[Attribute], boot: BootSector) -> tuple[Attribute, list[Run]]:
    """The runs of an attribute, which must hold its valid data (all of its units, when compressed)."""
    first = first_segment(segments)
    runs = chain_runs(segments, boot.total_clusters)
    held = covered(runs, boot.cluster_size)
    needed = first.data_size if is_compressed(first) else min(first.data_size, first.initialized_size)
    if held < needed:
        raise CorruptImage(f"MFT record {first.record}: attribute 0x{first.type:x} {first.name!r} holds {held} bytes "
                           f"in its runs, fewer than the {needed} it needs", layer=LAYER, offset=first.offset)
    return first, runs


def plain_stream(volume: Stream, boot: BootSector, segments: Sequence[Attribute], name: str) -> Stream:
    first = first_segment(segments)
    if first.value is not None:
        return BytesStream(first.value, name=name)
    first, runs = _checked_runs(segments, boot)
    valid = min(first.initialized_size, first.data_size, covered(runs, boot.cluster_size))
    extents = [Extent(length, None if offset is None else volume, offset or 0)
               for offset, length in byte_runs(runs, boot.cluster_size, valid)]
    extents.append(Extent(first.data_size - valid, None))  # past the valid data length: zeros
    return ExtentStream(extents, name=name)


class CompressedStream(ChunkedStream):
    """An LZNT1-compressed attribute: one chunk per compression unit, decoded on first touch."""

    def __init__(self, volume: Stream, boot: BootSector, segments: Sequence[Attribute], cache: BlockCache,
                 decompress: Decompressor, name: str) -> None:
        first, runs = _checked_runs(segments, boot)
        self._volume = volume
        self._cluster_size = boot.cluster_size
        self._unit_clusters = 1 << first.unit_shift
        self._runs = runs
        self._run_starts = [run.vcn for run in runs]
        self._valid = min(first.initialized_size, first.data_size)
        self._decompress = decompress
        self._where = (first.record, first.offset)
        unit_size = self._unit_clusters * boot.cluster_size
        super().__init__(first.data_size, range(0, first.data_size, unit_size) if first.data_size else [0],
                         self._unit, cache, name=name)

    def _pieces(self, vcn: int, count: int) -> list[tuple[Optional[int], int]]:
        """(LCN or None, clusters) covering ``count`` clusters from ``vcn``."""
        pieces: list[tuple[Optional[int], int]] = []
        i = max(0, bisect.bisect_right(self._run_starts, vcn) - 1)
        while count > 0 and i < len(self._runs):
            run = self._runs[i]
            skip = vcn - run.vcn
            if skip >= run.length:  # a gap in the run list: nothing more
                break
            take = min(run.length - skip, count)
            pieces.append((None if run.lcn is None else run.lcn + skip, take))
            vcn, count, i = vcn + take, count - take, i + 1
        if count > 0:
            pieces.append((None, count))
        return pieces

    def _decoded(self, stored: bytes, unit_size: int, index: int) -> bytes:
        try:
            data = self._decompress(stored, unit_size)
        except DecodeError as exc:
            raise CorruptImage(f"MFT record {self._where[0]}: compression unit {index}: {exc}", layer=LAYER,
                               offset=self._where[1]) from None
        return data + bytes(unit_size - len(data))  # a unit whose data ends early: zeros after it

    def _unit(self, index: int) -> bytes:
        unit_size = self._unit_clusters * self._cluster_size
        start = index * unit_size
        want = min(unit_size, self.size - start)
        pieces = self._pieces(index * self._unit_clusters, self._unit_clusters)
        allocated = [(lcn, n) for lcn, n in pieces if lcn is not None]
        if not allocated:
            data = bytes(want)
        else:
            stored = b"".join(read_exact(self._volume, lcn * self._cluster_size, n * self._cluster_size, LAYER,
                                         f"compression unit {index} of {self.name}") for lcn, n in allocated)
            if len(allocated) == len(pieces) and sum(n for _, n in allocated) == self._unit_clusters:
                data = stored[:want]  # every cluster allocated: stored as it is
            else:
                data = self._decoded(stored, unit_size, index)[:want]
        if start + want > self._valid:  # past the valid data length: zeros, whatever is stored
            keep = max(0, self._valid - start)
            data = data[:keep] + bytes(want - keep)
        return data


def attribute_stream(volume: Stream, boot: BootSector, segments: Sequence[Attribute], cache: BlockCache,
                     decompress: Decompressor, name: str) -> Stream:
    if not is_compressed(first_segment(segments)):
        return plain_stream(volume, boot, segments, name)
    return CompressedStream(volume, boot, segments, cache, decompress, name)
