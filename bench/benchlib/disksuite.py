"""The disk part's measurement loop: each partition's /bigfile and the ext4 and NTFS trees, each on a fresh
mount.

Readers: raw (``os.pread`` of /bigfile's byte ranges in the disk image, in the same request size), imgfs
(the whole disk image mounted: one folder per partition), fuse2fs (the ext4 partition's own image, when
fuse2fs is installed) and ntfs-3g (the NTFS partition's own image, read-only). As in the ISO part, the
readers of one measurement follow each other directly and their order rotates from run to run.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

from benchlib import copyall, images
from benchlib.diskimage import DiskImages, Ranges, Volume
from benchlib.images import BIG_NAME
from benchlib.mounts import Mount, mounted
from benchlib.workloads import RANDOM_READ_SIZE, random_offsets, ranges_mb_s, run_measured

FUSE2FS, NTFS3G = "fuse2fs", "ntfs-3g"
PEERS = ("imgfs", FUSE2FS, NTFS3G)  # the FUSE readers
ALL_READERS = ("raw", *PEERS)
COPY_TARGET = Path("/dev/shm")  # cp -r copies into memory: the disk under /tmp would time itself


@dataclass
class DiskSetup:
    images: DiskImages
    volumes: dict[str, Volume]  # by filesystem: "ext4", "fat32", "ntfs"
    readers: tuple[str, ...]  # ALL_READERS, without the peers that are not installed
    entries: dict[str, int]  # what was put into the ext4 (lost+found included) and NTFS partitions
    runs: int
    cold: bool  # may we drop the page cache (root only)?
    log: Callable[[str], None]
    problems: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class View:
    """One partition as one reader sees it: the bytes of /bigfile, and the partition's root directory."""

    path: Path  # the file that holds /bigfile's bytes
    ranges: Ranges  # where in ``path``
    root: Optional[Path]  # the partition's root in the mount; None for raw
    mount: Optional[Mount]


Work = Callable[[DiskSetup, View], float]


@dataclass(frozen=True)
class DiskMeasurement:
    key: str
    label: str
    unit: str
    volumes: tuple[str, ...]
    readers: tuple[str, ...]
    work: Work
    cold: bool = False


def sequential(block: int) -> Work:
    return lambda setup, view: ranges_mb_s(view.path, view.ranges, block)


def walk_seconds(command: list[str]) -> Work:
    """Wall time of a whole-tree command on the partition's root; a failure is recorded, not hidden."""
    def work(setup: DiskSetup, view: View) -> float:
        done = run_measured([*command, str(view.root)])
        if done.returncode:
            setup.problems.append(f"`{' '.join(command)}` on {view.root} exited {done.returncode}: "
                                  f"{done.stderr[:300]}")
        return done.wall_s
    return work


def copy_seconds(setup: DiskSetup, view: View) -> float:
    """Wall time of `cp -r` of the partition's whole tree into memory (/dev/shm), removed again after."""
    assert view.root is not None
    target = Path(tempfile.mkdtemp(prefix="imgfs-bench-cp-", dir=COPY_TARGET))
    try:
        done = run_measured(["cp", "-r", f"{view.root}/.", str(target)])
        if done.returncode:
            setup.problems.append(f"`cp -r` of {view.root} exited {done.returncode}: {done.stderr[:300]}")
        return done.wall_s
    finally:
        shutil.rmtree(target, ignore_errors=True)


def whole_workload_rss(setup: DiskSetup, view: View) -> float:
    """The daemon's peak RSS after `ls -lR` of its whole mount and a full read of every /bigfile in it."""
    assert view.mount is not None
    walk = run_measured(["ls", "-lR", str(view.mount.path)])
    if walk.returncode:
        setup.problems.append(f"`ls -lR MNT` (RSS workload) exited {walk.returncode}: {walk.stderr[:300]}")
    for big in [*view.mount.path.glob(BIG_NAME), *view.mount.path.glob(f"*/{BIG_NAME}")]:
        ranges_mb_s(big, ((0, big.stat().st_size),), 128 << 10)
    rss = view.mount.rss_peak_mib()
    if rss is None:
        raise RuntimeError(f"no daemon process found for {view.mount.path}")
    return rss


VOLUMES = ("ext4", "fat32", "ntfs")
TREES = ("ext4", "ntfs")  # the partitions with the small files
MEASUREMENTS = (
    DiskMeasurement("seq_128k_cold", "sequential, 128 KiB reads, cold page cache", "MB/s", VOLUMES,
                    ALL_READERS, sequential(128 << 10), cold=True),
    DiskMeasurement("seq_128k", "sequential, 128 KiB reads, warm", "MB/s", VOLUMES, ALL_READERS,
                    sequential(128 << 10)),
    DiskMeasurement("seq_1m", "sequential, 1 MiB reads, warm", "MB/s", VOLUMES, ALL_READERS, sequential(1 << 20)),
    DiskMeasurement("find", "`find` over the partition, fresh mount", "s", TREES, PEERS, walk_seconds(["find"])),
    DiskMeasurement("ls_lR", "`ls -lR` over the partition, fresh mount", "s", TREES, PEERS,
                    walk_seconds(["ls", "-lR"])),
    DiskMeasurement("cp_r", "`cp -r` of the partition's whole tree into /dev/shm, fresh mount", "s", ("ntfs",),
                    PEERS, copy_seconds),
    DiskMeasurement("rss", "daemon peak RSS (VmHWM) after `ls -lR MNT` + reading every /bigfile in MNT", "MiB",
                    TREES, PEERS, whole_workload_rss),
)


def serves(reader: str, volume: Volume) -> bool:
    """raw and imgfs read every partition; a peer only the partition it is the driver of."""
    return reader in ("raw", "imgfs") or reader == volume.peer


@contextmanager
def session(setup: DiskSetup, reader: str, volume: Volume) -> Iterator[View]:
    """``volume`` as ``reader`` serves it: the disk image itself for raw, else a fresh mount."""
    if reader == "raw":
        yield View(setup.images.disk, volume.big, None, None)
        return
    image = setup.images.disk if reader == "imgfs" else volume.part_image
    assert image is not None
    with mounted(reader, image) as mount:
        root = mount.path / volume.folder if reader == "imgfs" else mount.path
        yield View(root / BIG_NAME, ((0, volume.big_size),), root, mount)


def run_suite(setup: DiskSetup) -> list[dict]:
    """All runs; each run is {"FS.measurement": {reader: value}} plus the mount-ready times seen."""
    runs = []
    for index in range(setup.runs):
        turn = index % len(setup.readers)
        order = setup.readers[turn:] + setup.readers[:turn]
        setup.log(f"disk run {index + 1}/{setup.runs}, readers in order {', '.join(order)}")
        runs.append(one_run(setup, order))
    return runs


def one_run(setup: DiskSetup, order: tuple[str, ...]) -> dict:
    ready: dict[str, list[float]] = {r: [] for r in order if r != "raw"}
    run: dict = {"ready_s": ready}
    for m in MEASUREMENTS:
        if m.cold and not setup.cold:
            continue
        for fs in m.volumes:
            run[f"{fs}.{m.key}"] = measure(setup, m, setup.volumes[fs], order, ready)
    run["ready_s"] = {r: statistics.median(v) for r, v in ready.items() if v}
    # copy everything off the ext4 partition: imgfs and fuse2fs mount its image, 7-Zip extracts it
    mounters = tuple(r for r in order if r in ("imgfs", FUSE2FS))  # ntfs-3g cannot read ext4
    copies = copyall.copy_round(setup.images.ext4, mounters, mounted, setup.problems, lambda: warm_images(setup),
                                extract_with=("7zz x",))
    run["ext4.copy_all"], run["ext4.tar_all"] = copies["copy_all"], copies["tar_all"]
    setup.log("  ext4.copy_all " + "  ".join(f"{r}={v:.3f}" for r, v in copies["copy_all"].items()))
    return run


def measure(setup: DiskSetup, m: DiskMeasurement, volume: Volume, order: tuple[str, ...],
            ready: dict[str, list[float]]) -> dict[str, float]:
    """One measurement of one partition by every reader in ``order``; each FUSE reader on a fresh mount."""
    if not m.cold:
        warm_images(setup)  # cheap when they are cached already; undoes a cold measurement
    values = {}
    for reader in (r for r in order if r in m.readers and serves(r, volume)):
        if m.cold:
            images.drop_caches()
        with session(setup, reader, volume) as view:
            values[reader] = m.work(setup, view)
            if view.mount is not None and not m.cold:  # a cold mount also reloads Python from disk
                ready[reader].append(view.mount.ready_s)
    setup.log(f"  {volume.fs + '.' + m.key:20s} " + "  ".join(f"{r}={v:,.3f}" for r, v in values.items()))
    return values


def warm_images(setup: DiskSetup) -> None:
    images.warm(setup.images.disk)
    if FUSE2FS in setup.readers:
        images.warm(setup.images.ext4)
    if NTFS3G in setup.readers:
        images.warm(setup.images.ntfs)


def verify(setup: DiskSetup) -> dict:
    """Once per FUSE reader and partition: are /bigfile's bytes and size right; which entries are there?"""
    checks: dict = {}
    listings: dict[str, list[str]] = {}
    for fs, volume in setup.volumes.items():
        for reader in (r for r in setup.readers if r != "raw" and serves(r, volume)):
            name = f"{fs} via {reader}"
            with session(setup, reader, volume) as view:
                listings[name] = listing(view.root)
                checks[name] = {"entries": len(listings[name]), **check_view(setup, volume, view, reader)}
    compare_listings(setup, listings)
    return checks


def check_view(setup: DiskSetup, volume: Volume, view: View, reader: str) -> dict:
    sample = [0, volume.big_size - RANDOM_READ_SIZE, *random_offsets(volume.big_size, 500, seed=volume.number)]
    bad = mismatched_blocks(view.path, setup.images.disk, volume.big, sample)
    size = view.path.stat().st_size
    if bad:
        setup.problems.append(f"{reader}: {len(bad)} of {len(sample)} sampled 4 KiB blocks of {volume.fs} "
                              f"/{BIG_NAME} differ from the disk image (first at file offset {bad[0]:,})")
    if size != volume.big_size:
        setup.problems.append(f"{reader}: {volume.fs} /{BIG_NAME} has size {size:,}, the image {volume.big_size:,}")
    return {"blocks_checked": len(sample), "blocks_wrong": len(bad), "bigfile_size": size}


def mismatched_blocks(path: Path, disk: Path, ranges: Ranges, offsets: list[int]) -> list[int]:
    """Offsets where the mounted file and /bigfile's ranges in the disk image disagree."""
    with open(path, "rb", buffering=0) as got, open(disk, "rb", buffering=0) as want:
        return [offset for offset in offsets
                if os.pread(got.fileno(), RANDOM_READ_SIZE, offset)
                != read_ranges(want.fileno(), ranges, offset, RANDOM_READ_SIZE)]


def read_ranges(fd: int, ranges: Ranges, offset: int, length: int) -> bytes:
    """``length`` bytes from ``offset`` of the file that ``ranges`` of ``fd`` make up."""
    out = bytearray()
    for start, size in ranges:
        if offset < size and len(out) < length:
            out += os.pread(fd, min(size - offset, length - len(out)), start + offset)
        offset = max(0, offset - size)
    return bytes(out)


def listing(root: Optional[Path]) -> list[str]:
    """Every entry below ``root`` with its type and size, as find sees it."""
    assert root is not None
    out = subprocess.run(["find", str(root), "-mindepth", "1", "-printf", r"%P %y %s\n"], capture_output=True,
                         text=True, check=True).stdout
    return sorted(out.splitlines())


def compare_listings(setup: DiskSetup, listings: dict[str, list[str]]) -> None:
    """imgfs and each peer must show the same tree, and imgfs as many entries as were put in. Folder sizes
    are left out of the comparison: ntfs-3g and imgfs do not count an NTFS folder's size alike."""
    for fs, count in setup.entries.items():
        ours = listings[f"{fs} via imgfs"]
        peer_name = setup.volumes[fs].peer
        peer = listings.get(f"{fs} via {peer_name}")
        if fs == "ntfs":
            ours, peer = _without_folder_sizes(ours), peer and _without_folder_sizes(peer)
        if peer is not None and ours != peer:
            only_ours, only_peer = sorted(set(ours) - set(peer)), sorted(set(peer) - set(ours))
            setup.problems.append(f"{fs} tree: imgfs and {peer_name} differ ({len(ours):,} and {len(peer):,} "
                                  f"entries): only in imgfs {only_ours[:3]}, only in {peer_name} {only_peer[:3]}")
        if len(ours) != count:
            setup.problems.append(f"{fs} tree: imgfs shows {len(ours):,} entries, the image holds {count:,}")


def _without_folder_sizes(listing: list[str]) -> list[str]:
    return [line.rsplit(" ", 1)[0] if line.rsplit(" ", 2)[1] == "d" else line for line in listing]
