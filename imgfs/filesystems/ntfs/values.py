"""The values of the small resident attributes: $STANDARD_INFORMATION, $FILE_NAME, $VOLUME_NAME,
$VOLUME_INFORMATION, $ATTRIBUTE_LIST entries and $EA entries (libfsntfs notes, "The attributes").

Times are FILETIMEs: 100 ns ticks since 1601-01-01 UTC, kept to the tick as nanoseconds since 1970.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from typing import NamedTuple

from imgfs.errors import CorruptImage
from imgfs.filesystems.ntfs.record import LAYER, reference

EPOCH_DIFFERENCE = 116_444_736_000_000_000  # 100 ns ticks from 1601-01-01 to 1970-01-01

# file attribute flags ($STANDARD_INFORMATION, $FILE_NAME)
ATTR_READONLY = 0x0001
ATTR_HIDDEN = 0x0002
ATTR_SYSTEM = 0x0004
ATTR_DIRECTORY = 0x0010
ATTR_ARCHIVE = 0x0020
ATTR_SPARSE = 0x0200
ATTR_REPARSE_POINT = 0x0400
ATTR_COMPRESSED = 0x0800
ATTR_ENCRYPTED = 0x4000
ATTR_HAS_INDEX = 0x10000000  # $FILE_NAME only: the file is a directory (it has an $I30 index)

# $FILE_NAME namespaces
POSIX, WIN32, DOS, WIN32_AND_DOS = 0, 1, 2, 3

_TIMES = struct.Struct("<QQQQ")
_STANDARD = struct.Struct("<QQQQI")
# parent, created, modified, record changed, accessed, allocated size, data size, flags, reparse tag or EA
# size, name length, namespace
_FILE_NAME = struct.Struct("<QQQQQqqIIBB")
# type, entry length, name length, name offset, first VCN, reference, instance
_LIST_ENTRY = struct.Struct("<IHBBQQH")
_EA_ENTRY = struct.Struct("<IBBH")


def filetime_ns(ticks: int) -> int:
    return (ticks - EPOCH_DIFFERENCE) * 100


class Times(NamedTuple):
    """(modified, accessed, changed) as nanoseconds since 1970, what stat shows as mtime, atime, ctime."""

    mtime_ns: int
    atime_ns: int
    ctime_ns: int


class StandardInformation(NamedTuple):
    times: Times
    flags: int  # the DOS and NTFS file attribute flags

    @classmethod
    def parse(cls, value: bytes, record: int) -> StandardInformation:
        if len(value) < _STANDARD.size:
            raise CorruptImage(f"MFT record {record}: $STANDARD_INFORMATION is {len(value)} bytes, expected at "
                               f"least {_STANDARD.size}", layer=LAYER)
        _, modified, changed, accessed, flags = _STANDARD.unpack_from(value)
        return cls(Times(filetime_ns(modified), filetime_ns(accessed), filetime_ns(changed)), flags)


class FileName(NamedTuple):
    parent: int  # the directory's record number
    parent_sequence: int
    times: Times
    data_size: int  # the copy kept in the directory index: right for most files, not for all
    flags: int
    reparse_tag: int  # when ``flags`` has ATTR_REPARSE_POINT
    namespace: int
    name: str

    @property
    def is_directory(self) -> bool:
        # 0x10000000 is what Windows and ntfs-3g set; some old volumes have only the DOS directory bit
        return bool(self.flags & (ATTR_HAS_INDEX | ATTR_DIRECTORY))

    @classmethod
    def parse(cls, value: bytes, where: str, offset: int = 0) -> FileName:
        if len(value) < _FILE_NAME.size:
            raise CorruptImage(f"{where}: a $FILE_NAME of {len(value)} bytes", layer=LAYER, offset=offset)
        parent, _, modified, changed, accessed, _, size, flags, tag, length, namespace = _FILE_NAME.unpack_from(value)
        end = _FILE_NAME.size + 2 * length
        if end > len(value) or namespace > WIN32_AND_DOS:
            raise CorruptImage(f"{where}: a $FILE_NAME whose name ({length} characters, namespace {namespace}) "
                               f"does not fit its {len(value)} bytes", layer=LAYER, offset=offset)
        record, sequence = reference(parent)
        name = value[_FILE_NAME.size : end].decode("utf-16-le", "replace")
        times = Times(filetime_ns(modified), filetime_ns(accessed), filetime_ns(changed))
        return cls(record, sequence, times, max(size, 0), flags, tag, namespace, name)


class ListEntry(NamedTuple):
    """An $ATTRIBUTE_LIST entry: attribute ``type``/``name`` from ``first_vcn`` on lives in record ``record``."""

    type: int
    name: str
    first_vcn: int
    record: int
    sequence: int
    instance: int


def list_entries(value: bytes, record: int) -> Iterator[ListEntry]:
    pos = 0
    while pos + _LIST_ENTRY.size <= len(value):
        type_, length, name_length, name_offset, first_vcn, ref, instance = _LIST_ENTRY.unpack_from(value, pos)
        if length < _LIST_ENTRY.size or pos + length > len(value) or name_offset + 2 * name_length > length:
            raise CorruptImage(f"MFT record {record}: an $ATTRIBUTE_LIST entry at byte {pos} has length {length}",
                               layer=LAYER)
        start = pos + name_offset
        name = value[start : start + 2 * name_length].decode("utf-16-le", "replace")
        yield ListEntry(type_, name, first_vcn, *reference(ref), instance)
        pos += length


def extended_attributes(value: bytes, record: int) -> dict[bytes, bytes]:
    """The $EA attribute's entries (FILE_FULL_EA_INFORMATION), by name: WSL keeps $LXDEV and $LXMOD there."""
    found: dict[bytes, bytes] = {}
    pos = 0
    while pos + _EA_ENTRY.size <= len(value):
        following, _, name_length, value_length = _EA_ENTRY.unpack_from(value, pos)
        start = pos + _EA_ENTRY.size
        end = start + name_length + 1 + value_length
        if end > len(value):
            raise CorruptImage(f"MFT record {record}: an $EA entry at byte {pos} runs past its attribute", layer=LAYER)
        found[value[start : start + name_length]] = value[start + name_length + 1 : end]
        if following <= 0:
            break
        pos += following
    return found


def volume_flags(value: bytes) -> tuple[int, int, int]:
    """$VOLUME_INFORMATION: (major version, minor version, flags)."""
    if len(value) < 12:
        return 0, 0, 0
    return value[8], value[9], int.from_bytes(value[10:12], "little")
