"""The disk part's image: a GPT disk with an ext4, a FAT32 and an NTFS partition, built without loop devices.

mke2fs -d, mkfs.fat + mcopy, and mkntfs + an ntfs-3g mount (NTFS has no "-d": the files are written through
the driver, as root) write each filesystem into a file of its own, sfdisk writes the partition table into
a sparse disk file, and the filesystems are copied in at their partitions' offsets (like
`dd conv=notrunc`). Each big file goes into a fresh filesystem, so that it is nearly contiguous. The ext4
and NTFS partitions are kept as files of their own too, for fuse2fs and ntfs-3g. Cached like the ISO
images: the recipe is in the name, and a build is renamed into place only when complete.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import struct
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from benchlib import images
from benchlib.images import BIG_NAME

RECIPE_VERSION = 2  # 2: an NTFS partition
SECTOR_SIZE = 512
MIB = 1 << 20
COPY_CHUNK = 8 * MIB
EXT4_LABEL, FAT_LABEL, NTFS_LABEL = "bench-ext4", "BENCHFAT", "bench-ntfs"
LINUX_FS_GUID = "0FC63DAF-8483-4772-8E79-3D69D8477DE4"
BASIC_DATA_GUID = "EBD0A0A2-B9E5-4433-87C0-68B6B72699C7"
MTOOLS_ENV = {**os.environ, "MTOOLS_SKIP_CHECK": "1"}

Ranges = tuple[tuple[int, int], ...]  # (byte offset, length), in file order


@dataclass(frozen=True)
class DiskSpec:
    big_mib: int  # each partition's /bigfile
    dirs: int  # small files on the ext4 partition: dirs x files_per_dir
    files_per_dir: int

    @property
    def small_files(self) -> int:
        return self.dirs * self.files_per_dir

    def stem(self) -> str:
        return f"disk-{self.big_mib}M-{self.dirs}x{self.files_per_dir}-v{RECIPE_VERSION}"


@dataclass(frozen=True)
class DiskImages:
    disk: Path  # the GPT disk
    ext4: Path  # its ext4 partition as a file of its own (fuse2fs mounts it)
    ntfs: Path  # its NTFS partition as a file of its own (ntfs-3g mounts it)


@dataclass(frozen=True)
class Volume:
    """One partition, and where its /bigfile's bytes lie in the disk image: what raw pread reads."""

    fs: str  # "ext4", "fat32" or "ntfs"
    number: int
    label: str
    big: Ranges
    part_image: Optional[Path]  # the partition as a file of its own, when there is one
    peer: Optional[str] = None  # the FUSE driver that mounts ``part_image``

    @property
    def folder(self) -> str:
        """The partition's folder in an imgfs mount of the disk: "N LABEL"."""
        return f"{self.number} {self.label}"

    @property
    def big_size(self) -> int:
        return sum(length for _, length in self.big)


def ensure_disk(spec: DiskSpec, cache_dir: Path, log) -> DiskImages:
    """The disk image for ``spec`` (and its ext4 and NTFS partitions), built on first use."""
    stem = spec.stem()
    built = DiskImages(cache_dir / f"{stem}.img", cache_dir / f"{stem}.ext4", cache_dir / f"{stem}.ntfs")
    if built.disk.exists() and built.ext4.exists() and built.ntfs.exists():
        log(f"reusing {built.disk}")
        return built
    work = cache_dir / f"build-{stem}"
    log(f"building {built.disk} (ext4 and NTFS: {spec.big_mib} MiB file + {spec.small_files:,} small files; "
        f"FAT32: {spec.big_mib} MiB file), once")
    try:
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        ext4, fat, ntfs = build_ext4(spec, work), build_fat32(spec, work), build_ntfs(spec, work)
        write_disk(work / "disk.img", [(ext4, LINUX_FS_GUID, "bench ext4"), (fat, BASIC_DATA_GUID, "bench fat32"),
                                       (ntfs, BASIC_DATA_GUID, "bench ntfs")])
        ext4.rename(built.ext4)
        ntfs.rename(built.ntfs)
        (work / "disk.img").rename(built.disk)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return built


def build_ext4(spec: DiskSpec, work: Path) -> Path:
    src, part = work / "ext4-src", work / "ext4.img"
    src.mkdir()
    images.write_random_file(src / BIG_NAME, spec.big_mib, key=1)
    images.write_small_files(src, spec.dirs, spec.files_per_dir)
    size_mib = spec.big_mib + spec.small_files * 5 // 1024 + 64  # a 4 KiB block per small file + metadata, journal
    inodes = spec.small_files + spec.dirs + 1024
    subprocess.run(["mke2fs", "-q", "-F", "-t", "ext4", "-b", "4096", "-m", "0", "-L", EXT4_LABEL,
                    "-N", str(inodes), "-d", str(src), str(part), f"{size_mib}M"],
                   check=True, stdout=subprocess.DEVNULL)
    shutil.rmtree(src)
    return part


def build_fat32(spec: DiskSpec, work: Path) -> Path:
    part, big = work / "fat32.img", work / BIG_NAME
    with open(part, "wb") as f:
        f.truncate((spec.big_mib + spec.big_mib // 16 + 32) * MIB)  # room for the FATs
    subprocess.run(["mkfs.fat", "-F", "32", "-n", FAT_LABEL, str(part)], check=True, stdout=subprocess.DEVNULL)
    images.write_random_file(big, spec.big_mib, key=2)
    subprocess.run(["mcopy", "-i", str(part), str(big), f"::/{BIG_NAME}"], check=True, env=MTOOLS_ENV)
    big.unlink()
    return part


def build_ntfs(spec: DiskSpec, work: Path) -> Path:
    """mkntfs, then the same files as the ext4 partition's, written through an ntfs-3g mount."""
    part, mnt = work / "ntfs.img", work / "ntfs-mnt"
    with open(part, "wb") as f:
        f.truncate((spec.big_mib + spec.small_files * 6 // 1024 + 96) * MIB)  # clusters, MFT records, $LogFile
    subprocess.run(["mkntfs", "-F", "-Q", "-q", "-c", "4096", "-L", NTFS_LABEL, str(part)], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    mnt.mkdir()
    subprocess.run(["ntfs-3g", str(part), str(mnt)], check=True)
    try:
        images.write_random_file(mnt / BIG_NAME, spec.big_mib, key=3)
        images.write_small_files(mnt, spec.dirs, spec.files_per_dir)
    finally:
        subprocess.run(["umount", str(mnt)], check=True)
        wait_for_writer(part)
    return part


def wait_for_writer(part: Path, timeout: float = 120.0) -> None:
    """ntfs-3g writes the volume out after umount returns: wait until no ntfs-3g has the image open."""
    deadline = time.monotonic() + timeout
    while subprocess.run(["pgrep", "-f", f"ntfs-3g {part} "], capture_output=True).stdout:
        if time.monotonic() > deadline:
            raise RuntimeError(f"ntfs-3g still has {part} open {timeout} s after umount")
        time.sleep(0.1)


def write_disk(disk: Path, parts: list[tuple[Path, str, str]]) -> None:
    """A GPT disk holding the (image, type GUID, name) partitions back to back from 1 MiB on."""
    starts, end = [], MIB
    for image, _, _ in parts:
        starts.append(end)
        end += -(-image.stat().st_size // MIB) * MIB
    with open(disk, "wb") as f:
        f.truncate(end + MIB)  # the backup GPT goes into the last MiB
    script = "label: gpt\n" + "".join(
        f'start={start // SECTOR_SIZE}, size={image.stat().st_size // SECTOR_SIZE}, type={guid}, name="{name}"\n'
        for start, (image, guid, name) in zip(starts, parts))
    subprocess.run(["sfdisk", "-q", str(disk)], input=script, text=True, check=True)
    for start, (image, _, _) in zip(starts, parts):
        copy_into(image, disk, start)


def copy_into(part: Path, disk: Path, offset: int) -> None:
    """``part``'s bytes into ``disk`` at ``offset``, like dd conv=notrunc; zero chunks stay holes."""
    with open(part, "rb") as src, open(disk, "r+b") as dst:
        position = 0
        while chunk := src.read(COPY_CHUNK):
            if chunk.count(0) != len(chunk):
                os.pwrite(dst.fileno(), chunk, offset + position)
            position += len(chunk)


def locate_volumes(built: DiskImages, big_size: int) -> dict[str, Volume]:
    """The partitions, with their /bigfile's byte ranges in the disk image."""
    ext4_start, fat_start, ntfs_start = partition_offsets(built.disk)
    ext4 = shift(ext4_extents(built.ext4, big_size), ext4_start)
    fat = shift(fat32_extents(built.disk, fat_start, big_size), fat_start)
    ntfs = shift(ntfs_extents(built.ntfs, big_size), ntfs_start)
    return {"ext4": Volume("ext4", 1, EXT4_LABEL, ext4, built.ext4, "fuse2fs"),
            "fat32": Volume("fat32", 2, FAT_LABEL, fat, None),
            "ntfs": Volume("ntfs", 3, NTFS_LABEL, ntfs, built.ntfs, "ntfs-3g")}


def partition_offsets(disk: Path) -> list[int]:
    table = json.loads(subprocess.run(["sfdisk", "--json", str(disk)], capture_output=True, text=True,
                                      check=True).stdout)["partitiontable"]
    return [p["start"] * table.get("sectorsize", SECTOR_SIZE) for p in table["partitions"]]


def ext4_extents(part: Path, size: int) -> Ranges:
    """/bigfile's extents as debugfs reports them: "(0-32574):193-32767, (32575-65291):32819-65535"."""
    out = subprocess.run(["debugfs", "-R", f"stat /{BIG_NAME}", str(part)], capture_output=True, text=True,
                         check=True).stdout
    with open(part, "rb") as f:
        block_size = 1024 << struct.unpack_from("<I", os.pread(f.fileno(), 4, 1024 + 24))[0]
    extents = sorted((int(first), int(last or first), int(phys))
                     for first, last, phys in re.findall(r"\((\d+)(?:-(\d+))?\):(\d+)", out))
    expected = 0
    for first, last, _ in extents:
        if first != expected:
            raise RuntimeError(f"/{BIG_NAME} in {part} has a hole or an overlap at block {expected}: {extents}")
        expected = last + 1
    return merge_ranges([(phys * block_size, (last - first + 1) * block_size) for first, last, phys in extents], size)


def fat32_extents(disk: Path, start: int, size: int) -> Ranges:
    """/bigfile's cluster runs as mshowfat reports them ("<3-76802>"), as byte ranges in the partition."""
    with open(disk, "rb") as f:
        boot = os.pread(f.fileno(), 512, start)
    sector_size, sectors_per_cluster, reserved, fats = struct.unpack_from("<HBHB", boot, 11)
    (fat_sectors,) = struct.unpack_from("<I", boot, 36)
    data_offset = (reserved + fats * fat_sectors) * sector_size
    cluster_size = sector_size * sectors_per_cluster
    out = subprocess.run(["mshowfat", "-i", f"{disk}@@{start}", f"::/{BIG_NAME}"], capture_output=True,
                         text=True, check=True, env=MTOOLS_ENV).stdout
    runs = [(int(first), int(last or first)) for first, last in re.findall(r"<(\d+)(?:-(\d+))?>", out)]
    return merge_ranges([(data_offset + (first - 2) * cluster_size, (last - first + 1) * cluster_size)
                         for first, last in runs], size)


def ntfs_extents(part: Path, size: int) -> Ranges:
    """/bigfile's runs as ntfsinfo reports them ("0x0  0x5c6  0x20000": VCN, LCN, clusters)."""
    out = subprocess.run(["ntfsinfo", "-v", "-F", f"/{BIG_NAME}", str(part)], capture_output=True, text=True,
                         check=True).stdout
    with open(part, "rb") as f:
        boot = os.pread(f.fileno(), 16, 0)
    cluster = struct.unpack_from("<H", boot, 11)[0] * boot[13]
    start = out.index("Dumping attribute $DATA")
    end = out.find("Dumping attribute", start + 1)
    data = out[start : end if end > 0 else len(out)]
    runs = [(int(vcn, 16), int(lcn, 16), int(count, 16))
            for vcn, lcn, count in re.findall(r"^\s+(0x[0-9a-f]+)\s+(0x[0-9a-f]+)\s+(0x[0-9a-f]+)\s*$", data, re.M)]
    expected = 0
    for vcn, _, count in runs:
        if vcn != expected:
            raise RuntimeError(f"/{BIG_NAME} in {part} has a hole at cluster {expected}: {runs}")
        expected = vcn + count
    return merge_ranges([(lcn * cluster, count * cluster) for _, lcn, count in runs], size)


def merge_ranges(ranges: list[tuple[int, int]], size: int) -> Ranges:
    """Join ranges that follow each other on disk; cut the last one at the file's size."""
    merged: list[tuple[int, int]] = []
    for offset, length in ranges:
        if merged and merged[-1][0] + merged[-1][1] == offset:
            merged[-1] = (merged[-1][0], merged[-1][1] + length)
        else:
            merged.append((offset, length))
    clipped, left = [], size
    for offset, length in merged:
        if left > 0:
            clipped.append((offset, min(length, left)))
            left -= length
    if left > 0:
        raise RuntimeError(f"the extents found cover {size - left:,} of {size:,} bytes")
    return tuple(clipped)


def shift(ranges: Ranges, base: int) -> Ranges:
    return tuple((base + offset, length) for offset, length in ranges)
