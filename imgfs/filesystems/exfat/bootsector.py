"""The exFAT boot region (Microsoft's exFAT specification, section 3).

The main boot region is sectors 0-11: the boot sector, eight extended boot sectors, the OEM parameters,
a reserved sector and a checksum sector repeating one 32-bit checksum of the eleven before it. A copy
follows in sectors 12-23; when the main region's checksum is wrong the copy is used, as the
specification asks.
"""

from __future__ import annotations

import logging
import struct
from dataclasses import dataclass

from imgfs.errors import CorruptImage, UnsupportedFormat
from imgfs.io.stream import Stream

log = logging.getLogger(__name__)

LAYER = "exfat"
MAX_CLUSTERS = 0xFFFFFFF5
SIGNATURE = b"EXFAT   "

# jump, file system name, must-be-zero, partition offset, volume length (sectors), FAT offset and length
# (sectors), cluster heap offset (sectors), cluster count, root directory cluster, serial, revision,
# volume flags, log2 bytes per sector, log2 sectors per cluster, number of FATs, drive, percent in use
_BOOT = struct.Struct("<3s8s53sQQIIIIIIHHBBBBB")


@dataclass(frozen=True)
class ExfatBoot:
    sector_size: int
    cluster_size: int
    volume_sectors: int
    fat_offset: int  # bytes, of the active FAT
    fat_size: int
    heap_offset: int  # bytes: where cluster 2 starts
    cluster_count: int
    root_cluster: int
    serial: int
    revision: tuple[int, int]
    flags: int
    fat_count: int
    percent_in_use: int  # 0xFF: not known
    backup_used: bool

    @property
    def volume_size(self) -> int:
        return self.volume_sectors * self.sector_size

    @classmethod
    def parse(cls, raw: bytes, backup_used: bool = False) -> ExfatBoot:
        if len(raw) < 512:
            raise UnsupportedFormat(f"boot sector: expected 512 bytes, got {len(raw)}", layer=LAYER)
        (_, name, zero, _, volume_sectors, fat_offset, fat_length, heap_offset, count, root, serial, revision, flags,
         sector_shift, cluster_shift, fats, _, percent) = _BOOT.unpack_from(raw)
        if name != SIGNATURE:
            raise UnsupportedFormat(f"file system name: expected {SIGNATURE!r}, got {name!r}", layer=LAYER, offset=3)
        _require(raw[510:512] == b"\x55\xaa", f"boot signature: expected 55 AA, got {raw[510:512].hex(' ')}", 510)
        _require(zero == bytes(53), "bytes 11-63 must be zero (this looks like a FAT boot sector)", 11)
        _require(9 <= sector_shift <= 12, f"bytes per sector shift: expected 9..12, got {sector_shift}", 108)
        _require(cluster_shift <= 25 - sector_shift,
                 f"sectors per cluster shift: expected 0..{25 - sector_shift}, got {cluster_shift}", 109)
        _require(fats in (1, 2), f"number of FATs: expected 1 or 2, got {fats}", 110)
        _require(revision >> 8 == 1, f"file system revision: expected 1.x, got {revision >> 8}.{revision & 0xFF}",
                 104)
        _require(1 <= count <= MAX_CLUSTERS, f"cluster count: expected 1..{MAX_CLUSTERS}, got {count}", 92)
        _require(fat_offset >= 24, f"FAT offset: expected at least 24 sectors, got {fat_offset}", 80)
        sector_size = 1 << sector_shift
        _require(fat_length * sector_size >= (count + 2) * 4,
                 f"FAT length: {count} clusters need {(count + 2) * 4} bytes, got {fat_length * sector_size}", 84)
        _require(heap_offset >= fat_offset + fat_length * fats,
                 f"cluster heap offset: expected at least {fat_offset + fat_length * fats}, got {heap_offset}", 88)
        _require(heap_offset + (count << cluster_shift) <= volume_sectors,
                 f"the cluster heap ends at sector {heap_offset + (count << cluster_shift)}, past the volume's "
                 f"{volume_sectors} sectors", 72)
        _require(2 <= root <= count + 1, f"root directory cluster: expected 2..{count + 1}, got {root}", 96)
        active = flags & 1 if fats == 2 else 0  # ActiveFat: which of two FATs is live
        return cls(sector_size, sector_size << cluster_shift, volume_sectors,
                   (fat_offset + active * fat_length) * sector_size, fat_length * sector_size,
                   heap_offset * sector_size, count, root, serial, (revision >> 8, revision & 0xFF), flags, fats,
                   percent, backup_used)


def _require(condition: bool, message: str, offset: int) -> None:
    if not condition:
        raise CorruptImage(message, layer=LAYER, offset=offset)


def boot_checksum(region: bytes, sector_size: int) -> int:
    """The checksum of sectors 0-10, leaving out VolumeFlags and PercentInUse (they change in use)."""
    total = 0
    for part in (region[:106], region[108:112], region[113 : 11 * sector_size]):
        for byte in part:
            total = ((total >> 1) | ((total & 1) << 31)) + byte & 0xFFFFFFFF
    return total


def _region_ok(stream: Stream, start: int, sector_size: int) -> tuple[bool, bytes, str]:
    region = stream.pread(start, 12 * sector_size)
    if len(region) < 12 * sector_size:
        return False, region, f"the image ends at byte {stream.size}, inside the boot region"
    want = boot_checksum(region, sector_size)
    stored = region[11 * sector_size : 12 * sector_size]
    if stored != struct.pack("<I", want) * (sector_size // 4):
        got = struct.unpack_from("<I", stored)[0]
        return False, region, f"boot region checksum: expected {want:08X}, got {got:08X}"
    return True, region, ""


def read_boot(stream: Stream) -> ExfatBoot:
    """The main boot sector, or its backup copy when the main region's checksum fails."""
    first = ExfatBoot.parse(stream.pread(0, 512))
    ok, _, why = _region_ok(stream, 0, first.sector_size)
    if ok:
        return first
    backup_ok, backup, backup_why = _region_ok(stream, 12 * first.sector_size, first.sector_size)
    if not backup_ok:
        raise CorruptImage(f"{why}; the backup boot region is no better: {backup_why}", layer=LAYER, offset=0)
    log.warning("%s: exFAT main boot region: %s; using the backup boot region", stream.name, why)
    return ExfatBoot.parse(backup, backup_used=True)
