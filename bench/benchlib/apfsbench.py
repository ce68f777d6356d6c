"""The APFS part: one large file and 20,000 small files in APFS DMGs written by fs-explorer.

Images (built once, kept in the cache folder): the tree (a compressible /bigfile, the DMG part's data,
and the ISO part's small files) as a raw UDRW disk (GPT + APFS, no UDIF layer: /bigfile's extents lie
at known file offsets), a UDRO DMG (uncompressed UDIF), a ULFO DMG (LZFSE), and an ISO of the same tree.

Each run, warm page cache:

* mount ready (mount command + first `ls`) of the UDRO and ULFO DMGs;
* `find` and `ls -lR` over the UDRO mount against the same tree on ISO, both mounted by imgfs;
* /bigfile read sequentially (128 KiB reads) from the UDRO mount against a raw pread of its extents in
  the UDRW disk (the same bytes, read straight from the file), warm and (as root) cold;
* /bigfile from the ULFO mount against `7zz e -so` and `fs-explorer cat` of the same file;
* the daemon's peak RSS (VmHWM) after all of that, on the UDRO and the ULFO mounts;
* for reference, the LZFSE decode ceiling: the ULFO DMG's whole disk decoded in one process by as many
  threads as there are processors (at most 2, as imgfs's read-ahead), no FUSE and no copy out. No read of
  the ULFO image through any mount can beat it, so it bounds what the ULFO target can ask of this machine.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from benchlib import dmgimage, images, subject
from benchlib.dmgsuite import timed
from benchlib.images import BIG_NAME
from benchlib.mounts import mounted
from benchlib.report import fmt, ready_verdict, rss_verdict, summarize
from benchlib.workloads import ranges_mb_s

RECIPE_VERSION = 1
HEADING = "## APFS"
IMGFS, RAW, ISO, SEVENZIP, FSX = "imgfs", "raw", "imgfs on ISO", "7zz", "fs-explorer"
READERS = (IMGFS, RAW, ISO, SEVENZIP, FSX)
SEQ_BLOCK = 128 << 10
LISTING_TARGET, RAW_TARGET, PEER_TARGET = 1.5, 0.8, 1.5
EXTENTS = r"""
import json, sys
from imgfs.filesystems.apfs import open_apfs
from imgfs.io.cache import BlockCache
from imgfs.io.stream import FileStream, SliceStream
from imgfs.layer import OpenContext
from imgfs.volumes.gpt import read_gpt
disk = FileStream(sys.argv[1])
part = next(p for p in read_gpt(disk).partitions if p.type_id == "7C3457EF-0000-11AA-AA11-00306543ECAC")
ctx = OpenContext(sys.argv[1], BlockCache(1 << 26))
fs = open_apfs(SliceStream(disk, part.start, part.size), ctx).volumes()[0].open(ctx)
node = fs.children(fs.root)[sys.argv[2]]
tree, size, ranges, pos = fs.volume, node.size, [], 0
for extent in tree.extents(node.handle.private_id):
    length = min(extent.length, size - pos)
    ranges.append((part.start + extent.block * tree.blocks.block_size, length))
    pos += length
print(json.dumps(ranges))
"""
CEILING = r"""
import os, sys, threading, time
from imgfs.containers.dmg import open_udif
from imgfs.io.cache import BlockCache
from imgfs.io.stream import FileStream
from imgfs.layer import OpenContext
image = open_udif(FileStream(sys.argv[1]), OpenContext(sys.argv[1], BlockCache(64 << 20)))
image._read_ahead = None  # the threads below are the decoders
threads, chunk, read = max(1, min(2, os.cpu_count() or 1)), 1 << 20, 1 << 20
def decode(start, end):
    for at in range(start, end, read):
        image.pread(at, min(read, end - at))
cuts = [image.size * i // threads // chunk * chunk for i in range(threads)] + [image.size]
workers = [threading.Thread(target=decode, args=(cuts[i], cuts[i + 1])) for i in range(threads)]
started = time.perf_counter()
for w in workers:
    w.start()
for w in workers:
    w.join()
print(image.size / (time.perf_counter() - started) / 1e6)
"""


@dataclass(frozen=True)
class ApfsSet:
    udrw: Path
    udro: Path
    ulfo: Path
    iso: Path
    big_size: int
    big_sha256: str
    big_ranges: tuple[tuple[int, int], ...]  # /bigfile's bytes in the UDRW disk file
    entries: int  # what find lists below the volume's root


def ensure(big_mib: int, dirs: int, per_dir: int, cache_dir: Path, python: str, log: Callable[[str], None]
           ) -> ApfsSet:
    stem = cache_dir / f"apfs-{big_mib}M-{dirs}x{per_dir}-v{RECIPE_VERSION}"
    paths = {kind: stem.with_suffix(ext) for kind, ext in
             (("udrw", ".udrw.dmg"), ("udro", ".udro.dmg"), ("ulfo", ".ulfo.dmg"), ("iso", ".iso"))}
    sidecar = stem.with_suffix(".json")
    if not sidecar.exists() or not all(p.exists() for p in paths.values()):
        _build(stem, paths, sidecar, big_mib, dirs, per_dir, python, log)
    else:
        log(f"reusing {stem}.*")
    info = json.loads(sidecar.read_text())
    return ApfsSet(**paths, big_size=info["big_size"], big_sha256=info["big_sha256"],
                   big_ranges=tuple(tuple(r) for r in info["ranges"]), entries=dirs * (per_dir + 1) + 1)


def _build(stem: Path, paths: dict[str, Path], sidecar: Path, big_mib: int, dirs: int, per_dir: int,
           python: str, log: Callable[[str], None]) -> None:
    src = stem.with_name(stem.name + "-src")
    log(f"building the APFS images {stem}.* ({big_mib} MiB file + {dirs * per_dir:,} small files), once")
    shutil.rmtree(src, ignore_errors=True)
    src.mkdir(parents=True)
    try:
        digest = dmgimage.write_bigfile(src / BIG_NAME, big_mib, log)
        images.write_small_files(src, dirs, per_dir)
        for kind, fmt_name in (("udrw", "UDRW"), ("udro", "UDRO"), ("ulfo", "ULFO")):
            log(f"  fs-explorer create dmg --fs apfs --format {fmt_name}")
            subprocess.run([python, "-m", "fs_explorer", "create", "dmg", "--fs", "apfs", "--format", fmt_name,
                            "--layout", "GPT", "--volname", "IMGFS_BENCH", "-f", str(paths[kind]), str(src)],
                           check=True, stdout=subprocess.DEVNULL)
        subprocess.run(["xorriso", "-as", "mkisofs", "-quiet", "-R", "-J", "-V", "IMGFS_BENCH", "-o",
                        str(paths["iso"]), str(src)], check=True)
        ranges = json.loads(subprocess.run([python, "-c", EXTENTS, str(paths["udrw"]), BIG_NAME], check=True,
                                           capture_output=True, text=True).stdout)
        sidecar.write_text(json.dumps({"big_size": big_mib << 20, "big_sha256": digest, "ranges": ranges}))
    finally:
        shutil.rmtree(src, ignore_errors=True)


def seven_zip_member(dmg: Path) -> Optional[str]:
    """The path 7-Zip gives /bigfile inside the DMG (it opens the APFS volume itself), if it can."""
    if not shutil.which(SEVENZIP):
        return None
    out = subprocess.run([SEVENZIP, "l", "-slt", str(dmg)], capture_output=True, text=True).stdout
    paths = [line[7:] for line in out.splitlines() if line.startswith("Path = ")]
    return next((p for p in paths if p.endswith(BIG_NAME)), None)


def listing_s(command: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def one_run(s: ApfsSet, python: str, member: Optional[str], log: Callable[[str], None]) -> dict:
    run: dict = {k: {} for k in ("udro.ready_s", "ulfo.ready_s", "find", "ls_lR", "seq", "seq_cold", "ulfo_seq",
                                 "ulfo_ceiling", "udro.rss", "ulfo.rss")}
    for path in (s.udrw, s.udro, s.ulfo, s.iso):
        images.warm(path)
    with mounted(IMGFS, s.iso) as iso:
        run["udro.ready_s"][ISO] = iso.ready_s
        run["find"][ISO] = listing_s(["find", str(iso.path)])
        run["ls_lR"][ISO] = listing_s(["ls", "-lR", str(iso.path)])
    with mounted(IMGFS, s.udro) as mount:
        run["udro.ready_s"][IMGFS] = mount.ready_s
        run["find"][IMGFS] = listing_s(["find", str(mount.path)])
        run["ls_lR"][IMGFS] = listing_s(["ls", "-lR", str(mount.path)])
        run["seq"][IMGFS] = ranges_mb_s(mount.path / BIG_NAME, ((0, s.big_size),), SEQ_BLOCK)
        run["udro.rss"][IMGFS] = mount.rss_peak_mib()
    run["seq"][RAW] = ranges_mb_s(s.udrw, s.big_ranges, SEQ_BLOCK)
    if os.geteuid() == 0:  # cold: both from the disk, page cache emptied before each
        images.drop_caches()
        run["seq_cold"][RAW] = ranges_mb_s(s.udrw, s.big_ranges, SEQ_BLOCK)
        with mounted(IMGFS, s.udro) as mount:
            images.drop_caches()
            run["seq_cold"][IMGFS] = ranges_mb_s(mount.path / BIG_NAME, ((0, s.big_size),), SEQ_BLOCK)
        images.warm(s.ulfo)
    with mounted(IMGFS, s.ulfo) as mount:
        run["ulfo.ready_s"][IMGFS] = mount.ready_s
        run["ulfo_seq"][IMGFS] = ranges_mb_s(mount.path / BIG_NAME, ((0, s.big_size),), SEQ_BLOCK)
        run["ulfo.rss"][IMGFS] = mount.rss_peak_mib()
    peers = {FSX: [python, "-m", "fs_explorer", "cat", str(s.ulfo), f"/{BIG_NAME}"]}
    if member:
        peers[SEVENZIP] = [SEVENZIP, "e", "-so", str(s.ulfo), member]
    for name, command in peers.items():
        done = timed(command)
        if done.returncode == 0:
            run["ulfo_seq"][name] = s.big_size / done.wall_s / 1e6
        else:
            log(f"  {name} failed on {s.ulfo.name}: {done.output[-300:]}")
    run["ulfo_ceiling"][IMGFS] = float(subprocess.run([python, "-c", CEILING, str(s.ulfo)], check=True,
                                                      capture_output=True, text=True, env=subject.python_env()).stdout)
    log("  " + "; ".join(f"{k} " + " ".join(f"{r}={v:,.3f}" for r, v in d.items()) for k, d in run.items()))
    return run


def run_suite(s: ApfsSet, python: str, runs: int, log: Callable[[str], None]) -> dict:
    member = seven_zip_member(s.ulfo)
    if member is None:
        log("7zz cannot open the ULFO DMG's APFS volume (or is not installed): compared with fs-explorer only")
    results = [one_run(s, python, member, log) for _ in range(runs)]
    for key in ("find", "ls_lR"):  # the peer of these rows is the ISO mount: keep the order of the others
        for run in results:
            run[key] = {IMGFS: run[key][IMGFS], ISO: run[key][ISO]}
    return {"runs": results, "checks": check(s, python), "member_7zz": member}


def check(s: ApfsSet, python: str) -> dict:
    """Every reader gives /bigfile's bytes, and find lists every entry."""
    import hashlib

    found: dict = {}
    for name, path in (("udro", s.udro), ("ulfo", s.ulfo)):
        with mounted(IMGFS, path) as mount:
            digest = hashlib.sha256()
            with open(mount.path / BIG_NAME, "rb") as f:
                while block := f.read(1 << 20):
                    digest.update(block)
            count = subprocess.run(["find", str(mount.path), "-mindepth", "1"], capture_output=True,
                                   check=True).stdout.count(b"\n")
        found[name] = {"sha256_ok": digest.hexdigest() == s.big_sha256, "entries": count,
                       "entries_ok": count == s.entries}
    return found


def goals(medians: dict, ratios: dict, cache_mib: float) -> dict[str, tuple[str, bool, str]]:
    out = {}
    for key in ("find", "ls_lR"):
        r = ratios[key][ISO]
        out[key] = (f"≤ {LISTING_TARGET}× the ISO's time", r <= LISTING_TARGET,
                    "" if r <= LISTING_TARGET else f"{r:.2f}× the ISO's time")
    for key in ("seq", "seq_cold"):
        if RAW in ratios.get(key, {}):
            r = ratios[key][RAW]
            out[key] = (f"≥ {RAW_TARGET}× raw", r >= RAW_TARGET, "" if r >= RAW_TARGET else f"{r:.2f}× raw")
    peers = [ratios["ulfo_seq"][p] for p in (SEVENZIP, FSX) if p in ratios["ulfo_seq"]]
    if peers:
        r = min(peers)
        ceiling, faster_peer = medians.get("ulfo_ceiling", {}).get(IMGFS), medians["ulfo_seq"][IMGFS] / r
        bound = "" if ceiling is None else f"; the decode ceiling below is {ceiling / faster_peer:.2f}× it"
        out["ulfo_seq"] = (f"≥ {PEER_TARGET}× the faster peer", r >= PEER_TARGET,
                           "" if r >= PEER_TARGET else f"{r:.2f}× the faster peer{bound}")
    for key in ("udro.ready_s", "ulfo.ready_s"):
        out[key] = ready_verdict(medians[key][IMGFS])  # the ISO's, beside it, is no target: a reference
    for key in ("udro.rss", "ulfo.rss"):
        out[key] = rss_verdict(medians[key][IMGFS], cache_mib)
    return out


ROWS = (("udro.ready_s", "mount ready, UDRO (mount + first `ls`); the ISO's for reference", "s"),
        ("ulfo.ready_s", "mount ready, ULFO", "s"),
        ("find", "`find` over the tree (UDRO), against the same tree on ISO", "s"),
        ("ls_lR", "`ls -lR` over the tree (UDRO), against the same tree on ISO", "s"),
        ("seq", "/bigfile sequential, 128 KiB reads (UDRO), against raw pread of its extents, warm", "MB/s"),
        ("seq_cold", "the same, cold page cache", "MB/s"),
        ("ulfo_seq", "/bigfile from the ULFO DMG, against `7zz e -so` and `fs-explorer cat`", "MB/s"),
        ("ulfo_ceiling", "reference: the ULFO disk's LZFSE decode ceiling, all threads, no FUSE", "MB/s"),
        ("udro.rss", "daemon peak RSS after the UDRO workloads", "MiB"),
        ("ulfo.rss", "daemon peak RSS after the ULFO read", "MiB"))


def render(meta: dict, raw: dict, cache_mib: float) -> tuple[str, dict]:
    medians, ratios = summarize(raw["runs"], READERS)
    verdicts = goals(medians, ratios, cache_mib)
    lines = [HEADING, "", f"{meta['date']}, {meta['runs']} run(s), warm page cache; {meta['tree']}.", "",
             "| measurement | imgfs | peers | ratio | target | met |", "|---|---|---|---|---|---|"]
    for key, label, unit in ROWS:
        m = medians.get(key, {})
        peers = ", ".join(f"{r} {fmt(v, unit)}" for r, v in m.items() if r != IMGFS) or "–"
        ratio = ", ".join(f"{v:.2f}× {r}" for r, v in ratios.get(key, {}).items()) or "–"
        target, met, miss = verdicts.get(key, ("–", True, ""))
        lines.append(f"| {label} ({unit}) | {fmt(m.get(IMGFS), unit)} | {peers} | {ratio} | {target} | "
                     f"{'yes' if met else 'no: ' + miss} |")
    lines += ["", "Checks: " + "; ".join(f"{k}: /bigfile sha256 {'ok' if v['sha256_ok'] else 'WRONG'}, "
                                         f"{v['entries']:,} entries {'ok' if v['entries_ok'] else 'WRONG'}"
                                         for k, v in raw["checks"].items()), ""]
    return "\n".join(lines), {**raw, "medians": medians, "ratios": ratios,
                              "targets": {k: {"target": t, "met": ok, "miss": miss}
                                          for k, (t, ok, miss) in verdicts.items()}}


def metadata(s: ApfsSet, runs: int, member: Optional[str]) -> dict:
    return {"date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "runs": runs, "imgfs": subject.describe(),
            "tree": f"/bigfile of {s.big_size >> 20} MiB + {s.entries:,} entries",
            "images_mib": {p.name: p.stat().st_size / 2**20 for p in (s.udrw, s.udro, s.ulfo, s.iso)},
            "member_7zz": member, "loadavg_at_start": os.getloadavg()[0]}
