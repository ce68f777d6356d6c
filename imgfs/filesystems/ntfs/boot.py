"""The NTFS boot sector: where the MFT and its mirror are, and how big clusters and records are.

Layout from Microsoft's "NTFS boot sector" documentation and libfsntfs's notes: the OEM name "NTFS    " at
byte 3, the BIOS parameter block at byte 11, the 64-bit total sector count at byte 40, the MFT and mirror
cluster numbers at 48 and 56, the record and index-block sizes at 64 and 68. Those two sizes are clusters
when positive and ``2**-n`` bytes when negative (as a signed byte); sectors per cluster above 128 is
``2**(256-n)`` sectors (clusters above 64 KiB, up to 2 MiB).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

from imgfs.errors import CorruptImage, UnsupportedFormat
from imgfs.io.stream import Stream

LAYER = "ntfs"
OEM = b"NTFS    "
BITLOCKER_OEM = b"-FVE-FS-"
MAX_CLUSTER_SIZE = 2 << 20
MIN_RECORD_SIZE, MAX_RECORD_SIZE = 256, 64 << 10
MIN_INDEX_SIZE, MAX_INDEX_SIZE = 256, 64 << 10

# jump, OEM, bytes per sector, sectors per cluster; then (from byte 40) total sectors, MFT cluster,
# mirror cluster, clusters per record (signed), clusters per index block (signed), serial number
_HEAD = struct.Struct("<3s8sHB")
_TAIL = struct.Struct("<QQQb3xb3xQ")


@dataclass(frozen=True)
class BootSector:
    sector_size: int
    cluster_size: int
    total_sectors: int
    mft_cluster: int
    mirror_cluster: int
    record_size: int  # bytes per MFT record
    index_size: int  # bytes per index block ($INDEX_ALLOCATION)
    serial: int

    @property
    def total_clusters(self) -> int:
        return self.total_sectors * self.sector_size // self.cluster_size

    @property
    def volume_size(self) -> int:
        return self.total_sectors * self.sector_size

    @classmethod
    def parse(cls, sector: bytes) -> BootSector:
        """The boot sector's fields, checked; ``UnsupportedFormat`` when it is not NTFS at all."""
        if len(sector) < 512 or sector[3:11] != OEM:
            raise UnsupportedFormat(f"not an NTFS boot sector: expected {OEM!r} at byte 3, got {sector[3:11]!r}",
                                    layer=LAYER, offset=3)
        _, _, sector_size, per_cluster = _HEAD.unpack_from(sector)
        total, mft, mirror, per_record, per_index, serial = _TAIL.unpack_from(sector, 40)
        if sector_size not in (256, 512, 1024, 2048, 4096):
            raise CorruptImage(f"bytes per sector: expected 256..4096, a power of two, got {sector_size}",
                               layer=LAYER, offset=11)
        cluster_size = sector_size * _sectors_per_cluster(per_cluster)
        if cluster_size > MAX_CLUSTER_SIZE:
            raise CorruptImage(f"cluster size: expected at most {MAX_CLUSTER_SIZE}, got {cluster_size}", layer=LAYER,
                               offset=13)
        record_size = _unit_size(per_record, cluster_size, "MFT record", 64, MIN_RECORD_SIZE, MAX_RECORD_SIZE)
        index_size = _unit_size(per_index, cluster_size, "index block", 68, MIN_INDEX_SIZE, MAX_INDEX_SIZE)
        boot = cls(sector_size, cluster_size, total, mft, mirror, record_size, index_size, serial)
        if total == 0 or not 0 < mft < boot.total_clusters or not 0 < mirror < boot.total_clusters:
            raise CorruptImage(f"the MFT (cluster {mft}) and its mirror (cluster {mirror}) must lie inside the "
                               f"volume's {boot.total_clusters} clusters", layer=LAYER, offset=48)
        return boot

    def describe(self) -> dict[str, Any]:
        return {"sector_size": self.sector_size, "cluster_size": self.cluster_size, "size": self.volume_size,
                "mft_record_size": self.record_size, "index_block_size": self.index_size,
                "serial": f"{self.serial:016X}"}


def _sectors_per_cluster(value: int) -> int:
    if 1 <= value <= 128 and value & (value - 1) == 0:
        return value
    if 244 <= value <= 255:  # 2**(256-n): clusters of 128 KiB and more
        return 1 << (256 - value)
    raise CorruptImage(f"sectors per cluster: expected a power of two up to 128 or 244..255, got {value}",
                       layer=LAYER, offset=13)


def _unit_size(value: int, cluster_size: int, what: str, offset: int, least: int, most: int) -> int:
    size = value * cluster_size if value > 0 else 1 << -value if -31 <= value < 0 else 0
    if not least <= size <= most or size & (size - 1):
        raise CorruptImage(f"{what} size: expected a power of two of {least}..{most} bytes, got {size} "
                           f"(raw value {value})", layer=LAYER, offset=offset)
    return size


def read_boot_sector(stream: Stream) -> BootSector:
    return BootSector.parse(stream.pread(0, 512))

