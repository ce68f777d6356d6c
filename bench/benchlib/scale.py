"""The scale part: an ISO of 1,000,000 empty files in 1,000 folders (empty files take no data sectors, so the
image stays small). Mount ready, a full `find`, `ls -lR` and the daemon's peak RSS, imgfs against fuseiso.

Targets (issue 14): mount ready ≤ 0.5 s, `find` ≤ fuseiso's time, peak RSS ≤ 256 MB.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import tempfile
from pathlib import Path
from typing import Callable

from benchlib.mounts import mounted
from benchlib.workloads import run_measured

HEADING = "## Scale: 1,000,000 empty files in 1,000 folders"
READERS = ("imgfs", "fuseiso")
READY_LIMIT_S = 0.5
RSS_LIMIT_MB = 256  # 10^6 bytes
FULL = (1000, 1000)  # folders, files per folder
QUICK = (100, 1000)


def ensure_image(cache_dir: Path, folders: int, per_folder: int, log: Callable[[str], None]) -> Path:
    """The image, built once with xorriso (Rock Ridge + Joliet) from a tree made on tmpfs."""
    image = cache_dir / f"scale-{folders}x{per_folder}-v1.iso"
    if image.exists():
        return image
    cache_dir.mkdir(parents=True, exist_ok=True)
    log(f"building {image.name}: {folders * per_folder:,} empty files (a few minutes, once)")
    src = Path(tempfile.mkdtemp(prefix="imgfs-bench-scale-", dir="/dev/shm"))
    try:
        for d in range(folders):
            folder = src / f"d{d:04d}"
            folder.mkdir()
            for f in range(per_folder):
                os.close(os.open(folder / f"f{f:04d}", os.O_CREAT | os.O_WRONLY, 0o644))
        part = image.with_suffix(".iso.part")
        subprocess.run(["xorriso", "-outdev", str(part), "-rockridge", "on", "-joliet", "on", "-map", str(src), "/",
                        "-commit"], check=True, capture_output=True)
        part.rename(image)
    finally:
        shutil.rmtree(src, ignore_errors=True)
    return image


def one_run(image: Path, order: tuple[str, ...], problems: list[str]) -> dict[str, dict[str, float]]:
    """Per reader, on fresh mounts: ready, find, ls -lR; the peak RSS after both walks on the ls mount."""
    run: dict[str, dict[str, float]] = {"ready_s": {}, "find": {}, "ls_lR": {}, "rss": {}}
    for reader in order:
        with mounted(reader, image) as mount:
            run["ready_s"][reader] = mount.ready_s
            run["find"][reader] = _walk(["find"], mount.path, problems)
        with mounted(reader, image) as mount:
            run["ls_lR"][reader] = _walk(["ls", "-lR"], mount.path, problems)
            rss = mount.rss_peak_mib()
            run["rss"][reader] = (rss or 0.0) * 1.048576  # MiB to MB
    return run


def _walk(command: list[str], mnt: Path, problems: list[str]) -> float:
    done = run_measured([*command, str(mnt)])
    if done.returncode:
        problems.append(f"`{' '.join(command)} MNT` exited {done.returncode}: {done.stderr[:300]}")
    return done.wall_s


def measure(image: Path, runs: int, log: Callable[[str], None]) -> dict:
    problems: list[str] = []
    results = []
    for index in range(runs):
        order = READERS[index % 2:] + READERS[: index % 2]
        results.append(one_run(image, order, problems))
        log(f"  scale run {index + 1}/{runs}: " + "; ".join(
            f"{key} " + " ".join(f"{r}={v:.3f}" for r, v in per.items()) for key, per in results[-1].items()))
    medians = {key: {r: statistics.median(run[key][r] for run in results) for r in READERS}
               for key in results[0]}
    ratios = {key: statistics.median(run[key]["imgfs"] / run[key]["fuseiso"] for run in results)
              for key in results[0]}
    return {"image": str(image), "runs": results, "medians": medians, "ratios": ratios, "problems": problems}


def render(raw: dict) -> str:
    med, rat = raw["medians"], raw["ratios"]
    goals = {"ready_s": (f"≤ {READY_LIMIT_S} s", med["ready_s"]["imgfs"] <= READY_LIMIT_S),
             "find": ("≤ fuseiso's time", rat["find"] <= 1.0), "ls_lR": ("–", True),
             "rss": (f"≤ {RSS_LIMIT_MB} MB", med["rss"]["imgfs"] <= RSS_LIMIT_MB)}
    labels = {"ready_s": "mount ready (s)", "find": "`find MNT`, fresh mount (s)",
              "ls_lR": "`ls -lR MNT`, fresh mount (s)", "rss": "daemon peak RSS after `ls -lR` (MB)"}
    lines = [HEADING, "", f"Image: `{raw['image']}`; {len(raw['runs'])} run(s), medians; ratios per run.", "",
             "| measurement | imgfs | fuseiso | imgfs/fuseiso | target | verdict |", "|---|---|---|---|---|---|"]
    for key, label in labels.items():
        target, ok = goals[key]
        verdict = "" if target == "–" else ("met" if ok else "**MISSED**")
        lines.append(f"| {label} | {med[key]['imgfs']:.3f} | {med[key]['fuseiso']:.3f} | {rat[key]:.2f}× "
                     f"| {target} | {verdict} |")
    lines += [""] + [f"- PROBLEM: {p}" for p in raw["problems"]]
    return "\n".join(lines).rstrip() + "\n"
