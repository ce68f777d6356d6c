"""The DMG part's measurement loop: /bigfile of an HFS+ volume inside UDZO, ULFO and UDBZ images.

Readers, each given the same .dmg (in the page cache: decoding, not the disk, sets the pace):

* imgfs: the .dmg mounted; /bigfile read front to back in 128 KiB ``os.pread`` calls, as in the other
  parts (the kernel turns them into 1 MiB FUSE READs: imgfs raises the mount's readahead as root);
  the daemon's CPU time over the read (from /proc/PID/stat) and its peak RSS (VmHWM) after it;
* 7zz: ``7zz e -so X.dmg VOLUME/bigfile`` (7-Zip opens the UDIF image, the HFS+ volume in it and
  extracts the one file) with its stdout on /dev/null: wall time, CPU time and peak RSS of the process;
* dmg2img: ``dmg2img -s X.dmg /dev/null``, the whole image converted to a raw disk image (the HFS+
  volume: /bigfile plus a few hundred KB), thrown away: its MB/s is of the whole volume.

Random 4 KiB reads are imgfs's alone (the others have no random access): within a 32 MiB stretch of
/bigfile (a working set that fits the default 64 MiB cache: every chunk should be decoded once), and
over the whole file (16x the cache: most reads decode a chunk).

As in the other parts: the readers of one measurement follow each other directly, their order rotates
from run to run, every imgfs measurement gets a fresh mount. The instrumented daemon (dmgprobe.py) and
the library-path runs come after the timed runs and count what the timed runs cannot see.
"""

from __future__ import annotations

import collections
import hashlib
import json
import os
import random
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

from benchlib import copyall, images, subject
from benchlib.dmgimage import CODECS, MIB, DmgSet
from benchlib.images import BIG_NAME
from benchlib.mounts import mounted
from benchlib.opticalimage import sha256_range
from benchlib.workloads import RANDOM_READ_SIZE, Target, count_entries, random_reads_per_s, ranges_mb_s

IMGFS, SEVENZIP, DMG2IMG = "imgfs", "7zz", "dmg2img"
ALL_READERS = (IMGFS, SEVENZIP, DMG2IMG)
SEQ_BLOCK = 128 << 10
HOT_REGION = 32 * MIB
PROBE_SCRIPT = Path(__file__).resolve().with_name("dmgprobe.py")
DMG2IMG_DIR = Path("/dev/shm/imgfs-bench-dmg2img")
CLOCK_TICK = os.sysconf("SC_CLK_TCK")


@dataclass
class DmgSetup:
    images: DmgSet
    hot_offsets: list[int]  # offsets in /bigfile, the same for every run
    wide_offsets: list[int]
    readers: tuple[str, ...]  # ALL_READERS without the peers that are not installed
    runs: int
    python: str  # the imgfs venv's interpreter, for the instrumented daemon and the library runs
    log: Callable[[str], None]
    dmg2img_codecs: set[str] = field(default_factory=set)  # the codecs dmg2img converted right (verify)
    problems: list[str] = field(default_factory=list)

    @property
    def big_size(self) -> int:
        return self.images.big_size

    @property
    def member(self) -> str:
        """/bigfile as 7-Zip names it: under the volume's name."""
        return f"{self.images.label}/{BIG_NAME}"


def hot_offsets(size: int, count: int, seed: int = 3) -> list[int]:
    """``count`` aligned offsets in HOT_REGION bytes from the middle of the file."""
    rng = random.Random(seed)
    start = (size // 2) // RANDOM_READ_SIZE * RANDOM_READ_SIZE
    blocks = min(HOT_REGION, size - start) // RANDOM_READ_SIZE
    return [start + rng.randrange(blocks) * RANDOM_READ_SIZE for _ in range(count)]


# -- processes ------------------------------------------------------------------------------------


@dataclass
class Timed:
    wall_s: float
    cpu_s: float  # user + system of the process (all its threads)
    maxrss_mib: float
    returncode: int
    output: str  # stderr, then stdout when it was captured


def timed(cmd: list[str], stdout=subprocess.DEVNULL) -> Timed:  # noqa: ANN001
    """Run ``cmd``: its wall time, CPU time, peak RSS and how it ended (rusage from wait4: its own only)."""
    with tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=stdout, stderr=err, stdin=subprocess.DEVNULL)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        err.seek(0)
        message = err.read().decode("utf-8", "replace").strip()
    return Timed(wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024, proc.returncode, message)


def process_cpu_s(pid: Optional[int]) -> float:
    """User + system seconds of a running process, all threads (from /proc/PID/stat)."""
    if pid is None:
        return float("nan")
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICK


def machine_busy() -> tuple[int, int]:
    """(busy ticks, all ticks) of all CPUs so far, from /proc/stat (busy: all but idle and iowait)."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    total = sum(values[:8])
    return total - values[3] - values[4], total


def busy_fraction(before: tuple[int, int], after: tuple[int, int]) -> float:
    return (after[0] - before[0]) / max(1, after[1] - before[1])


def cpu_steal() -> tuple[int, int]:
    """(steal ticks, all ticks) of the machine so far: a VM whose host is busy loses time here."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    return values[7], sum(values[:8])


# -- one run --------------------------------------------------------------------------------------


def run_suite(setup: DmgSetup) -> list[dict]:
    runs = []
    for index in range(setup.runs):
        turn = index % len(setup.readers)
        order = setup.readers[turn:] + setup.readers[:turn]
        setup.log(f"dmg run {index + 1}/{setup.runs}, readers in order {', '.join(order)}")
        runs.append(one_run(setup, order))
    return runs


def one_run(setup: DmgSetup, order: tuple[str, ...]) -> dict:
    run: dict = {}
    for codec, dmg in setup.images.dmgs.items():
        images.warm(dmg)
        seq, cores, rss = run[f"{codec}.seq"], run[f"{codec}.seq_cores"], run[f"{codec}.rss"] = {}, {}, {}
        machine = run[f"{codec}.seq_machine"] = {}
        for reader in order:
            if reader == DMG2IMG and codec not in setup.dmg2img_codecs:
                continue
            if reader == IMGFS:
                with mounted(IMGFS, dmg) as mount:
                    before, busy = process_cpu_s(mount.pid), machine_busy()
                    seq[reader] = ranges_mb_s(mount.path / BIG_NAME, ((0, setup.big_size),), SEQ_BLOCK)
                    machine[reader] = busy_fraction(busy, machine_busy())
                    cores[reader] = (process_cpu_s(mount.pid) - before) / (setup.big_size / seq[reader] / 1e6)
                    rss[reader] = mount.rss_peak_mib()
                    run[f"{codec}.ready_s"] = {IMGFS: mount.ready_s}
                continue
            busy = machine_busy()
            if reader == SEVENZIP:
                done, produced = timed([SEVENZIP, "e", "-so", str(dmg), setup.member]), setup.big_size
            else:
                done, produced = timed([DMG2IMG, "-s", str(dmg), "/dev/null"]), setup.images.reference["hfs_size"]
            machine[reader] = busy_fraction(busy, machine_busy())
            if done.returncode:
                setup.problems.append(f"{reader} on {dmg.name} exited {done.returncode}: {done.output[:300]}")
            seq[reader] = produced / done.wall_s / 1e6
            cores[reader] = done.cpu_s / done.wall_s
            rss[reader] = done.maxrss_mib
        after_random = {}
        for key, offsets in (("random_hot", setup.hot_offsets), ("random_wide", setup.wide_offsets)):
            with mounted(IMGFS, dmg) as mount:
                run[f"{codec}.{key}"] = {IMGFS: random_reads_per_s(Target(mount.path / BIG_NAME, 0, setup.big_size),
                                                                   offsets)}
                after_random[key] = mount.rss_peak_mib()
        setup.log(f"  {CODECS[codec]} sequential MB/s " + "  ".join(f"{r}={v:,.1f}" for r, v in seq.items())
                  + "; cores " + "  ".join(f"{r}={v:.2f}" for r, v in cores.items())
                  + f"; random reads/s hot={run[f'{codec}.random_hot'][IMGFS]:,.0f} "
                  f"wide={run[f'{codec}.random_wide'][IMGFS]:,.1f}; imgfs RSS {rss.get(IMGFS, 0):.0f} MiB "
                  f"(after random: {after_random['random_hot']:.0f}, {after_random['random_wide']:.0f})")
        run[f"{codec}.rss_random"] = {IMGFS: after_random["random_hot"]}
        run[f"{codec}.rss_wide"] = {IMGFS: after_random["random_wide"]}
    # copy everything off the zlib image: through the mount, and with 7-Zip (it reads the DMG's HFS+ itself)
    dmg = setup.images.dmgs["zlib"]
    copies = copyall.copy_round(dmg, (IMGFS,), mounted, setup.problems, lambda: images.warm(dmg),
                                extract_with=("7zz x",))
    run["zlib.copy_all"], run["zlib.tar_all"] = copies["copy_all"], copies["tar_all"]
    setup.log("  UDZO copy_all " + "  ".join(f"{r}={v:.3f}" for r, v in copies["copy_all"].items()))
    return run


# -- the instrumented daemon ----------------------------------------------------------------------


PROBE_WORKLOADS = ("seq", "random_hot", "random_wide", "seq_arenas", "random_wide_arenas")
ARENAS = {"MALLOC_ARENA_MAX": "2"}  # glibc's per-thread malloc arenas capped: what it does to the RSS


def probe_pass(setup: DmgSetup) -> dict:
    """Each workload once more on an instrumented daemon: what the cache and the decoders did; and the
    sequential read once more with glibc's malloc arenas capped at 2, for the RSS."""
    out: dict = {}
    for codec, dmg in setup.images.dmgs.items():
        images.warm(dmg)
        for key in PROBE_WORKLOADS:
            try:
                result = probe_one(setup, dmg, key)
            except (OSError, subprocess.CalledProcessError, RuntimeError, ValueError, KeyError) as exc:
                # the wrappers name imgfs internals (UdifDisk.chunk, ...): a renamed one must not cost the run
                setup.problems.append(f"instrumented daemon, {CODECS[codec]} {key}: {type(exc).__name__}: {exc}")
                continue
            out[f"{codec}.{key}"] = result
            setup.log(f"  probe {CODECS[codec]} {key}: {result['value']:,.1f} {result['unit']}, cache hit rate "
                      f"{result['cache_hit_rate']:.3f}, {result['decodes']:,} decodes of {result['chunks_touched']:,} "
                      f"chunks touched, {result['decodes_by_workers']:,} by the read-ahead workers; peak RSS "
                      f"{result['rss_mib']:.0f} MiB, {result['threads']} threads")
    return out


def probe_one(setup: DmgSetup, dmg: Path, key: str) -> dict:
    fd, report = tempfile.mkstemp(prefix="imgfs-dmg-probe-", suffix=".json")
    os.close(fd)
    os.unlink(report)
    env = {**subject.python_env(), "IMGFS_BENCH_PROBE": report, **(ARENAS if key.endswith("_arenas") else {})}
    try:
        with mounted(IMGFS, dmg, command=[setup.python, "-P", str(PROBE_SCRIPT)], env=env) as mount:
            target = Target(mount.path / BIG_NAME, 0, setup.big_size)
            before = process_cpu_s(mount.pid)
            start = time.perf_counter()
            if key.startswith("seq"):
                value, unit = ranges_mb_s(target.path, ((0, setup.big_size),), SEQ_BLOCK), "MB/s"
            else:
                offsets = setup.hot_offsets if key == "random_hot" else setup.wide_offsets  # random_wide*
                value, unit = random_reads_per_s(target, offsets), "reads/s"
            end = time.perf_counter()
            cpu = process_cpu_s(mount.pid) - before
            rss = mount.rss_peak_mib()
            threads = process_threads(mount.pid)
            ready = mount.ready_s
        events = json.loads(Path(report).read_text())
    finally:
        Path(report).unlink(missing_ok=True)
    return {"value": value, "unit": unit, "daemon_cpu_s": cpu, "wall_s": end - start, "rss_mib": rss,
            "threads": threads, "ready_s": ready, **analyze(events, start, end)}


def process_threads(pid: Optional[int]) -> int:
    if pid is None:
        return 0
    line = next(x for x in Path(f"/proc/{pid}/status").read_text().splitlines() if x.startswith("Threads:"))
    return int(line.split()[1])


def analyze(events: dict, start: float, end: float) -> dict:
    """What happened in the daemon between ``start`` and ``end`` (the workload; the mount's own reads of
    the volume's metadata before it are left out). Times are perf_counter seconds, the same clock in
    every process of the machine."""
    def inside(t: float) -> bool:
        return start <= t <= end

    reads = [r for r in events["reads"] if inside(r[3])]
    chunks = [c for c in events["chunks"] if inside(c[3])]
    decodes = [d for d in events["decodes"] if inside(d[2])]
    by_reader = [c for c in chunks if not c[0].startswith("imgfs-")]  # FUSE threads, not read-ahead jobs
    ready = sum(1 for c in by_reader if c[2])
    own = [c for c in by_reader if not c[2] and c[5]]
    waited = [c for c in by_reader if not c[2] and not c[5]]
    span = (max(r[4] for r in reads) - min(r[3] for r in reads)) if reads else 0.0
    decode_wall = sum(d[3] - d[2] for d in decodes)
    in_flight = _levels([(d[2], d[3]) for d in decodes])
    counts = collections.Counter(d[1] for d in decodes)
    cache = events["cache"]
    sizes = collections.Counter(r[2] for r in reads)
    return {
        "fuse_reads": len(reads),
        "fuse_read_size": sizes.most_common(1)[0][0] if sizes else 0,
        "fuse_reads_in_flight_max": max(_levels([(r[3], r[4]) for r in reads]) or [0]),
        "fuse_read_s": sum(r[4] - r[3] for r in reads),
        "span_s": span,
        # BlockCache.stats() of the whole mount (a get that waits for a decode in progress is a hit)
        "cache": cache,
        "cache_hit_rate": cache["hits"] / max(1, cache["hits"] + cache["misses"]),
        # the FUSE threads' requests for chunks during the workload
        "chunk_gets": len(by_reader),
        "chunk_gets_ready": ready,  # decoded and in the cache when asked for
        "chunk_gets_waited": len(waited),  # a read-ahead worker (or another FUSE thread) was decoding it
        "chunk_gets_decoded": len(own),  # this thread decoded it
        "reader_hit_rate": ready / max(1, len(by_reader)),
        "wait_s": sum(c[4] - c[3] for c in waited),  # time FUSE threads spent waiting for others' decodes
        "own_decode_s": sum(c[4] - c[3] for c in own),
        "chunks_touched": len({c[1] for c in by_reader}),
        "decodes": len(decodes),
        "distinct_decoded": len(counts),
        "repeat_decodes": sum(n - 1 for n in counts.values()),
        "decodes_by_workers": sum(1 for d in decodes if d[0].startswith("imgfs-")),
        "decode_wall_s": decode_wall,
        "decode_cpu_s": sum(d[4] for d in decodes),
        "decodes_in_flight_avg": decode_wall / span if span else 0.0,
        "decode_level_s": {str(level): s for level, s in sorted(in_flight.items())},
        # before the workload: opening the volume (in the mount command, before it forks) and listing /
        "mount_decodes": sum(1 for d in events["decodes"] if d[2] < start),
        "mount_decodes_by_workers": sum(1 for d in events["decodes"] if d[2] < start and d[0].startswith("imgfs-")),
        "mount_decode_s": sum(d[3] - d[2] for d in events["decodes"] if d[2] < start),
        "daemon_user_s": events["user_s"], "daemon_sys_s": events["sys_s"],
    }


def _levels(spans: list[tuple[float, float]]) -> collections.Counter:
    """Seconds during which 0, 1, 2, ... of ``spans`` were under way (from the first start to the last end)."""
    edges = sorted([(s, 1) for s, _ in spans] + [(e, -1) for _, e in spans])
    out: collections.Counter = collections.Counter()
    level, last = 0, None
    for t, step in edges:
        if last is not None:
            out[level] += t - last
        level += step
        last = t
    return out


# -- the library path -----------------------------------------------------------------------------

# In the imgfs venv, one fresh interpreter per image: the codec alone on one and on two threads, then
# /bigfile read through the library (no FUSE) in 1 MiB reads, with imgfs's read-ahead off and on.
LIBRARY = r"""
import json, sys, threading, time
from imgfs.cli import _tune_malloc
from imgfs.image import open_image
from imgfs.containers.dmg import codecs
from imgfs.containers.dmg.disk import UdifDisk
from imgfs.io.readahead import READ_AHEAD

def quiet():  # opening the volume starts read-ahead jobs: let them end before anything is timed
    while READ_AHEAD.pending():
        time.sleep(0.01)

_tune_malloc()  # as the daemon does: without it, every fresh 1 MiB output grows and trims the heap
path, limit, sample = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
out = {}
image = open_image(path)
quiet()
disk = next(x for x in image.opened if isinstance(x, UdifDisk))
chunks = [i for i, p in enumerate(disk.pieces) if p.kind in codecs.DECODERS]
chunks = chunks[:: max(1, len(chunks) // sample)][:sample]  # spread over the whole image
raw = [(disk.pieces[i].kind, disk.data.pread(disk.pieces[i].source, disk.pieces[i].source_length),
        disk.pieces[i].length) for i in chunks]
made = sum(n for _, _, n in raw)
def work():
    for kind, data, size in raw:
        codecs.decode(kind, data, size)
for threads in (1, 2):
    best = None
    for _ in range(3):  # the best of three: this machine's speed wanders from second to second
        workers = [threading.Thread(target=work) for _ in range(threads)]
        quiet()
        wall, cpu = time.perf_counter(), time.process_time()
        for w in workers: w.start()
        for w in workers: w.join()
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        if best is None or threads * made / wall / 1e6 > best["mb_s"]:
            best = {"mb_s": threads * made / wall / 1e6, "cores": cpu / wall}
    out[f"codec_{threads}t"] = best
image.close()
for ahead in (False, True):
    image = open_image(path)
    disk = next(x for x in image.opened if isinstance(x, UdifDisk))
    if not ahead:
        disk._read_ahead = None
    stream = image.tree.open("/bigfile")
    buf = memoryview(bytearray(1 << 20))
    size = min(limit, stream.size)
    quiet()
    wall, cpu = time.perf_counter(), time.process_time()
    for at in range(0, size, len(buf)):
        stream.readinto(at, buf[: min(len(buf), size - at)])
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    out["read_ahead" if ahead else "no_read_ahead"] = {"mb_s": size / wall / 1e6, "cores": cpu / wall,
                                                       "cache": image.cache.stats()}
    image.close()
print(json.dumps(out))
"""


def library_pass(setup: DmgSetup, seq_mib: dict[str, int], sample: dict[str, int]) -> dict:
    """Per codec: the codec alone (1 and 2 threads), and /bigfile through the library without FUSE."""
    out = {}
    for codec, dmg in setup.images.dmgs.items():
        images.warm(dmg)
        done = subprocess.run([setup.python, "-c", LIBRARY, str(dmg), str(seq_mib[codec] * MIB), str(sample[codec])],
                              capture_output=True, text=True, cwd="/", env=subject.python_env())
        if done.returncode:
            setup.problems.append(f"library pass on {dmg.name} failed: {done.stderr[-300:]}")
            continue
        out[codec] = {**json.loads(done.stdout), "seq_mib": seq_mib[codec], "sample_chunks": sample[codec]}
        r = out[codec]
        setup.log(f"  library {CODECS[codec]}: codec {r['codec_1t']['mb_s']:,.0f} MB/s on 1 thread, "
                  f"{r['codec_2t']['mb_s']:,.0f} on 2; read {r['no_read_ahead']['mb_s']:,.0f} MB/s without "
                  f"read-ahead, {r['read_ahead']['mb_s']:,.0f} with")
    return out


# -- checks ---------------------------------------------------------------------------------------


def verify(setup: DmgSetup) -> dict:
    """/bigfile through imgfs and 7-Zip against the reference sha256; dmg2img's output against the volume.

    Run before the timed runs: it decides for which codecs dmg2img is measured (it converts an image
    with chunks it cannot decode into an empty file and exits 0)."""
    ref = setup.images.reference
    checks: dict = {"bigfile_sha256": ref["bigfile_sha256"], "hfs_sha256": ref["hfs_sha256"]}
    for codec, dmg in setup.images.dmgs.items():
        fmt = CODECS[codec]
        setup.log(f"  checking {dmg.name}")
        with mounted(IMGFS, dmg) as mount:
            path = mount.path / BIG_NAME
            got = sha256_range(path, 0, setup.big_size)
            checks[f"{codec} via imgfs"] = {"sha256_ok": got == ref["bigfile_sha256"], "size": path.stat().st_size,
                                            "entries": count_entries(mount.path)}
        c = checks[f"{codec} via imgfs"]
        if not c["sha256_ok"] or c["size"] != setup.big_size:
            setup.problems.append(f"imgfs: /{BIG_NAME} of the {fmt} image differs from the one written "
                                  f"(sha256 {got[:16]}…, size {c['size']:,})")
        if c["entries"] != setup.images.entries:
            setup.problems.append(f"imgfs: {c['entries']} entries in the {fmt} image, {setup.images.entries} written")
        if SEVENZIP in setup.readers:
            checks[f"{codec} via 7zz"] = seven_zip_check(setup, dmg)
        if DMG2IMG in setup.readers:
            checks[f"{codec} via dmg2img"] = dmg2img_check(setup, dmg, codec)
    return checks


def seven_zip_check(setup: DmgSetup, dmg: Path) -> dict:
    digest, size = hashlib.sha256(), 0
    proc = subprocess.Popen([SEVENZIP, "e", "-so", str(dmg), setup.member], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    assert proc.stdout is not None
    while piece := proc.stdout.read(8 * MIB):
        digest.update(piece)
        size += len(piece)
    err = proc.stderr.read().decode("utf-8", "replace") if proc.stderr else ""
    proc.wait()
    ok = digest.hexdigest() == setup.images.reference["bigfile_sha256"] and size == setup.big_size
    if not ok or proc.returncode:
        setup.problems.append(f"7zz: {setup.member} of {dmg.name} is {size:,} bytes with sha256 "
                              f"{digest.hexdigest()[:16]}… (exit {proc.returncode}) {err[-200:]}")
    return {"sha256_ok": ok, "size": size}


def dmg2img_check(setup: DmgSetup, dmg: Path, codec: str) -> dict:
    shutil.rmtree(DMG2IMG_DIR, ignore_errors=True)
    DMG2IMG_DIR.mkdir(parents=True)
    out = DMG2IMG_DIR / "volume.img"
    try:
        done = subprocess.run([DMG2IMG, str(dmg), str(out)], capture_output=True, text=True)
        size = out.stat().st_size if out.exists() else 0
        ok = size == setup.images.reference["hfs_size"] and sha256_range(out, 0, size) == \
            setup.images.reference["hfs_sha256"]
    finally:
        shutil.rmtree(DMG2IMG_DIR, ignore_errors=True)
    said = "; ".join(dict.fromkeys(line.strip() for line in (done.stdout + done.stderr).splitlines()
                                   if "nsupported" in line or "rror" in line))[:200]
    if ok:
        setup.dmg2img_codecs.add(codec)
    elif "nsupported" not in said:
        setup.problems.append(f"dmg2img: its conversion of {dmg.name} is not the volume ({size:,} bytes, "
                              f"exit {done.returncode}): {said}")
    return {"ok": ok, "size": size, "returncode": done.returncode, "said": said}
