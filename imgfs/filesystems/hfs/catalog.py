"""Classic HFS catalog and extents-overflow records (Inside Macintosh: Files, 2-70ff).

A catalog key is (parent CNID, name of at most 31 MacRoman bytes); a folder's children are the leaf
records from key (folder, "") on, and each folder (and most files) has a thread record keyed by its own
CNID and an empty name, naming its parent and its name. Records start with a type byte: 1 folder
(70 bytes), 2 file (102 bytes), 3 folder thread, 4 file thread (46 bytes).

The catalog keeps names in the Mac's RelString order (case-insensitive, diacritics significant). imgfs
never searches by name: it walks from (CNID, "") keys, which sort first among a parent's records in any
order, so keys compare here as (parent, raw bytes).
"""

from __future__ import annotations

import struct
from typing import NamedTuple, Optional

from imgfs.errors import CorruptImage
from imgfs.filesystems.hfs.mdb import Extents, parse_extents

FOLDER, FILE, FOLDER_THREAD, FILE_THREAD = 1, 2, 3, 4
ROOT_PARENT, ROOT_FOLDER, EXTENTS_FILE, CATALOG_FILE, BAD_BLOCK_FILE = 1, 2, 3, 4, 5
MAX_NAME_SIZE = 31
DATA_FORK, RESOURCE_FORK = 0x00, 0xFF
# dirFlags, dirVal, dirDirID, dirCrDat, dirMdDat, dirBkDat, dirUsrInfo (DInfo), dirFndrInfo (DXInfo)
FOLDER_RECORD = struct.Struct(">2xHHIIII16s16s")
FOLDER_SIZE = 70
# filFlags, filTyp, filUsrWds (FInfo), filFlNum, filStBlk, filLgLen, filPyLen, filRStBlk, filRLgLen, filRPyLen,
# filCrDat, filMdDat, filBkDat, filFndrInfo (FXInfo), filClpSize, filExtRec, filRExtRec
FILE_RECORD = struct.Struct(">2xBB16sIHIIHIIIII16sH12s12s")
FILE_SIZE = 102
THREAD_RECORD = struct.Struct(">2x8xIB")  # thdParID, then the name's length and bytes
EXTENT_KEY = struct.Struct(">BIH")  # xkrFkType, xkrFNum, xkrFABN
FILE_LOCKED = 0x01


def key_of(raw: bytes) -> tuple[int, bytes]:
    """A catalog key (after its length byte: reserved, parent, name) as (parent CNID, name bytes)."""
    if len(raw) < 6:
        return 0, b""
    return int.from_bytes(raw[1:5], "big"), raw[6 : 6 + raw[5]]


def split_key(raw: bytes, where: int) -> tuple[int, bytes]:
    """(parent CNID, MacRoman name) of a catalog key; a name longer than its key is corrupt."""
    if len(raw) < 6:
        raise CorruptImage(f"catalog key of {len(raw)} bytes is too short", layer="hfs", offset=where)
    length = raw[5]
    if length > MAX_NAME_SIZE or 6 + length > len(raw):
        raise CorruptImage(f"catalog key: a name of {length} bytes does not fit in {len(raw)} bytes", layer="hfs",
                           offset=where)
    return int.from_bytes(raw[1:5], "big"), raw[6 : 6 + length]


def extent_key(raw: bytes) -> tuple[int, int, int]:
    """An extents overflow key in the tree's order: (file CNID, fork type, first allocation block)."""
    if len(raw) < EXTENT_KEY.size:
        return 0, 0, 0
    fork_type, file_id, start = EXTENT_KEY.unpack_from(raw)
    return file_id, fork_type, start


def record_type(data: bytes) -> int:
    return data[0] if data else 0


class Thread(NamedTuple):
    parent: int
    name: bytes


def parse_thread(data: bytes, where: int) -> Thread:
    if len(data) < THREAD_RECORD.size:
        raise CorruptImage("catalog thread record is too short", layer="hfs", offset=where)
    parent, length = THREAD_RECORD.unpack_from(data)
    if length > MAX_NAME_SIZE or THREAD_RECORD.size + length > len(data):
        raise CorruptImage(f"catalog thread record: a name of {length} bytes does not fit", layer="hfs",
                           offset=where)
    return Thread(parent, data[THREAD_RECORD.size : THREAD_RECORD.size + length])


class Fork(NamedTuple):
    logical_size: int
    physical_size: int
    extents: Extents  # the first three; more in the extents overflow file


class Entry(NamedTuple):
    """A folder or file record: what imgfs shows of it."""

    kind: int
    cnid: int
    flags: int
    create_date: int
    modify_date: int
    finder_info: bytes  # 32 bytes: FInfo + FXInfo (a file), DInfo + DXInfo (a folder)
    data_fork: Optional[Fork] = None
    resource_fork: Optional[Fork] = None

    @property
    def locked(self) -> bool:
        return self.kind == FILE and bool(self.flags & FILE_LOCKED)


def parse_entry(data: bytes, where: int) -> Entry:
    kind = record_type(data)
    if kind == FOLDER and len(data) >= FOLDER_SIZE:
        flags, _valence, cnid, created, modified, _backup, info, extra = FOLDER_RECORD.unpack_from(data)
        return Entry(FOLDER, cnid, flags, created, modified, info + extra)
    if kind == FILE and len(data) >= FILE_SIZE:
        (flags, _type, info, cnid, _start, size, allocated, _rstart, rsize, rallocated, created, modified, _backup,
         extra, _clump, extents, rextents) = FILE_RECORD.unpack_from(data)
        return Entry(FILE, cnid, flags, created, modified, info + extra,
                     Fork(size, allocated, parse_extents(extents)), Fork(rsize, rallocated, parse_extents(rextents)))
    raise CorruptImage(f"catalog record of type {kind} and {len(data)} bytes: expected a folder ({FOLDER_SIZE} "
                       f"bytes) or file ({FILE_SIZE} bytes) record", layer="hfs", offset=where)


def shown(name: bytes) -> str:
    """What a user sees of a MacRoman name: Unicode, the Mac's '/' as ':' (as macOS shows HFS names to POSIX
    programs, and as imgfs shows HFS+), NUL as U+2400."""
    return name.decode("mac_roman").replace("/", ":").replace("\0", "\u2400")
