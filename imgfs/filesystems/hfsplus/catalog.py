"""Catalog B-tree records: folders, files, and the thread records that link a CNID to its name.

A catalog key is (parent CNID, name); a folder's or file's record is keyed by its parent and its own
name, and its thread record by its own CNID and an empty name, holding the parent and the name. So a
folder's children are the leaf records from key (folder, "") on, and a CNID's record is found through
its thread.
"""

from __future__ import annotations

import struct
from typing import Callable, NamedTuple, Optional

from imgfs.errors import CorruptImage
from imgfs.filesystems.hfsplus.unicode import sort_name
from imgfs.filesystems.hfsplus.volume import FORK_SIZE, Fork

FOLDER, FILE, FOLDER_THREAD, FILE_THREAD = 1, 2, 3, 4
ROOT_PARENT, ROOT_FOLDER = 1, 2
KEY_HEAD = struct.Struct(">IH")  # parentID, name length in UTF-16 units
MAX_NAME_UNITS = 255
# recordType, flags, valence or reserved, CNID, create, contentMod, attributeMod, access, backup dates,
# then BSD info: ownerID, groupID, adminFlags, ownerFlags, fileMode, special
COMMON = struct.Struct(">hHIIIIIIIIIBBHI")
FOLDER_SIZE, FILE_SIZE = 88, 248
FINDER_INFO = slice(48, 80)  # userInfo and finderInfo: what com.apple.FinderInfo shows
DATA_FORK, RESOURCE_FORK = 88, 168
HFS_EPOCH_OFFSET = 2_082_844_800  # seconds from 1904-01-01 to 1970-01-01

HAS_ATTRIBUTES = 0x04 | 0x08  # flags: kHFSHasAttributesMask, kHFSHasSecurityMask (an ACL is an attribute too)
UF_COMPRESSED = 0x20  # in ownerFlags: the data is in com.apple.decmpfs (and maybe the resource fork)
SYMLINK = (b"slnk", b"rhap")  # fileType, fileCreator of a symbolic link (its mode says so too)
HARD_LINK = (b"hlnk", b"hfs+")  # fileType, fileCreator of a file hard link
DIR_LINK = (b"fdrp", b"MACS")  # of a directory hard link (Time Machine)
PRIVATE_DATA = "\0\0\0\0HFS+ Private Data"  # where file hard links' targets live, as iNode<n>
PRIVATE_DIR_DATA = ".HFS+ Private Directory Data\r"  # where directory hard links' targets live, as dir_<n>


def key_of(case_folding: bool) -> Callable[[bytes], tuple[int, str]]:
    """The comparable form of a catalog key's bytes: (parent CNID, name in the volume's order)."""
    def key(raw: bytes) -> tuple[int, str]:
        parent, length = KEY_HEAD.unpack_from(raw) if len(raw) >= KEY_HEAD.size else (0, 0)
        return parent, sort_name(raw[6 : 6 + 2 * length], case_folding)

    return key


def search_key(parent: int, name: bytes, case_folding: bool) -> tuple[int, str]:
    return parent, sort_name(name, case_folding)


def split_key(raw: bytes, where: int) -> tuple[int, bytes]:
    """(parent CNID, name as UTF-16BE bytes) of a catalog key."""
    if len(raw) < KEY_HEAD.size:
        raise CorruptImage(f"catalog key of {len(raw)} bytes is too short", layer="hfs+", offset=where)
    parent, length = KEY_HEAD.unpack_from(raw)
    if length > MAX_NAME_UNITS or 6 + 2 * length > len(raw):
        raise CorruptImage(f"catalog key: a name of {length} units does not fit in {len(raw)} bytes",
                           layer="hfs+", offset=where)
    return parent, raw[6 : 6 + 2 * length]


def record_type(data: bytes) -> int:
    return int.from_bytes(data[:2], "big", signed=True) if len(data) >= 2 else 0


class Thread(NamedTuple):
    parent: int
    name: bytes  # UTF-16BE


def parse_thread(data: bytes, where: int) -> Thread:
    if len(data) < 10:
        raise CorruptImage("catalog thread record is too short", layer="hfs+", offset=where)
    parent, length = struct.unpack_from(">IH", data, 4)
    if length > MAX_NAME_UNITS or 10 + 2 * length > len(data):
        raise CorruptImage(f"catalog thread record: a name of {length} units does not fit", layer="hfs+",
                           offset=where)
    return Thread(parent, data[10 : 10 + 2 * length])


class Entry(NamedTuple):
    """A folder or file record, the fields imgfs shows."""

    kind: int  # FOLDER or FILE
    cnid: int
    flags: int
    valence: int
    create_date: int
    modify_date: int  # contentModDate
    change_date: int  # attributeModDate
    access_date: int
    owner: int
    group: int
    owner_flags: int
    mode: int
    special: int  # iNodeNum of a hard link, link count of an indirect node, rdev of a device
    finder_info: bytes
    data_fork: Optional[Fork]
    resource_fork: Optional[Fork]

    @property
    def file_type(self) -> tuple[bytes, bytes]:
        return self.finder_info[:4], self.finder_info[4:8]

    @property
    def compressed(self) -> bool:
        return self.kind == FILE and bool(self.owner_flags & UF_COMPRESSED)


def parse_entry(data: bytes, where: int) -> Entry:
    kind = record_type(data)
    need = FOLDER_SIZE if kind == FOLDER else FILE_SIZE
    if kind not in (FOLDER, FILE) or len(data) < need:
        raise CorruptImage(f"catalog record of type {kind} and {len(data)} bytes: expected a folder "
                           f"({FOLDER_SIZE} bytes) or file ({FILE_SIZE} bytes) record", layer="hfs+", offset=where)
    (_, flags, valence, cnid, created, modified, changed, accessed, _backup, owner, group, _admin, owner_flags,
     mode, special) = COMMON.unpack_from(data)
    forks: tuple[Optional[Fork], Optional[Fork]] = (None, None)
    if kind == FILE:
        forks = (Fork.parse(data[DATA_FORK : DATA_FORK + FORK_SIZE]),
                 Fork.parse(data[RESOURCE_FORK : RESOURCE_FORK + FORK_SIZE]))
    return Entry(kind, cnid, flags, valence, created, modified, changed, accessed, owner, group, owner_flags, mode,
                 special, bytes(data[FINDER_INFO]), *forks)


def hfs_time_ns(seconds: int) -> int:
    """An HFS+ date (seconds since 1904-01-01 UTC) as nanoseconds since 1970."""
    return (seconds - HFS_EPOCH_OFFSET) * 1_000_000_000
