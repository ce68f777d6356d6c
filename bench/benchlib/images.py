"""The benchmark's ISO images: built once with xorriso, cached outside the git tree, reused.

An image is cached under a name that encodes its whole recipe (and a version), so that changing the
recipe builds a new one instead of silently measuring an old one. A build goes to a temporary name
and is renamed into place only when complete: an interrupted build is never reused.
"""

from __future__ import annotations

import os
import random
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

RECIPE_VERSION = 1
BIG_NAME = "bigfile"
SMALL_MIN, SMALL_MAX = 256, 4096  # bytes per small file


@dataclass(frozen=True)
class ImageSpec:
    label: str
    big_mib: int  # size of /bigfile; 0 for none
    dirs: int
    files_per_dir: int

    @property
    def small_files(self) -> int:
        return self.dirs * self.files_per_dir

    def filename(self) -> str:
        return f"{self.label}-{self.big_mib}M-{self.dirs}x{self.files_per_dir}-v{RECIPE_VERSION}.iso"


@dataclass(frozen=True)
class BigFile:
    """Where /bigfile's bytes lie in the image: what the raw pread baseline reads."""

    offset: int
    size: int


def ensure_image(spec: ImageSpec, cache_dir: Path, log) -> Path:
    """The image for ``spec``, built on first use."""
    path = cache_dir / spec.filename()
    if path.exists():
        log(f"reusing {path}")
        return path
    cache_dir.mkdir(parents=True, exist_ok=True)
    src = cache_dir / f"src-{path.stem}"
    partial = path.with_name(path.name + ".partial")
    log(f"building {path} ({spec.big_mib} MiB file + {spec.small_files:,} small files), once")
    try:
        shutil.rmtree(src, ignore_errors=True)
        src.mkdir()
        if spec.big_mib:
            write_random_file(src / BIG_NAME, spec.big_mib)
        write_small_files(src, spec.dirs, spec.files_per_dir)
        subprocess.run(["xorriso", "-as", "mkisofs", "-quiet", "-R", "-J", "-V", "IMGFS_BENCH",
                        "-o", str(partial), str(src)], check=True)
        partial.rename(path)
    finally:
        shutil.rmtree(src, ignore_errors=True)
        partial.unlink(missing_ok=True)
    return path


def write_random_file(path: Path, mib: int, key: int = 0) -> None:
    """Incompressible, reproducible data: AES-CTR keystream from openssl, or Python's PRNG without it.

    A different ``key`` gives different bytes, so that two files of one image cannot be mistaken for each other.
    """
    if shutil.which("openssl"):
        with open(path, "wb") as out:
            keystream = subprocess.Popen(["openssl", "enc", "-aes-128-ctr", "-nosalt", "-K", f"{key:032x}",
                                          "-iv", "0" * 32, "-in", "/dev/zero"],
                                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
            assert keystream.stdout is not None
            left = mib << 20
            while left:
                chunk = keystream.stdout.read(min(left, 1 << 20))
                out.write(chunk)
                left -= len(chunk)
            keystream.kill()
            keystream.wait()
        return
    rng = random.Random(20240101 + key)
    with open(path, "wb") as out:
        for _ in range(mib):
            out.write(rng.randbytes(1 << 20))


def write_small_files(root: Path, dirs: int, per_dir: int) -> None:
    rng = random.Random(4242)
    for d in range(dirs):
        directory = root / f"dir{d:04d}"
        directory.mkdir()
        for f in range(per_dir):
            (directory / f"file{f:03d}.dat").write_bytes(rng.randbytes(rng.randint(SMALL_MIN, SMALL_MAX)))


def locate_big_file(image: Path) -> BigFile:
    """/bigfile's extent, as xorriso reports it; it must be one contiguous extent."""
    command = ["xorriso", "-indev", str(image), "-find", f"/{BIG_NAME}", "-exec", "report_lba", "--"]
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    # "File data lba:  0 ,       33 ,   524288 , 1073741824 , '/bigfile'"
    rows = re.findall(r"File data lba:\s*\d+\s*,\s*(\d+)\s*,\s*(\d+)\s*,\s*(\d+)\s*,", out)
    if len(rows) != 1:
        raise RuntimeError(f"expected one extent for /{BIG_NAME} in {image}, xorriso said:\n{out}")
    lba, _blocks, size = (int(v) for v in rows[0])
    return BigFile(offset=lba * 2048, size=size)


def warm(path: Path) -> None:
    """Read the whole image so that it sits in the page cache for the warm measurements."""
    buf = bytearray(8 << 20)
    fd = os.open(path, os.O_RDONLY)
    try:
        offset = 0
        while n := os.preadv(fd, [buf], offset):
            offset += n
    finally:
        os.close(fd)


def drop_caches() -> None:
    """Empty the page cache (root only), so that the next read comes from the disk for everyone."""
    os.sync()
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3\n")
