"""GUID partition tables: primary header at LBA 1, backup at the last LBA, both CRC-checked.

The sector size (512 or 4096) is found by probing. ``LastLBA`` is inclusive. A table dumped on its
own (header at the start or the end of a small file) is read too, its entry array found next to the
header; such a dump lists its partitions, none of whose data is in it.
"""

from __future__ import annotations

import logging
import struct
import uuid
import zlib
from typing import NamedTuple

from imgfs.errors import CorruptImage
from imgfs.io.stream import Stream
from imgfs.layer import OpenContext
from imgfs.volumes import Partition, PartitionTable
from imgfs.volumes.types import gpt_type_name

log = logging.getLogger(__name__)

SIGNATURE = b"EFI PART"
SECTOR_SIZES = (512, 4096)
MAX_ENTRY_BYTES = 1 << 20
# signature, revision, header size, header CRC, reserved, my LBA, alternate LBA, first usable, last usable,
# disk GUID, entries LBA, entry count, entry size, entries CRC
_HEADER = struct.Struct("<8sIIII QQQQ 16s QII I")
_ENTRY = struct.Struct("<16s16sQQQ72s")


class Header(NamedTuple):
    offset: int  # where in the stream the header was found
    sector_size: int
    my_lba: int
    alternate_lba: int
    first_usable: int
    last_usable: int
    disk_guid: str
    entries_lba: int
    entry_count: int
    entry_size: int
    entries_crc: int
    revision: int

    def byte_offset(self, lba: int) -> int:
        """Where LBA ``lba`` is in the stream, counted from where this header sits."""
        return self.offset + (lba - self.my_lba) * self.sector_size


def guid(raw: bytes) -> str:
    return str(uuid.UUID(bytes_le=raw)).upper()


def _parse_header(stream: Stream, offset: int, sector_size: int) -> Header:
    raw = stream.pread(offset, sector_size) if offset >= 0 else b""
    if len(raw) < _HEADER.size or raw[:8] != SIGNATURE:
        raise CorruptImage("no 'EFI PART' signature", layer="gpt", offset=offset)
    (_, revision, size, crc, _, my_lba, alternate, first, last, disk, entries_lba, count, entry_size,
     entries_crc) = _HEADER.unpack_from(raw)
    if not 92 <= size <= sector_size:
        raise CorruptImage(f"header size {size} is not between 92 and {sector_size}", layer="gpt", offset=offset)
    actual = zlib.crc32(raw[:16] + b"\0\0\0\0" + raw[20:size])
    if actual != crc:
        raise CorruptImage(f"header CRC mismatch: expected {crc:08x}, got {actual:08x}", layer="gpt", offset=offset)
    if entry_size < 128 or entry_size % 8 or count * entry_size > MAX_ENTRY_BYTES:
        raise CorruptImage(f"implausible entry array: {count} entries of {entry_size} bytes", layer="gpt",
                           offset=offset)
    return Header(offset, sector_size, my_lba, alternate, first, last, guid(disk), entries_lba, count, entry_size,
                  entries_crc, revision)


def _read_entries(stream: Stream, header: Header) -> bytes:
    """The entry array where the header says, or, in a table dump, right after or right before the header."""
    size = header.entry_count * header.entry_size
    sectors = -(-size // header.sector_size) * header.sector_size
    where = header.byte_offset(header.entries_lba)
    problem = "the partition entry array lies past the end of the image"
    for start in dict.fromkeys((where, header.offset + header.sector_size, header.offset - sectors)):
        data = stream.pread(start, size) if start >= 0 else b""
        if len(data) < size:
            continue
        actual = zlib.crc32(data)
        if actual == header.entries_crc:
            return data
        if start == where:
            problem = f"entry array CRC mismatch: expected {header.entries_crc:08x}, got {actual:08x}"
    raise CorruptImage(problem, layer="gpt", offset=where)


def _candidates(stream: Stream) -> list[tuple[str, int, int]]:
    """(where, offset, sector size) of every place a header may be, most likely first."""
    found = []
    for size in SECTOR_SIZES:
        found.append((f"LBA 1 ({size}-byte sectors)", size, size))
        found.append((f"the last sector ({size}-byte sectors)", stream.size - size, size))
    found.append(("the start of a table dump", 0, 512))
    return found


def probe(stream: Stream) -> bool:
    return any(0 <= off and stream.pread(off, 8) == SIGNATURE for _, off, _ in _candidates(stream))


def read_gpt(stream: Stream) -> PartitionTable:
    problems = []
    for what, offset, sector_size in _candidates(stream):
        try:
            header = _parse_header(stream, offset, sector_size)
            entries = _read_entries(stream, header)
        except CorruptImage as exc:
            if stream.pread(max(offset, 0), 8) == SIGNATURE:
                problems.append(f"header at {what}: {exc.message}")
            continue
        kind = "primary" if header.my_lba == 1 else "backup"
        if problems:
            log.warning("gpt: using the %s header at %s; %s", kind, what, "; ".join(problems))
        return _table(stream, header, entries, f"{kind} header at {what}")
    raise CorruptImage("no usable GPT header: " + ("; ".join(problems) or "none found"), layer="gpt")


def _table(stream: Stream, header: Header, entries: bytes, what: str) -> PartitionTable:
    partitions = []
    for index in range(header.entry_count):
        type_raw, unique, first, last, attributes, name = _ENTRY.unpack_from(entries, index * header.entry_size)
        if type_raw == bytes(16):
            continue
        if last < first:
            log.warning("gpt: partition %d ends (LBA %d) before it starts (LBA %d); ignored", index + 1, last, first)
            continue
        type_guid = guid(type_raw)
        # in a table dump (the header away from its LBA) no partition data is present: give disk offsets
        dump = header.offset != header.my_lba * header.sector_size
        start = first * header.sector_size if dump else header.byte_offset(first)
        part = Partition(index + 1, start, (last - first + 1) * header.sector_size,
                         gpt_type_name(type_guid), type_guid, name.decode("utf-16-le", "replace").split("\0")[0],
                         {"first_lba": first, "last_lba": last, "guid": guid(unique),
                          "attributes": f"0x{attributes:x}"})
        part.clip(0 if dump else stream.size, "gpt")
        partitions.append(part)
    details = {"header": what, "disk_guid": header.disk_guid, "header_lba": header.my_lba,
               "backup_lba": header.alternate_lba, "first_usable": header.first_usable,
               "last_usable": header.last_usable}
    return PartitionTable("gpt", header.sector_size, partitions, details, disk=stream)


def open_gpt(stream: Stream, ctx: OpenContext) -> PartitionTable:
    """The registry's opener."""
    return read_gpt(stream)
