"""The classic HFS master directory block (Inside Macintosh: Files, 2-60), and dates in local time.

The MDB is 162 bytes at byte 1024 of the volume, signature 'BD'. It gives the allocation blocks (at
most 65,535 of ``drAlBlkSiz`` bytes, a multiple of 512, the first at 512-byte sector ``drAlBlSt``),
the volume name (a Pascal string of at most 27 MacRoman bytes), and the first three extents of the
extents overflow and catalog B-tree files. A Mac OS 8.1+ volume may be an HFS *wrapper* whose
``drEmbedSigWord`` is 'H+': that is an HFS+ volume, read by ``imgfs.filesystems.hfsplus``.

HFS dates are seconds since 1904-01-01 00:00 in the local time of the Mac that wrote them (HFS+ moved
to UTC). The zone is not recorded anywhere, so they are read in the local time zone of the machine
that mounts (``TZ``), as the Linux kernel's hfs driver and hfsutils do.
"""

from __future__ import annotations

import datetime
import struct
from typing import Any, NamedTuple

from imgfs.errors import CorruptImage
from imgfs.io.stream import Stream

MDB_OFFSET = 1024
SIGNATURE = b"BD"
EMBEDDED_HFS_PLUS = b"H+"
# drSigWord, drCrDate, drLsMod, drAtrb, drNmFls, drVBMSt, drAllocPtr, drNmAlBlks, drAlBlkSiz, drClpSiz,
# drAlBlSt, drNxtCNID, drFreeBks, drVN (Str27), drVolBkUp, drVSeqNum, drWrCnt, drXTClpSiz, drCTClpSiz,
# drNmRtDirs, drFilCnt, drDirCnt, drFndrInfo, drEmbedSigWord, drEmbedExtent (start, count), drXTFlSize,
# drXTExtRec, drCTFlSize, drCTExtRec
MDB = struct.Struct(">2sIIHHHHHIIHIH28sIHIIIHII32s2sHHI12sI12s")
EXTENT_RECORD = struct.Struct(">HHHHHH")  # three (first allocation block, block count) pairs
EXTENTS_PER_RECORD = 3
MAX_NAME_SIZE = 27
ATTR_UNMOUNTED, ATTR_SPARED_BLOCKS, ATTR_SOFTWARE_LOCK = 1 << 8, 1 << 9, 1 << 15
_EPOCH = datetime.datetime(1904, 1, 1)

Extents = tuple[tuple[int, int], ...]


def parse_extents(raw: bytes) -> Extents:
    """The extents of a three-extent record, up to the first empty one."""
    values = EXTENT_RECORD.unpack_from(raw)
    found = []
    for i in range(EXTENTS_PER_RECORD):
        start, count = values[2 * i], values[2 * i + 1]
        if count == 0:
            break
        found.append((start, count))
    return tuple(found)


class MasterDirectoryBlock(NamedTuple):
    create_date: int
    modify_date: int
    attributes: int
    block_count: int  # allocation blocks
    block_size: int  # bytes per allocation block
    first_block_sector: int  # drAlBlSt: the 512-byte sector where allocation block 0 starts
    next_cnid: int
    free_blocks: int
    name: bytes  # MacRoman
    file_count: int
    folder_count: int
    finder_info: bytes
    embed_signature: bytes
    extents_size: int
    extents_extents: Extents
    catalog_size: int
    catalog_extents: Extents

    @property
    def first_block_offset(self) -> int:
        return self.first_block_sector * 512

    def describe(self) -> dict[str, Any]:
        return {"block_size": self.block_size, "total_blocks": self.block_count, "free_blocks": self.free_blocks,
                "first_block_offset": self.first_block_offset, "files": self.file_count,
                "folders": self.folder_count, "locked": bool(self.attributes & ATTR_SOFTWARE_LOCK),
                "cleanly_unmounted": bool(self.attributes & ATTR_UNMOUNTED)}


def parse_mdb(raw: bytes) -> MasterDirectoryBlock:
    (_sig, created, modified, attributes, _files_in_root, _bitmap, _alloc, blocks, block_size, _clump, first, next_cnid,
     free, name, _backup, _seq, _writes, _xt_clump, _ct_clump, _dirs_in_root, files, folders, finder, embed, _es, _ec,
     xt_size, xt_extents, ct_size, ct_extents) = MDB.unpack_from(raw)
    name_bytes = name[1 : 1 + min(name[0], MAX_NAME_SIZE)]
    return MasterDirectoryBlock(created, modified, attributes, blocks, block_size, first, next_cnid, free, name_bytes,
                                files, folders, finder, embed, xt_size, parse_extents(xt_extents), ct_size,
                                parse_extents(ct_extents))


def probe(stream: Stream) -> bool:
    """A classic HFS volume: an MDB with allocation blocks, that does not wrap an HFS+ volume (that one is
    HFS+'s to read). What else is wrong with it, the reader says."""
    raw = stream.pread(MDB_OFFSET, MDB.size)
    if len(raw) < MDB.size or raw[:2] != SIGNATURE:
        return False
    mdb = parse_mdb(raw)
    return mdb.embed_signature != EMBEDDED_HFS_PLUS and mdb.block_count > 0 and 0 < mdb.block_size and \
        mdb.block_size % 512 == 0


def read_mdb(stream: Stream) -> MasterDirectoryBlock:
    raw = stream.pread(MDB_OFFSET, MDB.size)
    if len(raw) < MDB.size:
        raise CorruptImage(f"the image ({stream.size} bytes) ends before the master directory block", layer="hfs",
                           offset=MDB_OFFSET)
    if raw[:2] != SIGNATURE:
        raise CorruptImage(f"master directory block: expected signature 'BD', got {raw[:2]!r}", layer="hfs",
                           offset=MDB_OFFSET)
    mdb = parse_mdb(raw)
    if mdb.block_count == 0 or mdb.block_size == 0 or mdb.block_size % 512:
        raise CorruptImage(f"master directory block: {mdb.block_count} allocation blocks of {mdb.block_size} bytes "
                           "(expected a non-zero multiple of 512)", layer="hfs", offset=MDB_OFFSET + 18)
    if not mdb.catalog_extents or mdb.catalog_size == 0:
        raise CorruptImage("master directory block: the catalog file has no extents", layer="hfs",
                           offset=MDB_OFFSET + 146)
    return mdb


def hfs_local_time_ns(seconds: int) -> int:
    """An HFS date (seconds since 1904 in the writer's local time) as nanoseconds since 1970, read in the
    mounting machine's local time zone; 0 (never set) stays the 1904 epoch in that zone."""
    try:
        return int((_EPOCH + datetime.timedelta(seconds=seconds)).timestamp()) * 1_000_000_000
    except (OverflowError, OSError, ValueError):
        return 0
