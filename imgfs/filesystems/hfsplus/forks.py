"""Forks as byte runs, for HFS+ and classic HFS alike: a fork lists its first extents (eight on HFS+,
three on HFS) of allocation blocks; the rest are in the extents overflow B-tree, keyed by (file CNID,
fork type, first block), each record continuing where the previous ones stopped.
"""

from __future__ import annotations

from typing import Callable, NamedTuple, Optional

from imgfs.errors import CorruptImage
from imgfs.filesystems.hfsplus.btree import BTree

Run = tuple[Optional[int], int]  # (byte offset in the volume, length)
ExtentList = tuple[tuple[int, int], ...]  # (first allocation block, block count)


class ExtentFormat(NamedTuple):
    """How a volume's extents overflow records look: the key parser (to (CNID, fork type, first block)),
    the record parser, and the record's size."""

    key: Callable[[bytes], tuple[int, int, int]]
    record: Callable[[bytes], ExtentList]
    record_size: int


class Allocation:
    """A volume's allocation blocks: ``block_size`` bytes each, ``total_blocks`` of them, block 0 at
    ``first_offset`` of the volume stream; ``report_offset`` is added to offsets in error messages (an
    embedded volume's place in the image)."""

    def __init__(self, block_size: int, total_blocks: int, first_offset: int, layer: str, extents: ExtentFormat,
                 report_offset: int = 0) -> None:
        self.block_size = block_size
        self.total_blocks = total_blocks
        self.first_offset = first_offset
        self.layer = layer
        self.format = extents
        self.report_offset = report_offset
        self.overflow_tree: Optional[BTree] = None  # set once the extents overflow file is open

    def fork_runs(self, extents: ExtentList, total_blocks: int, size: int, cnid: int, fork_type: int, what: str
                  ) -> list[Run]:
        """A fork's byte runs: its own extents, continued in the extents overflow file."""
        found = list(extents)
        have = sum(count for _, count in found)
        if have < total_blocks and self.overflow_tree is not None:
            found += self.overflow(cnid, fork_type, have, total_blocks)
        return self.runs(found, size, what)

    def overflow(self, cnid: int, fork_type: int, have: int, want: int) -> list[tuple[int, int]]:
        found: list[tuple[int, int]] = []
        tree = self.overflow_tree
        assert tree is not None
        for record in tree.walk((cnid, fork_type, have)):
            file_id, kind, start = self.format.key(record.key)
            if (file_id, kind) != (cnid, fork_type) or have >= want:
                break
            if start != have:
                raise CorruptImage(f"CNID {cnid}'s overflow extents: expected a record starting at block {have}, "
                                   f"got {start}", layer=self.layer, offset=self.report_offset + record.offset)
            if len(record.data) < self.format.record_size:
                raise CorruptImage(f"CNID {cnid}'s overflow extent record is too short", layer=self.layer,
                                   offset=self.report_offset + record.offset)
            more = list(self.format.record(record.data))
            if not more:
                break
            found += more
            have += sum(count for _, count in more)
        return found

    def runs(self, extents: list[tuple[int, int]], size: int, what: str) -> list[Run]:
        """(byte offset in the volume, length) of each extent, up to ``size`` bytes."""
        total, block = self.total_blocks, self.block_size
        runs: list[Run] = []
        left = size
        for start, count in extents:
            if left <= 0:
                break
            offset = self.first_offset + start * block
            if start + count > total:
                raise CorruptImage(f"{what}: extent of {count} blocks at block {start} runs past the volume's "
                                   f"{total} blocks", layer=self.layer, offset=self.report_offset + offset)
            length = min(count * block, left)
            runs.append((offset, length))
            left -= length
        if left > 0:
            raise CorruptImage(f"{what}: {size} bytes, but its extents hold only {size - left}", layer=self.layer)
        return runs


def volume_offset(runs: list[Run], offset: int) -> int:
    """Where byte ``offset`` of a fork lies in the volume (for error messages)."""
    pos = 0
    for start, length in runs:
        if offset < pos + length and start is not None:
            return start + offset - pos
        pos += length
    return offset
