"""HFS and HFS+ B-trees (catalog, extents overflow, attributes): nodes, keyed look-ups and leaf walks.

A B-tree is a file of fixed-size nodes; node 0 is the header node, whose header record gives the root,
the first leaf, the node size and the node count. Every node starts with a 14-byte descriptor (forward
and backward links, kind, height, record count) and ends with the offsets of its records, last record
first. Index nodes hold (key, child node) records; leaf nodes hold (key, data) records and are chained
in key order by their forward links.

Classic HFS B-trees have the same nodes (512 bytes) and header record, with the attributes left zero:
a key's length is then one byte, the key is padded so that its record's data starts at an even offset,
and index keys always take the tree's maximum key length (Inside Macintosh: Files, 2-64ff).

Nodes are read through the mount's ``BlockCache`` and kept there parsed: a ``TreeNode`` is the node's
bytes (so the cache counts its size) with its descriptor, record offsets and, once searched, its keys
attached; a search is then a bisection of those keys. A damaged tree (a
loop in the links, a child of the wrong kind or height, a node number past the end, a record outside its
node) is a ``CorruptImage`` naming the tree and the byte offset.
"""

from __future__ import annotations

import bisect
import struct
from collections.abc import Iterator
from typing import Any, Callable, NamedTuple, Optional, cast

from imgfs.errors import CorruptImage
from imgfs.io.cache import BlockCache, new_cache_id
from imgfs.io.stream import Stream

LEAF, INDEX, HEADER, MAP = -1, 0, 1, 2
DESCRIPTOR = struct.Struct(">IIbbHH")  # fLink, bLink, kind, height, numRecords, reserved
# treeDepth, rootNode, leafRecords, firstLeafNode, lastLeafNode, nodeSize, maxKeyLength, totalNodes,
# freeNodes, reserved1, clumpSize, btreeType, keyCompareType, attributes
HEADER_RECORD = struct.Struct(">HIIIIHHIIHIBBI")
BIG_KEYS, VARIABLE_INDEX_KEYS = 0x2, 0x4
MAX_DEPTH = 16  # TN1150 allows 8 levels; anything deeper is a loop
MIN_NODE_SIZE, MAX_NODE_SIZE = 512, 32768

Key = tuple[Any, ...]  # a key as a comparable tuple, made by the tree's ``key_of``


class Header(NamedTuple):
    depth: int
    root: int
    leaf_records: int
    first_leaf: int
    last_leaf: int
    node_size: int
    max_key_length: int
    total_nodes: int
    compare_type: int
    attributes: int


class Record(NamedTuple):
    key: bytes  # the key's bytes after its length field
    data: bytes  # what follows the key: a leaf's data, or an index record's child pointer
    offset: int  # byte offset of the record in the B-tree file


class TreeNode(bytes):
    """A node's bytes, with its descriptor and record boundaries parsed once."""

    number: int
    flink: int
    kind: int
    height: int
    bounds: tuple[int, ...]  # record i is self[bounds[i]:bounds[i + 1]]
    keys: Optional[list[Key]]  # the records' keys as comparable tuples, made on the node's first search

    @property
    def records(self) -> int:
        return len(self.bounds) - 1


class BTree:
    """One B-tree, read from ``stream`` (the B-tree file's fork); ``key_of`` turns a key's bytes into a
    comparable tuple. ``where`` maps an offset in the file to one in the volume, for error messages."""

    def __init__(self, stream: Stream, cache: BlockCache, name: str, key_of: Callable[[bytes], Key],
                 where: Callable[[int], int], layer: str = "hfs+") -> None:
        self.stream = stream
        self.layer = layer
        self.cache = cache
        self.name = name
        self.key_of = key_of
        self.where = where
        self._cache_id = new_cache_id()
        self.header = self._read_header()

    def _error(self, message: str, file_offset: int) -> CorruptImage:
        return CorruptImage(f"{self.name} B-tree: {message}", layer=self.layer, offset=self.where(file_offset))

    def _read(self, offset: int, length: int) -> bytes:
        try:
            return self.stream.pread(offset, length)
        except CorruptImage as exc:  # the image ends inside the B-tree file
            raise self._error(f"bytes {offset} to {offset + length} of the file: {exc.message}", offset) from None

    def _read_header(self) -> Header:
        raw = self._read(0, DESCRIPTOR.size + HEADER_RECORD.size)
        if len(raw) < DESCRIPTOR.size + HEADER_RECORD.size:
            raise self._error(f"the file is {self.stream.size} bytes, too short for a header node", 0)
        kind = DESCRIPTOR.unpack_from(raw)[2]
        if kind != HEADER:
            raise self._error(f"node 0: expected a header node (kind 1), got kind {kind}", 0)
        (depth, root, leaves, first, last, node_size, max_key, total, _free, _r, _clump, _type, compare,
         attributes) = HEADER_RECORD.unpack_from(raw, DESCRIPTOR.size)
        if node_size & (node_size - 1) or not MIN_NODE_SIZE <= node_size <= MAX_NODE_SIZE:
            raise self._error(f"node size: expected a power of two from 512 to 32768, got {node_size}", 32)
        most = self.stream.size // node_size
        if not 0 < total <= most:
            raise self._error(f"node count: expected 1 to {most} (the file's {self.stream.size} bytes), got {total}",
                              36)
        if depth > MAX_DEPTH or root >= total or first >= total or (root and not depth):
            raise self._error(f"header: depth {depth}, root node {root}, first leaf {first} for {total} nodes", 14)
        return Header(depth, root, leaves, first, last, node_size, max_key, total, compare, attributes)

    # -- nodes ---------------------------------------------------------------------------------------

    def node(self, number: int) -> TreeNode:
        if not 0 < number < self.header.total_nodes:
            raise self._error(f"node number: expected 1 to {self.header.total_nodes - 1}, got {number}", 0)
        return cast(TreeNode, self.cache.get((self._cache_id, number), lambda: self._load(number)))

    def _load(self, number: int) -> TreeNode:
        size = self.header.node_size
        offset = number * size
        data = self._read(offset, size)
        if len(data) < size:
            raise self._error(f"node {number} runs past the end of the file", offset)
        flink, _blink, kind, height, count, _ = DESCRIPTOR.unpack_from(data)
        if kind not in (LEAF, INDEX, HEADER, MAP):
            raise self._error(f"node {number}: unknown kind {kind}", offset + 8)
        table = size - 2 * (count + 1)
        if table < DESCRIPTOR.size:
            raise self._error(f"node {number}: {count} records cannot fit in {size} bytes", offset + 10)
        bounds = struct.unpack_from(f">{count + 1}H", data, table)[::-1]
        if bounds[0] != DESCRIPTOR.size or any(a >= b for a, b in zip(bounds, bounds[1:])) or bounds[-1] > table:
            raise self._error(f"node {number}: record offsets out of order or outside the node", offset + table)
        node = TreeNode(data)
        node.number, node.flink, node.kind, node.height, node.bounds = number, flink, kind, height, bounds
        node.keys = None
        return node

    def record(self, node: TreeNode, index: int) -> Record:
        start, end = node.bounds[index], node.bounds[index + 1]
        raw = node[start:end]
        where = node.number * self.header.node_size + start
        field = 2 if self.header.attributes & BIG_KEYS else 1  # HFS: a one-byte key length
        if len(raw) < field:
            raise self._error(f"node {node.number}: record {index} has no key length", where)
        key_length = int.from_bytes(raw[:field], "big")
        stored = key_length
        if node.kind == INDEX and not self.header.attributes & VARIABLE_INDEX_KEYS:
            stored = self.header.max_key_length
        data_start = field + stored
        if field == 1:
            data_start += data_start & 1  # HFS pads a key to an even length, its length byte included
        if max(data_start, field + key_length) > len(raw):
            raise self._error(f"node {node.number}: record {index}'s key ({key_length} bytes) overruns it", where)
        return Record(raw[field : field + key_length], raw[data_start:], where)

    def _child(self, node: TreeNode, index: int) -> int:
        record = self.record(node, index)
        if len(record.data) < 4:
            raise self._error(f"index node {node.number}: record {index} has no child pointer", record.offset)
        return int.from_bytes(record.data[:4], "big")

    # -- searching -----------------------------------------------------------------------------------

    def _keys(self, node: TreeNode) -> list[Key]:
        keys = node.keys
        if keys is None:  # parsed once while the node stays in the cache: later searches only compare
            keys = node.keys = [self.key_of(self.record(node, i).key) for i in range(node.records)]
        return keys

    def _position(self, node: TreeNode, key: Key, after_equal: bool) -> int:
        """How many records of ``node`` have keys below ``key`` (or not above it, with ``after_equal``)."""
        keys = self._keys(node)
        return bisect.bisect_right(keys, key) if after_equal else bisect.bisect_left(keys, key)

    def _leaf_for(self, key: Key) -> Optional[TreeNode]:
        """The leaf where ``key`` is or would be, going down from the root."""
        number, height = self.header.root, None
        if number == 0:
            return None  # an empty tree
        for _ in range(MAX_DEPTH + 1):
            node = self.node(number)
            if height is not None and node.height != height - 1:
                raise self._error(f"node {number}: height {node.height} below a node of height {height}",
                                  number * self.header.node_size + 9)
            if node.kind == LEAF:
                return node
            if node.kind != INDEX or node.records == 0:
                raise self._error(f"node {number}: expected an index or leaf node, got kind {node.kind} "
                                  f"with {node.records} records", number * self.header.node_size + 8)
            height = node.height
            number = self._child(node, max(0, self._position(node, key, True) - 1))
        raise self._error(f"the tree is deeper than {MAX_DEPTH} levels", 0)

    def walk(self, key: Key) -> Iterator[Record]:
        """Leaf records from the first whose key is not below ``key``, in key order, to the end."""
        node = self._leaf_for(key)
        if node is None:
            return
        index = self._position(node, key, False)
        seen: set[int] = set()
        while True:
            seen.add(node.number)
            for i in range(index, node.records):
                yield self.record(node, i)
            if node.flink == 0:
                return
            if node.flink in seen or len(seen) >= self.header.total_nodes:
                raise self._error(f"leaf node {node.number}'s forward link to node {node.flink} makes a loop",
                                  node.number * self.header.node_size)
            node, index = self.node(node.flink), 0
            if node.kind != LEAF:
                raise self._error(f"node {node.number}: a forward link from a leaf reaches kind {node.kind}",
                                  node.number * self.header.node_size + 8)

    def find(self, key: Key) -> Optional[Record]:
        """The leaf record whose key equals ``key``."""
        for record in self.walk(key):
            return record if self.key_of(record.key) == key else None
        return None
