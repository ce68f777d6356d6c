"""Directory contents (file identifier descriptors), symlink path components and device numbers."""

from __future__ import annotations

import struct
from collections.abc import Iterator
from typing import Callable, NamedTuple, Optional

from imgfs.errors import CorruptImage
from imgfs.filesystems.udf.descriptors import LAYER, TAG_FID, Extent, decode_cs0, long_ad, read_tag

# File characteristics (ECMA-167 4/14.4.3)
FID_HIDDEN, FID_DIRECTORY, FID_DELETED, FID_PARENT = 0x01, 0x02, 0x04, 0x08
FID_HEADER = 38


class FileId(NamedTuple):
    name: bytes  # the CS0 identifier as recorded
    characteristics: int
    icb: Extent
    pos: int  # where it starts in the directory's data


def iter_fids(data: bytes, locate: Callable[[int], Optional[int]]) -> Iterator[FileId]:
    """Every file identifier descriptor of a directory's data, parent and deleted ones included.

    A descriptor that is damaged or runs past the end of the directory makes the whole directory a
    ``CorruptImage``: what follows it cannot be found.
    """
    pos, end = 0, len(data)
    while pos < end:
        if end - pos < FID_HEADER:
            if not any(data[pos:]):
                return  # zero padding after the last descriptor
            raise CorruptImage(f"a file identifier descriptor runs past the end of its directory ({end} bytes)",
                               layer=LAYER, offset=locate(pos))
        if not any(data[pos : pos + 16]) and not any(data[pos:]):
            return
        try:
            read_tag(data[pos : pos + FID_HEADER], 0, expect=(TAG_FID,), crc=False)
        except CorruptImage as exc:
            exc.offset = locate(pos)  # worked out only when needed: it walks the directory's extents
            raise
        characteristics, name_length = data[pos + 18], data[pos + 19]
        icb = long_ad(data, pos + 20)
        use_length = struct.unpack_from("<H", data, pos + 36)[0]
        length = FID_HEADER + use_length + name_length
        if pos + length > end:
            raise CorruptImage(f"a file identifier descriptor ({length} bytes) runs past the end of its directory "
                               f"({end} bytes)", layer=LAYER, offset=locate(pos))
        name_start = pos + FID_HEADER + use_length
        yield FileId(bytes(data[name_start : name_start + name_length]), characteristics, icb, pos)
        pos += (length + 3) & ~3


def file_name(raw: bytes) -> str:
    """A FID's name: CS0 decoded (8-bit or 16-bit); a '/' or a NUL is escaped by ``Filesystem.children``, as every
    format's is."""
    try:
        return decode_cs0(raw)
    except ValueError:
        return raw[1:].decode("latin-1")


# -- symbolic links (ECMA-167 4/14.16) -------------------------------------------------------------------

_COMPONENT = struct.Struct("<BBH")


def symlink_target(data: bytes) -> bytes:
    """A POSIX target from path components: root, parent, current directory and names."""
    parts: list[str] = []
    absolute = False
    pos = 0
    while pos + 4 <= len(data):
        kind, length, _version = _COMPONENT.unpack_from(data, pos)
        if pos + 4 + length > len(data):
            raise CorruptImage("a symbolic link's path component runs past its end", layer=LAYER)
        ident = data[pos + 4 : pos + 4 + length]
        pos += 4 + length
        if kind in (1, 2):  # 1 with an identifier is an agreed-upon root: still the root here
            parts, absolute = [], True
        elif kind == 3:
            parts.append("..")
        elif kind == 4:
            parts.append(".")
        elif kind == 5:
            try:
                parts.append(decode_cs0(ident))
            except ValueError:
                raise CorruptImage("a symbolic link's name uses an unknown character set", layer=LAYER) from None
        else:
            raise CorruptImage(f"unknown symbolic link path component type {kind}", layer=LAYER)
    if pos != len(data) and any(data[pos:]):
        raise CorruptImage("a symbolic link ends inside a path component", layer=LAYER)
    target = ("/" if absolute else "") + "/".join(parts)
    return target.encode("utf-8", "surrogateescape")


# -- extended attributes (ECMA-167 4/14.10) --------------------------------------------------------------

EA_DEVICE = 12


def device_numbers(ea: bytes) -> Optional[tuple[int, int]]:
    """(major, minor) from a device specification extended attribute, if the entry has one."""
    if len(ea) < 24 or struct.unpack_from("<H", ea)[0] != 262:
        return None
    pos = 24
    while pos + 12 <= len(ea):
        kind, _subtype, length = struct.unpack_from("<IB3xI", ea, pos)
        if length < 12 or pos + length > len(ea):
            return None
        if kind == EA_DEVICE and length >= 24:
            major, minor = struct.unpack_from("<II", ea, pos + 16)
            return major, minor
        pos += length
    return None
