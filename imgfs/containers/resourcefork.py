"""Classic Mac OS resource forks (Inside Macintosh: More Macintosh Toolbox, 1-121): find resources by type.

A 16-byte header gives the offsets and lengths of the data area and the map. Each resource's data is a
4-byte length and its bytes; the map holds, from its start, a copy of the header, two reserved fields, the
offset of the type list (at 24) and of the name list (at 26). The type list is a count minus one and one
entry per type (code, count minus one, offset of its reference list from the type list); a reference is
the resource's id, its name's offset in the name list (0xFFFF: none), an attributes byte with the 24-bit
offset of its data in the data area, and a reserved handle. Offsets are 24 bits: a fork holds at most
16 MiB of resource data, so nothing here can ask for more.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

from imgfs.errors import CorruptImage
from imgfs.io.stream import Stream, read_exact

HEADER = struct.Struct(">IIII")  # data offset, map offset, data length, map length
TYPE = struct.Struct(">4sHH")  # type code, count - 1, reference list offset (from the type list)
REFERENCE = struct.Struct(">hHI4x")  # id, name offset, attributes (8 bits) + data offset (24 bits)
MAP_LISTS_AT = 24  # where, in the map, the offsets of the type list and the name list are
MAX_MAP_SIZE = 1 << 24


class Resource(NamedTuple):
    type: bytes
    id: int
    name: str
    data: bytes


def resources(fork: Stream, code: bytes, layer: str) -> list[Resource]:
    """Every resource of type ``code`` in the resource fork ``fork``, in map order."""
    def bad(what: str, offset: int) -> CorruptImage:
        return CorruptImage(f"resource fork: {what}", layer=layer, offset=offset)

    data_at, map_at, data_length, map_length = HEADER.unpack(read_exact(fork, 0, HEADER.size, layer,
                                                                        "the resource fork's header"))
    if data_at + data_length > fork.size or map_at + map_length > fork.size or not \
            MAP_LISTS_AT + 4 <= map_length <= MAX_MAP_SIZE:
        raise bad(f"its data ({data_at}+{data_length}) or map ({map_at}+{map_length}) lies outside its "
                  f"{fork.size} bytes", 0)
    resource_map = fork.pread(map_at, map_length)
    types_at, names_at = struct.unpack_from(">HH", resource_map, MAP_LISTS_AT)
    if types_at + 2 > map_length:
        raise bad("the type list lies outside the map", map_at + MAP_LISTS_AT)
    found = []
    type_count = struct.unpack_from(">H", resource_map, types_at)[0] + 1
    for i in range(type_count if type_count <= 0x10000 else 0):
        at = types_at + 2 + i * TYPE.size
        if at + TYPE.size > map_length:
            raise bad(f"{type_count} resource types do not fit in the map", map_at + types_at)
        type_code, count_minus_one, refs_at = TYPE.unpack_from(resource_map, at)
        if type_code != code:
            continue
        for j in range(count_minus_one + 1):
            ref_at = types_at + refs_at + j * REFERENCE.size
            if ref_at + REFERENCE.size > map_length:
                raise bad(f"reference {j} of type {code!r} lies outside the map", map_at + ref_at)
            resource_id, name_at, attr_offset = REFERENCE.unpack_from(resource_map, ref_at)
            data = _data(fork, data_at, data_length, attr_offset & 0xFFFFFF, bad)
            found.append(Resource(code, resource_id, _pascal(resource_map, names_at, name_at), data))
    return found


def _data(fork: Stream, data_at: int, data_length: int, offset: int, bad) -> bytes:  # noqa: ANN001
    if offset + 4 > data_length:
        raise bad(f"a resource at {offset} lies outside the data area ({data_length} bytes)", data_at + offset)
    length = struct.unpack(">I", fork.pread(data_at + offset, 4))[0]
    if offset + 4 + length > data_length:
        raise bad(f"the resource at {offset} ({length} bytes) runs past the data area ({data_length} bytes)",
                  data_at + offset)
    return fork.pread(data_at + offset + 4, length)


def _pascal(resource_map: bytes, names_at: int, at: int) -> str:
    start = names_at + at
    if at == 0xFFFF or start >= len(resource_map):
        return ""
    return resource_map[start + 1 : start + 1 + resource_map[start]].decode("mac_roman")
