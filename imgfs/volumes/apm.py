"""Apple Partition Map: a driver descriptor in block 0, then one map entry per block.

Blocks are 512 or 2048 bytes (the driver descriptor says which); used by Mac disks, DMGs and hybrid CDs.
"""

from __future__ import annotations

import struct

from imgfs.errors import CorruptImage, UnsupportedFormat
from imgfs.io.stream import Stream, read_exact
from imgfs.layer import OpenContext
from imgfs.volumes import Partition, PartitionTable

MAX_ENTRIES = 256
NOT_VOLUMES = {"Apple_Free", "Apple_Void", "Apple_Extra", "Apple_partition_map", "Apple_Scratch"}
# signature, reserved, map entries, first block, block count, name, type, data start, data count, status
_ENTRY = struct.Struct(">2s2xIII32s32sIII")


def block_size(stream: Stream) -> int:
    """The map's block size: from the driver descriptor ("ER") when there is one, else 512."""
    ddm = stream.pread(0, 4)
    if len(ddm) == 4 and ddm[:2] == b"ER":
        size = struct.unpack(">H", ddm[2:4])[0]
        if size in (512, 1024, 2048, 4096) and stream.pread(size, 2) == b"PM":
            return size
    if stream.pread(512, 2) == b"PM":
        return 512
    raise UnsupportedFormat("no Apple partition map", layer="apm", offset=0)


def probe(stream: Stream) -> bool:
    try:
        return block_size(stream) > 0
    except UnsupportedFormat:
        return False


def _text(raw: bytes) -> str:
    return raw.split(b"\0")[0].decode("mac_roman", "replace")


def read_apm(stream: Stream) -> PartitionTable:
    size = block_size(stream)
    first = read_exact(stream, size, _ENTRY.size, "apm", "the first map entry")
    count = _ENTRY.unpack_from(first)[1]
    if not 1 <= count <= MAX_ENTRIES:
        raise CorruptImage(f"the map says it has {count} entries", layer="apm", offset=size)
    partitions = []
    for number in range(1, count + 1):
        raw = stream.pread(number * size, _ENTRY.size)
        if len(raw) < _ENTRY.size or raw[:2] != b"PM":
            raise CorruptImage(f"map entry {number} has no 'PM' signature", layer="apm", offset=number * size)
        _, _, start, blocks, name, kind, _, _, status = _ENTRY.unpack(raw)
        kind_text = _text(kind)
        part = Partition(number, start * size, blocks * size, kind_text, kind_text, _text(name),
                         {"start_block": start, "blocks": blocks, "status": f"0x{status:x}",
                          "volume": kind_text not in NOT_VOLUMES and not kind_text.startswith("Apple_Driver")})
        part.clip(stream.size, "apm")
        partitions.append(part)
    return PartitionTable("apm", size, partitions, {"block_size": size, "unit": "block"}, disk=stream)


def open_apm(stream: Stream, ctx: OpenContext) -> PartitionTable:
    """The registry's opener."""
    return read_apm(stream)
