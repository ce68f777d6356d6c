"""Edits of bare APFS containers written by fs-explorer, from the Apple File System Reference: a snapshot
taken and the live tree changed after it (fs-explorer writes no snapshots), and damage for the
bad-input tests (checksums, loops, depth, extents past the end, key bags).

The editor works on the container's bytes in memory: it reads and writes whole blocks, re-serializes the
leaf nodes it changes (variable- and fixed-size entries), and recomputes Fletcher-64 checksums. It is
independent of imgfs's reader on purpose, down to the checksum: ``fletcher64`` here is the
Reference's definition as a plain loop, and the test of imgfs's faster one compares the two.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

BLOCK = 4096
OBJ = struct.Struct("<QQQII")
NODE = struct.Struct("<HHI8H")
INFO_SIZE = 40
ROOT, LEAF, FIXED = 1, 2, 4
INODE, FILE_EXTENT, DIR_REC, SNAP_METADATA = 3, 8, 9, 1


def fletcher64(data: bytes) -> int:
    """The Reference's Fletcher-64: over the 32-bit little-endian words after the stored checksum, the
    running sum and the sum of running sums modulo 2**32 - 1, folded into the two check words."""
    low = high = 0
    for (word,) in struct.iter_unpack("<I", data[8 : 8 + (len(data) - 8) // 4 * 4]):
        low = (low + word) % 0xFFFFFFFF
        high = (high + low) % 0xFFFFFFFF
    check_low = 0xFFFFFFFF - ((low + high) % 0xFFFFFFFF)
    check_high = 0xFFFFFFFF - ((low + check_low) % 0xFFFFFFFF)
    return check_high << 32 | check_low


def j_key(oid: int, kind: int) -> bytes:
    return struct.pack("<Q", oid | kind << 60)


@dataclass
class Leaf:
    """A root leaf node: its flags and (key, value) entries; ``fixed`` gives fixed key and value sizes."""

    block: bytes
    entries: list[tuple[bytes, bytes]]
    fixed: bool


class Container:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.data = bytearray(path.read_bytes())
        self.block_count = len(self.data) // BLOCK

    def save(self, path: Path) -> Path:
        path.write_bytes(bytes(self.data))
        return path

    def block(self, n: int) -> bytearray:
        return bytearray(self.data[n * BLOCK : (n + 1) * BLOCK])

    def put(self, n: int, block: bytes, checksum: bool = True) -> None:
        block = bytearray(block)
        if checksum:
            block[:8] = fletcher64(bytes(block)).to_bytes(8, "little")
        self.data[n * BLOCK : (n + 1) * BLOCK] = block

    def u64(self, n: int, offset: int) -> int:
        return int.from_bytes(self.data[n * BLOCK + offset : n * BLOCK + offset + 8], "little")

    def set_u64(self, n: int, offset: int, value: int) -> None:
        block = self.block(n)
        block[offset : offset + 8] = value.to_bytes(8, "little")
        self.put(n, block)

    def free_blocks(self, count: int) -> list[int]:
        """Blocks of zeros at the end of the container (fs-explorer leaves the tail free)."""
        found = [n for n in range(self.block_count - 1, 0, -1) if not any(self.block(n))][:count]
        assert len(found) == count, "no free blocks left"
        return found

    # -- where things are -------------------------------------------------------------------------------

    @property
    def xid(self) -> int:
        return OBJ.unpack_from(self.data, 0)[2]

    def container_omap_root(self) -> int:
        omap = self.u64(0, 160)
        return self.u64(omap, 48)

    def volume_block(self) -> int:
        """The first volume's superblock, from the container object map (a single leaf)."""
        return _newest(self.leaf(self.container_omap_root()), self.u64(0, 184))

    def volume_omap_root(self, volume: int) -> int:
        return self.u64(self.u64(volume, 128), 48)

    def fs_root(self, volume: int) -> tuple[int, int]:
        """(virtual oid, block) of the volume's filesystem tree root, as of the newest mapping."""
        oid = self.u64(volume, 136)
        return oid, _newest(self.leaf(self.volume_omap_root(volume)), oid)

    # -- leaf nodes -------------------------------------------------------------------------------------

    def leaf(self, n: int) -> Leaf:
        block = self.block(n)
        flags, level, count, toc_off, toc_len = NODE.unpack_from(block, 32)[:5]
        assert flags & LEAF and flags & ROOT and level == 0, "the editor handles single-leaf trees only"
        toc = 56 + toc_off
        keys, values_end = toc + toc_len, BLOCK - INFO_SIZE
        fixed = bool(flags & FIXED)
        ksize, vsize = struct.unpack_from("<II", block, BLOCK - INFO_SIZE + 8)
        entries = []
        for i in range(count):
            if fixed:
                k, v = struct.unpack_from("<HH", block, toc + 4 * i)
                klen, vlen = ksize, vsize
            else:
                k, klen, v, vlen = struct.unpack_from("<HHHH", block, toc + 8 * i)
            entries.append((bytes(block[keys + k : keys + k + klen]),
                            bytes(block[values_end - v : values_end - v + vlen])))
        return Leaf(bytes(block), entries, fixed)

    def put_leaf(self, n: int, leaf: Leaf, oid: int, xid: int) -> None:
        """``leaf`` written at block ``n`` as object ``oid`` of transaction ``xid``, entries in the given order."""
        block = bytearray(leaf.block)
        width = 4 if leaf.fixed else 8
        toc_len = max(NODE.unpack_from(block, 32)[4], width * len(leaf.entries))
        keys_start, values_end = 56 + toc_len, BLOCK - INFO_SIZE
        block[56:values_end] = bytes(values_end - 56)
        kpos, vpos = 0, 0
        for i, (key, value) in enumerate(leaf.entries):
            block[keys_start + kpos : keys_start + kpos + len(key)] = key
            vpos += len(value)
            block[values_end - vpos : values_end - vpos + len(value)] = value
            if leaf.fixed:
                struct.pack_into("<HH", block, 56 + 4 * i, kpos, vpos)
            else:
                struct.pack_into("<HHHH", block, 56 + 8 * i, kpos, len(key), vpos, len(value))
            kpos += len(key)
        free = values_end - vpos - keys_start - kpos
        flags, level = NODE.unpack_from(block, 32)[:2]
        NODE.pack_into(block, 32, flags, level, len(leaf.entries), 0, toc_len, kpos, free, 0xFFFF, 0, 0xFFFF, 0)
        struct.pack_into("<QQ", block, 8, oid, xid)
        assert keys_start + kpos <= values_end - vpos, "the leaf overflows its block"
        self.put(n, block)


def _newest(omap_leaf: Leaf, oid: int) -> int:
    """The block an object map leaf maps ``oid`` to, in its newest transaction."""
    mapped = [(struct.unpack("<QQ", k), v) for k, v in omap_leaf.entries if struct.unpack_from("<Q", k)[0] == oid]
    return int(struct.unpack_from("<Q", max(mapped)[1], 8)[0])


def _fs_order(entry: tuple[bytes, bytes]) -> tuple[int, int, bytes]:
    head = int.from_bytes(entry[0][:8], "little")
    return head & ((1 << 60) - 1), head >> 60, entry[0][8:]


def _drec_name(key: bytes) -> bytes:
    return key[12:].rstrip(b"\0")


def take_snapshot_and_change(c: Container, name: str, gone: str, changed: str, new_content: bytes) -> int:
    """Snapshot ``name`` of the volume as it is; then, in the next transaction, the live tree loses the root's
    entry ``gone`` and the root's file ``changed`` (one block) gets ``new_content``. Returns the snapshot's xid."""
    old, new = c.xid, c.xid + 1
    volume = c.volume_block()
    snap_block, root_block, data_block = c.free_blocks(3)
    sb = c.block(volume)
    struct.pack_into("<QQI", sb, 8, snap_block, old, 0x4000000D)  # a physical copy of the volume superblock
    c.put(snap_block, sb)
    meta_root = c.u64(volume, 152)
    meta = c.leaf(meta_root)
    value = struct.pack("<QQQQQIIH", 0, snap_block, 1_700_000_000 * 10**9, 1_700_000_000 * 10**9, 0, 0, 0,
                        len(name) + 1) + name.encode() + b"\0"
    meta.entries = sorted([*meta.entries, (j_key(old, SNAP_METADATA), value)], key=_fs_order)
    c.put_leaf(meta_root, meta, meta_root, new)

    fs_oid, fs_block = c.fs_root(volume)
    tree = c.leaf(fs_block)
    drecs = {_drec_name(k): v for k, v in tree.entries if _fs_order((k, v))[:2] == (2, DIR_REC)}
    file_id = struct.unpack_from("<Q", drecs[changed.encode()])[0]
    inode = next(v for k, v in tree.entries if _fs_order((k, v))[:2] == (file_id, INODE))
    stream_id = struct.unpack_from("<Q", inode, 8)[0]
    entries = []
    for key, val in tree.entries:
        order = _fs_order((key, val))
        if order[:2] == (2, DIR_REC) and _drec_name(key) == gone.encode():
            continue
        if order[:2] == (stream_id, FILE_EXTENT):
            val = val[:8] + struct.pack("<Q", data_block) + val[16:]
        entries.append((key, val))
    tree.entries = entries
    c.put(data_block, new_content.ljust(BLOCK, b"\0"), checksum=False)
    c.put_leaf(root_block, tree, fs_oid, new)

    omap_root = c.volume_omap_root(volume)
    omap = c.leaf(omap_root)
    omap.entries = sorted([*omap.entries, (struct.pack("<QQ", fs_oid, new), struct.pack("<IIQ", 0, BLOCK, root_block))],
                          key=lambda e: struct.unpack("<QQ", e[0]))
    c.put_leaf(omap_root, omap, omap_root, new)

    sb = c.block(volume)
    struct.pack_into("<Q", sb, 16, new)
    struct.pack_into("<Q", sb, 216, struct.unpack_from("<Q", sb, 216)[0] + 1)  # apfs_num_snapshots
    c.put(volume, sb)
    top = c.block(0)
    struct.pack_into("<Q", top, 16, new)
    struct.pack_into("<Q", top, 96, new + 1)  # nx_next_xid
    c.put(0, top)
    return old


def add_volume(c: Container, name: str, role: int) -> int:
    """A second volume in ``nx_fs_oid``: a copy of the first one's superblock under a new virtual id, with
    ``name`` and ``role``; it shares the first volume's object map and tree (enough for reading). Returns
    its virtual id."""
    first = c.volume_block()
    block, = c.free_blocks(1)
    oid = c.u64(0, 184) + 1000
    sb = c.block(first)
    struct.pack_into("<Q", sb, 8, oid)
    sb[704:960] = name.encode().ljust(256, b"\0")
    struct.pack_into("<H", sb, 964, role)
    struct.pack_into("<I", sb, 36, 1)  # apfs_fs_index
    c.put(block, sb)
    omap_root = c.container_omap_root()
    omap = c.leaf(omap_root)
    omap.entries = sorted([*omap.entries, (struct.pack("<QQ", oid, c.xid), struct.pack("<IIQ", 0, BLOCK, block))],
                          key=lambda e: struct.unpack("<QQ", e[0]))
    c.put_leaf(omap_root, omap, omap_root, OBJ.unpack_from(omap.block)[2])
    for n in [0] + [b for b in range(1, c.block_count) if c.block(b)[32:36] == b"NXSB"]:
        top = c.block(n)
        struct.pack_into("<Q", top, 184 + 8, oid)  # nx_fs_oid[1]
        struct.pack_into("<I", top, 180, max(2, struct.unpack_from("<I", top, 180)[0]))  # nx_max_file_systems
        c.put(n, top)
    return oid


def seal(c: Container) -> None:
    """The volume made sealed, as a Mac's signed system volume is: its file extents moved out of the
    filesystem tree into a file-extent tree of their own (``fext_tree_key_t`` -> ``fext_tree_val_t``)."""
    volume = c.volume_block()
    fs_oid, fs_block = c.fs_root(volume)
    tree = c.leaf(fs_block)
    extents = [(k, v) for k, v in tree.entries if _fs_order((k, v))[1] == FILE_EXTENT]
    tree.entries = [(k, v) for k, v in tree.entries if _fs_order((k, v))[1] != FILE_EXTENT]
    xid = OBJ.unpack_from(tree.block)[2]
    c.put_leaf(fs_block, tree, fs_oid, xid)
    block, = c.free_blocks(1)
    template = bytearray(c.leaf(c.volume_omap_root(volume)).block)  # a root leaf of 16-byte keys and values
    struct.pack_into("<II", template, 24, 0x40000002, 0x1F)  # a physical B-tree of type FEXT_TREE
    entries = sorted((struct.pack("<QQ", _fs_order((k, v))[0], *struct.unpack_from("<Q", k, 8)), v[:16])
                     for k, v in extents)
    c.put_leaf(block, Leaf(bytes(template), entries, True), block, xid)
    sb = c.block(volume)
    struct.pack_into("<Q", sb, 56, struct.unpack_from("<Q", sb, 56)[0] | 0x20)  # APFS_INCOMPAT_SEALED_VOLUME
    struct.pack_into("<QI", sb, 1032, block, 0x40000002)  # apfs_fext_tree_oid, apfs_fext_tree_type
    c.put(volume, sb)
