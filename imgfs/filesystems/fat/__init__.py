"""FAT12, FAT16 and FAT32 with VFAT long names, read lazily one directory at a time."""

from imgfs.filesystems.fat.bootsector import BootSector, probe
from imgfs.filesystems.fat.reader import FatFilesystem

__all__ = ["BootSector", "FatFilesystem", "probe"]
