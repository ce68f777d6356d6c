"""Where a UDIF image keeps its block tables: an XML plist, or (old images) a binary resource fork.

Both hold the same ``blkx`` resources, one per partition: a name, a numeric id and the bytes of a
``mish`` block table. The XML plist is ``resource-fork`` -> ``blkx`` -> an array of dicts with ``Data``,
``Name`` (or ``CFName``) and ``ID``. The resource fork is the classic Mac OS layout: a 16-byte header,
the resources' data (each a 4-byte length and the bytes), and a map of types, references and names.
"""

from __future__ import annotations

import plistlib
import struct
from typing import Any, Callable, NamedTuple

from imgfs.containers.dmg.structs import LAYER
from imgfs.errors import CorruptImage

MAX_METADATA_SIZE = 256 << 20  # a plist of 100,000 runs is about 6 MB; a bigger one is not a real image


class BlkxResource(NamedTuple):
    name: str
    resource_id: int
    data: bytes


def from_plist(text: bytes, offset: int) -> list[BlkxResource]:
    """The ``blkx`` resources of the XML plist ``text`` (read at ``offset``, which errors name)."""
    try:
        root = plistlib.loads(text)
    except Exception as exc:  # noqa: BLE001 - expat, plistlib and binascii each raise their own kind
        first = text[:16].split(b"\n")[0]
        raise CorruptImage(f"the XML plist is not a property list ({type(exc).__name__}: {exc}; it begins "
                           f"{first!r})", layer=LAYER, offset=offset) from None
    entries = _dig(root, offset)
    found = []
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict) or not isinstance(entry.get("Data"), bytes):
            raise CorruptImage(f"blkx entry {index} of the plist has no Data", layer=LAYER, offset=offset)
        name = entry.get("Name") or entry.get("CFName") or ""
        found.append(BlkxResource(str(name), _int(entry.get("ID"), index), entry["Data"]))
    return found


def _dig(root: Any, offset: int) -> list[Any]:
    fork = root.get("resource-fork") if isinstance(root, dict) else None
    blkx = fork.get("blkx") if isinstance(fork, dict) else None
    if not isinstance(blkx, list):
        raise CorruptImage("the plist has no resource-fork/blkx array", layer=LAYER, offset=offset)
    return blkx


def _int(value: Any, default: int) -> int:
    try:
        return int(str(value), 0)
    except ValueError:
        return default


_HEADER = struct.Struct(">IIII")
_TYPE = struct.Struct(">4sHH")
_REFERENCE = struct.Struct(">hHI4x")  # id, name offset, attributes (8 bits) + data offset (24 bits)
TYPE_LIST_AT = 0x1C  # where the map's type list starts, from the start of the map


def from_resource_fork(fork: bytes, offset: int) -> list[BlkxResource]:
    """The ``blkx`` resources of a binary resource fork ``fork`` (read at ``offset``)."""
    def bad(what: str) -> CorruptImage:
        return CorruptImage(f"resource fork: {what}", layer=LAYER, offset=offset)

    if len(fork) < _HEADER.size:
        raise bad(f"{len(fork)} bytes, too short for its header")
    data_at, map_at, data_length, map_length = _HEADER.unpack_from(fork)
    if data_at + data_length > len(fork) or map_at + map_length > len(fork) or map_length < TYPE_LIST_AT + 2:
        raise bad(f"its data ({data_at}+{data_length}) or map ({map_at}+{map_length}) lies outside its "
                  f"{len(fork)} bytes")
    resource_map = fork[map_at : map_at + map_length]
    types_at, names_at = struct.unpack_from(">HH", resource_map, 0x18)
    names = resource_map[names_at:]
    found = []
    for first_ref, count in _blkx_references(resource_map, types_at, bad):
        for i in range(count):
            at = types_at + first_ref + i * _REFERENCE.size
            if at + _REFERENCE.size > len(resource_map):
                raise bad(f"reference {i} of type 'blkx' lies outside the map")
            resource_id, name_at, attr_offset = _REFERENCE.unpack_from(resource_map, at)
            found.append(BlkxResource(_pascal(names, name_at), resource_id,
                                      _resource_data(fork, data_at, data_length, attr_offset & 0xFFFFFF, bad)))
    return found


def _blkx_references(resource_map: bytes, types_at: int, bad: Callable[[str], CorruptImage]
                     ) -> list[tuple[int, int]]:
    """(offset of the reference list from the type list, count) for each 'blkx' type entry."""
    if types_at + 2 > len(resource_map):
        raise bad("the type list lies outside the map")
    n_types = struct.unpack_from(">H", resource_map, types_at)[0] + 1
    if types_at + 2 + n_types * _TYPE.size > len(resource_map):
        raise bad(f"{n_types} resource types do not fit in the map")
    lists = []
    for i in range(n_types):
        code, count_minus_one, ref_at = _TYPE.unpack_from(resource_map, types_at + 2 + i * _TYPE.size)
        if code == b"blkx":
            lists.append((ref_at, count_minus_one + 1))
    return lists


def _resource_data(fork: bytes, data_at: int, data_length: int, at: int, bad: Callable[[str], CorruptImage]) -> bytes:
    if at + 4 > data_length:
        raise bad(f"a blkx resource at {at} lies outside the data area ({data_length} bytes)")
    length = struct.unpack_from(">I", fork, data_at + at)[0]
    if at + 4 + length > data_length:
        raise bad(f"the blkx resource at {at} ({length} bytes) runs past the data area ({data_length} bytes)")
    return fork[data_at + at + 4 : data_at + at + 4 + length]


def _pascal(names: bytes, at: int) -> str:
    if at == 0xFFFF or at >= len(names):
        return ""
    return names[at + 1 : at + 1 + names[at]].decode("mac_roman", "replace")
