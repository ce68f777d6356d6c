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

import functools
import struct
from dataclasses import dataclass
from itertools import repeat
from typing import TYPE_CHECKING, NamedTuple, Optional

from imgfs.errors import CorruptImage
from imgfs.filesystems.apfs.objects import LAYER

if TYPE_CHECKING:
    from imgfs.filesystems.apfs.btree import TreeNode

OBJ_ID_MASK = (1 << 60) - 1
TYPE_SHIFT = 60
KIND_BITS = 4  # a filesystem-tree key as one integer (fs_key): the object id, then the record type in 4 bits
SNAP_METADATA, EXTENT, INODE, XATTR, SIBLING_LINK, DSTREAM_ID, CRYPTO_STATE = 1, 2, 3, 4, 5, 6, 7
FILE_EXTENT, DIR_REC, DIR_STATS, SNAP_NAME, SIBLING_MAP, FILE_INFO = 8, 9, 10, 11, 12, 13

ROOT_DIR_PARENT, ROOT_DIR_INO = 1, 2
INODE_VALUE = struct.Struct("<QQQQQQQiIIIIIHHQ")
DREC_VALUE = struct.Struct("<QQH")
XATTR_VALUE = struct.Struct("<HH")
EXTENT_VALUE = struct.Struct("<QQQ")  # length and flags, physical block, crypto id
DSTREAM = struct.Struct("<QQQQQ")  # size, allocated size, default crypto id, bytes written, bytes read
XATTR_DSTREAM = struct.Struct("<Q")  # the stream's object id, before its j_dstream_t
XF_HEAD = struct.Struct("<HH")  # xf_blob_t: count, bytes used; then count x_field_t (type, flags, size)
U64, U32 = struct.Struct("<Q"), struct.Struct("<I")
EXTENT_LENGTH_MASK = (1 << 56) - 1
HASHED_NAME_LENGTH_MASK = 0x3FF
INVALID_OFFSET = 0xFFFF  # a table-of-contents entry without a value

XATTR_DATA_STREAM, XATTR_DATA_EMBEDDED, XATTR_FS_OWNED = 0x1, 0x2, 0x4
INO_EXT_DSTREAM, INO_EXT_RDEV = 8, 14
INODE_HAS_UNCOMPRESSED_SIZE = 0x40000
UF_COMPRESSED = 0x20
DT_TO_MODE = {1: 0o010000, 2: 0o020000, 4: 0o040000, 6: 0o060000, 8: 0o100000, 10: 0o120000, 12: 0o140000}


def fs_key(data: bytes) -> int:
    """A filesystem-tree key as one comparable integer: the object id, then the record type (``key(oid,
    kind)``). The rest of a key (a name's hash, an extent's logical address) only orders records of one
    object and type, which are always read together, in the order they are stored."""
    if len(data) < 8:
        raise ValueError(f"a key of {len(data)} bytes, shorter than its object id and type")
    head = int.from_bytes(data[:8], "little")
    return (head & OBJ_ID_MASK) << KIND_BITS | head >> TYPE_SHIFT


def fs_keys(node: TreeNode) -> list[int]:
    """``fs_key`` of every entry of a node at once, read in place (a listing parses thousands)."""
    if node.entry_count and min(node.key_lengths) < 8:
        raise ValueError("a key shorter than its 8-byte object id and type")
    return [(head & OBJ_ID_MASK) << KIND_BITS | head >> TYPE_SHIFT
            for (head,) in map(U64.unpack_from, repeat(node, node.entry_count), node.key_starts)]


def key(oid: int, kind: int) -> int:
    """The ``fs_key`` of records of object ``oid`` and type ``kind``."""
    return oid << KIND_BITS | kind


def split_key(fs_key: int) -> tuple[int, int]:
    """(object id, record type) of an ``fs_key``."""
    return fs_key >> KIND_BITS, fs_key & ((1 << KIND_BITS) - 1)


def span(oid: int, kind: int) -> tuple[int, int]:
    """The keys of all the records of object ``oid`` and type ``kind``, as ``BTree.records`` takes them."""
    low = key(oid, kind)
    return low, low + 1


def _error(message: str) -> CorruptImage:
    return CorruptImage(message, layer=LAYER)


class Inode(NamedTuple):
    """An inode record: ``j_inode_val_t``'s fields in their order, then the id and two extended fields."""

    parent: int
    private_id: int
    create_ns: int
    mtime_ns: int
    ctime_ns: int
    atime_ns: int
    internal_flags: int
    nlink: int  # a file's link count, or a folder's number of children
    protection_class: int
    generation: int
    bsd_flags: int
    uid: int
    gid: int
    mode: int
    pad: int
    uncompressed_size: int
    ino: int
    size: int  # the data stream's logical size (0 without one)
    rdev: int  # BSD dev_t, for device files

    @classmethod
    def parse(cls, ino: int, value: bytes) -> Inode:
        return parse_inode(ino, value, 0, len(value))


_new = tuple.__new__


def parse_inode(ino: int, data: bytes, start: int, end: int) -> Inode:
    """The inode record whose value is ``data[start:end]`` (read in place: a listing parses thousands)."""
    if end - start < INODE_VALUE.size:
        raise _error(f"inode {ino}: the record is {end - start} bytes, shorter than an inode")
    size = rdev = 0
    head = start + INODE_VALUE.size
    if end - head >= 4:
        count, used = XF_HEAD.unpack_from(data, head)
        fields = head + 4 + 4 * count
        limit = fields + used
        if limit > end:
            raise _error(f"inode {ino}: {count} extended fields of {used} bytes overrun a {end - start}-byte record")
        table = data[head + 4 : fields]
        size_at, rdev_at, need = _xfield_layout(table) if count <= 8 else _xfield_layout.__wrapped__(table)
        if fields + need > limit:
            _overrun(ino, data, head + 4, count, fields, limit)
        if size_at >= 0:
            size = U64.unpack_from(data, fields + size_at)[0]
        if rdev_at >= 0:
            rdev = U32.unpack_from(data, fields + rdev_at)[0]
    return _new(Inode, INODE_VALUE.unpack_from(data, start) + (ino, size, rdev))


@functools.lru_cache(maxsize=1024)  # a volume's inodes carry few distinct tables (only short ones are kept)
def _xfield_layout(table: bytes) -> tuple[int, int, int]:
    """For an inode's table of extended fields (x_field_t: type, flags, size): where the first data stream's
    size and the first device number are, from the start of the fields' data (-1: absent, or too short to
    hold one), and how many bytes the fields need (each but the last padded to 8)."""
    size_at = rdev_at = -1
    pos = need = 0
    seen_size = seen_rdev = False
    for kind, _flags, length in struct.iter_unpack("<BBH", table):
        need = max(need, pos + length)
        if kind == INO_EXT_DSTREAM and not seen_size:
            seen_size, size_at = True, pos if length >= DSTREAM.size else -1
        elif kind == INO_EXT_RDEV and not seen_rdev:
            seen_rdev, rdev_at = True, pos if length >= 4 else -1
        pos += (length + 7) & ~7
    return size_at, rdev_at, need


def _overrun(ino: int, data: bytes, table_at: int, count: int, pos: int, limit: int) -> None:
    """Raise for the first extended field that runs past the bytes the inode gives them (``table_at``: where the
    table of fields starts, ``pos``: where their data does)."""
    for index in range(count):
        kind, _flags, length = struct.unpack_from("<BBH", data, table_at + 4 * index)
        if pos + length > limit:
            raise _error(f"inode {ino}: extended field (type {kind}, {length} bytes) runs past the record")
        pos += (length + 7) & ~7


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
    return _new(DirEntry, (name, file_id, flags & 0xF))


def parse_drecs(node: TreeNode, start: int, stop: int, hashed: bool) -> list[DirEntry]:
    """The directory records that are entries ``start`` to ``stop - 1`` of a leaf, read in place: a listing
    parses one per child."""
    found = []
    unpack, length_of = DREC_VALUE.unpack_from, U32.unpack_from
    starts, lengths, offsets, end = node.key_starts, node.key_lengths, node.value_offsets, node.values_end
    for i in range(start, stop):
        k0, v0 = starts[i], end - offsets[i]
        k1 = k0 + lengths[i]
        if node.value_lengths[i] < DREC_VALUE.size or offsets[i] == INVALID_OFFSET:
            k0, k1, v0, v1 = node.entry(i)
            parse_drec(node[k0:k1], node[v0:v1], hashed)  # raises the record's error
        if hashed and k1 - k0 >= 12 and (length_of(node, k0 + 8)[0] & HASHED_NAME_LENGTH_MASK) + 12 == k1 - k0:
            name = node[k0 + 12 : k1 - 1] if node[k1 - 1] == 0 else node[k0 + 12 : k1]  # the usual layout
        else:
            name = _drec_name(node[k0:k1], hashed)
        file_id, _added, flags = unpack(node, v0)
        found.append(_new(DirEntry, (name, file_id, flags & 0xF)))
    return found


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


def parse_extent(key: bytes, value: bytes) -> FileExtent:
    """A file extent record (``j_file_extent_key_t``: the object id and type, then the logical address), or a
    sealed volume's (``fext_tree_key_t``: the data stream id, then the address; no crypto id in the value)."""
    if len(key) < 16 or len(value) < 16:
        raise _error(f"file extent record of object {int.from_bytes(key[:8], 'little') & OBJ_ID_MASK} too short")
    length_flags, block = struct.unpack_from("<QQ", value)
    crypto_id = EXTENT_VALUE.unpack_from(value)[2] if len(value) >= EXTENT_VALUE.size else 0
    return FileExtent(U64.unpack_from(key, 8)[0], length_flags & EXTENT_LENGTH_MASK, block, crypto_id)


def symlink_target(value: Optional[bytes]) -> bytes:
    """A symlink's target from its com.apple.fs.symlink attribute (stored with a trailing NUL)."""
    if value is None:
        return b""
    return value[:-1] if value.endswith(b"\0") else value
