"""The measurement loop: every measurement, for every reader, in every run, each on a fresh mount.

Within one run the readers of a measurement follow each other directly, so that a ratio compares
numbers taken seconds apart on this noisy machine; the order of the readers rotates from run to run
so that no reader always goes first (or always right after a cache drop or a warm-up).
"""

from __future__ import annotations

import statistics
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

from benchlib import copyall, images
from benchlib.images import BIG_NAME, BigFile
from benchlib.mounts import FUSE_READERS, Mount, mounted
from benchlib.workloads import (
    IMGFS_WALK,
    PYCDLIB_OPEN,
    Target,
    count_entries,
    hashed_mb_s,
    imgfs_ls_recursive,
    in_process,
    mismatched_blocks,
    random_reads_per_s,
    run_measured,
    sequential_mb_s,
)

READERS = ("raw", *FUSE_READERS)


@dataclass
class Setup:
    image: Path
    big: BigFile
    offsets: list[int]  # the random-read offsets, the same for everyone
    runs: int
    cold: bool  # may we drop the page cache (root only)?
    log: Callable[[str], None]
    problems: list[str] = field(default_factory=list)

    def raw_target(self) -> Target:
        return Target(self.image, self.big.offset, self.big.size)


Work = Callable[[Setup, Target, Optional[Mount]], float]


@dataclass(frozen=True)
class Measurement:
    key: str
    label: str
    unit: str
    readers: tuple[str, ...]
    work: Work
    cold: bool = False


def walk_seconds(command: list[str]) -> Work:
    """Wall time of a whole-tree command on the mount; a failure is recorded, not hidden."""
    def work(setup: Setup, target: Target, mount: Optional[Mount]) -> float:
        assert mount is not None
        done = run_measured([*command, str(mount.path)])
        if done.returncode:
            setup.problems.append(f"`{' '.join(command)} MNT` exited {done.returncode}: {done.stderr[:300]}")
        return done.wall_s
    return work


def whole_workload_rss(setup: Setup, target: Target, mount: Optional[Mount]) -> float:
    """The daemon's peak RSS after everything at once: a full tree walk, a full read, random reads."""
    assert mount is not None
    walk = run_measured(["ls", "-lR", str(mount.path)])
    if walk.returncode:
        setup.problems.append(f"`ls -lR MNT` (RSS workload) exited {walk.returncode}: {walk.stderr[:300]}")
    sequential_mb_s(target, 128 << 10)
    random_reads_per_s(target, setup.offsets)
    rss = mount.rss_peak_mib()
    if rss is None:
        raise RuntimeError(f"no daemon process found for {mount.path}")
    return rss


MEASUREMENTS = (
    Measurement("seq_128k_cold", "sequential, 128 KiB reads, cold page cache", "MB/s", READERS,
                lambda s, t, m: sequential_mb_s(t, 128 << 10), cold=True),
    Measurement("seq_128k", "sequential, 128 KiB reads, warm", "MB/s", READERS,
                lambda s, t, m: sequential_mb_s(t, 128 << 10)),
    Measurement("seq_1m", "sequential, 1 MiB reads, warm", "MB/s", READERS,
                lambda s, t, m: sequential_mb_s(t, 1 << 20)),
    Measurement("seq_hashed", "sequential, 128 KiB reads, each SHA-256-hashed, warm", "MB/s", READERS,
                lambda s, t, m: hashed_mb_s(t)),
    Measurement("random_4k", "random 4 KiB reads, warm", "reads/s", READERS,
                lambda s, t, m: random_reads_per_s(t, s.offsets)),
    Measurement("find", "`find MNT`, fresh mount", "s", FUSE_READERS, walk_seconds(["find"])),
    Measurement("ls_lR", "`ls -lR MNT`, fresh mount", "s", FUSE_READERS, walk_seconds(["ls", "-lR"])),
    Measurement("rss", "daemon peak RSS (VmHWM) after ls -lR + full read + random reads", "MiB",
                FUSE_READERS, whole_workload_rss),
)


@contextmanager
def session(setup: Setup, reader: str) -> Iterator[tuple[Target, Optional[Mount]]]:
    """/bigfile as ``reader`` serves it: the image itself for raw, else a fresh mount."""
    if reader == "raw":
        yield setup.raw_target(), None
        return
    with mounted(reader, setup.image) as mount:
        yield Target(mount.path / BIG_NAME, 0, setup.big.size), mount


def run_suite(setup: Setup) -> list[dict]:
    """All runs; each run is {measurement key: {reader: value}} plus the mount-ready times seen."""
    runs = []
    for index in range(setup.runs):
        order = READERS[index % len(READERS):] + READERS[: index % len(READERS)]
        setup.log(f"run {index + 1}/{setup.runs}, readers in order {', '.join(order)}")
        runs.append(one_run(setup, order))
    return runs


def one_run(setup: Setup, order: tuple[str, ...]) -> dict:
    run: dict = {"ready_s": {r: [] for r in FUSE_READERS}}
    for m in MEASUREMENTS:
        if m.cold and not setup.cold:
            continue
        if not m.cold:
            images.warm(setup.image)  # cheap when it is cached already; undoes a cold measurement
        values = run[m.key] = {}
        for reader in (r for r in order if r in m.readers):
            if m.cold:
                images.drop_caches()
            with session(setup, reader) as (target, mount):
                values[reader] = m.work(setup, target, mount)
                if mount is not None and not m.cold:  # a cold mount also reloads Python from disk
                    run["ready_s"][reader].append(mount.ready_s)
        setup.log(f"  {m.key:14s} " + "  ".join(f"{r}={v:,.3f}" for r, v in values.items()))
    run["ready_s"] = {r: statistics.median(v) for r, v in run["ready_s"].items() if v}
    run.update(copyall.copy_round(setup.image, tuple(r for r in order if r in FUSE_READERS), mounted,
                                  setup.problems, lambda: images.warm(setup.image)))
    setup.log("  copy_all       " + "  ".join(f"{r}={v:.3f}" for r, v in run["copy_all"].items()))
    setup.log("  tar_all        " + "  ".join(f"{r}={v:.3f}" for r, v in run["tar_all"].items()))
    return run


def verify(setup: Setup) -> dict:
    """Once per FUSE reader: is the data right, is the size right, how many entries does find see?"""
    checks = {}
    sample = [0, setup.big.size - 4096, *setup.offsets[:500]]
    for reader in FUSE_READERS:
        with session(setup, reader) as (target, mount):
            assert mount is not None
            bad = mismatched_blocks(target, setup.raw_target(), sample)
            size = target.path.stat().st_size
            checks[reader] = {"entries": count_entries(mount.path), "blocks_checked": len(sample),
                              "blocks_wrong": len(bad), "bigfile_size": size}
            if bad:
                setup.problems.append(f"{reader}: {len(bad)} of {len(sample)} sampled 4 KiB blocks of "
                                      f"/{BIG_NAME} differ from the image (first at file offset {bad[0]})")
            if size != setup.big.size:
                setup.problems.append(f"{reader}: /{BIG_NAME} has size {size}, the image {setup.big.size}")
    return checks


def parse_costs(image: Path, python: str, runs: int, log: Callable[[str], None], problems: list[str]) -> dict:
    """Whole-image parse: pycdlib's eager open against imgfs's walk, listing and mount; medians."""
    samples: dict[str, list[float]] = {}

    def add(key: str, value: float) -> None:
        samples.setdefault(key, []).append(value)

    for index in range(runs):
        images.warm(image)
        pycdlib = in_process(python, PYCDLIB_OPEN, image)
        add("pycdlib_open_s", pycdlib["s"])
        add("pycdlib_rss_mib", pycdlib["maxrss_mib"])
        walk = in_process(python, IMGFS_WALK, image)
        add("imgfs_walk_s", walk["s"])
        add("imgfs_walk_rss_mib", walk["maxrss_mib"])
        add("imgfs_walk_entries", walk["entries"])
        listing = imgfs_ls_recursive(image)
        if listing.returncode:
            problems.append(f"`imgfs ls {image.name} -R` exited {listing.returncode}: {listing.stderr[:300]}")
        add("imgfs_ls_R_s", listing.wall_s)
        add("imgfs_ls_R_rss_mib", listing.maxrss_mib)
        for reader in FUSE_READERS:
            with mounted(reader, image) as mount:
                add(f"{reader}_ready_s", mount.ready_s)
        log(f"  parse run {index + 1}/{runs}: pycdlib {pycdlib['s']:.2f} s, imgfs walk {walk['s']:.2f} s, "
            f"imgfs ls -R {listing.wall_s:.2f} s")
    return {key: statistics.median(values) for key, values in samples.items()}

