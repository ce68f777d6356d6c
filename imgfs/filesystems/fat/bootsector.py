"""The FAT boot sector and its BIOS parameter block (Microsoft's FAT specification, fatgen103, section 3).

A master boot record also ends in 55 AA, so the checks here are strict: a boot sector is taken for FAT only
when every BPB field is plausible and the fields agree with each other. ``BootSector.parse`` raises
``UnsupportedFormat`` for something that is not a FAT boot sector at all and ``CorruptImage`` for one that
is but cannot be used; ``probe`` answers the registry's question without raising.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from imgfs.errors import CorruptImage, ImageError, UnsupportedFormat
from imgfs.io.stream import Stream

LAYER = "fat"
FAT12_MAX_CLUSTERS = 4084  # fatgen103: fewer than 4085 clusters is FAT12, fewer than 65525 FAT16
FAT16_MAX_CLUSTERS = 65524
FAT32_MAX_CLUSTERS = 0x0FFFFFF5  # cluster numbers are 28 bits and the top 11 values are markers
NO_NAME = "NO NAME"

# jump, OEM name, bytes per sector, sectors per cluster, reserved sectors, FAT count, root entries,
# total sectors (16 bit), media, sectors per FAT (16 bit), sectors per track, heads, hidden sectors,
# total sectors (32 bit)
_BPB = struct.Struct("<3s8sHBHBHHBHHHII")
# FAT32 after byte 36: sectors per FAT (32 bit), extended flags, version, root cluster, FSInfo sector,
# backup boot sector, 12 reserved bytes, then the same extended fields as FAT12/16 have at byte 36
_BPB32 = struct.Struct("<IHHIHH12x")
# drive number, reserved, extended boot signature (0x29: serial, label and type follow; 0x28: serial only),
# serial, label, file system type
_EBPB = struct.Struct("<BBBI11s8s")


@dataclass(frozen=True)
class BootSector:
    fat_bits: int  # 12, 16 or 32
    sector_size: int
    cluster_size: int
    reserved_sectors: int
    fat_count: int
    fat_sectors: int
    active_fat: int  # the FAT to read: FAT32 may turn mirroring off and name one
    root_entries: int  # FAT12/16: entries in the fixed root directory
    root_cluster: int  # FAT32: first cluster of the root directory
    total_sectors: int
    cluster_count: int
    media: int
    oem_name: str
    serial: int | None
    label: str  # the BPB's copy; the root directory's volume-label entry wins over it
    type_hint: str  # "FAT12   " and so on: informative only, never used to decide the type

    @property
    def fat_offset(self) -> int:
        return (self.reserved_sectors + self.active_fat * self.fat_sectors) * self.sector_size

    @property
    def fat_size(self) -> int:
        return self.fat_sectors * self.sector_size

    @property
    def root_offset(self) -> int:
        """FAT12/16: where the fixed root directory starts."""
        return (self.reserved_sectors + self.fat_count * self.fat_sectors) * self.sector_size

    @property
    def root_size(self) -> int:
        return self.root_entries * 32

    @property
    def data_offset(self) -> int:
        """Where cluster 2 starts."""
        root_sectors = -(-self.root_size // self.sector_size)
        return self.root_offset + root_sectors * self.sector_size

    @property
    def volume_size(self) -> int:
        return self.total_sectors * self.sector_size

    @classmethod
    def parse(cls, raw: bytes) -> BootSector:
        if len(raw) < 512:
            raise UnsupportedFormat(f"boot sector: expected 512 bytes, got {len(raw)}", layer=LAYER)
        (jump, oem, sector_size, spc, reserved, fats, root_entries, total16, media, fat16, _, _, _,
         total32) = _BPB.unpack_from(raw)
        _check_common(raw, jump, sector_size, spc, reserved, fats, media)
        total = total16 or total32
        if fat16 == 0:  # the FAT32 shape (Linux decides the same way; Windows counts clusters only)
            if root_entries != 0:
                raise UnsupportedFormat(f"FAT32 BPB: expected 0 root entries, got {root_entries}", layer=LAYER,
                                        offset=17)
            return cls._parse_fat32(raw, oem, sector_size, spc, reserved, fats, total, media)
        if root_entries == 0:
            raise UnsupportedFormat("FAT12/16 BPB: 0 root directory entries", layer=LAYER, offset=17)
        _, _, signature, serial, label, hint = _EBPB.unpack_from(raw, 36)
        count = _cluster_count(total, reserved, fats, fat16, root_entries, sector_size, spc)
        # Like Linux: a BPB in the FAT12/16 shape with more clusters than FAT16 allows is not FAT32
        bits = 12 if count <= FAT12_MAX_CLUSTERS else 16
        if count > FAT16_MAX_CLUSTERS:
            raise UnsupportedFormat(f"FAT16 BPB with {count} clusters (at most {FAT16_MAX_CLUSTERS})", layer=LAYER)
        return cls(bits, sector_size, sector_size * spc, reserved, fats, fat16, 0, root_entries, 0, total, count,
                   media, _text(oem), *_extended(signature, serial, label, hint))

    @classmethod
    def _parse_fat32(cls, raw: bytes, oem: bytes, sector_size: int, spc: int, reserved: int, fats: int,
                     total: int, media: int) -> BootSector:
        fat32, flags, version, root_cluster, _, _ = _BPB32.unpack_from(raw, 36)
        if fat32 == 0:
            raise UnsupportedFormat("FAT32 BPB: 0 sectors per FAT", layer=LAYER, offset=36)
        if version != 0:
            raise UnsupportedFormat(f"FAT32 version: expected 0.0, got {version >> 8}.{version & 0xFF}",
                                    layer=LAYER, offset=42)
        count = _cluster_count(total, reserved, fats, fat32, 0, sector_size, spc)
        if count > FAT32_MAX_CLUSTERS:
            raise UnsupportedFormat(f"FAT32 BPB with {count} clusters", layer=LAYER)
        if not 2 <= root_cluster <= count + 1:
            raise CorruptImage(f"root directory cluster: expected 2..{count + 1}, got {root_cluster}",
                               layer=LAYER, offset=44)
        active = flags & 0x0F if flags & 0x80 else 0  # bit 7: mirroring off, bits 0-3 name the live FAT
        if active >= fats:
            raise CorruptImage(f"active FAT: expected 0..{fats - 1}, got {active}", layer=LAYER, offset=40)
        _, _, signature, serial, label, hint = _EBPB.unpack_from(raw, 64)
        return cls(32, sector_size, sector_size * spc, reserved, fats, fat32, active, 0, root_cluster, total, count,
                   media, _text(oem), *_extended(signature, serial, label, hint))


def _check_common(raw: bytes, jump: bytes, sector_size: int, spc: int, reserved: int, fats: int, media: int) -> None:
    if raw[510:512] != b"\x55\xaa":
        raise UnsupportedFormat(f"boot signature: expected 55 AA, got {raw[510:512].hex(' ').upper()}",
                                layer=LAYER, offset=510)
    if jump[0] not in (0xEB, 0xE9):
        raise UnsupportedFormat(f"jump instruction: expected EB or E9, got {jump[0]:02X}", layer=LAYER, offset=0)
    if sector_size not in (512, 1024, 2048, 4096):
        raise UnsupportedFormat(f"bytes per sector: expected 512, 1024, 2048 or 4096, got {sector_size}",
                                layer=LAYER, offset=11)
    if spc == 0 or spc & (spc - 1):
        raise UnsupportedFormat(f"sectors per cluster: expected a power of two, got {spc}", layer=LAYER, offset=13)
    if reserved == 0:
        raise UnsupportedFormat("reserved sectors: expected at least 1, got 0", layer=LAYER, offset=14)
    if not 1 <= fats <= 4:
        raise UnsupportedFormat(f"number of FATs: expected 1..4, got {fats}", layer=LAYER, offset=16)
    if media != 0xF0 and media < 0xF8:
        raise UnsupportedFormat(f"media descriptor: expected F0 or F8..FF, got {media:02X}", layer=LAYER, offset=21)


def _cluster_count(total: int, reserved: int, fats: int, fat_sectors: int, root_entries: int, sector_size: int,
                   spc: int) -> int:
    """fatgen103's computation; the FAT must also be large enough to describe every cluster."""
    root_sectors = -(-(root_entries * 32) // sector_size)
    data_sectors = total - (reserved + fats * fat_sectors + root_sectors)
    if total == 0 or data_sectors <= 0:
        raise UnsupportedFormat(f"total sectors: {total} leave no room for data after the FATs and root directory",
                                layer=LAYER, offset=19)
    count = data_sectors // spc
    if count == 0:
        raise UnsupportedFormat("the data area holds no whole cluster", layer=LAYER, offset=13)
    bits = 32 if root_entries == 0 else (12 if count <= FAT12_MAX_CLUSTERS else 16)
    needed = -(-(count + 2) * bits // 8)
    if fat_sectors * sector_size < needed:
        raise UnsupportedFormat(f"FAT size: {count} clusters need {needed} bytes, the FAT has "
                                f"{fat_sectors * sector_size}", layer=LAYER, offset=22)
    return count


def _text(raw: bytes) -> str:
    return raw.decode("cp437").rstrip(" \x00")


def _extended(signature: int, serial: int, label: bytes, hint: bytes) -> tuple[int | None, str, str]:
    if signature not in (0x28, 0x29):
        return None, "", ""
    if signature == 0x28:  # DOS 4.0 short form: the serial only
        return serial, "", ""
    text = _text(label)
    return serial, "" if text == NO_NAME else text, _text(hint)


def probe(stream: Stream) -> bool:
    """True when the stream starts with a usable FAT boot sector."""
    try:
        BootSector.parse(stream.pread(0, 512))
    except ImageError:
        return False
    return True
