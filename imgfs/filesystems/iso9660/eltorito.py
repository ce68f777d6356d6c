"""El Torito boot images (Bootable CD-ROM Format Specification 1.0), each with its true size.

A boot record volume descriptor ("EL TORITO SPECIFICATION") points at the boot catalog: a validation entry,
the initial/default entry, then sections (a header naming a platform, its entries, their extensions). An
entry gives where its image starts (``load_rba``, in 2048-byte CD sectors) but not how long it is: the
sector count is the number of 512-byte sectors a BIOS loads, which for no-emulation images is usually 4
(2048 bytes) whatever the file's size, and for EFI images over 32 MiB is 0 or 1. So the size is found
elsewhere, in this order:

1. floppy emulation: the floppy's size;
2. a file of the directory tree whose data starts at ``load_rba`` (one bounded walk for all images);
3. a FAT boot sector at ``load_rba`` (EFI system partition images): the BPB's volume size;
4. hard-disk emulation: the end of the last partition of the MBR at ``load_rba``;
5. the catalog's sector count × 512, at least 512.

Never beyond the end of the image: a size that runs past it is clamped, and ``size_source`` says so.

Errors: ``boot_images`` never raises for what it reads. A missing boot record gives ``[]``; an unusable
catalog (past the end, bad validation entry) gives ``[]`` and a warning; damage after some good entries
ends the list there with a warning. ``read_catalog`` is the strict part: it raises ``CorruptImage``.
"""

from __future__ import annotations

import logging
import struct
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Optional, Protocol

from imgfs.errors import CorruptImage, ImageError
from imgfs.filesystems.base import Node
from imgfs.filesystems.fat.bootsector import BootSector
from imgfs.filesystems.iso9660.records import VolumeDescriptor
from imgfs.io.stream import SliceStream, Stream
from imgfs.volumes.mbr import entries as mbr_entries
from imgfs.volumes.mbr import looks_like_mbr

log = logging.getLogger(__name__)


class IsoTree(Protocol):
    """What the search for files holding boot images needs of the ISO 9660 filesystem."""

    stream: Stream
    start_sector: int
    root: Node

    def children(self, node: Node) -> dict[str, Node]: ...

    def data_runs(self, node: Node) -> tuple[tuple[int, int], ...]: ...


LAYER = "eltorito"
CD_SECTOR = 2048  # load_rba and the catalog's address count these, whatever the volume's block size
VIRTUAL_SECTOR = 512  # the catalog's sector count counts these
FIRST_DESCRIPTOR_SECTOR = 16
MAX_DESCRIPTORS = 64
BOOT_SYSTEM_ID = b"EL TORITO SPECIFICATION"
BOOT_CATALOG_POINTER = 0x47
ENTRY_SIZE = 32
MAX_CATALOG_SIZE = 16 * CD_SECTOR  # 1024 slots; real catalogs fill part of one sector
MAX_WALK_DIRECTORIES = 4096  # the tree look-up gives up after this many directories...
MAX_WALK_ENTRIES = 100_000  # ...or entries: a hidden boot image must not cost a walk of a huge disc

HEADER_VALIDATION, HEADER_MORE, HEADER_FINAL, HEADER_EXTENSION = 0x01, 0x90, 0x91, 0x44
BOOTABLE, NOT_BOOTABLE = 0x88, 0x00
MEDIA_MASK, MEDIA_EXTENSION_FOLLOWS = 0x0F, 0x20
EXTENSION_MORE_FOLLOWS = 0x20
MEDIA_HARD_DISK = 4

PLATFORMS = {0x00: "bios", 0x01: "ppc", 0x02: "mac", 0xEF: "efi"}
EMULATIONS = ("none", "floppy-1.2M", "floppy-1.44M", "floppy-2.88M", "hard-disk")
_SHORT_EMULATION = ("noemul", "floppy1.2M", "floppy1.44M", "floppy2.88M", "hdd")
FLOPPY_SIZES = {1: 1200 * 1024, 2: 1440 * 1024, 3: 2880 * 1024}

# boot indicator, media type, load segment, system type, (unused), sector count, load RBA
_ENTRY = struct.Struct("<BBHBxHI")
# header ID, platform ID, number of entries, ID string
_HEADER = struct.Struct("<BBH28s")


@dataclass(frozen=True)
class CatalogEntry:
    """One initial/default or section entry, as recorded."""

    index: int  # 1-based, in catalog order
    platform_id: int
    bootable: bool
    media: int  # 0 none, 1-3 floppies, 4 hard disk
    load_segment: int
    system_type: int  # hard-disk emulation: the partition type byte
    sector_count: int  # 512-byte virtual sectors
    load_rba: int  # 2048-byte CD sectors
    section_id: bytes  # the section header's ID string (b"" for the initial entry)
    offset: int  # byte offset of the entry in the image


@dataclass
class BootImage:
    index: int
    platform: str  # "bios", "efi", "ppc", "mac" or "0xNN"
    emulation: str  # one of EMULATIONS
    bootable: bool
    load_rba: int
    sector_count: int
    size: int  # the true size in bytes, never past the end of the image
    size_source: str
    name: str  # a file name for the raw view: "1-bios-noemul.img", "2-efi.img"
    base: Stream = field(repr=False, compare=False)
    load_segment: int = 0
    system_type: int = 0

    @property
    def offset(self) -> int:
        return self.load_rba * CD_SECTOR

    def stream(self) -> SliceStream:
        return SliceStream(self.base, min(self.offset, self.base.size), self.size,
                           name=f"{self.base.name}:boot image {self.index}")

    def describe(self) -> dict[str, Any]:
        return {"index": self.index, "name": self.name, "platform": self.platform, "emulation": self.emulation,
                "bootable": self.bootable, "load_rba": self.load_rba, "load_segment": self.load_segment,
                "system_type": self.system_type, "sector_count": self.sector_count, "size": self.size,
                "size_source": self.size_source}


# -- the catalog -----------------------------------------------------------------------------------

def find_catalog(stream: Stream, start_sector: int = 0) -> Optional[int]:
    """The boot catalog's LBA from the boot record of the descriptor set at ``start_sector`` + 16."""
    for index in range(MAX_DESCRIPTORS):
        raw = stream.pread((start_sector + FIRST_DESCRIPTOR_SECTOR + index) * CD_SECTOR, CD_SECTOR)
        if len(raw) < CD_SECTOR or raw[1:6] != b"CD001" or raw[0] == 255:
            return None
        if raw[0] == 0 and raw[7:39].rstrip(b"\x00 ") == BOOT_SYSTEM_ID:
            return int(struct.unpack_from("<I", raw, BOOT_CATALOG_POINTER)[0])
    return None


def read_catalog(stream: Stream, catalog_lba: int) -> list[CatalogEntry]:
    """Every entry of the catalog; ``CorruptImage`` when even the validation or initial entry is unusable.

    Damage after the initial entry ends the list there, with a warning."""
    offset = catalog_lba * CD_SECTOR
    if offset + 2 * ENTRY_SIZE > stream.size:
        raise CorruptImage(f"the boot catalog at sector {catalog_lba} lies past the end of the image "
                           f"({stream.size} bytes)", layer=LAYER, offset=offset)
    return _Catalog(stream.pread(offset, MAX_CATALOG_SIZE), offset, stream.name).parse()


class _Catalog:
    """One pass over the catalog's 32-byte slots; never past its end, so no count or chain can loop."""

    def __init__(self, data: bytes, offset: int, name: str) -> None:
        self.data, self.offset, self.name = data, offset, name
        self.entries: list[CatalogEntry] = []

    def parse(self) -> list[CatalogEntry]:
        platform = self._validate()
        initial = self._entry(ENTRY_SIZE, platform, b"")
        if initial is None:
            raise CorruptImage(f"the initial entry's boot indicator is {self.data[ENTRY_SIZE]:#04x}, not 0x88 or "
                               "0x00", layer=LAYER, offset=self.offset + ENTRY_SIZE)
        self.entries.append(initial)
        pos = 2 * ENTRY_SIZE
        while self._fits(pos):
            header_id, platform, count, section_id = _HEADER.unpack_from(self.data, pos)
            if header_id not in (HEADER_MORE, HEADER_FINAL):
                if any(self.data[pos : pos + ENTRY_SIZE]):  # zeros: a writer that marked no header final
                    self._warn(pos, f"expected a section header, got {header_id:02X}")
                break
            pos = self._section(pos + ENTRY_SIZE, count, platform, section_id.rstrip(b"\x00 "))
            if header_id == HEADER_FINAL or pos < 0:
                break
        return self.entries

    def _validate(self) -> int:
        """The validation entry's platform ID, once its header, key bytes and checksum are right."""
        raw = self.data[:ENTRY_SIZE]
        if raw[0] != HEADER_VALIDATION or raw[30:32] != b"\x55\xaa":
            raise CorruptImage(f"no validation entry: expected header 01 and key 55 AA, got {raw[0]:02X} and "
                               f"{raw[30:32].hex(' ').upper()}", layer=LAYER, offset=self.offset)
        if sum(struct.unpack("<16H", raw)) & 0xFFFF:
            raise CorruptImage("the validation entry's checksum does not sum to zero", layer=LAYER,
                               offset=self.offset + 28)
        return raw[1]

    def _section(self, pos: int, count: int, platform: int, section_id: bytes) -> int:
        """Read up to ``count`` entries and skip their extensions; the position after them, -1 on damage."""
        for _ in range(count):
            while self._fits(pos) and self.data[pos] == HEADER_EXTENSION:  # one its entry did not announce
                pos += ENTRY_SIZE
            if not self._fits(pos) or self.data[pos] in (HEADER_MORE, HEADER_FINAL) or not any(
                    self.data[pos : pos + ENTRY_SIZE]):
                self._warn(pos, f"the section header promises {count} entries but has fewer")
                return pos
            entry = self._entry(pos, platform, section_id)
            if entry is None:
                self._warn(pos, "no section entry; the entries end there")
                return -1
            self.entries.append(entry)
            more = self.data[pos + 1] & MEDIA_EXTENSION_FOLLOWS
            pos += ENTRY_SIZE
            while more and self._fits(pos) and self.data[pos] == HEADER_EXTENSION:
                more = self.data[pos + 1] & EXTENSION_MORE_FOLLOWS
                pos += ENTRY_SIZE
        return pos

    def _entry(self, pos: int, platform: int, section_id: bytes) -> Optional[CatalogEntry]:
        """The entry at ``pos``, or None when it is not one (wrong boot indicator, unknown media type)."""
        indicator, media, segment, system, count, rba = _ENTRY.unpack_from(self.data, pos)
        if indicator not in (BOOTABLE, NOT_BOOTABLE) or media & MEDIA_MASK >= len(EMULATIONS):
            return None
        return CatalogEntry(len(self.entries) + 1, platform, indicator == BOOTABLE, media & MEDIA_MASK, segment,
                            system, count, rba, section_id, self.offset + pos)

    def _fits(self, pos: int) -> bool:
        return pos + ENTRY_SIZE <= len(self.data)

    def _warn(self, pos: int, message: str) -> None:
        log.warning("%s: El Torito catalog at byte %d: %s", self.name, self.offset + pos, message)


# -- the true size ---------------------------------------------------------------------------------

def boot_images(stream: Stream, descriptors: Sequence[VolumeDescriptor] = (), iso: Optional[IsoTree] = None
                ) -> list[BootImage]:
    """The boot images of an ISO 9660 image, in catalog order, each with its true size.

    ``stream`` is the user-data stream the filesystem reads (sector 0 of the disc at byte 0, since the
    catalog's addresses are absolute); ``descriptors`` (the filesystem's) say where the session's volume
    descriptor set is, ``iso.start_sector`` too; ``iso``, when given, is searched for a file holding each
    image. Never raises for bad data: see the module's doc."""
    start_sector = _session_start(descriptors, iso)
    try:
        catalog_lba = find_catalog(stream, start_sector)
        if catalog_lba is None:
            return []
        entries = read_catalog(stream, catalog_lba)
    except ImageError as exc:
        log.warning("%s: El Torito boot catalog ignored: %s", stream.name, exc)
        return []
    wanted = {e.load_rba * CD_SECTOR for e in entries if e.media not in FLOPPY_SIZES}
    files = _files_at(iso, wanted) if iso is not None and wanted else {}
    return [_boot_image(stream, e, files) for e in entries]


def _session_start(descriptors: Sequence[VolumeDescriptor], iso: Optional[IsoTree]) -> int:
    if iso is not None:
        return iso.start_sector
    if descriptors:  # the primary descriptor comes first, at the session's sector 16
        return max(0, min(vd.sector for vd in descriptors) - FIRST_DESCRIPTOR_SECTOR)
    return 0


def _boot_image(stream: Stream, entry: CatalogEntry, files: dict[int, tuple[str, int]]) -> BootImage:
    try:
        size, source = _true_size(stream, entry, files)
    except ImageError as exc:  # the image's first sector is unreadable
        log.warning("%s: El Torito image %d: %s", stream.name, entry.index, exc)
        size, source = max(entry.sector_count * VIRTUAL_SECTOR, VIRTUAL_SECTOR), "catalog sector count"
    size, source = _clamp(stream, entry, size, source)
    platform = PLATFORMS.get(entry.platform_id, f"0x{entry.platform_id:02x}")
    return BootImage(entry.index, platform, EMULATIONS[entry.media], entry.bootable, entry.load_rba,
                     entry.sector_count, size, source, _name(entry.index, platform, entry.media), stream,
                     entry.load_segment, entry.system_type)


def _name(index: int, platform: str, media: int) -> str:
    if platform == "efi" and media == 0:
        return f"{index}-efi.img"
    return f"{index}-{platform}-{_SHORT_EMULATION[media]}.img"


def _true_size(stream: Stream, entry: CatalogEntry, files: dict[int, tuple[str, int]]) -> tuple[int, str]:
    if entry.media in FLOPPY_SIZES:
        return FLOPPY_SIZES[entry.media], "floppy emulation"
    offset = entry.load_rba * CD_SECTOR
    if offset in files:
        path, size = files[offset]
        return size, f"file {path} in the directory tree"
    recorded = entry.sector_count * VIRTUAL_SECTOR
    first = stream.pread(offset, VIRTUAL_SECTOR)
    fat_size = _fat_size(first)
    if fat_size and fat_size >= recorded:
        return fat_size, "FAT boot sector"
    if entry.media == MEDIA_HARD_DISK:
        disk_size = _mbr_size(stream, offset, first)
        if disk_size and disk_size >= recorded:
            return disk_size, "MBR partition end"
    return max(recorded, VIRTUAL_SECTOR), "catalog sector count"


def _clamp(stream: Stream, entry: CatalogEntry, size: int, source: str) -> tuple[int, str]:
    offset = entry.load_rba * CD_SECTOR
    available = max(0, stream.size - offset)
    if size <= available:
        return size, source
    log.warning("%s: El Torito image %d (%d bytes by %s) runs past the end of the image; clamped to %d bytes",
                stream.name, entry.index, size, source, available)
    if not available:
        return 0, f"{source}; starts past the end of the image"
    return available, f"{source}; clamped to the end of the image ({size} bytes recorded)"


def _fat_size(first: bytes) -> int:
    try:
        boot = BootSector.parse(first)
    except ImageError:
        return 0
    return boot.volume_size


def _mbr_size(stream: Stream, offset: int, first: bytes) -> int:
    """Where the last partition of the emulated disk ends; a protective MBR's GPT names its backup header."""
    if not looks_like_mbr(first):
        return 0
    end = 0
    for _, kind, start, count in mbr_entries(first):
        if kind == 0xEE:
            end = max(end, _gpt_size(stream, offset))
        elif kind and count:
            end = max(end, (start + count) * VIRTUAL_SECTOR)
    return end


def _gpt_size(stream: Stream, offset: int) -> int:
    header = stream.pread(offset + VIRTUAL_SECTOR, 92)
    if len(header) < 92 or header[:8] != b"EFI PART":
        return 0
    backup_lba = int(struct.unpack_from("<Q", header, 32)[0])
    return (backup_lba + 1) * VIRTUAL_SECTOR if backup_lba > 1 else 0


# -- the directory tree ----------------------------------------------------------------------------

def _files_at(iso: IsoTree, wanted: set[int]) -> dict[int, tuple[str, int]]:
    """For each byte offset in ``wanted``, the path and size of a file whose data starts there and runs
    contiguously: one breadth-first walk (boot files sit near the root), bounded, stopping when all are found."""
    found: dict[int, tuple[str, int]] = {}
    queue = deque([("", iso.root)])
    seen = {iso.root.ino}
    directories = entries = 0
    while queue and len(found) < len(wanted):
        if directories >= MAX_WALK_DIRECTORIES or entries >= MAX_WALK_ENTRIES:
            log.info("%s: El Torito: the look-up of boot files in the tree stopped after %d directories",
                     iso.stream.name, directories)
            break
        path, node = queue.popleft()
        directories += 1
        try:
            kids = iso.children(node)
        except ImageError as exc:
            log.debug("%s: El Torito: directory %s skipped: %s", iso.stream.name, path or "/", exc)
            continue
        for name, kid in kids.items():
            entries += 1
            if kid.is_dir and kid.ino not in seen:
                seen.add(kid.ino)
                queue.append((f"{path}/{name}", kid))
            elif kid.is_file:
                _match(iso, kid, f"{path}/{name}", wanted, found)
    return found


def _match(iso: IsoTree, node: Node, path: str, wanted: set[int], found: dict[int, tuple[str, int]]) -> None:
    runs = iso.data_runs(node)
    if not runs or getattr(node.handle, "zf", None) is not None or runs[0][0] not in wanted or runs[0][0] in found:
        return
    end = runs[0][0]
    for start, length in runs:
        if start != end:  # scattered pieces are not one range of the image
            return
        end += length
    found[runs[0][0]] = (path, end - runs[0][0])
