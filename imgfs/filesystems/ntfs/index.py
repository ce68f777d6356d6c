"""Directory indexes ($I30): the B-tree of $FILE_NAME keys in $INDEX_ROOT and $INDEX_ALLOCATION.

The root node is resident in $INDEX_ROOT; larger directories keep more nodes in "INDX" blocks of
$INDEX_ALLOCATION (with fixups), whose use $BITMAP records. Every entry of every node, branch or leaf, is a
directory entry, so an in-order walk lists the directory in its collation order, the order Windows and
ntfs-3g list it in. Each entry's key is a copy of the child's $FILE_NAME: name, flags, sizes and times,
enough to list a directory without reading the children's MFT records.

The walk visits each block once and at most ``MAX_DEPTH`` deep, so a damaged tree whose pointers loop
is refused with one line instead of hanging.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator, Sequence
from typing import Callable, NamedTuple, Optional

from imgfs.errors import CorruptImage
from imgfs.filesystems.ntfs.record import (
    BITMAP,
    FILE_NAME,
    INDEX_ALLOCATION,
    INDEX_ROOT,
    LAYER,
    Attribute,
    apply_fixups,
    reference,
)
from imgfs.filesystems.ntfs.values import FileName
from imgfs.io.stream import Stream, read_exact

I30 = "$I30"
MAX_DEPTH = 32  # a B-tree of 4 KiB nodes this deep would hold more entries than any volume
ENTRY_HAS_SUBNODE, ENTRY_LAST = 0x01, 0x02

_ROOT = struct.Struct("<IIIB3x")  # indexed attribute type, collation rule, block size, clusters per block
_NODE = struct.Struct("<IIIB3x")  # entries offset, entries end, allocated size, flags (all from the node header)
_ENTRY = struct.Struct("<QHHI")  # file reference, entry length, key length, flags


class Entry(NamedTuple):
    record: int
    sequence: int
    key: FileName


class DirectoryIndex:
    """One directory's $I30 index; ``open_stream`` opens its $INDEX_ALLOCATION and $BITMAP attributes."""

    def __init__(self, record: int, attributes: Sequence[Attribute], cluster_size: int,
                 open_stream: Callable[[list[Attribute]], Stream],
                 read_block: Callable[[int, Callable[[], bytes]], bytes]) -> None:
        self.record = record
        root = next((a for a in attributes if a.type == INDEX_ROOT and a.name == I30), None)
        if root is None or root.value is None:
            raise CorruptImage(f"MFT record {record} is a directory without a resident $INDEX_ROOT", layer=LAYER)
        self._root = root
        if len(root.value) < _ROOT.size + _NODE.size:
            raise CorruptImage(f"MFT record {record}: $INDEX_ROOT of {len(root.value)} bytes", layer=LAYER,
                               offset=root.offset)
        indexed, _, self.block_size, _ = _ROOT.unpack_from(root.value)
        if indexed != FILE_NAME or not 256 <= self.block_size <= 1 << 16 or self.block_size & (self.block_size - 1):
            raise CorruptImage(f"MFT record {record}: $I30 indexes attribute 0x{indexed:x} in blocks of "
                               f"{self.block_size} bytes", layer=LAYER, offset=root.offset)
        # VCNs count clusters, or 512-byte units when a block is smaller than a cluster
        self.vcn_size = cluster_size if self.block_size >= cluster_size else 512
        allocation = [a for a in attributes if a.type == INDEX_ALLOCATION and a.name == I30]
        bitmap = [a for a in attributes if a.type == BITMAP and a.name == I30]
        self._allocation = open_stream(allocation) if allocation else None
        self._bitmap = open_stream(bitmap).pread(0, 1 << 20) if bitmap and allocation else b""
        self._read_block = read_block
        self._where = f"directory (MFT record {record})"

    @property
    def allocated_size(self) -> int:
        return self._allocation.size if self._allocation is not None else len(self._root.value or b"")

    def entries(self) -> Iterator[Entry]:
        """Every entry, in collation order."""
        value = self._root.value or b""
        yield from self._walk(value, _ROOT.size, self._root.offset, 0, set())

    def _walk(self, data: bytes, node_offset: int, where: int, depth: int, seen: set[int]) -> Iterator[Entry]:
        for entry, child in self._node(data, node_offset, where):
            if child is not None:
                if depth >= MAX_DEPTH or child in seen:
                    raise CorruptImage(f"{self._where}: its index B-tree loops (block VCN {child} is reached "
                                       f"twice or too deep)", layer=LAYER, offset=where)
                seen.add(child)
                yield from self._walk(self._block(child), 24, where, depth + 1, seen)
            if entry is not None:
                yield entry

    def _node(self, data: bytes, node_offset: int, where: int) -> Iterator[tuple[Optional[Entry], Optional[int]]]:
        """(entry, or None for the last one; the child node's VCN or None) for each entry of one node."""
        first, end, _, _ = _NODE.unpack_from(data, node_offset)
        pos, end = node_offset + first, min(node_offset + end, len(data))
        while pos + _ENTRY.size <= end:
            ref, length, key_length, flags = _ENTRY.unpack_from(data, pos)
            if length < _ENTRY.size or length % 8 or pos + length > end or _ENTRY.size + key_length > length:
                raise CorruptImage(f"{self._where}: an index entry of {length} bytes (key {key_length}) at byte "
                                   f"{pos} of a node", layer=LAYER, offset=where)
            child = None
            if flags & ENTRY_HAS_SUBNODE:
                if length < _ENTRY.size + key_length + 8:
                    raise CorruptImage(f"{self._where}: an index entry too short for its subnode", layer=LAYER,
                                       offset=where)
                child = int.from_bytes(data[pos + length - 8 : pos + length], "little")
            if flags & ENTRY_LAST:
                yield None, child
                return
            record, sequence = reference(ref)
            key = FileName.parse(data[pos + _ENTRY.size : pos + _ENTRY.size + key_length], self._where, where)
            yield Entry(record, sequence, key), child
            pos += length
        raise CorruptImage(f"{self._where}: an index node without its last entry", layer=LAYER, offset=where)

    def _block(self, vcn: int) -> bytes:
        if self._allocation is None:
            raise CorruptImage(f"{self._where}: its index points to block VCN {vcn}, but it has no "
                               "$INDEX_ALLOCATION", layer=LAYER, offset=self._root.offset)
        position = vcn * self.vcn_size
        bit = position // self.block_size
        if position + self.block_size > self._allocation.size or not self._in_use(bit):
            raise CorruptImage(f"{self._where}: index block VCN {vcn} is past its $INDEX_ALLOCATION or not in use",
                               layer=LAYER, offset=self._root.offset)
        return self._read_block(vcn, lambda: self._load(vcn, position))

    def _in_use(self, bit: int) -> bool:
        return bit // 8 < len(self._bitmap) and bool(self._bitmap[bit // 8] >> (bit % 8) & 1)

    def _load(self, vcn: int, position: int) -> bytes:
        assert self._allocation is not None
        what = f"index block VCN {vcn} of {self._where}"
        buf = bytearray(read_exact(self._allocation, position, self.block_size, LAYER, what))
        apply_fixups(buf, b"INDX", what, position)
        if int.from_bytes(buf[16:24], "little") != vcn:
            raise CorruptImage(f"{what} calls itself VCN {int.from_bytes(buf[16:24], 'little')}", layer=LAYER,
                               offset=position + 16)
        return bytes(buf)
