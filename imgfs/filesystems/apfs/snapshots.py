"""APFS snapshots: each volume's tree as it was when a snapshot was taken (Time Machine's backups).

A volume's snapshot metadata tree (a physical B-tree) holds one ``SNAP_METADATA`` record per snapshot,
keyed by the snapshot's transaction id: its name, its times, and the block of the volume superblock
as it stood then. The snapshot's filesystem tree is that superblock's root tree, read through the
volume's current object map as of the snapshot's transaction (the map keeps old mappings while a
snapshot needs them). Nodes are shared with the live tree, so they share its cache entries too.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from imgfs.errors import CorruptImage
from imgfs.filesystems.apfs import records as rec
from imgfs.filesystems.apfs.btree import BTree
from imgfs.filesystems.apfs.objects import FS, LAYER
from imgfs.filesystems.apfs.superblock import VolumeSuperblock
from imgfs.filesystems.apfs.volume import VolumeTree
from imgfs.io.cache import new_cache_id

# extentref tree, superblock, created, changed, inum, extentref tree type, flags, name length
SNAP_METADATA = struct.Struct("<QQQQQIIH")
MAX_SNAPSHOTS = 1 << 16


@dataclass(frozen=True)
class Snapshot:
    xid: int
    name: str
    superblock_block: int
    create_ns: int


def snapshots(tree: VolumeTree) -> list[Snapshot]:
    """The volume's snapshots, oldest first."""
    sb = tree.superblock
    if not sb.snap_meta_tree_oid:
        return []
    meta = BTree(tree.blocks, tree.cache, new_cache_id(), sb.snap_meta_tree_oid, f"{tree.name} snapshot metadata",
                 rec.fs_key, verify=True)
    found: list[Snapshot] = []
    for key, record in meta.all_records():
        xid, kind = rec.split_key(key)  # the object id is the snapshot's transaction
        if kind != rec.SNAP_METADATA:
            continue
        if len(record.value) < SNAP_METADATA.size or len(found) >= MAX_SNAPSHOTS:
            raise CorruptImage(f"{tree.name}: snapshot record of transaction {xid} is damaged", layer=LAYER)
        _ref, block, created, _changed, _inum, _type, _flags, length = SNAP_METADATA.unpack_from(record.value)
        raw = record.value[SNAP_METADATA.size : SNAP_METADATA.size + length]
        name = raw.split(b"\0", 1)[0].decode("utf-8", "replace") or f"xid {xid}"
        found.append(Snapshot(xid, name, block, created))
    return sorted(found, key=lambda s: s.xid)


def snapshot_tree(tree: VolumeTree, snapshot: Snapshot) -> VolumeTree:
    """The filesystem tree of ``snapshot`` of the volume whose live tree is ``tree``."""
    data = tree.blocks.read_object(snapshot.superblock_block, f"snapshot {snapshot.name!r}'s volume superblock",
                                   expect_type=FS)
    sb = VolumeSuperblock.parse(data, tree.blocks.offset(snapshot.superblock_block))
    return VolumeTree(tree.blocks, tree.cache, sb, tree.omap, snapshot.xid, f"{tree.name} snapshot {snapshot.name!r}",
                      cipher=tree.cipher, node_cache_id=tree.tree.cache_id)
