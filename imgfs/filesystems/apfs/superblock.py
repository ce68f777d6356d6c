"""The container superblock (``nx_superblock_t``) and the volume superblock (``apfs_superblock_t``).

Offsets are those of Apple's "Apple File System Reference"; every field is little-endian. Only what a
reader needs is kept: the block size and count, the checkpoint areas, the container object map, the
volumes' ids, the key bag's location and the Fusion fields (to refuse a container that needs a second
device); of a volume, its object map, trees, name, role, flags and encryption state.
"""

from __future__ import annotations

import struct
import uuid
from dataclasses import dataclass

from imgfs.errors import CorruptImage, UnsupportedFormat
from imgfs.filesystems.apfs.objects import LAYER, MAX_BLOCK_SIZE, MIN_BLOCK_SIZE, parse_header

NX_MAGIC, APSB_MAGIC = b"NXSB", b"APSB"
# magic, block size, block count, features, ro-compat, incompat, uuid, next oid, next xid, checkpoint
# descriptor blocks, data blocks, descriptor base, data base, desc next, data next, desc index, desc
# length, data index, data length, spaceman, omap, reaper, test type, max file systems
NX = struct.Struct("<4sIQQQQ16sQQIIQQIIIIIIQQQII")
NX_FS_OID_OFFSET, NX_MAX_FILE_SYSTEMS = 184, 100
NX_KEYLOCKER_OFFSET, NX_FUSION_UUID_OFFSET, NX_FUSION_MT_OFFSET = 1296, 1280, 1352
NX_INCOMPAT_VERSION1, NX_INCOMPAT_VERSION2, NX_INCOMPAT_FUSION = 0x1, 0x2, 0x100
NX_FLAGS_OFFSET, NX_CRYPTO_SW = 1264, 0x4
CHECKPOINT_NONCONTIGUOUS = 0x80000000

# from byte 32: magic, fs index, features, ro-compat, incompat, unmount time, reserve, quota, alloc
APSB_HEAD = struct.Struct("<4sIQQQQQQQ")
CRYPTO = struct.Struct("<HHIIIHH")  # wrapped_meta_crypto_state_t at 96
# from 116: root tree type, extentref type, snapshot meta type, omap, root tree, extentref tree, snapshot
# meta tree, revert xid, revert superblock, next object id, files, folders, symlinks, others, snapshots
APSB_TREES = struct.Struct("<IIIQQQQQQQQQQQQ")
APSB_UUID, APSB_LAST_MOD, APSB_FLAGS, APSB_FORMATTED_BY, APSB_NAME = 240, 256, 264, 272, 704
APSB_ROLE, APSB_FEXT_TREE, APSB_INTEGRITY = 964, 1032, 1024
FS_UNENCRYPTED, FS_ONEKEY = 0x1, 0x8
INCOMPAT_CASE_INSENSITIVE, INCOMPAT_NORMALIZATION_INSENSITIVE, INCOMPAT_SEALED = 0x1, 0x8, 0x20

ROLE_FLAGS = {0x1: "System", 0x2: "User", 0x4: "Recovery", 0x8: "VM", 0x10: "Preboot", 0x20: "Installer"}
ROLE_ENUM = {1: "Data", 2: "Baseband", 3: "Update", 4: "xART", 5: "Hardware", 6: "Backup", 9: "Enterprise",
             11: "Prelogin"}
ROLE_ENUM_SHIFT = 6


@dataclass(frozen=True)
class ContainerSuperblock:
    xid: int
    block_size: int
    block_count: int
    incompat: int
    uuid: bytes
    desc_blocks: int
    desc_base: int
    desc_index: int
    desc_len: int
    omap_oid: int
    max_file_systems: int
    fs_oids: tuple[int, ...]
    flags: int
    keylocker: tuple[int, int]  # (first block, block count) of the container's key bag
    fusion: bool

    @classmethod
    def parse(cls, data: bytes, offset: int) -> ContainerSuperblock:
        (magic, block_size, block_count, _features, _ro, incompat, uid, _next_oid, _next_xid, desc_blocks,
         _data_blocks, desc_base, _data_base, _desc_next, _data_next, desc_index, desc_len, _di, _dl, _sm,
         omap_oid, _reaper, _test, max_fs) = NX.unpack_from(data, 32)
        if magic != NX_MAGIC:
            raise UnsupportedFormat(f"expected the container magic 'NXSB', got {magic!r}", layer=LAYER,
                                    offset=offset + 32)
        if block_size & (block_size - 1) or not MIN_BLOCK_SIZE <= block_size <= MAX_BLOCK_SIZE:
            raise CorruptImage(f"block size: expected a power of two from 4096 to 65536, got {block_size}",
                               layer=LAYER, offset=offset + 36)
        count = min(max_fs, NX_MAX_FILE_SYSTEMS)
        fs_oids = struct.unpack_from(f"<{count}Q", data, NX_FS_OID_OFFSET)
        keybag = struct.unpack_from("<QQ", data, NX_KEYLOCKER_OFFSET)
        fusion = bool(incompat & NX_INCOMPAT_FUSION) or any(data[NX_FUSION_UUID_OFFSET:NX_FUSION_UUID_OFFSET + 16])
        flags = int.from_bytes(data[NX_FLAGS_OFFSET:NX_FLAGS_OFFSET + 8], "little")
        return cls(parse_header(data).xid, block_size, block_count, incompat, uid, desc_blocks, desc_base,
                   desc_index, desc_len, omap_oid, max_fs, fs_oids, flags, (keybag[0], keybag[1]), fusion)

    @property
    def uuid_text(self) -> str:
        return str(uuid.UUID(bytes=self.uuid))


@dataclass(frozen=True)
class VolumeSuperblock:
    xid: int
    fs_index: int
    incompat: int
    crypto_flags: int
    root_tree_type: int
    snap_meta_tree_type: int
    omap_oid: int
    root_tree_oid: int
    snap_meta_tree_oid: int
    files: int
    folders: int
    symlinks: int
    snapshots: int
    uuid: bytes
    last_modified_ns: int
    flags: int
    formatted_by: str
    name: str
    role: int
    fext_tree_oid: int

    @classmethod
    def parse(cls, data: bytes, offset: int) -> VolumeSuperblock:
        magic, fs_index, _features, _ro, incompat = APSB_HEAD.unpack_from(data, 32)[:5]
        if magic != APSB_MAGIC:
            raise CorruptImage(f"volume superblock: expected the magic 'APSB', got {magic!r}", layer=LAYER,
                               offset=offset + 32)
        crypto_flags = CRYPTO.unpack_from(data, 96)[2]
        (root_type, _extref_type, snap_type, omap_oid, root_oid, _extref_oid, snap_oid, _rx, _rs, _next, files,
         folders, symlinks, _others, snapshots) = APSB_TREES.unpack_from(data, 116)
        last_mod, flags = struct.unpack_from("<QQ", data, APSB_LAST_MOD)
        return cls(parse_header(data).xid, fs_index, incompat, crypto_flags, root_type, snap_type, omap_oid,
                   root_oid, snap_oid, files, folders, symlinks, snapshots, bytes(data[APSB_UUID:APSB_UUID + 16]),
                   last_mod, flags, _text(data[APSB_FORMATTED_BY:APSB_FORMATTED_BY + 32]),
                   _text(data[APSB_NAME:APSB_NAME + 256]), int.from_bytes(data[APSB_ROLE:APSB_ROLE + 2], "little"),
                   int.from_bytes(data[APSB_FEXT_TREE:APSB_FEXT_TREE + 8], "little"))

    @property
    def encrypted(self) -> bool:
        return not self.flags & FS_UNENCRYPTED

    @property
    def case_insensitive(self) -> bool:
        return bool(self.incompat & INCOMPAT_CASE_INSENSITIVE)

    @property
    def hashed_names(self) -> bool:
        return bool(self.incompat & (INCOMPAT_CASE_INSENSITIVE | INCOMPAT_NORMALIZATION_INSENSITIVE))

    @property
    def sealed(self) -> bool:
        return bool(self.incompat & INCOMPAT_SEALED)

    @property
    def uuid_text(self) -> str:
        return str(uuid.UUID(bytes=self.uuid))

    @property
    def roles(self) -> list[str]:
        """The role's names: flags in the low bits, one enumerated role above them."""
        names = [name for bit, name in ROLE_FLAGS.items() if self.role & bit]
        enum = self.role >> ROLE_ENUM_SHIFT
        if enum:
            names.append(ROLE_ENUM.get(enum, f"role {enum}"))
        return names


def _text(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode("utf-8", "replace")
