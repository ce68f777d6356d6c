"""What is measured: streaming, random reads, tree walks, and the cost of parsing a whole image.

Readers are driven by the same code whatever serves the bytes (the image file itself or a FUSE
mount): plain ``os.pread`` calls on one open descriptor, as any Python client would make them, and as
the peer numbers in docs/performance.md were taken. (Reading into a reused buffer with ``os.preadv``
instead would raise only the raw baseline, by about a third, on this machine class.)
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from benchlib import subject

RANDOM_READ_SIZE = 4096


@dataclass(frozen=True)
class Target:
    """/bigfile as one reader sees it: a file, and where in that file /bigfile's first byte is."""

    path: Path
    offset: int
    size: int


def sequential_mb_s(target: Target, block: int) -> float:
    """Read the whole file front to back in ``block``-sized requests; MB/s with MB = 10^6 bytes."""
    return ranges_mb_s(target.path, ((target.offset, target.size),), block)


def ranges_mb_s(path: Path, ranges: tuple[tuple[int, int], ...], block: int) -> float:
    """Read the (offset, length) ranges of ``path`` in order, in ``block``-sized requests; MB/s."""
    fd = os.open(path, os.O_RDONLY)
    try:
        start = time.perf_counter()
        for offset, size in ranges:
            done = 0
            while done < size:
                n = len(os.pread(fd, min(block, size - done), offset + done))
                if n == 0:
                    raise OSError(f"{path}: unexpected end at {offset + done}, reading {size} bytes from {offset}")
                done += n
        elapsed = time.perf_counter() - start
    finally:
        os.close(fd)
    return sum(size for _, size in ranges) / elapsed / 1e6


def hashed_mb_s(target: Target, block: int = 128 << 10) -> float:
    """Read the whole file front to back and SHA-256 it, as a checksum tool would; MB/s."""
    fd = os.open(target.path, os.O_RDONLY)
    digest = hashlib.sha256()
    try:
        start = time.perf_counter()
        done = 0
        while done < target.size:
            data = os.pread(fd, min(block, target.size - done), target.offset + done)
            if not data:
                raise OSError(f"{target.path}: unexpected end at {done}")
            digest.update(data)
            done += len(data)
        elapsed = time.perf_counter() - start
    finally:
        os.close(fd)
    return target.size / elapsed / 1e6


def random_offsets(size: int, count: int, seed: int = 1) -> list[int]:
    """``count`` aligned offsets, the same for every reader and every run."""
    rng = random.Random(seed)
    blocks = size // RANDOM_READ_SIZE
    return [rng.randrange(blocks) * RANDOM_READ_SIZE for _ in range(count)]


def random_reads_per_s(target: Target, offsets: list[int]) -> float:
    fd = os.open(target.path, os.O_RDONLY)
    try:
        start = time.perf_counter()
        for offset in offsets:
            if len(os.pread(fd, RANDOM_READ_SIZE, target.offset + offset)) != RANDOM_READ_SIZE:
                raise OSError(f"{target.path}: short read at {offset}")
        elapsed = time.perf_counter() - start
    finally:
        os.close(fd)
    return len(offsets) / elapsed


def mismatched_blocks(target: Target, reference: Target, offsets: list[int]) -> list[int]:
    """Offsets where ``target`` and the raw image disagree: a benchmark of wrong bytes is worthless."""
    bad = []
    with open(target.path, "rb", buffering=0) as got, open(reference.path, "rb", buffering=0) as want:
        for offset in offsets:
            if os.pread(got.fileno(), RANDOM_READ_SIZE, target.offset + offset) != \
                    os.pread(want.fileno(), RANDOM_READ_SIZE, reference.offset + offset):
                bad.append(offset)
    return bad


@dataclass
class Measured:
    wall_s: float
    maxrss_mib: float  # the child's own peak, from wait4, not the sum over all our children
    returncode: int
    stderr: str


def run_measured(cmd: list[str], stdout=subprocess.DEVNULL) -> Measured:
    """Run ``cmd``; its wall time, its peak RSS and how it ended."""
    with tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=stdout, stderr=err, stdin=subprocess.DEVNULL)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here: keep Popen from waiting again
        err.seek(0)
        message = err.read().decode("utf-8", "replace").strip()
    return Measured(wall, usage.ru_maxrss / 1024, proc.returncode, message)


def count_entries(mnt: Path) -> int:
    """Entries below ``mnt`` as find sees them (the mount point itself not counted)."""
    out = subprocess.run(["find", str(mnt), "-mindepth", "1"], capture_output=True, check=True).stdout
    return out.count(b"\n")


# Run in the imgfs venv, one fresh interpreter per measurement: peak RSS is then the parse's own.
PYCDLIB_OPEN = """
import json, resource, sys, time
import pycdlib
start = time.perf_counter()
iso = pycdlib.PyCdlib()
iso.open(sys.argv[1])
elapsed = time.perf_counter() - start
print(json.dumps({"s": elapsed, "maxrss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""

IMGFS_WALK = """
import json, resource, sys, time
from imgfs.image import open_image
start = time.perf_counter()
image = open_image(sys.argv[1])
entries = sum(1 for _ in image.tree.walk())
elapsed = time.perf_counter() - start
print(json.dumps({"s": elapsed, "entries": entries,
                  "maxrss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def in_process(python: str, snippet: str, image: Path) -> dict:
    """Time a parse inside a fresh interpreter (start-up and imports not counted).

    It runs in / because ``python -c`` puts the working directory first on sys.path: from a checkout
    it would import the checkout's imgfs; PYTHONPATH names the package that the mounts run instead.
    """
    out = subprocess.run([python, "-c", snippet, str(image.resolve())], capture_output=True, text=True,
                         check=True, cwd="/", env=subject.python_env())
    return json.loads(out.stdout)


def imgfs_ls_recursive(image: Path) -> Measured:
    """``imgfs ls IMAGE -R``: the whole tree through the imgfs library, no FUSE, start-up included."""
    return run_measured([*subject.COMMAND, "ls", str(image), "-R"])

