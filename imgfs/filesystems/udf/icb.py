"""File entries (ECMA-167 4/14.9, 4/14.17) and their allocation descriptors.

An ICB address leads to a file entry or an extended file entry, perhaps through indirect entries
(strategy 4096 appends newer entries that way; both strategies are read). Its allocation
descriptors (short, long, extended, or the data itself embedded in the entry) list the file's
extents, continued in allocation extent descriptors; the extents become one ``ExtentStream`` over
the partitions' streams, holes for extents that are allocated but not recorded. Every chain is
followed with a loop check and a bound.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Optional

from imgfs.errors import CorruptImage
from imgfs.filesystems.udf.descriptors import (
    EXT_AD,
    EXTENT_LENGTH_MASK,
    EXTENT_NEXT,
    EXTENT_RECORDED,
    EXTENT_UNALLOCATED,
    LAYER,
    SHORT_AD,
    TAG_AED,
    TAG_EFE,
    TAG_FE,
    TAG_IE,
    Address,
    Extent,
    long_ad,
    read_tag,
    tag_ident,
    timestamp_ns,
)
from imgfs.filesystems.udf.partitions import PartitionView
from imgfs.io.stream import BytesStream, ExtentStream, SliceStream, Stream
from imgfs.io.stream import Extent as DataExtent

AD_SHORT, AD_LONG, AD_EXTENDED, AD_EMBEDDED = range(4)
AD_SIZES = {AD_SHORT: 8, AD_LONG: 16, AD_EXTENDED: 20}
MAX_INDIRECT = 1024  # indirect entries followed to the newest file entry
MAX_CONTINUATIONS = 1 << 16  # allocation extent descriptors in one file
MAX_EXTENTS = 1 << 20  # allocation descriptors in one file
MAX_AED_SIZE = 1 << 20

# ICB tag flags (ECMA-167 4/14.6.8)
FLAG_SETUID, FLAG_SETGID, FLAG_STICKY = 0x40, 0x80, 0x100


@dataclass(frozen=True)
class FileEntry:
    address: Address  # where this entry is (after indirect entries)
    offset: Optional[int]  # its byte offset in the image, for messages
    extended: bool
    strategy: int
    file_type: int
    icb_flags: int
    uid: int
    gid: int
    permissions: int
    links: int
    size: int  # information length
    atime_ns: int
    mtime_ns: int
    ctime_ns: int
    ea: bytes  # extended attributes recorded in the entry
    ads: bytes  # allocation descriptors, or the data itself when embedded
    ads_offset: int  # where the descriptors start in the entry's block

    @property
    def ad_type(self) -> int:
        return self.icb_flags & 7


def parse_entry(data: bytes, address: Address, offset: Optional[int], ident: int) -> FileEntry:
    """A file entry or an extended file entry whose tag was already checked."""
    extended = ident == TAG_EFE
    strategy = struct.unpack_from("<H", data, 20)[0]
    file_type, icb_flags = data[27], struct.unpack_from("<H", data, 34)[0]
    uid, gid, permissions, links = struct.unpack_from("<IIIH", data, 36)
    size = struct.unpack_from("<Q", data, 56)[0]
    if extended:
        atime, mtime, ctime = timestamp_ns(data, 80), timestamp_ns(data, 92), timestamp_ns(data, 116)
        header, (ea_length, ad_length) = 216, struct.unpack_from("<II", data, 208)
    else:
        atime, mtime, ctime = timestamp_ns(data, 72), timestamp_ns(data, 84), timestamp_ns(data, 96)
        header, (ea_length, ad_length) = 176, struct.unpack_from("<II", data, 168)
    if header + ea_length + ad_length > len(data):
        raise CorruptImage(f"file entry: {ea_length} bytes of extended attributes and {ad_length} of allocation "
                           f"descriptors do not fit in its {len(data)}-byte block", layer=LAYER, offset=offset)
    ads_offset = header + ea_length
    return FileEntry(address, offset, extended, strategy, file_type, icb_flags, uid, gid, permissions, links, size,
                     atime, mtime, ctime, data[header:ads_offset], data[ads_offset : ads_offset + ad_length],
                     ads_offset)


class IcbReader:
    """Reads entries and their data through the partitions, indexed by partition reference number.

    A partition may be missing (None) while the partitions are being set up: reading the VAT or the
    metadata file through the partition it defines would be a loop, and is refused as one.
    """

    def __init__(self, partitions: Sequence[Optional[PartitionView]], block_size: int) -> None:
        self.partitions = partitions
        self.block_size = block_size

    def view(self, ref: int, offset: Optional[int] = None) -> PartitionView:
        view = self.partitions[ref] if 0 <= ref < len(self.partitions) else None
        if view is None:
            what = "no such partition" if not 0 <= ref < len(self.partitions) else \
                "a partition that would be read through itself (a loop)"
            raise CorruptImage(f"an extent in partition reference {ref}: {what}", layer=LAYER, offset=offset)
        return view

    def where(self, address: Address, inner: int = 0) -> Optional[int]:
        try:
            return self.view(address.partition).where(address.block * self.block_size + inner)
        except CorruptImage:
            return None

    def read_block(self, address: Address, size: int = 0) -> bytes:
        view = self.view(address.partition)
        size = size or self.block_size
        data = view.stream.pread(address.block * self.block_size, size)
        if len(data) < min(size, self.block_size):
            raise CorruptImage(f"block {address.block} lies past the end of partition {view.number} "
                               f"({view.stream.size // self.block_size} blocks)", layer=LAYER,
                               offset=self.where(address))
        return data

    # -- entries -----------------------------------------------------------------------------------

    def entry(self, address: Address) -> FileEntry:
        """The newest file entry of the ICB at ``address``, through indirect entries."""
        seen: set[Address] = set()
        newest: Optional[FileEntry] = None
        current = address
        for _ in range(MAX_INDIRECT):
            if current in seen:
                if newest is not None:
                    return newest  # the chain of newer entries loops: the newest one read stands
                raise CorruptImage("indirect entries form a loop", layer=LAYER, offset=self.where(current))
            seen.add(current)
            offset = self.where(current)
            try:
                data = self.read_block(current)
                tag = read_tag(data, offset or 0, "file entry", expect=(TAG_FE, TAG_EFE, TAG_IE))
            except CorruptImage:
                if newest is None:
                    raise
                return newest  # a newer entry that cannot be read: the last good one stands
            if tag.ident == TAG_IE:
                current = long_ad(data, 36).where
                continue
            newest = parse_entry(data, current, offset, tag.ident)
            following = self._next_indirect(newest) if newest.strategy == 4096 else None
            if following is None:
                return newest
            current = following
        raise CorruptImage(f"more than {MAX_INDIRECT} indirect entries", layer=LAYER, offset=self.where(address))

    def _next_indirect(self, entry: FileEntry) -> Optional[Address]:
        """Strategy 4096: the block after a direct entry may hold an indirect entry to a newer ICB."""
        following = Address(entry.address.partition, entry.address.block + 1)
        try:
            data = self.read_block(following)
        except CorruptImage:
            return None
        if tag_ident(data) != TAG_IE:
            return None
        try:
            read_tag(data, self.where(following) or 0, "indirect entry", expect=(TAG_IE,))
        except CorruptImage:
            return None
        target = long_ad(data, 36)
        return target.where if target.length else None

    # -- allocation descriptors --------------------------------------------------------------------

    def extents(self, entry: FileEntry) -> list[Extent]:
        """Every data extent of ``entry``, continuation extents followed (never of kind EXTENT_NEXT)."""
        size = AD_SIZES.get(entry.ad_type)
        if size is None:
            raise CorruptImage(f"file entry: unknown allocation descriptor type {entry.ad_type}", layer=LAYER,
                               offset=entry.offset)
        found: list[Extent] = []
        area = entry.ads
        seen: set[Address] = set()
        for _ in range(MAX_CONTINUATIONS):
            following = self._parse_area(area, size, entry.address.partition, found, entry)
            if following is None:
                return found
            if following.where in seen:
                raise CorruptImage("allocation extent descriptors form a loop", layer=LAYER,
                                   offset=self.where(following.where))
            seen.add(following.where)
            area = self._continuation(following)
        raise CorruptImage(f"more than {MAX_CONTINUATIONS} allocation extent descriptors", layer=LAYER,
                           offset=entry.offset)

    def _parse_area(self, area: bytes, size: int, partition: int, found: list[Extent],
                    entry: FileEntry) -> Optional[Extent]:
        """Append the extents of one area of descriptors; the continuation extent if it ends with one."""
        for pos in range(0, len(area) - size + 1, size):
            for extent in self._descriptor(area, pos, size, partition):
                if extent.length == 0:
                    return None  # a zero length ends the descriptors
                if extent.kind == EXTENT_NEXT:
                    return extent
                found.append(extent)
            if len(found) > MAX_EXTENTS:
                raise CorruptImage(f"more than {MAX_EXTENTS} extents", layer=LAYER, offset=entry.offset)
        return None

    def _descriptor(self, area: bytes, pos: int, size: int, partition: int) -> list[Extent]:
        if size == 8:
            raw, block = SHORT_AD.unpack_from(area, pos)
            return [Extent(raw >> 30, raw & EXTENT_LENGTH_MASK, Address(partition, block))]
        if size == 16:
            return [long_ad(area, pos)]
        raw, recorded, _info, block, ref, _ = EXT_AD.unpack_from(area, pos)
        kind, length, recorded = raw >> 30, raw & EXTENT_LENGTH_MASK, recorded & EXTENT_LENGTH_MASK
        where = Address(ref, block)
        if kind != EXTENT_RECORDED or recorded >= length:
            return [Extent(kind, length, where)]
        tail = Extent(EXTENT_UNALLOCATED, length - recorded, where)  # past the recorded length: zeros
        return [Extent(kind, recorded, where), tail] if recorded else [tail]

    def _continuation(self, extent: Extent) -> bytes:
        """The descriptors of the allocation extent descriptor a continuation extent points to."""
        data = self.read_block(extent.where, min(max(extent.length, self.block_size), MAX_AED_SIZE))
        offset = self.where(extent.where)
        read_tag(data, offset or 0, expect=(TAG_AED,))
        length = struct.unpack_from("<I", data, 20)[0]
        if 24 + length > len(data):
            raise CorruptImage(f"allocation extent descriptor: {length} bytes of descriptors do not fit in it",
                               layer=LAYER, offset=offset)
        return data[24 : 24 + length]

    # -- data --------------------------------------------------------------------------------------

    def stream(self, entry: FileEntry, name: str) -> Stream:
        """The file's data, ``entry.size`` bytes: holes read as zeros, extents short of the size too."""
        if entry.ad_type == AD_EMBEDDED:
            if entry.size > len(entry.ads):
                raise CorruptImage(f"embedded data: {entry.size} bytes do not fit in the entry's {len(entry.ads)}",
                                   layer=LAYER, offset=entry.offset)
            return BytesStream(entry.ads[: entry.size], name)
        pieces: list[DataExtent] = []
        left = entry.size
        for extent in self.extents(entry):
            if left <= 0:
                break
            count = min(extent.length, left)
            if extent.kind == EXTENT_RECORDED:
                view = self.view(extent.where.partition, entry.offset)
                pieces.append(DataExtent(count, view.stream, extent.where.block * self.block_size))
            else:
                pieces.append(DataExtent(count, None))
            left -= count
        if left > 0:
            pieces.append(DataExtent(left, None))
        if len(pieces) == 1 and pieces[0].source is not None:
            return SliceStream(pieces[0].source, pieces[0].source_offset, pieces[0].length, name=name)
        return ExtentStream(pieces, name=name)

    def read_all(self, entry: FileEntry, limit: int, what: str) -> bytes:
        if entry.size > limit:
            raise CorruptImage(f"{what}: {entry.size} bytes is implausible (at most {limit})", layer=LAYER,
                               offset=entry.offset)
        data = self.stream(entry, what).pread(0, entry.size)
        if len(data) < entry.size:
            raise CorruptImage(f"{what}: the data ends early", layer=LAYER, offset=entry.offset)
        return data

    def locate(self, entry: FileEntry, pos: int) -> Optional[int]:
        """The image offset of byte ``pos`` of the entry's data, for messages."""
        if entry.ad_type == AD_EMBEDDED:
            return None if entry.offset is None else entry.offset + entry.ads_offset + pos
        try:
            for extent in self.extents(entry):
                if pos < extent.length:
                    return self.where(extent.where, pos) if extent.kind == EXTENT_RECORDED else None
                pos -= extent.length
        except CorruptImage:
            return None
        return None
