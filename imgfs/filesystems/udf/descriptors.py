"""UDF on-disc structures (ECMA-167 3rd edition as profiled by OSTA UDF 1.02 to 2.60).

Descriptor tags with their checksum and CRC, OSTA CS0 strings, timestamps, entity identifiers,
allocation descriptors, and the volume descriptors (primary, partition, logical volume with its
partition maps) and the file set descriptor. Layouts live here; the logic that follows them lives in
``volume``, ``partitions``, ``icb`` and ``reader``.
"""

from __future__ import annotations

import binascii
import datetime
import functools
import struct
from dataclasses import dataclass
from typing import NamedTuple, Optional

from imgfs.errors import CorruptImage

LAYER = "udf"

# Tag identifiers (ECMA-167 3/7.2.1 and 4/7.2.1)
TAG_PVD, TAG_AVDP, TAG_VDP, TAG_IUVD, TAG_PD, TAG_LVD, TAG_USD, TAG_TD, TAG_LVID = range(1, 10)
TAG_FSD, TAG_FID, TAG_AED, TAG_IE, TAG_TE, TAG_FE, TAG_EAHD, TAG_USE, TAG_SBD, TAG_PIE, TAG_EFE = range(256, 267)
TAG_NAMES = {TAG_PVD: "primary volume descriptor", TAG_AVDP: "anchor volume descriptor pointer",
             TAG_VDP: "volume descriptor pointer", TAG_PD: "partition descriptor",
             TAG_LVD: "logical volume descriptor", TAG_TD: "terminating descriptor", TAG_FSD: "file set descriptor",
             TAG_FID: "file identifier descriptor", TAG_AED: "allocation extent descriptor",
             TAG_IE: "indirect entry", TAG_TE: "terminal entry", TAG_FE: "file entry", TAG_EFE: "extended file entry"}

TAG = struct.Struct("<HHBBHHHI")
_TIMESTAMP = struct.Struct("<HhBBBBBBBB")
EXTENT_AD = struct.Struct("<II")  # length in bytes, location in sectors
LONG_AD = struct.Struct("<IIH6s")  # length (2 type bits), block, partition reference, implementation use
SHORT_AD = struct.Struct("<II")  # length (2 type bits), block in the ICB's partition
EXT_AD = struct.Struct("<IIIIH2s")  # length, recorded length, information length, block, partition, impl. use

# Extent types: the top two bits of an allocation descriptor's length (ECMA-167 4/14.14.1.1)
EXTENT_RECORDED, EXTENT_ALLOCATED, EXTENT_UNALLOCATED, EXTENT_NEXT = range(4)
EXTENT_LENGTH_MASK = 0x3FFFFFFF

_EPOCH_ORDINAL = datetime.date(1970, 1, 1).toordinal()
NO_TIMEZONE = -2047


class Tag(NamedTuple):
    ident: int
    version: int
    serial: int
    location: int  # the sector (or logical block) the descriptor says it is recorded at


def tag_name(ident: int) -> str:
    return TAG_NAMES.get(ident, f"tag {ident}")


def read_tag(data: bytes, offset: int, what: str = "", expect: Optional[tuple[int, ...]] = None,
             crc: bool = True) -> Tag:
    """The tag at the start of ``data`` (found at image byte ``offset``), its checksum and CRC verified.

    ``expect`` lists the identifiers that may be there; anything else is a ``CorruptImage``.
    """
    what = what or (tag_name(expect[0]) if expect else "descriptor")
    if len(data) < TAG.size:
        raise CorruptImage(f"{what}: the image ends inside its tag", layer=LAYER, offset=offset)
    ident, version, checksum, _, serial, crc_value, crc_length, location = TAG.unpack_from(data)
    if (sum(data[0:4]) + sum(data[5:16])) & 0xFF != checksum:
        if not any(data[:16]):
            raise CorruptImage(f"{what}: expected a descriptor tag, found zeros (an unrecorded block)",
                               layer=LAYER, offset=offset)
        raise CorruptImage(f"{what}: the descriptor tag's checksum is wrong (not a UDF descriptor)", layer=LAYER,
                           offset=offset)
    if expect is not None and ident not in expect:
        raise CorruptImage(f"{what}: expected {' or '.join(tag_name(e) for e in expect)}, got {tag_name(ident)}",
                           layer=LAYER, offset=offset)
    # A CRC over more than the data at hand cannot be checked here (a descriptor longer than a block).
    if crc and crc_length and 16 + crc_length <= len(data):
        if binascii.crc_hqx(data[16 : 16 + crc_length], 0) != crc_value:
            raise CorruptImage(f"{what}: the descriptor's CRC does not match its contents", layer=LAYER,
                               offset=offset)
    return Tag(ident, version, serial, location)


def tag_ident(data: bytes) -> Optional[int]:
    """The tag identifier if ``data`` starts with a tag whose checksum is right, else None (no exception)."""
    if len(data) < 16 or (sum(data[0:4]) + sum(data[5:16])) & 0xFF != data[4] or not any(data[:16]):
        return None
    return int(struct.unpack_from("<H", data)[0])


# -- strings -----------------------------------------------------------------------------------------------


def decode_cs0(raw: bytes) -> str:
    """OSTA Compressed Unicode: a compression ID, then 8-bit (Latin-1) or 16-bit (big-endian) characters.

    UDF 2.60 rewrites the IDs of deleted names to 254 (8-bit) and 255 (16-bit); they decode the same way.
    """
    if not raw:
        return ""
    comp, body = raw[0], raw[1:]
    if comp in (16, 255):
        return body[: len(body) & ~1].decode("utf-16-be", "replace")
    if comp not in (8, 254):
        raise ValueError(f"unknown OSTA CS0 compression ID {comp}")
    return body.decode("latin-1")


def dstring(field: bytes) -> str:
    """A fixed-size dstring: CS0 characters, the field's last byte giving the length used."""
    if not field:
        return ""
    used = min(field[-1], len(field) - 1)
    try:
        return decode_cs0(field[:used]).rstrip("\0")
    except ValueError:
        return field[1:used].decode("latin-1", "replace").rstrip("\0")


class EntityId(NamedTuple):
    ident: bytes  # "*OSTA UDF Compliant", "*UDF Virtual Partition", ...
    suffix: bytes

    @property
    def udf_revision(self) -> int:
        """The UDF revision (BCD, e.g. 0x0201) a domain or UDF identifier suffix records."""
        return int(struct.unpack_from("<H", self.suffix)[0])


def entity_id(data: bytes, pos: int) -> EntityId:
    return EntityId(bytes(data[pos + 1 : pos + 24]).rstrip(b"\0"), bytes(data[pos + 24 : pos + 32]))


def revision_text(revision: int) -> str:
    return f"{revision >> 8:x}.{revision & 0xFF:02x}" if revision else ""


# -- times -------------------------------------------------------------------------------------------------


def timestamp_ns(data: bytes, pos: int) -> int:
    """An ECMA-167 timestamp (1/7.3) as nanoseconds since 1970 UTC; 0 when it is not a valid date.

    Type 1 is local time at the recorded offset from UTC (in minutes, -2047 for none); types 0 (UTC) and
    2 (agreed upon) carry no usable offset.
    """
    type_tz, year, month, day, hour, minute, second, centi, hundreds, micro = _TIMESTAMP.unpack_from(data, pos)
    days = _days(year, month, day)
    if days is None or hour > 23 or minute > 59 or second > 60:
        return 0
    seconds = days * 86400 + hour * 3600 + minute * 60 + second
    tz = type_tz & 0xFFF
    tz = tz - 0x1000 if tz & 0x800 else tz
    if type_tz >> 12 == 1 and -1440 <= tz <= 1440:
        seconds -= tz * 60
    fraction = 0
    if centi <= 99 and hundreds <= 99 and micro <= 99:
        fraction = (centi * 10_000 + hundreds * 100 + micro) * 1000
    return seconds * 1_000_000_000 + fraction


@functools.lru_cache(maxsize=4096)  # the entries of one directory share few dates
def _days(year: int, month: int, day: int) -> Optional[int]:
    try:
        return datetime.date(year, month, day).toordinal() - _EPOCH_ORDINAL
    except ValueError:
        return None


# -- allocation descriptors --------------------------------------------------------------------------------


class Address(NamedTuple):
    """A logical block of a partition (ECMA-167 lb_addr): the partition by its reference number."""

    partition: int
    block: int


class Extent(NamedTuple):
    kind: int  # EXTENT_RECORDED, EXTENT_ALLOCATED, EXTENT_UNALLOCATED or EXTENT_NEXT
    length: int  # bytes
    where: Address


def long_ad(data: bytes, pos: int) -> Extent:
    raw, block, partition, _ = LONG_AD.unpack_from(data, pos)
    return Extent(raw >> 30, raw & EXTENT_LENGTH_MASK, Address(partition, block))


def extent_ad(data: bytes, pos: int) -> tuple[int, int]:
    """(length in bytes, sector) of an ECMA-167 extent_ad."""
    length, location = EXTENT_AD.unpack_from(data, pos)
    return int(length), int(location)


# -- volume descriptors (ECMA-167 part 3) ------------------------------------------------------------------


@dataclass(frozen=True)
class PrimaryVolume:
    vdsn: int  # volume descriptor sequence number: the highest prevails
    volume_id: str


@dataclass(frozen=True)
class PartitionDescriptor:
    vdsn: int
    number: int
    access_type: int  # 1 read-only, 2 write-once, 3 rewritable, 4 overwritable
    start: int  # sector
    length: int  # sectors
    offset: int  # where the descriptor is, for messages


@dataclass(frozen=True)
class PartitionMap:
    """One entry of the logical volume's partition map table; its index is the partition reference."""

    kind: str  # "physical", "virtual", "sparable", "metadata", or "unknown"
    number: int  # the partition number it maps onto (a partition descriptor's)
    packet_length: int = 0  # sparable: blocks per packet
    sparing_tables: tuple[int, ...] = ()  # sparable: sectors of the copies of the sparing table
    sparing_table_size: int = 0  # bytes
    metadata_file: int = 0  # metadata: block of the metadata file's entry in the physical partition
    mirror_file: int = 0
    identifier: bytes = b""


@dataclass(frozen=True)
class LogicalVolume:
    vdsn: int
    label: str
    block_size: int
    revision: int  # UDF revision from the domain identifier, BCD (0x0201)
    file_set: Extent  # where the file set descriptor is
    maps: tuple[PartitionMap, ...]
    offset: int


MAX_PARTITION_MAPS = 64
_PARTITION_TYPES = {b"*UDF Virtual Partition": "virtual", b"*UDF Sparable Partition": "sparable",
                    b"*UDF Metadata Partition": "metadata"}


def parse_pvd(data: bytes) -> PrimaryVolume:
    return PrimaryVolume(struct.unpack_from("<I", data, 16)[0], dstring(data[24:56]))


def parse_pd(data: bytes, offset: int) -> PartitionDescriptor:
    vdsn, _flags, number = struct.unpack_from("<IHH", data, 16)
    access, start, length = struct.unpack_from("<III", data, 184)
    return PartitionDescriptor(vdsn, number, access, start, length, offset)


def parse_lvd(data: bytes, offset: int) -> LogicalVolume:
    vdsn = struct.unpack_from("<I", data, 16)[0]
    label = dstring(data[84:212])
    block_size = struct.unpack_from("<I", data, 212)[0]
    domain = entity_id(data, 216)
    file_set = long_ad(data, 248)
    table_length, count = struct.unpack_from("<II", data, 264)
    if count > MAX_PARTITION_MAPS or 440 + table_length > len(data):
        raise CorruptImage(f"logical volume descriptor: {count} partition maps in {table_length} bytes is "
                           "implausible", layer=LAYER, offset=offset + 264)
    maps = []
    pos, end = 440, 440 + table_length
    for index in range(count):
        if pos + 2 > end or data[pos + 1] < 2 or pos + data[pos + 1] > end:
            raise CorruptImage(f"logical volume descriptor: partition map {index} runs past the map table",
                               layer=LAYER, offset=offset + pos)
        maps.append(_parse_map(data[pos : pos + data[pos + 1]]))
        pos += data[pos + 1]
    return LogicalVolume(vdsn, label, block_size, domain.udf_revision, file_set, tuple(maps), offset)


def _parse_map(raw: bytes) -> PartitionMap:
    if raw[0] == 1 and len(raw) >= 6:
        return PartitionMap("physical", struct.unpack_from("<H", raw, 4)[0])
    if raw[0] != 2 or len(raw) < 40:
        return PartitionMap("unknown", -1)
    ident = entity_id(raw, 4).ident
    kind = _PARTITION_TYPES.get(ident, "unknown")
    number = struct.unpack_from("<H", raw, 38)[0]
    if kind == "sparable" and len(raw) >= 48:
        packet, count, size = struct.unpack_from("<HBxI", raw, 40)
        count = min(count, 4, (len(raw) - 48) // 4)
        tables = struct.unpack_from(f"<{count}I", raw, 48)
        return PartitionMap(kind, number, packet_length=packet, sparing_tables=tuple(tables), sparing_table_size=size,
                            identifier=ident)
    if kind == "metadata" and len(raw) >= 52:
        main, mirror = struct.unpack_from("<II", raw, 40)
        return PartitionMap(kind, number, metadata_file=main, mirror_file=mirror, identifier=ident)
    return PartitionMap(kind, number, identifier=ident)


@dataclass(frozen=True)
class FileSet:
    number: int  # file set descriptor number: the highest prevails
    label: str  # file set identifier
    root: Extent  # the root directory's ICB


def parse_fsd(data: bytes) -> FileSet:
    number = struct.unpack_from("<I", data, 44)[0]
    return FileSet(number, dstring(data[304:336]), long_ad(data, 400))


def next_fsd_extent(data: bytes) -> Extent:
    return long_ad(data, 448)
