#!/usr/bin/env python3
"""imgfs extract against 7zz x (and bsdtar -x when installed): the same ISO copied out into tmpfs.

The ISO is the benchmark's recipe (bench/benchlib/images.py): a 256 MiB file and 20,000 small files
in 200 folders, Rock Ridge + Joliet, built once with xorriso and cached. Each run extracts into a fresh
folder under /dev/shm, warm (the image is read into the page cache first), tools taking turns; the first
run's trees are compared with ``diff -r``. Prints each tool's median, min and max wall time, and the
ratio of medians against 7zz.

    bench/extract.py [--runs N] [--imgfs PATH] [--big-mib N] [--cache-dir DIR]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import images  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--imgfs", default=shutil.which("imgfs") or "imgfs")
    parser.add_argument("--big-mib", type=int, default=256)
    parser.add_argument("--cache-dir", type=Path, default=Path("/var/tmp/imgfs-bench"))
    parser.add_argument("--work", type=Path, default=Path("/dev/shm/imgfs-extract-bench"))
    args = parser.parse_args()
    iso = images.ensure_image(images.ImageSpec("main", args.big_mib, 200, 100), args.cache_dir, print)
    images.warm(iso)
    tools = {"imgfs extract": lambda out: [args.imgfs, "extract", str(iso), str(out)],
             "7zz x": lambda out: ["7zz", "x", "-y", "-bso0", "-bsp0", f"-o{out}", str(iso)]}
    if shutil.which("bsdtar"):
        tools["bsdtar -x"] = lambda out: ["bsdtar", "-x", "-f", str(iso), "-C", str(out)]
    times: dict[str, list[float]] = {name: [] for name in tools}
    for run in range(args.runs):
        outs = {}
        for name, command in tools.items():
            out = args.work / f"{name.split()[0]}-{run}"
            shutil.rmtree(out, ignore_errors=True)
            out.mkdir(parents=True)
            start = time.perf_counter()
            subprocess.run(command(out), check=True, stdout=subprocess.DEVNULL)
            times[name].append(time.perf_counter() - start)
            outs[name] = out
        if run == 0:
            first, *others = outs.values()
            for other in others:
                subprocess.run(["diff", "-r", "--no-dereference", str(first), str(other)], check=True)
        for out in outs.values():
            shutil.rmtree(out, ignore_errors=True)
    base = statistics.median(times["7zz x"])
    print(f"{iso.name}: {args.runs} runs, warm, into {args.work.parent} (wall seconds)")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"  {name:<14} median {median:6.3f}  min {min(values):6.3f}  max {max(values):6.3f}  "
              f"x{median / base:.2f} of 7zz x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
