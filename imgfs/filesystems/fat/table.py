"""The file allocation table: cluster chains, walked with bounds, as runs of contiguous clusters.

Shared by FAT12/16/32 and exFAT (whose FAT is FAT32's without the reserved top four bits). A chain is
never walked further than the caller's limit, which is never more than the volume's cluster count, so a
loop cannot keep a walk going; a loop inside the walked part shows up as two runs that overlap. Every
link is checked: a free, reserved, bad or out-of-range cluster ends the walk with ``CorruptImage``, which
the FUSE layer turns into EIO for that one file or directory.

The table is read in chunks through the mount's block cache, so a walk costs a read only the first
time a chunk is needed, and a contiguous run costs one comparison per cluster.
"""

from __future__ import annotations

import array
import sys
from collections.abc import Sequence
from typing import Callable, Union

from imgfs.errors import CorruptImage
from imgfs.io.cache import BlockCache, new_cache_id
from imgfs.io.stream import Stream, read_exact

CHUNK_SHIFT = 14  # 16384 entries per cached chunk: 32 or 64 KiB of FAT
Table = Union[memoryview, list[int]]


class FatTable:
    """One FAT of a volume: ``bits`` is 12, 16, 32 (28 bits used) or 0 for exFAT (all 32 bits used)."""

    def __init__(self, stream: Stream, fat_offset: int, bits: int, cluster_count: int, cache: BlockCache,
                 layer: str) -> None:
        self.stream = stream
        self.fat_offset = fat_offset
        self.cluster_count = cluster_count
        self.max_cluster = cluster_count + 1  # clusters are numbered from 2
        self.layer = layer
        self._cache = cache
        self._cache_id = new_cache_id()
        self._width = 2 if bits == 16 else 4
        self._mask = {12: 0xFFF, 16: 0xFFFF, 32: 0x0FFFFFFF}.get(bits, 0xFFFFFFFF)
        self.end_marker = self._mask - 7  # FF8 and up end a chain (exFAT only uses FFFFFFFF; accept the rest)
        self.bad_marker = self._mask - 8
        self._shift = CHUNK_SHIFT
        self._fat12: list[int] | None = None
        if bits == 12:  # at most 4086 entries: decode it whole once, one chunk for every cluster
            self._fat12 = self._decode_fat12()
            self._shift = 31

    def _decode_fat12(self) -> list[int]:
        count = self.cluster_count + 2
        raw = self._read(self.fat_offset, -(-count * 3 // 2)) + b"\x00"  # an odd count ends half way in a byte
        table = []
        for n in range(count):
            pair = raw[n * 3 // 2] | raw[n * 3 // 2 + 1] << 8  # entry n lies in these two bytes, 12 bits of them
            table.append(pair >> 4 if n & 1 else pair & 0xFFF)
        return table

    def _read(self, offset: int, length: int) -> bytes:
        return read_exact(self.stream, offset, length, self.layer, "the FAT")

    def _chunk(self, index: int) -> Table:
        if self._fat12 is not None:
            return self._fat12
        per_chunk = 1 << CHUNK_SHIFT
        first = index * per_chunk
        count = min(per_chunk, self.max_cluster + 1 - first)
        offset = self.fat_offset + first * self._width
        data = self._cache.get((self._cache_id, index), lambda: self._read(offset, count * self._width))
        if sys.byteorder == "little":  # the table is little-endian: use it in place
            return memoryview(data).cast("H" if self._width == 2 else "I")
        table = array.array("H" if self._width == 2 else "I", data)
        table.byteswap()
        return memoryview(table)

    def walk(self, first: int, limit: int, what: str) -> tuple[list[tuple[int, int]], bool]:
        """(first cluster, count) runs of the chain from ``first``, at most ``limit`` clusters, and whether
        the chain ended there (False: it goes on past ``limit``)."""
        self.check_cluster(first, what)
        runs: list[tuple[int, int]] = []
        start = cur = first
        total = 1
        shift, low, mask, max_cluster = self._shift, (1 << self._shift) - 1, self._mask, self.max_cluster
        chunk_index, table = cur >> shift, self._chunk(cur >> shift)
        while True:
            if cur >> shift != chunk_index:
                chunk_index = cur >> shift
                table = self._chunk(chunk_index)
            nxt = table[cur & low] & mask
            if nxt == cur + 1 and total < limit and nxt <= max_cluster:  # the common case: the next one follows on
                cur = nxt
                total += 1
                continue
            runs.append((start, cur - start + 1))
            if nxt >= self.end_marker:
                _check_overlaps(runs, what, self)
                return runs, True
            if total >= limit:
                _check_overlaps(runs, what, self)
                return runs, False
            self._check_link(cur, nxt, what)
            start = cur = nxt
            total += 1

    def check_cluster(self, cluster: int, what: str) -> None:
        if not 2 <= cluster <= self.max_cluster:
            raise CorruptImage(f"{what}: first cluster: expected 2..{self.max_cluster}, got {cluster}",
                               layer=self.layer, offset=self.fat_offset)

    def _check_link(self, cluster: int, nxt: int, what: str) -> None:
        if 2 <= nxt <= self.max_cluster:
            return
        if nxt == 0:
            kind = "a free cluster"
        elif nxt == self.bad_marker:
            kind = "a bad cluster"
        elif nxt == 1 or nxt >= self._mask - 15:  # FF0..FF6 and their wider forms
            kind = "a reserved value"
        else:
            kind = "a cluster past the end"
        raise CorruptImage(f"{what}: cluster {cluster} links to {kind} ({nxt:#x}); expected 2..{self.max_cluster}"
                           " or an end-of-chain marker", layer=self.layer, offset=self.entry_offset(cluster))

    def entry_offset(self, cluster: int) -> int:
        if self._fat12 is not None:
            return self.fat_offset + cluster * 3 // 2
        return self.fat_offset + cluster * self._width


def _check_overlaps(runs: list[tuple[int, int]], what: str, table: FatTable) -> None:
    """A chain that comes back to a cluster it has visited is a loop."""
    if len(runs) < 2:
        return
    ordered = sorted(runs)
    for (start, count), (nxt, _) in zip(ordered, ordered[1:]):
        if nxt < start + count:
            raise CorruptImage(f"{what}: the cluster chain loops (cluster {nxt} comes twice)", layer=table.layer,
                               offset=table.entry_offset(nxt))


def byte_runs(runs: Sequence[tuple[int, int]], heap_offset: int, cluster_size: int, length: int
              ) -> list[tuple[int, int]]:
    """(byte offset, length) pieces holding the first ``length`` bytes of a chain's runs."""
    pieces = []
    left = length
    for start, count in runs:
        if left <= 0:
            break
        size = min(count * cluster_size, left)
        pieces.append((heap_offset + (start - 2) * cluster_size, size))
        left -= size
    return pieces


def read_runs(stream: Stream, runs: Sequence[tuple[int, int]], heap_offset: int, cluster_size: int, length: int,
              layer: str, what: str) -> tuple[bytes, Callable[[int], int]]:
    """The first ``length`` bytes of a chain's runs, and where a position in them lies in the volume
    (a directory entry's offset, for its inode number)."""
    pieces = byte_runs(runs, heap_offset, cluster_size, length)
    data = b"".join(read_exact(stream, offset, size, layer, what) for offset, size in pieces)
    if len(pieces) == 1:
        start = pieces[0][0]
        return data, lambda pos: start + pos
    shift, low = cluster_size.bit_length() - 1, cluster_size - 1  # cluster sizes are powers of two
    starts = [offset + k * cluster_size for offset, size in pieces for k in range(-(-size // cluster_size))]
    return data, lambda pos: starts[pos >> shift] + (pos & low)
