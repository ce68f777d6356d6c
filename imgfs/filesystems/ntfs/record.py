"""MFT records and their attributes; the update-sequence fixups that MFT records and index blocks share.

A multi-sector structure (an MFT record "FILE", an index block "INDX") stores, in the last two bytes of each
512-byte stride, a check value; the true bytes sit in the update sequence array near its start. A stride whose
last two bytes are not the check value was torn by an interrupted write: the structure is refused.

An attribute starts with a 16-byte header (type, length, resident or not, name, flags, instance); a resident
one holds its value, a non-resident one its VCN range, sizes and run list (libfsntfs notes, "MFT attribute").
"""

from __future__ import annotations

import struct
from typing import NamedTuple, Optional

from imgfs.errors import CorruptImage

LAYER = "ntfs"
FIXUP_STRIDE = 512

# attribute types
STANDARD_INFORMATION = 0x10
ATTRIBUTE_LIST = 0x20
FILE_NAME = 0x30
OBJECT_ID = 0x40
SECURITY_DESCRIPTOR = 0x50
VOLUME_NAME = 0x60
VOLUME_INFORMATION = 0x70
DATA = 0x80
INDEX_ROOT = 0x90
INDEX_ALLOCATION = 0xA0
BITMAP = 0xB0
REPARSE_POINT = 0xC0
EA_INFORMATION = 0xD0
EA = 0xE0
LOGGED_UTILITY_STREAM = 0x100
END_MARKER = 0xFFFFFFFF

# attribute flags
FLAG_COMPRESSION_MASK = 0x00FF
FLAG_ENCRYPTED = 0x4000
FLAG_SPARSE = 0x8000

# record flags
RECORD_IN_USE = 0x0001
RECORD_IS_DIRECTORY = 0x0002

_MULTI_SECTOR = struct.Struct("<4sHH")
# LSN, sequence, link count, first attribute, flags, bytes in use, bytes allocated, base record reference
_RECORD = struct.Struct("<QHHHHIIQ")
_ATTRIBUTE = struct.Struct("<IIBBHHH")
_TYPE_LENGTH = struct.Struct("<II")
_SUMMARY = struct.Struct("<IIBB")  # type, length, non-resident, name length
_FIRST_VCN = _DATA_SIZE = struct.Struct("<q")
_RESIDENT = struct.Struct("<IH")
# first VCN, last VCN, run list offset, compression unit (log2 clusters), allocated, data and initialized sizes
_NON_RESIDENT = struct.Struct("<qqHH4xqqq")


def apply_fixups(buf: bytearray, magic: bytes, what: str, offset: int) -> None:
    """Check and undo the update-sequence fixups of ``buf`` in place (``offset``: where it lies, for errors)."""
    signature, usa_offset, usa_count = _MULTI_SECTOR.unpack_from(buf)
    if signature != magic:
        raise CorruptImage(f"{what}: expected the signature {magic.decode()}, got {bytes(signature)!r}", layer=LAYER,
                           offset=offset)
    strides = len(buf) // FIXUP_STRIDE
    if usa_count < strides + 1 or usa_offset < _MULTI_SECTOR.size or usa_offset + 2 * usa_count > FIXUP_STRIDE - 2:
        raise CorruptImage(f"{what}: its update sequence array ({usa_count} entries at byte {usa_offset}) does "
                           f"not cover its {strides} sectors", layer=LAYER, offset=offset + 4)
    check = buf[usa_offset : usa_offset + 2]
    for i in range(1, strides + 1):
        end = i * FIXUP_STRIDE
        if buf[end - 2 : end] != check:
            raise CorruptImage(f"{what}: fixup mismatch in sector {i - 1} (a torn write): expected "
                               f"{bytes(check).hex()}, got {bytes(buf[end - 2 : end]).hex()}", layer=LAYER,
                               offset=offset + end - 2)
        buf[end - 2 : end] = buf[usa_offset + 2 * i : usa_offset + 2 * i + 2]


def reference(value: int) -> tuple[int, int]:
    """A file reference's (record number, sequence number)."""
    return value & 0xFFFFFFFFFFFF, value >> 48


class Attribute:
    """One attribute record of an MFT record: resident (``value``) or non-resident (a run-list segment)."""

    __slots__ = ("type", "name", "flags", "instance", "value", "first_vcn", "last_vcn", "runs", "unit_shift",
                 "allocated_size", "data_size", "initialized_size", "record", "offset")

    def __init__(self, type_: int, name: str, flags: int, instance: int, record: int, offset: int) -> None:
        self.type = type_
        self.name = name
        self.flags = flags
        self.instance = instance
        self.record = record  # the MFT record it was found in
        self.offset = offset  # where in the volume (for error messages)
        self.value: Optional[bytes] = None  # resident: the value
        self.first_vcn = self.last_vcn = self.unit_shift = 0
        self.runs = b""
        self.allocated_size = self.data_size = self.initialized_size = 0

    @property
    def resident(self) -> bool:
        return self.value is not None

    @property
    def size(self) -> int:
        return len(self.value) if self.value is not None else self.data_size

    def __repr__(self) -> str:
        return f"Attribute(0x{self.type:x}, {self.name!r}, size={self.size}, vcn={self.first_vcn})"


class RecordHeader(NamedTuple):
    sequence: int
    link_count: int
    flags: int
    base: int  # the base record's number, 0 for a base record
    attributes_offset: int
    used_size: int

    @property
    def in_use(self) -> bool:
        return bool(self.flags & RECORD_IN_USE)

    @property
    def is_directory(self) -> bool:
        return bool(self.flags & RECORD_IS_DIRECTORY)


class Summary(NamedTuple):
    """What ``stat`` needs from a record whose attributes it holds itself (no attribute list)."""

    standard: Optional[bytes]  # the $STANDARD_INFORMATION value
    names: int  # $FILE_NAMEs other than DOS 8.3 aliases
    data_size: int  # of the unnamed $DATA (0 without one)
    index_size: int  # of the $I30 index: its allocation, else its root
    streams: bool  # named $DATA streams (WofCompressedData among them)


class Record:
    """A fixed-up MFT record: its header and attributes, parsed on demand."""

    __slots__ = ("number", "data", "offset", "header")

    def __init__(self, number: int, data: bytes, offset: int) -> None:
        self.number = number
        self.data = data
        self.offset = offset  # where it lies in the volume
        _, sequence, links, first, flags, used, allocated, base = _RECORD.unpack_from(data, 8)
        if not 24 <= first < used <= len(data) or allocated != len(data):
            raise CorruptImage(f"MFT record {number}: first attribute at {first}, {used} bytes in use of "
                               f"{allocated} allocated, in a {len(data)}-byte record", layer=LAYER,
                               offset=offset + 20)
        self.header = RecordHeader(sequence, links, flags, reference(base)[0], first, used)

    def attributes(self) -> list[Attribute]:
        found: list[Attribute] = []
        pos, end = self.header.attributes_offset, self.header.used_size
        while pos + 8 <= end:
            type_, length = _TYPE_LENGTH.unpack_from(self.data, pos)
            if type_ == END_MARKER:
                return found
            found.append(self._attribute(pos, end))
            pos += length
        if pos + 4 <= end and int.from_bytes(self.data[pos : pos + 4], "little") == END_MARKER:
            return found  # the end marker may be the last 4 bytes in use
        raise CorruptImage(f"MFT record {self.number}: no end marker among its attributes", layer=LAYER,
                           offset=self.offset + pos)

    def summary(self) -> Optional[Summary]:
        """The values ``stat`` shows, read from the attribute headers alone; None when the record has an
        attribute list (then ``attributes`` and the extension records are needed) or looks odd."""
        data, pos, end = self.data, self.header.attributes_offset, self.header.used_size
        standard, names, data_size, index_size, streams = None, 0, 0, 0, False
        while pos + 4 <= end:
            if data[pos : pos + 4] == b"\xff\xff\xff\xff":  # the end marker
                return Summary(standard, names, data_size, index_size, streams)
            if pos + 24 > end:
                return None
            type_, length, non_resident, name_length = _SUMMARY.unpack_from(data, pos)
            if type_ == ATTRIBUTE_LIST or length < 24 or length % 8 or pos + length > end:
                return None
            if not non_resident:
                value_size, value_offset = _RESIDENT.unpack_from(data, pos + 16)
                if value_offset + value_size > length:
                    return None
                value = data[pos + value_offset : pos + value_offset + value_size]
                if type_ == STANDARD_INFORMATION:
                    standard = value
                elif type_ == FILE_NAME:
                    names += len(value) > 65 and value[65] != 2  # not the DOS namespace
                elif type_ == DATA and not name_length:
                    data_size = value_size
                elif type_ == INDEX_ROOT and not index_size:
                    index_size = value_size
            elif (type_ == DATA and not name_length) or type_ == INDEX_ALLOCATION:
                size = _DATA_SIZE.unpack_from(data, pos + 48)[0] if length >= 64 else -1
                if size < 0 or _FIRST_VCN.unpack_from(data, pos + 16)[0]:
                    return None  # a later segment here means an attribute list elsewhere
                data_size, index_size = (size, index_size) if type_ == DATA else (data_size, size)
            streams = streams or (type_ == DATA and bool(name_length))
            pos += length
        return None

    def _attribute(self, pos: int, end: int) -> Attribute:
        data, where = self.data, self.offset + pos
        if pos + _ATTRIBUTE.size > end:
            raise CorruptImage(f"MFT record {self.number}: an attribute header runs past its used size", layer=LAYER,
                               offset=where)
        type_, length, non_resident, name_length, name_offset, flags, instance = _ATTRIBUTE.unpack_from(data, pos)
        if length < 24 or length % 8 or pos + length > end or non_resident > 1:
            raise CorruptImage(f"MFT record {self.number}: attribute 0x{type_:x} has length {length}, past the "
                               f"record's {end} used bytes or not a multiple of 8", layer=LAYER, offset=where)
        name = ""
        if name_length:
            if name_offset + 2 * name_length > length:
                raise CorruptImage(f"MFT record {self.number}: attribute 0x{type_:x}'s name runs past it",
                                   layer=LAYER, offset=where)
            name = data[pos + name_offset : pos + name_offset + 2 * name_length].decode("utf-16-le", "replace")
        attr = Attribute(type_, name, flags, instance, self.number, where)
        if non_resident:
            _non_resident(attr, data, pos, length)
        else:
            value_size, value_offset = _RESIDENT.unpack_from(data, pos + 16)
            if value_offset + value_size > length:
                raise CorruptImage(f"MFT record {self.number}: attribute 0x{type_:x}'s value ({value_size} bytes at "
                                   f"{value_offset}) runs past it", layer=LAYER, offset=where)
            attr.value = data[pos + value_offset : pos + value_offset + value_size]
        return attr


def _non_resident(attr: Attribute, data: bytes, pos: int, length: int) -> None:
    if length < 16 + _NON_RESIDENT.size:
        raise CorruptImage(f"MFT record {attr.record}: non-resident attribute 0x{attr.type:x} is too short",
                           layer=LAYER, offset=attr.offset)
    first, last, runs_offset, unit, allocated, size, initialized = _NON_RESIDENT.unpack_from(data, pos + 16)
    if not 0 <= first <= last + 1 or runs_offset > length or unit > 16 or min(allocated, size, initialized) < 0:
        raise CorruptImage(f"MFT record {attr.record}: attribute 0x{attr.type:x} has VCNs {first}..{last}, run list "
                           f"at {runs_offset}, compression unit 2**{unit}, sizes {allocated}/{size}/{initialized}",
                           layer=LAYER, offset=attr.offset)
    attr.first_vcn, attr.last_vcn, attr.unit_shift = first, last, unit
    attr.allocated_size, attr.data_size, attr.initialized_size = allocated, size, initialized
    attr.runs = data[pos + runs_offset : pos + length]
