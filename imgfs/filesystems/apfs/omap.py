"""APFS object maps: where a virtual object (a volume superblock, a filesystem tree node) is stored.

An object map (``omap_phys_t``) names a physical B-tree with fixed 16-byte keys ``(oid, xid)`` and
16-byte values ``(flags, size, paddr)``. A virtual object ``oid`` as of transaction ``xid`` is the
entry with that oid and the greatest xid not above ``xid``: a snapshot reads the map as of its own
transaction. A value flagged ``OMAP_VAL_ENCRYPTED`` is stored encrypted with the volume key.

Resolutions are remembered in a bounded dict (the same nodes would be searched again for every
directory entry otherwise); a mapping onto a block outside the container is a ``CorruptImage``.
"""

from __future__ import annotations

import struct
import threading
from typing import NamedTuple, Optional

from imgfs.errors import CorruptImage
from imgfs.filesystems.apfs.btree import BTree
from imgfs.filesystems.apfs.objects import LAYER, OMAP, Blocks
from imgfs.io.cache import BlockCache, new_cache_id

# flags, snapshot count, tree type, snapshot tree type, tree, snapshot tree, most recent snapshot
OMAP_PHYS = struct.Struct("<IIIIQQQ")
KEY = struct.Struct("<QQ")
VALUE = struct.Struct("<IIQ")
VAL_DELETED, VAL_ENCRYPTED, VAL_NOHEADER = 0x1, 0x4, 0x8
MAX_REMEMBERED = 1 << 16


class Mapping(NamedTuple):
    flags: int
    size: int
    paddr: int

    @property
    def encrypted(self) -> bool:
        return bool(self.flags & VAL_ENCRYPTED)


def omap_key(data: bytes) -> tuple[int, int]:
    oid, xid = KEY.unpack_from(data)
    return oid, xid


class ObjectMap:
    """The object map whose ``omap_phys_t`` is at block ``paddr``; ``name`` says whose it is."""

    def __init__(self, blocks: Blocks, cache: BlockCache, paddr: int, name: str, verify: bool = True) -> None:
        self.blocks = blocks
        self.name = name
        data = blocks.read_object(paddr, f"{name} object map", expect_type=OMAP, verify=verify)
        self.flags, self.snapshot_count, _tree_type, _snap_type, tree_oid, self.snapshot_tree_oid, \
            self.most_recent_snapshot = OMAP_PHYS.unpack_from(data, 32)
        self.tree = BTree(blocks, cache, new_cache_id(), tree_oid, f"{name} object map", omap_key, verify=verify)
        if self.tree.info is None or (self.tree.info.key_size, self.tree.info.value_size) != (16, 16):
            raise CorruptImage(f"{name} object map: expected 16-byte keys and values", layer=LAYER,
                               offset=blocks.offset(tree_oid))
        self._known: dict[tuple[int, int], Mapping] = {}
        self._lock = threading.Lock()

    def lookup(self, oid: int, xid: int) -> Optional[Mapping]:
        """Where object ``oid`` is as of transaction ``xid``; None when the map has no such object."""
        known = self._known.get((oid, xid))
        if known is not None:
            return known
        found = self.tree.find_le((oid, xid))
        if found is None or found[0][0] != oid:
            return None
        flags, size, paddr = VALUE.unpack_from(found[1].value.ljust(16, b"\0"))
        if flags & VAL_DELETED:
            return None
        mapping = Mapping(flags, size, paddr)
        self.blocks.check_range(paddr, max(1, size // self.blocks.block_size), f"{self.name} object {oid}")
        with self._lock:
            if len(self._known) >= MAX_REMEMBERED:
                self._known.clear()
            self._known[(oid, xid)] = mapping
        return mapping

    def resolve(self, oid: int, xid: int, what: str) -> Mapping:
        mapping = self.lookup(oid, xid)
        if mapping is None:
            raise CorruptImage(f"{what}: object {oid} is not in the {self.name} object map (as of transaction {xid})",
                               layer=LAYER)
        return mapping
