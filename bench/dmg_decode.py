#!/usr/bin/env python3
"""Decode speed of UDIF (.dmg) chunks through imgfs's stream, per codec, on 1 and 2 threads; and the
memory a whole-image read takes.

    PYTHONPATH=. bench/dmg_decode.py                 # every codec, 64 MiB images, in /var/tmp/imgfs-dmg-bench
    PYTHONPATH=. bench/dmg_decode.py --size 2048 --codecs zlib --memory   # a 2 GiB UDZO: speed and peak RSS

Images are written once by tests/udifwriter.py (1 MiB chunks of text-like data, about 3:1) and kept.
"1 thread" reads the image front to back with read-ahead off; "1 thread + read-ahead" lets the
background workers decode the next chunks; "2 threads" has two readers, each on half the image.
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))
sys.path.insert(0, str(HERE.parent))

from udifwriter import write_udif  # noqa: E402

from imgfs.containers.dmg import open_udif  # noqa: E402
from imgfs.io.cache import BlockCache  # noqa: E402
from imgfs.io.stream import FileStream  # noqa: E402
from imgfs.layer import OpenContext  # noqa: E402

CHUNK = 1 << 20
READ = 128 << 10  # the size of a FUSE read


def text_disk(path: Path, size_mib: int) -> Path:
    if path.exists() and path.stat().st_size == size_mib << 20:
        return path
    rnd = random.Random(7)
    words = [bytes(rnd.choice(b"abcdefghijklmnopqrstuvwxyz") for _ in range(rnd.randint(2, 9))) for _ in range(4000)]
    base = b" ".join(rnd.choice(words) for _ in range(200_000))[:CHUNK]
    with open(path, "wb") as out:
        for i in range(size_mib):
            cut = (i * 7919) % CHUNK
            block = bytearray(base[cut:] + base[:cut])
            for _ in range(64):
                block[rnd.randrange(CHUNK)] = rnd.randrange(256)
            out.write(block if i % 8 else bytes(CHUNK))  # one chunk in 8 is zeros
    return path


def read_range(image, start: int, end: int) -> None:
    buf = memoryview(bytearray(READ))
    for at in range(start, end, READ):
        image.readinto(at, buf[: min(READ, end - at)])


def measure(path: Path, threads: int, read_ahead: bool) -> float:
    image = open_udif(FileStream(str(path)), OpenContext(str(path), BlockCache(64 << 20)))
    if not read_ahead:
        image._read_ahead = None
    size = image.size
    parts = [(size * i // threads // CHUNK * CHUNK, size * (i + 1) // threads // CHUNK * CHUNK) for i in range(threads)]
    started = time.perf_counter()
    workers = [threading.Thread(target=read_range, args=(image, a, b)) for a, b in parts]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return size / (time.perf_counter() - started) / 1e6


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", type=int, default=64, help="MiB of disk")
    parser.add_argument("--codecs", default="zlib,bzip2,xz,lzfse,adc,raw")
    parser.add_argument("--dir", default="/var/tmp/imgfs-dmg-bench")
    parser.add_argument("--runs", type=int, default=3, help="best of this many runs (the machine is shared)")
    parser.add_argument("--memory", action="store_true", help="also report the peak RSS of a whole read")
    args = parser.parse_args()
    folder = Path(args.dir)
    folder.mkdir(parents=True, exist_ok=True)
    disk = text_disk(folder / f"disk-{args.size}.img", args.size)
    print(f"{'codec':8} {'dmg MB':>8} {'1 thread':>10} {'1 + ahead':>10} {'2 threads':>10}  (MB/s of decoded disk)")
    for codec in args.codecs.split(","):
        size = args.size if codec != "adc" else min(args.size, 16)
        dmg = folder / f"{codec}-{size}.dmg"
        if not dmg.exists():
            with open(disk, "rb") as source:
                write_udif(dmg, disk if size == args.size else source.read(size << 20), codec=codec)
        speeds = [max(measure(dmg, threads, ahead) for _ in range(args.runs))
                  for threads, ahead in ((1, False), (1, True), (2, False))]
        print(f"{codec:8} {dmg.stat().st_size / 1e6:8.1f} " + " ".join(f"{s:10.0f}" for s in speeds), flush=True)
        if args.memory:
            print(f"{'':8} peak RSS growth over a whole read: {peak_growth(dmg)} MB (cache 64 MiB, read-ahead on)")


MEMORY = """
import ctypes, sys
ctypes.CDLL("libc.so.6").mallopt(-1, 64 << 20)  # as the daemon does (cli._tune_malloc)
ctypes.CDLL("libc.so.6").mallopt(-3, 16 << 20)
from imgfs.layer import OpenContext
from imgfs.containers.dmg import open_udif
from imgfs.io.cache import BlockCache
from imgfs.io.stream import FileStream
def peak():
    return int(next(line for line in open("/proc/self/status") if line.startswith("VmHWM")).split()[1])
image = open_udif(FileStream(sys.argv[1]), OpenContext(sys.argv[1], BlockCache(64 << 20)))
before, buf = peak(), memoryview(bytearray(128 << 10))
for at in range(0, image.size, len(buf)):
    image.readinto(at, buf)
print((peak() - before) // 1024)
"""


def peak_growth(dmg: Path) -> int:
    env = {**os.environ, "PYTHONPATH": str(HERE.parent)}
    done = subprocess.run([sys.executable, "-c", MEMORY, str(dmg)], capture_output=True, text=True, env=env, check=True)
    return int(done.stdout)


if __name__ == "__main__":
    main()
