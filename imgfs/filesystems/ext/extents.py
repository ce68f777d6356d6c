"""From an inode's i_block to the run list of its data: extent trees (ext4) and block maps (ext2/3).

Both produce ``Run``s of (first logical block, first physical block or None for zeros, block count),
merged where they are contiguous, then ``byte_runs`` turns them into the (offset or None, length)
pairs an ``ExtentStream`` takes. Nothing here trusts the image: every block number is checked
against the filesystem's size before it is read or used, every tree node is read once at most, and
trees are at most five levels deep, so a hostile image can neither loop nor run the reader out of
memory.
"""

from __future__ import annotations

import struct
from typing import Callable, NamedTuple, Optional

from imgfs.errors import CorruptImage

EXTENT_MAGIC = 0xF30A
MAX_EXTENT_DEPTH = 5  # 4 * ((block_size - 12) / 12) ** 5 >= 2 ** 32 for every block size
UNINIT_OFFSET = 32768  # ee_len above this: an extent allocated but never written, read as zeros
HEADER = struct.Struct("<HHHHI")  # magic, entries, max, depth, generation
ENTRY = struct.Struct("<IHHI")  # leaf: first logical block, length, start high 16, start low 32
INDEX = struct.Struct("<IIHH")  # index: first logical block, child low 32, child high 16, unused
DIRECT_BLOCKS = 12
LOGICAL_LIMIT = 1 << 32  # logical block numbers are 32-bit in both schemes


class Run(NamedTuple):
    logical: int
    physical: Optional[int]  # None: zeros (an uninitialized extent)
    blocks: int


class BlockSource(NamedTuple):
    """What mapping needs from the filesystem: its size in blocks and a (cached) metadata block reader."""

    blocks_count: int
    block_size: int
    read_block: Callable[[int], bytes]


class _RunList:
    """Runs in the order they are found, merging a run into the previous one when they are contiguous."""

    def __init__(self, source: BlockSource, ino: int) -> None:
        self.runs: list[Run] = []
        self._source = source
        self._ino = ino

    def add(self, logical: int, physical: Optional[int], count: int, where: int) -> None:
        if physical is not None and not (0 < physical and physical + count <= self._source.blocks_count):
            raise CorruptImage(f"inode {self._ino}'s data lies outside the filesystem: expected blocks below "
                               f"{self._source.blocks_count}, got {physical}..{physical + count - 1}",
                               layer="ext", offset=where)
        if self.runs:
            last = self.runs[-1]
            if last.logical + last.blocks == logical and _follows(last.physical, last.blocks, physical):
                self.runs[-1] = Run(last.logical, last.physical, last.blocks + count)
                return
        self.runs.append(Run(logical, physical, count))


def _follows(previous: Optional[int], length: int, physical: Optional[int]) -> bool:
    """Whether data at ``physical`` continues a run at ``previous`` of ``length`` (zeros continue zeros)."""
    if previous is None or physical is None:
        return previous is None and physical is None
    return previous + length == physical


# -- extent trees ----------------------------------------------------------------------------------


def extent_runs(root: bytes, root_offset: int, source: BlockSource, ino: int) -> list[Run]:
    """Walk an extent tree from its root in i_block; index blocks are read once each, depth-first."""
    found = _RunList(source, ino)
    visited: set[int] = set()
    stack: list[tuple[bytes, int, Optional[int]]] = [(root, root_offset, None)]
    while stack:
        node, where, want_depth = stack.pop()
        entries, depth = _check_header(node, where, want_depth, ino)
        if depth == 0:
            _leaf(node, where, entries, found)
            continue
        children = []
        for i in range(entries):
            _first, lo, hi, _unused = INDEX.unpack_from(node, 12 + 12 * i)
            child = lo | hi << 32
            entry_offset = where + 12 + 12 * i
            if not 0 < child < source.blocks_count:
                raise CorruptImage(f"inode {ino}'s extent index points outside the filesystem: expected a block "
                                   f"below {source.blocks_count}, got {child}", layer="ext", offset=entry_offset)
            if child in visited:
                raise CorruptImage(f"inode {ino}'s extent tree reaches block {child} twice (a loop)", layer="ext",
                                   offset=entry_offset)
            visited.add(child)
            children.append((child, depth - 1))
        for child, child_depth in reversed(children):  # the stack then yields them in order
            stack.append((source.read_block(child), child * source.block_size, child_depth))
    return found.runs


def _check_header(node: bytes, where: int, want_depth: Optional[int], ino: int) -> tuple[int, int]:
    magic, entries, most, depth, _gen = HEADER.unpack_from(node)
    capacity = (len(node) - HEADER.size) // ENTRY.size

    def bad(what: str) -> CorruptImage:
        return CorruptImage(f"inode {ino}'s extent header: {what}", layer="ext", offset=where)

    if magic != EXTENT_MAGIC:
        raise bad(f"bad magic: expected 0x{EXTENT_MAGIC:04X}, got 0x{magic:04X}")
    if most > capacity or entries > most:
        raise bad(f"entries: expected at most {min(most, capacity)} (max {most}, room for {capacity}), got {entries}")
    if want_depth is None and depth > MAX_EXTENT_DEPTH:
        raise bad(f"depth: expected at most {MAX_EXTENT_DEPTH}, got {depth}")
    if want_depth is not None and depth != want_depth:
        raise bad(f"depth: expected {want_depth} below its parent, got {depth}")
    return entries, depth


def _leaf(node: bytes, where: int, entries: int, found: _RunList) -> None:
    for i in range(entries):
        first, length, hi, lo = ENTRY.unpack_from(node, 12 + 12 * i)
        physical: Optional[int] = lo | hi << 32
        if length > UNINIT_OFFSET:
            length -= UNINIT_OFFSET
            physical = None
        if length == 0:
            continue
        if first + length > LOGICAL_LIMIT:
            raise CorruptImage(f"extent covers logical blocks {first}..{first + length - 1}: expected below 2^32",
                               layer="ext", offset=where + 12 + 12 * i)
        found.add(first, physical, length, where + 12 + 12 * i)


# -- block maps (direct, single, double and triple indirect) ------------------------------------------


def block_map_runs(i_block: bytes, i_block_offset: int, block_count: int, source: BlockSource, ino: int) -> list[Run]:
    """The first ``block_count`` logical blocks of an ext2/3 block map; a zero pointer is a hole."""
    return _BlockMap(source, ino, block_count).walk(i_block, i_block_offset)


class _BlockMap:
    def __init__(self, source: BlockSource, ino: int, block_count: int) -> None:
        self.source = source
        self.ino = ino
        self.block_count = block_count
        self.per_block = source.block_size // 4
        self.found = _RunList(source, ino)
        self.visited: set[int] = set()  # a block map is a tree: an indirect block reached twice means a loop

    def walk(self, i_block: bytes, where: int) -> list[Run]:
        pointers = struct.unpack("<15I", i_block)
        for i in range(min(DIRECT_BLOCKS, self.block_count)):
            if pointers[i]:
                self.found.add(i, pointers[i], 1, where + 4 * i)
        start = DIRECT_BLOCKS
        for level in (1, 2, 3):
            if start >= self.block_count:
                break
            slot = DIRECT_BLOCKS + level - 1
            if pointers[slot]:
                self._indirect(pointers[slot], level, start, where + 4 * slot)
            start += self.per_block**level
        return self.found.runs

    def _indirect(self, pointer: int, level: int, start: int, where: int) -> None:
        blocks_count = self.source.blocks_count
        if not 0 < pointer < blocks_count:
            raise CorruptImage(f"inode {self.ino}'s indirect block: expected a block below {blocks_count}, "
                               f"got {pointer}", layer="ext", offset=where)
        if pointer in self.visited:
            raise CorruptImage(f"inode {self.ino}'s block map reaches indirect block {pointer} twice", layer="ext",
                               offset=where)
        self.visited.add(pointer)
        span = self.per_block ** (level - 1)  # logical blocks under each pointer of this block
        needed = min(self.per_block, -(-(self.block_count - start) // span))
        pointers = struct.unpack_from(f"<{needed}I", self.source.read_block(pointer))
        base = pointer * self.source.block_size
        if level == 1:
            self._data_pointers(pointers, start, base)
            return
        for i, child in enumerate(pointers):
            if child:
                self._indirect(child, level - 1, start + i * span, base + 4 * i)

    def _data_pointers(self, pointers: tuple[int, ...], start: int, base: int) -> None:
        first = pointers[0]
        if first and pointers == tuple(range(first, first + len(pointers))):  # the common case: contiguous
            self.found.add(start, first, len(pointers), base)
            return
        for i, physical in enumerate(pointers):
            if physical:
                self.found.add(start + i, physical, 1, base + 4 * i)


# -- the byte view -----------------------------------------------------------------------------------


def byte_runs(runs: list[Run], size: int, block_size: int, ino: int, where: int) -> list[tuple[Optional[int], int]]:
    """(byte offset in the volume or None for zeros, length) covering exactly ``size`` bytes: gaps between
    runs and the tail past the last one are holes, and whatever lies past ``size`` is cut off."""
    out: list[tuple[Optional[int], int]] = []
    pos = 0
    for logical, physical, count in sorted(runs, key=lambda run: run.logical):
        start = logical * block_size
        if start >= size:
            break
        if start < pos:
            raise CorruptImage(f"inode {ino}'s extents overlap at logical block {logical}", layer="ext", offset=where)
        if start > pos:
            _append(out, None, start - pos)
        length = min(count * block_size, size - start)
        _append(out, None if physical is None else physical * block_size, length)
        pos = start + length
    if pos < size:
        _append(out, None, size - pos)
    return out


def _append(out: list[tuple[Optional[int], int]], offset: Optional[int], length: int) -> None:
    if out:
        last_offset, last_length = out[-1]
        if _follows(last_offset, last_length, offset):
            out[-1] = (last_offset, last_length + length)
            return
    out.append((offset, length))
