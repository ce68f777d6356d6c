"""The HFS+ volume header, fork descriptors, the HFS wrapper some old volumes sit in, and the journal.

The volume header is 512 bytes at byte 1024 of the volume: signature 'H+' (version 4) or 'HX' (HFSX,
version 5), the allocation block size and count, and the forks of the special files (extents overflow,
catalog, attributes). A fork lists eight extents; the rest are in the extents overflow B-tree, keyed by
(fileID, fork type, first block). An HFS+ volume may be wrapped in a plain HFS volume (Mac OS 8.1 to
9): the HFS master directory block ('BD' at 1024) then names the embedded volume's place in
drEmbedExtent. A journaled volume names its journal info block, which says where the journal is; the
journal's header says whether transactions wait to be replayed.
"""

from __future__ import annotations

import struct
from typing import Any, NamedTuple

from imgfs.errors import CorruptImage, UnsupportedFormat
from imgfs.io.stream import SliceStream, Stream, read_exact

HEADER_OFFSET = 1024
SIGNATURES = {b"H+": 4, b"HX": 5}
HFS_SIGNATURE = b"BD"
# signature, version, attributes, lastMountedVersion, journalInfoBlock, create/modify/backup/checked dates,
# fileCount, folderCount, blockSize, totalBlocks, freeBlocks, nextAllocation, rsrcClumpSize, dataClumpSize,
# nextCatalogID, writeCount, encodingsBitmap
VOLUME_HEADER = struct.Struct(">2sHIIIIIIIIIIIIIIIIIQ")
FINDER_INFO_OFFSET = 80
FORKS_OFFSET = 112  # allocation, extents, catalog, attributes, startup: 80 bytes each
FORK = struct.Struct(">QII")  # logicalSize, clumpSize, totalBlocks, then 8 extents of (startBlock, blockCount)
EXTENT = struct.Struct(">II")
FORK_SIZE = 80
EXTENTS_PER_RECORD = 8
EXTENT_RECORD_SIZE = EXTENTS_PER_RECORD * EXTENT.size
# HFS master directory block: drAlBlkSiz at 20, drAlBlSt at 28, drEmbedSigWord at 124, drEmbedExtent at 126
MDB_BLOCK_SIZE, MDB_FIRST_BLOCK, MDB_EMBED = 20, 28, 124

ATTR_UNMOUNTED = 1 << 8
ATTR_JOURNALED = 1 << 13
MIN_BLOCK_SIZE, MAX_BLOCK_SIZE = 512, 1 << 28


class Fork(NamedTuple):
    logical_size: int
    total_blocks: int
    extents: tuple[tuple[int, int], ...]  # (first allocation block, block count), empty ones left out

    @classmethod
    def parse(cls, raw: bytes) -> Fork:
        size, _clump, blocks = FORK.unpack_from(raw)
        return cls(size, blocks, parse_extents(raw[FORK.size : FORK.size + 64]))


def parse_extents(raw: bytes) -> tuple[tuple[int, int], ...]:
    """The extents of an extent record (eight, the unused ones zero); stops at the first empty one."""
    found = []
    for i in range(EXTENTS_PER_RECORD):
        start, count = EXTENT.unpack_from(raw, i * EXTENT.size)
        if count == 0:
            break
        found.append((start, count))
    return tuple(found)


class VolumeHeader(NamedTuple):
    signature: str
    version: int
    attributes: int
    journal_info_block: int
    create_date: int
    modify_date: int
    file_count: int
    folder_count: int
    block_size: int
    total_blocks: int
    free_blocks: int
    finder_info: bytes
    extents_file: Fork
    catalog_file: Fork
    attributes_file: Fork

    @property
    def journaled(self) -> bool:
        return bool(self.attributes & ATTR_JOURNALED)

    def describe(self) -> dict[str, Any]:
        return {"signature": self.signature, "version": self.version, "block_size": self.block_size,
                "total_blocks": self.total_blocks, "free_blocks": self.free_blocks, "files": self.file_count,
                "folders": self.folder_count, "journaled": self.journaled}


def parse_header(raw: bytes) -> VolumeHeader:
    (signature, version, attributes, _last, journal, created, modified, _backup, _checked, files, folders,
     block_size, total, free, *_rest) = VOLUME_HEADER.unpack_from(raw)
    forks = [Fork.parse(raw[FORKS_OFFSET + i * FORK_SIZE :]) for i in range(4)]
    return VolumeHeader(signature.decode("latin-1"), version, attributes, journal, created, modified, files,
                        folders, block_size, total, free, raw[FINDER_INFO_OFFSET : FINDER_INFO_OFFSET + 32],
                        forks[1], forks[2], forks[3])


def _embedded(stream: Stream) -> tuple[int, int]:
    """(byte offset, byte length) of the HFS+ volume inside an HFS wrapper; (0, 0) when there is none."""
    mdb = stream.pread(HEADER_OFFSET, 162)
    if len(mdb) < 162 or mdb[:2] != HFS_SIGNATURE or mdb[MDB_EMBED : MDB_EMBED + 2] != b"H+":
        return 0, 0
    block_size = int.from_bytes(mdb[MDB_BLOCK_SIZE : MDB_BLOCK_SIZE + 4], "big")
    first_sector = int.from_bytes(mdb[MDB_FIRST_BLOCK : MDB_FIRST_BLOCK + 2], "big")
    start, count = struct.unpack_from(">HH", mdb, MDB_EMBED + 2)
    if block_size == 0 or block_size % 512 or count == 0:
        return 0, 0
    return first_sector * 512 + start * block_size, count * block_size


def probe(stream: Stream) -> bool:
    """An HFS+ or HFSX volume header at byte 1024, or an HFS wrapper around an HFS+ volume."""
    head = stream.pread(HEADER_OFFSET, 4)
    if SIGNATURES.get(head[:2]) == int.from_bytes(head[2:4], "big"):
        return True
    offset, length = _embedded(stream)
    return length > 0 and offset + HEADER_OFFSET + 4 <= stream.size and \
        stream.pread(offset + HEADER_OFFSET, 4) == b"H+\x00\x04"


def open_volume(stream: Stream) -> tuple[Stream, VolumeHeader, int]:
    """The HFS+ volume's own stream (inside the wrapper, if any), its header, and its byte offset."""
    offset, length = _embedded(stream)
    if length:
        if offset + length > stream.size:
            raise CorruptImage(f"the HFS wrapper's embedded HFS+ volume ({length} bytes at byte {offset}) runs "
                               f"past the end of the image ({stream.size} bytes)", layer="hfs+", offset=HEADER_OFFSET)
        stream = SliceStream(stream, offset, length, name=stream.name)
    raw = stream.pread(HEADER_OFFSET, 512)
    if len(raw) < 512:
        raise CorruptImage(f"the image ({stream.size} bytes) ends before the volume header", layer="hfs+",
                           offset=offset + HEADER_OFFSET)
    if raw[:2] == HFS_SIGNATURE:
        raise UnsupportedFormat("an HFS (not HFS+) volume: imgfs reads HFS+ and HFSX only", layer="hfs+",
                                offset=offset + HEADER_OFFSET)
    header = parse_header(raw)
    want = SIGNATURES.get(raw[:2])
    if want is None or header.version != want:
        raise CorruptImage(f"volume header: expected 'H+' version 4 or 'HX' version 5, got {raw[:2]!r} version "
                           f"{header.version}", layer="hfs+", offset=offset + HEADER_OFFSET)
    size = header.block_size
    if size & (size - 1) or not MIN_BLOCK_SIZE <= size <= MAX_BLOCK_SIZE:
        raise CorruptImage(f"allocation block size: expected a power of two from 512, got {size}", layer="hfs+",
                           offset=offset + HEADER_OFFSET + 40)
    return stream, header, offset


def extent_key(raw: bytes) -> tuple[int, int, int]:
    """An extents overflow key (after its length: forkType, pad, fileID, startBlock) in the order the
    B-tree keeps them: (fileID, forkType, startBlock)."""
    if len(raw) < 10:
        return 0, 0, 0
    fork_type, _pad, file_id, start = struct.unpack_from(">BBII", raw)
    return file_id, fork_type, start


def journal_pending(volume: Stream, header: VolumeHeader) -> bool:
    """Whether the journal holds transactions: its header's start and end differ."""
    info = read_exact(volume, header.journal_info_block * header.block_size, 52, "hfs+", "the journal info block")
    flags, offset = struct.unpack_from(">I", info)[0], struct.unpack_from(">Q", info, 36)[0]
    if not flags & 1 or flags & 4:  # on another device (not ours to read), or marked as needing init: empty
        return False
    journal = read_exact(volume, offset, 24, "hfs+", "the journal header")
    magic = journal[:4]
    order = ">" if magic == b"JNLx" else "<" if magic == b"xLNJ" else ""
    if not order:
        raise CorruptImage(f"journal header magic {magic!r}", layer="hfs+", offset=offset)
    start, end = struct.unpack_from(f"{order}QQ", journal, 8)
    return start != end
