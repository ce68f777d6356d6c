"""APFS B-trees: the object map's, the filesystem tree's, the snapshot metadata tree's.

A node is one block (``btree_node_phys_t``): the object header, a 24-byte node header (flags, level,
key count, where the table of contents, the free space and the free lists are), the table of contents,
the keys growing up from after it, the values growing down from the end of the node, and in the root
alone a 40-byte ``btree_info_t`` footer (node size, fixed key and value sizes, counts). A table-of-
contents entry is ``kvoff_t`` (key offset, value offset: 4 bytes) in a node with fixed-size keys and
values, else ``kvloc_t`` (offset and length of each: 8 bytes). Key offsets count from the start of the
key area, value offsets backwards from the end of the value area. An index node's values are child
object ids: physical block numbers in a physical tree, virtual ids to resolve through an object map in
a virtual one (the filesystem tree); a hashed index value (sealed volumes) follows the id with a hash.

Keys are turned into comparable values (tuples, or one integer) by the tree's ``key_of``; parsed nodes
stay in the mount's ``BlockCache`` (a ``TreeNode`` is the node's bytes, so the cache counts its size),
their keys parsed on the first search. Each step down must lower the level by exactly one, so a loop of
nodes cannot go unnoticed, and no tree may be deeper than ``MAX_DEPTH``.
"""

from __future__ import annotations

import bisect
import struct
from collections.abc import Iterator, Sequence
from operator import add, le
from typing import Any, Callable, NamedTuple, Optional, cast

from imgfs.errors import CorruptImage
from imgfs.filesystems.apfs.objects import (
    BTREE,
    BTREE_NODE,
    LAYER,
    Blocks,
    Decrypt,
    checksum_ok,
    parse_header,
)
from imgfs.io.cache import BlockCache

NODE_HEADER = struct.Struct("<HHI8H")  # flags, level, nkeys, table/free/key-free/value-free (offset, length)
INFO = struct.Struct("<IIIIIIQQ")  # flags, node size, key size, value size, longest key/value, keys, nodes
NODE_START = 32 + NODE_HEADER.size  # where the table of contents' offsets count from
INFO_SIZE = INFO.size
ROOT, LEAF, FIXED, HASHED, NOHEADER = 0x1, 0x2, 0x4, 0x8, 0x10
BTREE_PHYSICAL = 0x10
INVALID = 0xFFFF
MAX_DEPTH = 16  # real trees stay under 8 levels; the level field would allow 65535
OID_SIZE = 8
MAX_LOCATED = 1 << 16  # node locations remembered per tree

Key = Any  # what the tree's key_of makes: tuples, or one integer (the filesystem tree)


class Info(NamedTuple):
    flags: int
    node_size: int
    key_size: int
    value_size: int


class TreeNode(bytes):
    """A node's bytes with its header and table of contents read once, and checked: every key and value
    lies inside the node. Entry ``i`` is the key ``self[k0:k1]`` and the value ``self[v0:v1]`` for
    ``(k0, k1, v0, v1) = entry(i)``, made when asked for: a search reads a node's keys, and then the one
    value it wants."""

    paddr: int
    flags: int
    level: int
    keys: Optional[list[Key]]
    entry_count: int
    key_starts: list[int]  # where each key begins
    key_lengths: Sequence[int]
    value_offsets: Sequence[int]  # counted back from values_end; INVALID: no value
    value_lengths: Sequence[int]
    values_end: int

    @property
    def is_leaf(self) -> bool:
        return bool(self.flags & LEAF)

    def entry(self, i: int) -> tuple[int, int, int, int]:
        k0, v_off = self.key_starts[i], self.value_offsets[i]
        if v_off == INVALID:
            return k0, k0 + self.key_lengths[i], self.values_end, self.values_end
        v0 = self.values_end - v_off
        return k0, k0 + self.key_lengths[i], v0, v0 + self.value_lengths[i]


class Record(NamedTuple):
    key: bytes
    value: bytes


class BTree:
    """One B-tree: ``root`` is its root's object id, ``resolve`` turns a virtual child id into a block
    (None: a physical tree), ``key_of`` a key's bytes into a comparable value (or ``keys_of`` all the keys
    of a node at once)."""

    def __init__(self, blocks: Blocks, cache: BlockCache, cache_id: int, root: int, name: str,
                 key_of: Callable[[bytes], Key], resolve: Optional[Callable[[int], tuple[int, bool]]] = None,
                 decrypt: Optional[Decrypt] = None, verify: bool = True,
                 keys_of: Optional[Callable[[TreeNode], list[Key]]] = None) -> None:
        self.blocks = blocks
        self.cache = cache
        self.cache_id = cache_id
        self.name = name
        self.key_of = key_of
        self.keys_of = keys_of
        self.resolve = resolve
        self.decrypt = decrypt  # for the nodes the object map says are encrypted
        self.verify = verify
        self.root_oid = root
        self._located: dict[int, tuple[int, bool]] = {}  # object id: block, encrypted (a tree is of one transaction)
        self.info: Optional[Info] = None
        root_node = self.node(root, None)
        if not root_node.flags & ROOT:
            raise self._error("the root node does not have the root flag", root_node.paddr)
        self.info = self._info(root_node)
        self.root = root_node

    def _error(self, message: str, paddr: int, at: int = 0) -> CorruptImage:
        return CorruptImage(f"{self.name} B-tree: {message}", layer=LAYER, offset=self.blocks.offset(paddr) + at)

    def _info(self, root: TreeNode) -> Info:
        size = self.blocks.block_size
        flags, node_size, key_size, value_size = INFO.unpack_from(root, size - INFO_SIZE)[:4]
        if node_size != size:
            raise self._error(f"node size: expected the block size {size}, got {node_size}", root.paddr,
                              size - INFO_SIZE + 4)
        if root.flags & FIXED and not (0 < key_size <= size and 0 < value_size <= size):
            raise self._error(f"fixed key and value sizes {key_size} and {value_size}", root.paddr, size - 32)
        return Info(flags, node_size, key_size, value_size)

    # -- nodes ---------------------------------------------------------------------------------------

    def node(self, oid: int, level: Optional[int]) -> TreeNode:
        """The node of object id ``oid``, which must sit at ``level`` (None: the root, any level)."""
        located = self._located.get(oid)
        if located is None:
            located = (oid, False) if self.resolve is None else self.resolve(oid)
            if len(self._located) >= MAX_LOCATED:
                self._located.clear()
            self._located[oid] = located
        paddr, encrypted = located
        node = cast(TreeNode, self.cache.get((self.cache_id, paddr), lambda: self._load(oid, paddr, encrypted)))
        if level is not None and node.level != level:
            raise self._error(f"node {oid} is at level {node.level}, below a node of level {level + 1}: "
                              "the tree loops or is damaged", paddr, 34)
        return node

    def _load(self, oid: int, paddr: int, encrypted: bool) -> TreeNode:
        data = self.blocks.read(paddr, 1, f"{self.name} B-tree node")
        if encrypted:
            if self.decrypt is None:
                raise self._error(f"node {oid} is encrypted, and no key is known", paddr)
            data = self.decrypt(paddr, data)
        flags, level, count = NODE_HEADER.unpack_from(data, 32)[:3]
        if not flags & NOHEADER:
            self._check_header(data, oid, paddr)
        if level > MAX_DEPTH:
            raise self._error(f"node level {level}: deeper than the {MAX_DEPTH} levels any real tree has", paddr, 34)
        if bool(flags & LEAF) != (level == 0):
            raise self._error(f"node {oid}: level {level} with leaf flag {bool(flags & LEAF)}", paddr, 32)
        node = TreeNode(data)
        node.paddr, node.flags, node.level, node.keys = paddr, flags, level, None
        self._entries(node, count)
        return node

    def _check_header(self, data: bytes, oid: int, paddr: int) -> None:
        if self.verify and not checksum_ok(data):
            raise self._error(f"node {oid}: the checksum does not match (block {paddr})", paddr)
        header = parse_header(data)
        if header.kind not in (BTREE, BTREE_NODE):
            raise self._error(f"node {oid}: expected a B-tree node, got object type {header.kind:#x}", paddr, 24)
        if header.oid != oid:
            raise self._error(f"node {oid}: the block holds object {header.oid}", paddr, 8)

    def _entries(self, node: TreeNode, count: int) -> None:
        """The table of contents, as columns; every key and value checked to lie inside the node."""
        size = len(node)
        table_offset, table_length = NODE_HEADER.unpack_from(node, 32)[3:5]
        toc = NODE_START + table_offset
        keys_start = toc + table_length
        values_end = size - (INFO_SIZE if node.flags & ROOT else 0)
        fixed = bool(node.flags & FIXED)
        width = 4 if fixed else 8
        if count * width > table_length or keys_start > values_end:
            raise self._error(f"{count} entries do not fit a table of {table_length} bytes", node.paddr, 36)
        raw = struct.unpack_from(f"<{count * width // 2}H", node, toc)
        if fixed:  # kvoff_t: key offset, value offset
            info = self.info if self.info is not None and not node.flags & ROOT else self._info(node)
            k_offs, v_offs = raw[0::2], raw[1::2]
            k_lens, v_lens = (info.key_size,) * count, (OID_SIZE if node.level else info.value_size,) * count
        else:  # kvloc_t: key offset and length, value offset and length
            k_offs, k_lens, v_offs, v_lens = raw[0::4], raw[1::4], raw[2::4], raw[3::4]
        # the bounds of all entries at once (this runs for every node read, and a listing reads hundreds):
        # key ends within the node; value starts after the keys' area; no value longer than its offset back
        room = values_end - keys_start
        value_offsets = v_offs if INVALID not in v_offs else [v for v in v_offs if v != INVALID] or [0]
        if count and (max(map(add, k_offs, k_lens)) > room or max(value_offsets) > room
                      or not all(map(le, v_lens, v_offs))):
            bad = next(i for i in range(count) if k_offs[i] + k_lens[i] > room
                       or v_offs[i] != INVALID and (v_offs[i] > room or v_lens[i] > v_offs[i]))
            raise self._error(f"entry {bad}'s key or value lies outside the node", node.paddr, toc - NODE_START)
        node.entry_count, node.values_end = count, values_end
        node.key_starts = [keys_start + k for k in k_offs]
        node.key_lengths, node.value_offsets, node.value_lengths = k_lens, v_offs, v_lens

    # -- searching -----------------------------------------------------------------------------------

    def keys(self, node: TreeNode) -> list[Key]:
        keys = node.keys
        if keys is None:
            try:
                if self.keys_of is not None:
                    keys = self.keys_of(node)
                else:
                    keys = [self.key_of(node[k0 : k0 + n]) for k0, n in zip(node.key_starts, node.key_lengths)]
            except (ValueError, struct.error) as exc:
                raise self._error(f"a key does not parse: {exc}", node.paddr) from None
            node.keys = keys
        return keys

    def child(self, node: TreeNode, index: int) -> TreeNode:
        _, _, v0, v1 = node.entry(index)
        if v1 - v0 < OID_SIZE:
            raise self._error(f"index entry {index} has no child id", node.paddr, v0)
        oid = int.from_bytes(node[v0 : v0 + OID_SIZE], "little")
        return self.node(oid, node.level - 1)

    def record(self, node: TreeNode, index: int) -> Record:
        k0, k1, v0, v1 = node.entry(index)
        return Record(node[k0:k1], node[v0:v1])

    def find_le(self, key: Key) -> Optional[tuple[Key, Record]]:
        """The leaf record with the greatest key not above ``key``."""
        node = self.root
        while True:
            index = bisect.bisect_right(self.keys(node), key) - 1
            if index < 0:
                return None
            if node.is_leaf:
                return self.keys(node)[index], self.record(node, index)
            node = self.child(node, index)

    def find(self, key: Key) -> Optional[Record]:
        found = self.find_le(key)
        return found[1] if found is not None and found[0] == key else None

    def find_many(self, keys: list[Key]) -> Iterator[tuple[Key, TreeNode, int]]:
        """Where those of ``keys`` that are in the tree are: each with its leaf and its index there (the caller
        reads the record in place, and the key after it). Sorted keys are found leaf by leaf: a key within the
        range of the leaf found last is looked for there, without going down from the root."""
        leaf: Optional[TreeNode] = None
        leaf_keys: list[Key] = []
        first = last = None
        bisect_left = bisect.bisect_left
        for key in keys:
            if leaf is None or not first <= key <= last:
                leaf = self._leaf_for(key)
                if leaf is None:
                    continue
                leaf_keys = self.keys(leaf)
                if not leaf_keys:
                    continue
                first, last = leaf_keys[0], leaf_keys[-1]
            index = bisect_left(leaf_keys, key)
            if index < len(leaf_keys) and leaf_keys[index] == key:
                yield key, leaf, index

    def _leaf_for(self, key: Key) -> Optional[TreeNode]:
        """The leaf where ``key`` is or would be."""
        node = self.root
        while not node.is_leaf:
            index = bisect.bisect_right(self.keys(node), key) - 1
            if index < 0:
                return None
            node = self.child(node, index)
        return node

    def records(self, low: Key, high: Key) -> Iterator[tuple[Key, Record]]:
        """Every leaf record with ``low <= key < high``, in key order."""
        for node, start, stop in self.ranges(low, high):
            keys = self.keys(node)
            for i in range(start, stop):
                yield keys[i], self.record(node, i)

    def ranges(self, low: Key, high: Key) -> Iterator[tuple[TreeNode, int, int]]:
        """The records with ``low <= key < high``, leaf by leaf: entries ``start`` to ``stop - 1`` of each leaf
        (read in place by callers that parse many)."""
        stop = [False]
        yield from self._walk(self.root, low, high, stop)

    def _walk(self, node: TreeNode, low: Key, high: Key, stop: list[bool]) -> Iterator[tuple[TreeNode, int, int]]:
        keys = self.keys(node)
        start = bisect.bisect_left(keys, low)  # keys before it sort below the range
        if node.is_leaf:
            end = bisect.bisect_left(keys, high, start)
            if end < len(keys):
                stop[0] = True
            if end > start:
                yield node, start, end
            return
        for i in range(max(0, start - 1), len(keys)):  # the child before the first key in range may hold some
            if keys[i] >= high:
                stop[0] = True
                return
            yield from self._walk(self.child(node, i), low, high, stop)
            if stop[0]:
                return

    def check_all(self, problems: list[str], limit: int = 100) -> int:
        """Every node of the tree read and checked (checksum, header, bounds, levels); one line per damaged
        subtree into ``problems`` (at most ``limit``). Returns the number of nodes read."""
        count = 0
        stack = [self.root]
        while stack and len(problems) < limit:
            node = stack.pop()
            count += 1
            for i in range(node.entry_count) if not node.is_leaf else ():
                try:
                    stack.append(self.child(node, i))
                except CorruptImage as exc:
                    problems.append(str(exc))
        return count

    def all_records(self) -> Iterator[tuple[Key, Record]]:
        """Every leaf record in key order (small trees: the snapshot metadata tree)."""
        yield from self._all(self.root)

    def _all(self, node: TreeNode) -> Iterator[tuple[Key, Record]]:
        keys = self.keys(node)
        for i in range(len(keys)):
            if node.is_leaf:
                yield keys[i], self.record(node, i)
            else:
                yield from self._all(self.child(node, i))
