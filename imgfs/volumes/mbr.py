"""MBR partition tables with the extended/EBR chain of logical partitions."""

from __future__ import annotations

import logging
import struct

from imgfs.errors import UnsupportedFormat
from imgfs.io.stream import Stream
from imgfs.layer import OpenContext
from imgfs.volumes import Partition, PartitionTable
from imgfs.volumes.types import mbr_type_name

log = logging.getLogger(__name__)

SECTOR = 512
EXTENDED_TYPES = {0x05, 0x0F, 0x85}
MAX_LOGICAL = 128
_ENTRY = struct.Struct("<B3sB3sII")  # status, CHS first, type, CHS last, first LBA, sectors


def entries(sector: bytes) -> list[tuple[int, int, int, int]]:
    """The four entries of an MBR or EBR sector: (status, type, first LBA, sectors)."""
    found = []
    for i in range(4):
        status, _, kind, _, first, count = _ENTRY.unpack_from(sector, 446 + 16 * i)
        found.append((status, kind, first, count))
    return found


def looks_like_mbr(sector: bytes) -> bool:
    """55 AA, every status byte 0x00 or 0x80, and at least one used entry."""
    if len(sector) < SECTOR or sector[510:512] != b"\x55\xaa":
        return False
    table = entries(sector)
    if any(status not in (0x00, 0x80) for status, _, _, _ in table):
        return False
    return any(kind and count for _, kind, _, count in table)


def probe(stream: Stream) -> bool:
    return looks_like_mbr(stream.pread(0, SECTOR))


def read_mbr(stream: Stream) -> PartitionTable:
    sector = stream.pread(0, SECTOR)
    if not looks_like_mbr(sector):
        raise UnsupportedFormat("no valid MBR partition table", layer="mbr", offset=0)
    partitions: list[Partition] = []
    for index, (status, kind, first, count) in enumerate(entries(sector), start=1):
        if not kind or not count:
            continue
        partitions.append(_partition(index, kind, first, count, status, stream.size))
        if kind in EXTENDED_TYPES:  # listed as a container; its logical partitions are numbered from 5
            partitions[-1].details["volume"] = False
            partitions.extend(_logical_partitions(stream, first))
    disk_id = struct.unpack_from("<I", sector, 440)[0]
    return PartitionTable("mbr", SECTOR, sorted(partitions, key=lambda p: p.number),
                          {"disk_id": f"{disk_id:08x}"}, disk=stream)


def _partition(number: int, kind: int, first: int, count: int, status: int, disk_size: int) -> Partition:
    part = Partition(number, first * SECTOR, count * SECTOR, mbr_type_name(kind), f"0x{kind:02x}",
                     details={"start_lba": first, "sectors": count, "bootable": status == 0x80})
    part.clip(disk_size, "mbr")
    return part


def _logical_partitions(stream: Stream, extended_lba: int) -> list[Partition]:
    """Walk the EBR chain: each EBR holds one logical partition and the link to the next EBR."""
    found: list[Partition] = []
    seen: set[int] = set()
    ebr_lba = extended_lba
    while len(found) < MAX_LOGICAL:
        if ebr_lba in seen:
            log.warning("mbr: the extended partition's EBR chain loops back to sector %d; "
                        "logical partitions after it are ignored", ebr_lba)
            break
        seen.add(ebr_lba)
        sector = stream.pread(ebr_lba * SECTOR, SECTOR)
        if len(sector) < SECTOR or sector[510:512] != b"\x55\xaa":
            if ebr_lba != extended_lba or len(sector) == SECTOR:
                log.warning("mbr: no EBR at sector %d; the logical partitions end there", ebr_lba)
            break
        (status, kind, first, count), (_, next_kind, next_first, _) = entries(sector)[:2]
        if kind and count:
            found.append(_partition(5 + len(found), kind, ebr_lba + first, count, status, stream.size))
        if not next_kind:
            break
        ebr_lba = extended_lba + next_first  # a link of 0 points back at the first EBR: caught as a loop
    return found


def open_mbr(stream: Stream, ctx: OpenContext) -> PartitionTable:
    """The registry's opener."""
    return read_mbr(stream)
