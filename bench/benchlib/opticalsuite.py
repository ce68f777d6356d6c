"""The optical part's measurement loop: a MODE1/2352 BIN/CUE, an audio BIN/CUE, and the whole data disc.

Readers:

* raw: ``os.pread`` of the BIN itself. For /bigfile it reads the raw 2352-byte sectors that hold the
  file (2352/2048 = 1.148x the file's bytes, what imgfs must read too); for the WAV, the PCM bytes.
* imgfs: the .cue mounted (the data track's ISO 9660 at the root; the audio track as ``Track 01.wav``).
* fuseiso: the .bin mounted (it finds the ISO 9660 in the raw sectors by itself; it ignores cue sheets
  and audio).
* bchunk: ``bchunk disc.bin disc.cue OUT`` converts the data track back to a 2048-byte ISO (whole disc
  only), written to tmpfs (/dev/shm) so that the time is its reading and converting, not a disk's writing.

As in the other parts, the readers of one measurement follow each other directly, their order rotates
from run to run, every FUSE measurement gets a fresh mount, and a cold measurement drops the page cache
right before each reader.
"""

from __future__ import annotations

import os
import shutil
import statistics
import struct
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

from benchlib import images
from benchlib.images import BIG_NAME, BigFile
from benchlib.mounts import Mount, mounted, wait_until_mounted
from benchlib.opticalimage import RAW, Disc, Span, data_span, sha256_range
from benchlib.workloads import count_entries, ranges_mb_s, run_measured

FUSEISO, BCHUNK = "fuseiso", "bchunk"
ALL_READERS = ("raw", "imgfs", FUSEISO, BCHUNK)
WAV_NAME = "Track 01.wav"
WAV_HEADER = 44
BCHUNK_DIR = Path("/dev/shm/imgfs-bench-bchunk")
# GNU tar does not read the files at all when its archive is /dev/null: `tar cf /dev/null MNT` measures
# nothing. cat reads every file in 128 KiB requests (checked with strace).
WHOLE_TREE = 'find "$1" -type f -exec cat {} + > /dev/null'


@dataclass
class OpticalSetup:
    iso: Path  # the ISO part's image the data disc was made from
    data: Disc  # MODE1/2352
    audio: Disc  # one AUDIO track
    big: BigFile  # /bigfile in the ISO
    pcm_size: int  # bytes of PCM in the audio BIN
    expected_entries: int  # what find should see on the data disc
    readers: tuple[str, ...]  # ALL_READERS, without the peers that are not installed
    runs: int
    cold: bool
    log: Callable[[str], None]
    problems: list[str] = field(default_factory=list)

    @property
    def span(self) -> Span:
        return data_span(self.big.offset, self.big.size)


@dataclass(frozen=True)
class View:
    """What one reader reads: ``ranges`` of ``path``, worth ``content`` bytes of file; or a whole tree."""

    path: Path
    ranges: tuple[tuple[int, int], ...]
    content: int  # bytes of /bigfile or PCM that the ranges stand for (raw reads more for /bigfile)
    mount: Optional[Mount]


Work = Callable[[OpticalSetup, str, View], float]


@dataclass(frozen=True)
class OpticalMeasurement:
    key: str
    label: str
    disc: str  # "data" or "audio"
    unit: str
    readers: tuple[str, ...]
    work: Work
    cold: bool = False


def sequential(block: int) -> Work:
    """MB/s of file content: content bytes over the time it took to read the ranges."""
    def work(setup: OpticalSetup, reader: str, view: View) -> float:
        read = sum(length for _, length in view.ranges)
        return ranges_mb_s(view.path, view.ranges, block) * view.content / read
    return work


def whole_disc(setup: OpticalSetup, reader: str, view: View) -> float:
    """Seconds to read the whole data disc: every file of the mount, the BIN, or bchunk's conversion."""
    if reader == BCHUNK:
        return bchunk_seconds(setup)
    if reader == "raw":
        command = ["cat", str(view.path)]
    else:
        assert view.mount is not None
        command = ["sh", "-c", WHOLE_TREE, "sh", str(view.mount.path)]
    done = run_measured(command)
    if done.returncode:
        setup.problems.append(f"whole disc via {reader}: `{' '.join(command)}` exited {done.returncode}: "
                              f"{done.stderr[:300]}")
    return done.wall_s


def bchunk_seconds(setup: OpticalSetup, keep: bool = False) -> float:
    """``bchunk BIN CUE /dev/shm/.../track``: wall seconds; the output is removed unless ``keep``."""
    shutil.rmtree(BCHUNK_DIR, ignore_errors=True)
    BCHUNK_DIR.mkdir(parents=True)
    try:
        done = run_measured([BCHUNK, str(setup.data.bin), str(setup.data.cue), str(BCHUNK_DIR / "track")])
        if done.returncode:
            setup.problems.append(f"bchunk exited {done.returncode}: {done.stderr[:300]}")
        return done.wall_s
    finally:
        if not keep:
            shutil.rmtree(BCHUNK_DIR, ignore_errors=True)


DATA_READERS = ("raw", "imgfs", FUSEISO)
WAV_READERS = ("raw", "imgfs")
MEASUREMENTS = (
    OpticalMeasurement("data.seq_128k_cold", "/bigfile sequential, 128 KiB reads, cold page cache", "data", "MB/s",
                       DATA_READERS, sequential(128 << 10), cold=True),
    OpticalMeasurement("data.seq_128k", "/bigfile sequential, 128 KiB reads, warm", "data", "MB/s", DATA_READERS,
                       sequential(128 << 10)),
    OpticalMeasurement("data.seq_1m", "/bigfile sequential, 1 MiB reads, warm", "data", "MB/s", DATA_READERS,
                       sequential(1 << 20)),
    OpticalMeasurement("wav.seq_128k_cold", "WAV streaming, 128 KiB reads, cold page cache", "audio", "MB/s",
                       WAV_READERS, sequential(128 << 10), cold=True),
    OpticalMeasurement("wav.seq_128k", "WAV streaming, 128 KiB reads, warm", "audio", "MB/s", WAV_READERS,
                       sequential(128 << 10)),
    OpticalMeasurement("wav.seq_1m", "WAV streaming, 1 MiB reads, warm", "audio", "MB/s", WAV_READERS,
                       sequential(1 << 20)),
    OpticalMeasurement("whole_cold", "whole data disc, cold page cache", "data", "s", ALL_READERS, whole_disc,
                       cold=True),
    OpticalMeasurement("whole", "whole data disc, warm", "data", "s", ALL_READERS, whole_disc),
)


@contextmanager
def session(setup: OpticalSetup, reader: str, disc: str) -> Iterator[View]:
    """``disc`` ("data" or "audio") as ``reader`` serves it: the BIN itself, a fresh mount, or nothing (bchunk)."""
    span = setup.span
    if reader in ("raw", BCHUNK):
        if disc == "data":
            yield View(setup.data.bin, ((span.offset, span.length),), span.size, None)
        else:
            yield View(setup.audio.bin, ((0, setup.pcm_size),), setup.pcm_size, None)
        return
    image = {("imgfs", "data"): setup.data.cue, ("imgfs", "audio"): setup.audio.cue,
             (FUSEISO, "data"): setup.data.bin}[(reader, disc)]
    with mounted(reader, image) as mount:
        if disc == "data":
            yield View(mount.path / BIG_NAME, ((0, span.size),), span.size, mount)
        else:
            yield View(mount.path / WAV_NAME, ((WAV_HEADER, setup.pcm_size),), setup.pcm_size, mount)


def run_suite(setup: OpticalSetup) -> list[dict]:
    runs = []
    for index in range(setup.runs):
        turn = index % len(setup.readers)
        order = setup.readers[turn:] + setup.readers[:turn]
        setup.log(f"optical run {index + 1}/{setup.runs}, readers in order {', '.join(order)}")
        runs.append(one_run(setup, order))
    return runs


def one_run(setup: OpticalSetup, order: tuple[str, ...]) -> dict:
    ready: dict[str, list[float]] = {r: [] for r in order if r in (FUSEISO, "imgfs")}
    run: dict = {"ready_s": ready}
    for m in MEASUREMENTS:
        if m.cold and not setup.cold:
            continue
        if not m.cold:  # cheap when they are cached already; undoes a cold measurement
            images.warm(setup.data.bin)
            images.warm(setup.audio.bin)
        values = run[m.key] = {}
        for reader in (r for r in order if r in m.readers):
            if m.cold:
                images.drop_caches()
            with session(setup, reader, m.disc) as view:
                values[reader] = m.work(setup, reader, view)
                if view.mount is not None and not m.cold and m.disc == "data":
                    ready[reader].append(view.mount.ready_s)
        setup.log(f"  {m.key:18s} " + "  ".join(f"{r}={v:,.3f}" for r, v in values.items()))
    run["ready_s"] = {r: statistics.median(v) for r, v in ready.items() if v}
    return run


def wav_header(pcm_size: int) -> bytes:
    """The RIFF header a 44.1 kHz 16-bit stereo WAV of ``pcm_size`` bytes must have (written out here, not
    taken from imgfs, so that the check is independent)."""
    return b"".join([b"RIFF", struct.pack("<I", 36 + pcm_size), b"WAVE", b"fmt ",
                     struct.pack("<IHHIIHH", 16, 1, 2, 44100, 176400, 4, 16), b"data", struct.pack("<I", pcm_size)])


def fuseiso_detection(setup: OpticalSetup) -> str:
    """What fuseiso says it found in the BIN: it prints it only in the foreground (``-f``)."""
    mnt = Path(f"/tmp/imgfs-bench-mnt/fuseiso-detect-{os.getpid()}")
    mnt.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen([FUSEISO, "-n", str(setup.data.bin), str(mnt), "-f"], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True)
    try:
        wait_until_mounted(mnt, timeout=10)
        os.listdir(mnt)
    finally:
        subprocess.run(["fusermount", "-u", str(mnt)], stderr=subprocess.DEVNULL)
        try:
            out = proc.communicate(timeout=10)[0]
        except subprocess.TimeoutExpired:
            proc.kill()
            out = proc.communicate()[0]
        try:
            mnt.rmdir()
        except OSError:
            pass
    return "; ".join(line.strip() for line in out.splitlines() if "found" in line or "block size" in line)


def verify(setup: OpticalSetup) -> dict:
    """sha256 of /bigfile through every reader against the ISO, the WAV against the BIN, entries, bchunk's ISO."""
    checks: dict = {}
    setup.log("  sha256 of /bigfile in the ISO (the reference)")
    want = sha256_range(setup.iso, setup.big.offset, setup.big.size)
    checks["bigfile_sha256"] = want
    for reader in (r for r in setup.readers if r in (FUSEISO, "imgfs")):
        with session(setup, reader, "data") as view:
            assert view.mount is not None
            started = time.perf_counter()
            got = sha256_range(view.path, 0, setup.big.size)
            size = view.path.stat().st_size
            entries = count_entries(view.mount.path)
            checks[f"data via {reader}"] = {"sha256_ok": got == want, "size": size, "entries": entries,
                                            "sha256_s": time.perf_counter() - started}
            if got != want:
                setup.problems.append(f"{reader}: /{BIG_NAME} of the BIN/CUE has sha256 {got[:16]}…, "
                                      f"the ISO's /{BIG_NAME} {want[:16]}…")
            if size != setup.big.size:
                setup.problems.append(f"{reader}: /{BIG_NAME} has size {size:,}, the ISO {setup.big.size:,}")
            if entries != setup.expected_entries:
                setup.problems.append(f"{reader}: {entries:,} entries on the data disc, the ISO holds "
                                      f"{setup.expected_entries:,}")
    if FUSEISO in setup.readers:
        checks["fuseiso_detection"] = fuseiso_detection(setup)
        if "MODE1" not in checks["fuseiso_detection"]:
            setup.problems.append(f"fuseiso did not see a MODE1 BIN: {checks['fuseiso_detection']!r}")
    setup.log("  WAV against the audio BIN")
    pcm_want = sha256_range(setup.audio.bin, 0, setup.pcm_size)
    with session(setup, "imgfs", "audio") as view:
        header = view.path.open("rb").read(WAV_HEADER)
        pcm_got = sha256_range(view.path, WAV_HEADER, setup.pcm_size)
        size = view.path.stat().st_size
    checks["wav"] = {"header_ok": header == wav_header(setup.pcm_size), "pcm_sha256_ok": pcm_got == pcm_want,
                     "size": size}
    if header != wav_header(setup.pcm_size):
        setup.problems.append(f"imgfs: the RIFF header of {WAV_NAME} is {header.hex()}, expected "
                              f"{wav_header(setup.pcm_size).hex()}")
    if pcm_got != pcm_want:
        setup.problems.append(f"imgfs: the PCM of {WAV_NAME} differs from the audio BIN")
    if size != WAV_HEADER + setup.pcm_size:
        setup.problems.append(f"imgfs: {WAV_NAME} has size {size:,}, expected {WAV_HEADER + setup.pcm_size:,}")
    if BCHUNK in setup.readers:
        setup.log("  bchunk's conversion against the ISO")
        try:
            bchunk_seconds(setup, keep=True)
            out = sorted(BCHUNK_DIR.glob("track*.iso"))
            same = len(out) == 1 and out[0].stat().st_size == setup.iso.stat().st_size and \
                sha256_range(out[0], 0, out[0].stat().st_size) == sha256_range(setup.iso, 0, setup.iso.stat().st_size)
        finally:
            shutil.rmtree(BCHUNK_DIR, ignore_errors=True)
        checks["bchunk_output_is_the_iso"] = same
        if not same:
            setup.problems.append(f"bchunk's output {[p.name for p in out]} is not the ISO the BIN was made from")
    return checks


def pcm_sectors(mb: int) -> int:
    """Sectors of audio for about ``mb`` MB (10^6 bytes) of PCM, rounded down to whole sectors."""
    return mb * 10**6 // RAW
