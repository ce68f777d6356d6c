"""Finding a UDF volume: the recognition sequence, the anchors, and the volume descriptor sequences.

The volume recognition sequence (BEA01, NSR02/NSR03, TEA01) starts at byte 32768 of the session. An
anchor volume descriptor pointer sits at sector 256 of the session, or at sector N-256 or N (N the
last sector); the sector size (512, 2048 or 4096 bytes) is the one at which an anchor is found. Each
anchor names a main and a reserve volume descriptor sequence; when the main one is damaged the
reserve is read. Sector numbers in UDF are absolute, so a later session needs nothing but the right
place for its sector 256.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from imgfs.errors import CorruptImage, ImageError
from imgfs.filesystems.udf.descriptors import (
    LAYER,
    TAG_AVDP,
    TAG_IUVD,
    TAG_LVD,
    TAG_LVID,
    TAG_PD,
    TAG_PVD,
    TAG_TD,
    TAG_USD,
    TAG_VDP,
    LogicalVolume,
    PartitionDescriptor,
    PrimaryVolume,
    extent_ad,
    parse_lvd,
    parse_pd,
    parse_pvd,
    read_tag,
)
from imgfs.filesystems.vrs import CD_SECTOR, recognition_sequence
from imgfs.io.stream import Stream

SECTOR_SIZES = (2048, 512, 4096)  # optical first: most UDF images are discs
MAX_SEQUENCE_DESCRIPTORS = 512  # ECMA-167 bounds a sequence by its extent; this bounds a damaged one
MAX_SEQUENCE_HOPS = 16  # volume descriptor pointers followed


@dataclass
class VolumeSet:
    """What the volume descriptor sequence says."""

    sector_size: int
    anchor_sector: int
    nsr: str  # "NSR02" (UDF 1.0x/1.50) or "NSR03" (2.00 and later)
    primary: Optional[PrimaryVolume] = None
    logical: Optional[LogicalVolume] = None
    partitions: dict[int, PartitionDescriptor] = field(default_factory=dict)
    sequence: str = "main"  # which copy was read: "main" or "reserve"
    warnings: list[str] = field(default_factory=list)  # logged once the mount is sure to happen


def find_volume(stream: Stream, start_sector: int = 0) -> VolumeSet:
    """The volume of the session at ``start_sector`` (2048-byte sectors); an ``ImageError`` when there is none."""
    session = start_sector * CD_SECTOR
    nsr = recognition_sequence(stream, session)
    problems: list[ImageError] = []
    for sector_size in SECTOR_SIZES:
        for sector in _anchor_sectors(stream, session, sector_size):
            try:
                main, reserve = _read_anchor(stream, sector, sector_size)
            except CorruptImage as exc:
                problems.append(exc)
                continue
            volume = _read_sequences(stream, sector_size, sector, nsr, main, reserve, problems)
            if volume is not None:
                return volume
    if not problems:
        raise CorruptImage("no anchor volume descriptor pointer at sector 256, N-256 or N for a sector size of "
                           f"{', '.join(map(str, SECTOR_SIZES))} bytes", layer=LAYER, offset=session + 256 * CD_SECTOR)
    raise _most_telling(problems)


def _anchor_sectors(stream: Stream, session: int, sector_size: int) -> list[int]:
    last = stream.size // sector_size - 1
    found = [session // sector_size + 256, last - 256, last]
    return [s for i, s in enumerate(found) if s > 0 and s not in found[:i]]


def _read_anchor(stream: Stream, sector: int, sector_size: int) -> tuple[tuple[int, int], tuple[int, int]]:
    offset = sector * sector_size
    data = stream.pread(offset, sector_size)
    if len(data) < 512:
        raise CorruptImage("anchor volume descriptor pointer: the image ends before it", layer=LAYER, offset=offset)
    tag = read_tag(data, offset, expect=(TAG_AVDP,))
    if tag.location != sector:
        raise CorruptImage(f"anchor volume descriptor pointer: recorded at sector {sector} but says {tag.location} "
                           f"(not {sector_size}-byte sectors)", layer=LAYER, offset=offset)
    return extent_ad(data, 16), extent_ad(data, 24)


def _read_sequences(stream: Stream, sector_size: int, anchor: int, nsr: str, main: tuple[int, int],
                    reserve: tuple[int, int], problems: list[ImageError]) -> Optional[VolumeSet]:
    for which, (length, location) in (("main", main), ("reserve", reserve)):
        volume = VolumeSet(sector_size, anchor, nsr, sequence=which)
        try:
            _read_sequence(stream, volume, location, length)
            _check_complete(volume, location * sector_size)
        except CorruptImage as exc:
            exc.message = f"the anchor at sector {anchor} points to a {which} volume descriptor sequence at sector " \
                          f"{location} that cannot be read: {exc.message}"
            problems.append(exc)
            continue
        if which == "reserve":
            volume.warnings.append(f"the main UDF volume descriptor sequence is damaged ({problems[-1]}); reading "
                                   "the reserve copy")
        return volume
    return None


def _read_sequence(stream: Stream, volume: VolumeSet, location: int, length: int) -> None:
    sector_size = volume.sector_size
    seen: set[int] = set()
    count = 0
    for _ in range(MAX_SEQUENCE_HOPS):
        if location in seen:
            raise CorruptImage("volume descriptor pointers form a loop", layer=LAYER, offset=location * sector_size)
        seen.add(location)
        next_extent = None
        for index in range(max(1, length // sector_size)):
            count += 1
            if count > MAX_SEQUENCE_DESCRIPTORS:
                raise CorruptImage(f"more than {MAX_SEQUENCE_DESCRIPTORS} volume descriptors", layer=LAYER,
                                   offset=(location + index) * sector_size)
            sector = location + index
            data = stream.pread(sector * sector_size, sector_size)
            tag = read_tag(data, sector * sector_size, "volume descriptor")
            if tag.location != sector:
                raise CorruptImage(f"volume descriptor: recorded at sector {sector} but says {tag.location}",
                                   layer=LAYER, offset=sector * sector_size)
            if tag.ident == TAG_TD:
                return
            if tag.ident == TAG_VDP:
                next_extent = extent_ad(data, 20)
                break
            _take(volume, tag.ident, data, sector * sector_size)
        if next_extent is None:
            return  # the extent ended without a terminating descriptor: that is allowed
        length, location = next_extent


def _take(volume: VolumeSet, ident: int, data: bytes, offset: int) -> None:
    """Keep a descriptor unless one of the same kind with a higher sequence number is already there."""
    if ident == TAG_PVD:
        pvd = parse_pvd(data)
        if volume.primary is None or pvd.vdsn >= volume.primary.vdsn:
            volume.primary = pvd
    elif ident == TAG_LVD:
        lvd = parse_lvd(data, offset)
        if volume.logical is None or lvd.vdsn >= volume.logical.vdsn:
            volume.logical = lvd
    elif ident == TAG_PD:
        pd = parse_pd(data, offset)
        old = volume.partitions.get(pd.number)
        if old is None or pd.vdsn >= old.vdsn:
            volume.partitions[pd.number] = pd
    elif ident not in (TAG_IUVD, TAG_USD, TAG_LVID):
        raise CorruptImage(f"unexpected descriptor (tag {ident}) in the volume descriptor sequence", layer=LAYER,
                           offset=offset)


def _check_complete(volume: VolumeSet, offset: int) -> None:
    lvd = volume.logical
    if lvd is None:
        raise CorruptImage("no logical volume descriptor", layer=LAYER, offset=offset)
    if not volume.partitions:
        raise CorruptImage("no partition descriptor", layer=LAYER, offset=offset)
    if lvd.block_size != volume.sector_size:
        raise CorruptImage(f"logical block size {lvd.block_size} differs from the sector size "
                           f"{volume.sector_size}", layer=LAYER, offset=lvd.offset + 212)


def _most_telling(problems: list[ImageError]) -> ImageError:
    """Of the problems met on the way, the one that got furthest: a damaged sequence over a missing anchor."""
    for exc in problems:
        if "volume descriptor sequence" in exc.message:
            return exc
    return problems[0]
