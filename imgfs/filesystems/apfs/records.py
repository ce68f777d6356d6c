"""APFS filesystem records: the keys and values of a volume's filesystem tree.

Every key starts with ``obj_id_and_type``: the object id in the low 60 bits, the record type in the
top 4. A directory's entries are ``DIR_REC`` records of the directory's id, named in the key (with a
hash of the name in front on volumes that are case- or normalization-insensitive; a listing reads all
of them, so it never depends on the hash). A file's inode is the ``INODE`` record of its id; its data
stream's extents are ``FILE_EXTENT`` records of its ``private_id`` (shared by clones); its extended
attributes are ``XATTR`` records, inline or in a data stream of their own. Inodes and directory
entries carry extended fields (``xf_blob_t``): the data stream's size, the name, the device number.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import NamedTuple, Optional

from imgfs.errors import CorruptImage
from imgfs.filesystems.apfs.objects import LAYER

OBJ_ID_MASK = (1 << 60) - 1
TYPE_SHIFT = 60
SNAP_METADATA, EXTENT, INODE, XATTR, SIBLING_LINK, DSTREAM_ID, CRYPTO_STATE = 1, 2, 3, 4, 5, 6, 7
FILE_EXTENT, DIR_REC, DIR_STATS, SNAP_NAME, SIBLING_MAP, FILE_INFO = 8, 9, 10, 11, 12, 13

ROOT_DIR_PARENT, ROOT_DIR_INO = 1, 2
INODE_VALUE = struct.Struct("<QQQQQQQiIIIIIHHQ")
DREC_VALUE = struct.Struct("<QQH")
XATTR_VALUE = struct.Struct("<HH")
EXTENT_VALUE = struct.Struct("<QQQ")  # length and flags, physical block, crypto id
DSTREAM = struct.Struct("<QQQQQ")  # size, allocated size, default crypto id, bytes written, bytes read
XATTR_DSTREAM = struct.Struct("<Q")  # the stream's object id, before its j_dstream_t
EXTENT_LENGTH_MASK = (1 << 56) - 1
HASHED_NAME_LENGTH_MASK = 0x3FF

XATTR_DATA_STREAM, XATTR_DATA_EMBEDDED, XATTR_FS_OWNED = 0x1, 0x2, 0x4
INO_EXT_NAME, INO_EXT_DSTREAM, INO_EXT_SPARSE_BYTES, INO_EXT_RDEV = 4, 8, 13, 14
INODE_HAS_UNCOMPRESSED_SIZE = 0x40000
UF_COMPRESSED = 0x20
DT_TO_MODE = {1: 0o010000, 2: 0o020000, 4: 0o040000, 6: 0o060000, 8: 0o100000, 10: 0o120000, 12: 0o140000}


def fs_key(data: bytes) -> tuple[int, ...]:
    """A filesystem-tree key as a comparable tuple: (object id, type), and for a file extent its
    logical address; a listing only ever needs the (object id, type) prefix to be in order."""
    head = int.from_bytes(data[:8], "little")
    kind = head >> TYPE_SHIFT
    if kind == FILE_EXTENT and len(data) >= 16:
        return head & OBJ_ID_MASK, kind, int.from_bytes(data[8:16], "little")
    return head & OBJ_ID_MASK, kind


def _error(message: str) -> CorruptImage:
    return CorruptImage(message, layer=LAYER)


def extended_fields(value: bytes, start: int) -> dict[int, bytes]:
    """The extended fields (``xf_blob_t``) at ``start`` of a value, by type; empty when there are none."""
    if len(value) < start + 4:
        return {}
    count, used = struct.unpack_from("<HH", value, start)
    data_start = start + 4 + 4 * count
    if data_start + used > len(value):
        raise _error(f"extended fields: {count} fields of {used} bytes overrun a {len(value)}-byte record")
    fields: dict[int, bytes] = {}
    pos = data_start
    for i in range(count):
        kind, _flags, size = struct.unpack_from("<BBH", value, start + 4 + 4 * i)
        if pos + size > data_start + used:
            raise _error(f"extended field {i} (type {kind}, {size} bytes) runs past the record")
        fields.setdefault(kind, value[pos : pos + size])
        pos += (size + 7) & ~7
    return fields


class Inode(NamedTuple):
    ino: int
    parent: int
    private_id: int
    create_ns: int
    mtime_ns: int
    ctime_ns: int
    atime_ns: int
    internal_flags: int
    nlink: int  # a file's link count, or a folder's number of children
    bsd_flags: int
    uid: int
    gid: int
    mode: int
    uncompressed_size: int
    size: int  # the data stream's logical size (0 without one)
    rdev: int  # BSD dev_t, for device files
    name: str

    @property
    def compressed(self) -> bool:
        return bool(self.bsd_flags & UF_COMPRESSED)

    @classmethod
    def parse(cls, ino: int, value: bytes) -> Inode:
        if len(value) < INODE_VALUE.size:
            raise _error(f"inode {ino}: the record is {len(value)} bytes, shorter than an inode")
        (parent, private_id, create, mod, change, access, flags, nlink, _prot, _gen, bsd, uid, gid, mode, _pad,
         uncompressed) = INODE_VALUE.unpack_from(value)
        fields = extended_fields(value, INODE_VALUE.size)
        dstream = fields.get(INO_EXT_DSTREAM, b"")
        size = DSTREAM.unpack_from(dstream)[0] if len(dstream) >= DSTREAM.size else 0
        rdev_field = fields.get(INO_EXT_RDEV, b"")
        rdev = int.from_bytes(rdev_field[:4], "little") if len(rdev_field) >= 4 else 0
        name = fields.get(INO_EXT_NAME, b"").split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
        return cls(ino, parent, private_id, create, mod, change, access, flags, nlink, bsd, uid, gid, mode,
                   uncompressed, size, rdev, name)


class DirEntry(NamedTuple):
    name: bytes
    file_id: int
    kind: int  # DT_* from the record's flags


def parse_drec(key: bytes, value: bytes, hashed: bool) -> DirEntry:
    """A directory record; ``hashed`` says which key layout the volume uses (the lengths decide when
    they fit only the other)."""
    name = _drec_name(key, hashed)
    if len(value) < DREC_VALUE.size:
        raise _error(f"directory record {name!r}: the value is {len(value)} bytes")
    file_id, _added, flags = DREC_VALUE.unpack_from(value)
    return DirEntry(name, file_id, flags & 0xF)


def _drec_name(key: bytes, hashed: bool) -> bytes:
    hashed_length = int.from_bytes(key[8:12], "little") & HASHED_NAME_LENGTH_MASK if len(key) >= 12 else -1
    plain_length = int.from_bytes(key[8:10], "little") if len(key) >= 10 else -1
    fits_hashed, fits_plain = 12 + hashed_length == len(key), 10 + plain_length == len(key)
    if fits_hashed and (hashed or not fits_plain):
        raw = key[12:]
    elif fits_plain:
        raw = key[10:]
    else:
        raise _error(f"directory record key of {len(key)} bytes: its name length does not fit it")
    return raw[:-1] if raw.endswith(b"\0") else raw


@dataclass(frozen=True)
class Xattr:
    name: str
    flags: int
    data: bytes  # the value itself, when embedded
    stream_id: int  # the data stream's object id, when not
    size: int

    @property
    def embedded(self) -> bool:
        return not self.flags & XATTR_DATA_STREAM


def parse_xattr(key: bytes, value: bytes) -> Xattr:
    if len(key) < 10 or len(value) < XATTR_VALUE.size:
        raise _error("extended attribute record too short")
    length = int.from_bytes(key[8:10], "little")
    name = key[10 : 10 + length].split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
    flags, data_length = XATTR_VALUE.unpack_from(value)
    data = value[4 : 4 + data_length]
    if len(data) < data_length:
        raise _error(f"extended attribute {name!r}: {data_length} bytes of data overrun the record")
    if flags & XATTR_DATA_STREAM:
        if len(data) < XATTR_DSTREAM.size + DSTREAM.size:
            raise _error(f"extended attribute {name!r}: its data stream record is {len(data)} bytes")
        stream_id = XATTR_DSTREAM.unpack_from(data)[0]
        size = DSTREAM.unpack_from(data, XATTR_DSTREAM.size)[0]
        return Xattr(name, flags, b"", stream_id, size)
    return Xattr(name, flags, data, 0, len(data))


@dataclass(frozen=True)
class FileExtent:
    logical: int  # byte offset in the file
    length: int  # bytes
    block: int  # physical block; 0 for a hole
    crypto_id: int


def parse_extent(key: tuple[int, ...], value: bytes) -> FileExtent:
    """A file extent record, or a sealed volume's ``fext_tree_val_t`` (no crypto id)."""
    if len(key) < 3 or len(value) < 16:
        raise _error(f"file extent record of object {key[0]} too short")
    length_flags, block = struct.unpack_from("<QQ", value)
    crypto_id = EXTENT_VALUE.unpack_from(value)[2] if len(value) >= EXTENT_VALUE.size else 0
    return FileExtent(key[2], length_flags & EXTENT_LENGTH_MASK, block, crypto_id)


def symlink_target(value: Optional[bytes]) -> bytes:
    """A symlink's target from its com.apple.fs.symlink attribute (stored with a trailing NUL)."""
    if value is None:
        return b""
    return value[:-1] if value.endswith(b"\0") else value
