"""The soak test (``make soak``; not part of the suite): 8 readers against an ISO mount and a zlib DMG mount of
the same tree, each reading random ranges of random files for a set time and comparing every byte with the
source file, first through the page cache, then with O_DIRECT (every read a FUSE request).

    python tests/soak.py [--seconds 300] [--readers 8] [--work /var/tmp/imgfs-soak]

Prints reads, bytes, MB/s, errors and wrong bytes per phase; exits 1 on any error or wrong byte.
"""

from __future__ import annotations

import argparse
import mmap
import multiprocessing
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from conftest import IMGFS, is_mounted, unmount  # noqa: E402
from isotools import pseudo_random, xorriso  # noqa: E402
from udifwriter import write_udif  # noqa: E402

BIG_FILES, SMALL_FILES = 12, 300
ALIGN = 4096


def build(work: Path) -> tuple[Path, dict[str, Path]]:
    """The source tree (random data: every byte checks something) and its images, made once per work folder."""
    src = work / "src"
    iso, dmg = work / "soak.iso", work / "soak.dmg"
    if not dmg.exists():
        rng = random.Random(1)
        for i in range(BIG_FILES):
            (src / "big").mkdir(parents=True, exist_ok=True)
            (src / "big" / f"f{i:02d}.bin").write_bytes(pseudo_random(rng.randint(1, 8) << 20, i))
        for i in range(SMALL_FILES):
            folder = src / "small" / f"d{i % 10}"
            folder.mkdir(parents=True, exist_ok=True)
            (folder / f"s{i:03d}.bin").write_bytes(pseudo_random(rng.randint(1, 64 << 10), 1000 + i))
        xorriso(iso, src)
        write_udif(dmg, iso, codec="zlib")
    return src, {"iso": iso, "dmg": dmg}


def reader(mnt: str, src: str, files: list[str], direct: bool, seed: int, deadline: float, out) -> None:
    """Random reads until ``deadline``; puts (reads, bytes, errors, wrong bytes, first problem) on ``out``."""
    rng = random.Random(seed)
    reads = total = errors = wrong = 0
    problem = ""
    buf = mmap.mmap(-1, 1 << 20)  # page-aligned, as O_DIRECT wants
    flags = os.O_RDONLY | (os.O_DIRECT if direct else 0)
    while time.monotonic() < deadline:
        name = rng.choice(files)
        size = os.path.getsize(os.path.join(src, name))
        length = rng.choice((4096, 65536, 131072, 1 << 20))
        offset = rng.randrange(0, max(1, size)) // ALIGN * ALIGN
        try:
            fd = os.open(os.path.join(mnt, name), flags)
            try:
                got = os.preadv(fd, [memoryview(buf)[:length]], offset)
            finally:
                os.close(fd)
        except OSError as exc:
            errors += 1
            problem = problem or f"{name} at {offset}: {exc}"
            continue
        with open(os.path.join(src, name), "rb") as source:
            source.seek(offset)
            want = source.read(length)
        data = buf[:got]
        if data != want:
            bad = sum(a != b for a, b in zip(data, want)) + abs(len(data) - len(want))
            wrong += bad
            problem = problem or f"{name} at {offset}: {bad} bytes differ"
        reads += 1
        total += got
    out.put((reads, total, errors, wrong, problem))


def phase(mnt: Path, src: Path, files: list[str], direct: bool, readers: int, seconds: float) -> dict:
    out: multiprocessing.Queue = multiprocessing.Queue()
    deadline = time.monotonic() + seconds
    procs = [multiprocessing.Process(target=reader, args=(str(mnt), str(src), files, direct, n, deadline, out))
             for n in range(readers)]
    started = time.monotonic()
    for proc in procs:
        proc.start()
    results = [out.get(timeout=seconds + 120) for _ in procs]
    for proc in procs:
        proc.join(timeout=30)
    elapsed = time.monotonic() - started
    reads, total, errors, wrong = (sum(r[i] for r in results) for i in range(4))
    problems = [r[4] for r in results if r[4]]
    return {"reads": reads, "bytes": total, "mb_s": total / elapsed / 1e6, "errors": errors, "wrong": wrong,
            "problem": problems[0] if problems else ""}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=300, help="in all, split between the four phases")
    parser.add_argument("--readers", type=int, default=8)
    parser.add_argument("--work", default=os.environ.get("IMGFS_SOAK_DIR", "/var/tmp/imgfs-soak"))
    args = parser.parse_args(argv[1:])
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    src, images = build(work)
    files = sorted(str(p.relative_to(src)) for p in src.rglob("*") if p.is_file())
    print(f"imgfs: {IMGFS}; {len(files)} files, {sum((src / f).stat().st_size for f in files) / 1e6:.0f} MB; "
          f"{args.readers} readers; {args.seconds / 4:.0f} s per phase")
    print(f"{'image':<5} {'mode':<10} {'reads':>9} {'MB':>9} {'MB/s':>8} {'errors':>7} {'wrong bytes':>12}")
    failed = False
    for kind, image in images.items():
        mnt = Path(tempfile.mkdtemp(prefix=f"imgfs-soak-{kind}-"))
        subprocess.run([IMGFS, str(image), str(mnt)], check=True)
        try:
            for direct in (False, True):
                r = phase(mnt, src, files, direct, args.readers, args.seconds / 4)
                print(f"{kind:<5} {'O_DIRECT' if direct else 'cached':<10} {r['reads']:>9,} {r['bytes'] / 1e6:>9,.0f} "
                      f"{r['mb_s']:>8,.0f} {r['errors']:>7} {r['wrong']:>12}" +
                      (f"  first: {r['problem']}" if r["problem"] else ""), flush=True)
                failed |= bool(r["errors"] or r["wrong"])
        finally:
            unmount(mnt)
            if not is_mounted(mnt):
                mnt.rmdir()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
