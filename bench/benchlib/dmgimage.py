"""The DMG part's images: one HFS+ volume holding /bigfile, wrapped as UDZO, ULFO and UDBZ.

The HFS+ volume comes from a real third-party writer: ``xorriso -as mkisofs -hfsplus`` makes an
ISO 9660 + Apple Partition Map + HFS+ hybrid, and its ``Apple_HFS`` partition is cut out of it as a bare
volume (its extents count from the partition's start, and the file data lies inside the partition).
Each DMG wraps that bare volume as one block table, ``whole disk (Apple_HFS : 0)``, the way
``hdiutil create -layout NONE`` does, in 1 MiB chunks (2048 sectors, as hdiutil writes them), by
tests/udifwriter.py. So imgfs, 7-Zip and dmg2img all go through the UDIF chunks to the HFS+ volume;
nobody sees an ISO 9660 side.

/bigfile is the same for every codec: reproducible text-like and binary data, compressible but not
trivially (about 2.5-3:1 with zlib; no all-zero chunk, which UDIF would store as a free hole). Each
1 MiB of it is a slice of an 8 MiB pool (text of words from a 4,000-word vocabulary, with line breaks
and punctuation, interleaved with tables of binary records and a little random data), taken at a
different offset for every MiB and with a few bytes changed, so that no two chunks are alike.

Everything is cached in the cache directory under names that carry the recipe (and a version), and
renamed into place only when complete. The bzip2 image of 1 GiB takes a couple of minutes to write
(bzip2 -9 in one thread); progress is logged.
"""

from __future__ import annotations

import hashlib
import json
import random
import shutil
import struct
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from benchlib.images import BIG_NAME

RECIPE_VERSION = 1
MIB = 1 << 20
CHUNK_SECTORS = 2048  # 1 MiB chunks, as hdiutil writes UDZO/ULFO/UDBZ
POOL_MIB = 8
CODECS = {"zlib": "UDZO", "lzfse": "ULFO", "bzip2": "UDBZ"}  # the codecs measured, by UDIF format name
SMALL_FILES = 20  # a few small files beside /bigfile, so that the catalog is not a single record
TESTS_DIR = Path(__file__).resolve().parents[2] / "tests"


@dataclass(frozen=True)
class DmgSet:
    """The payload and its DMGs."""

    hfs: Path  # the bare HFS+ volume
    dmgs: dict[str, Path]  # codec -> .dmg
    big_mib: int
    label: str  # the HFS+ volume name (7-Zip lists files under it)
    reference: dict  # sha256 and size of /bigfile and of the volume, written when the volume was built

    @property
    def big_size(self) -> int:
        return int(self.reference["bigfile_size"])

    @property
    def entries(self) -> int:
        """What find sees in the volume: /bigfile, /docs and the small files in it."""
        return 2 + SMALL_FILES


def ensure(big_mib: int, cache_dir: Path, python: str, log: Callable[[str], None]) -> DmgSet:
    """The HFS+ payload and one DMG per codec, built on first use."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    stem = f"dmg-{big_mib}M-v{RECIPE_VERSION}"
    label = "IMGFS_DMG"
    hfs = cache_dir / f"{stem}.hfs"
    sidecar = hfs.with_suffix(".json")
    if hfs.exists() and sidecar.exists():
        log(f"reusing {hfs}")
    else:
        for fmt in CODECS.values():  # DMGs of an earlier volume would no longer match it
            (cache_dir / f"{stem}-{fmt}.dmg").unlink(missing_ok=True)
        build_hfs(hfs, big_mib, label, cache_dir, log)
    dmgs = {}
    for codec, fmt in CODECS.items():
        dmg = cache_dir / f"{stem}-{fmt}.dmg"
        if dmg.exists():
            log(f"reusing {dmg}")
        else:
            build_dmg(dmg, hfs, codec, python, log)
        dmgs[codec] = dmg
    return DmgSet(hfs, dmgs, big_mib, label, json.loads(sidecar.read_text()))


# -- the payload ------------------------------------------------------------------------------------


def make_pool(seed: int = 1024) -> bytes:
    """POOL_MIB of mixed content: runs of text (64-192 KiB) and of binary records or random bytes."""
    rng = random.Random(seed)
    letters = b"etaoinshrdlcumwfgypbvkjxqz"
    weights = [12, 9, 8, 7.5, 7, 6.7, 6.3, 6, 5.9, 4.3, 4, 2.8, 2.4, 2.4, 2.2, 2, 2, 1.9, 1.5, 1, 0.8, 0.2, 0.2, 0.1,
               0.1, 0.07]
    words = [bytes(rng.choices(letters, weights, k=rng.choice((1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 7, 8, 9, 11))))
             for _ in range(4000)]
    zipf = [1 / (rank + 1) for rank in range(len(words))]
    out = bytearray()
    while len(out) < POOL_MIB * MIB:
        kind = rng.random()
        size = rng.randrange(64 << 10, 192 << 10)
        if kind < 0.70:
            out += _text(rng, words, zipf, size)
        elif kind < 0.95:
            out += _records(rng, size)
        else:
            out += rng.randbytes(size // 4)  # a little incompressible data (a thumbnail, a hash list)
    return bytes(out[: POOL_MIB * MIB])


def _text(rng: random.Random, words: list[bytes], zipf: list[float], size: int) -> bytes:
    chosen = rng.choices(words, zipf, k=size // 4)
    lines, line = [], []
    for i, word in enumerate(chosen):
        line.append(word)
        if rng.random() < 0.08:
            lines.append(b" ".join(line) + rng.choice((b".", b",", b";", b"!", b"?", b":")))
            line = []
        if i % 12 == 11 and rng.random() < 0.3:
            lines.append(b"\n")
    return b" ".join(lines)[:size]


def _records(rng: random.Random, size: int) -> bytes:
    """A table of little-endian records: an id that counts up, a time that creeps, small values, a hash."""
    record = struct.Struct("<IIHHQ")
    ident, stamp = rng.randrange(1 << 20), rng.randrange(1 << 30)
    rows = []
    for _ in range(size // record.size):
        ident += 1
        stamp += rng.randrange(60)
        rows.append(record.pack(ident, stamp, rng.randrange(16), rng.randrange(1000), rng.getrandbits(64)))
    return b"".join(rows)


def chunks(pool: bytes, count: int, seed: int = 7) -> Iterator[bytes]:
    """``count`` MiB of /bigfile: for MiB ``i``, the pool at an offset of its own, a few bytes changed."""
    rng = random.Random(seed)
    span = len(pool) - MIB
    for i in range(count):
        at = (i * 1_048_573 * 3) % span  # a prime step: offsets never line up with 4 KiB pages or sectors
        block = bytearray(pool[at : at + MIB])
        block[:32] = f"--- MiB {i:08d} of bigfile ---\n".encode().ljust(32)
        for _ in range(64):
            block[rng.randrange(MIB)] = rng.randrange(32, 127)
        yield bytes(block)


def write_bigfile(path: Path, mib: int, log: Callable[[str], None]) -> str:
    """Write /bigfile; its sha256."""
    pool = make_pool()
    digest = hashlib.sha256()
    with open(path, "wb") as out:
        for block in chunks(pool, mib):
            out.write(block)
            digest.update(block)
    log(f"  wrote /{BIG_NAME} ({mib} MiB)")
    return digest.hexdigest()


def build_hfs(hfs: Path, big_mib: int, label: str, cache_dir: Path, log: Callable[[str], None]) -> None:
    """xorriso's ISO/APM/HFS+ hybrid of /bigfile + a few small files; its Apple_HFS partition, cut out."""
    log(f"building {hfs} (HFS+ with a {big_mib} MiB /{BIG_NAME}, by xorriso -hfsplus), once")
    src = cache_dir / f"src-{hfs.stem}"
    hybrid = hfs.with_name(hfs.name + ".hybrid.iso")
    partial = hfs.with_name(hfs.name + ".partial")
    sidecar = hfs.with_suffix(".json")
    try:
        shutil.rmtree(src, ignore_errors=True)
        (src / "docs").mkdir(parents=True)
        big_sha = write_bigfile(src / BIG_NAME, big_mib, log)
        rng = random.Random(99)
        for n in range(SMALL_FILES):
            (src / "docs" / f"note{n:02d}.txt").write_bytes(rng.randbytes(rng.randrange(100, 5000)).hex().encode())
        done = subprocess.run(["xorriso", "-as", "mkisofs", "-quiet", "-hfsplus", "-R", "-J", "-V", label,
                               "-o", str(hybrid), str(src)], capture_output=True, text=True)
        if done.returncode:
            raise RuntimeError(f"xorriso failed: {done.stderr[-500:]}")
        start, length = apple_hfs_partition(hybrid)
        hfs_digest = hashlib.sha256()
        with open(hybrid, "rb") as source, open(partial, "wb") as out:
            source.seek(start)
            left = length
            while left:
                piece = source.read(min(left, 8 * MIB))
                if not piece:
                    raise RuntimeError(f"{hybrid} ends inside its Apple_HFS partition")
                out.write(piece)
                hfs_digest.update(piece)
                left -= len(piece)
        with open(partial, "rb") as check:
            check.seek(1024)
            if check.read(2) != b"H+":
                raise RuntimeError(f"no HFS+ volume header in the Apple_HFS partition of {hybrid}")
        sidecar.write_text(json.dumps({"bigfile_sha256": big_sha, "bigfile_size": big_mib * MIB,
                                       "hfs_sha256": hfs_digest.hexdigest(), "hfs_size": length,
                                       "hfs_partition_offset_in_hybrid": start}, indent=1) + "\n")
        partial.rename(hfs)
    finally:
        shutil.rmtree(src, ignore_errors=True)
        hybrid.unlink(missing_ok=True)
        partial.unlink(missing_ok=True)


def apple_hfs_partition(image: Path) -> tuple[int, int]:
    """(byte offset, byte length) of the Apple_HFS entry of the image's Apple Partition Map."""
    with open(image, "rb") as f:
        head = f.read(64 * 512)
    if head[:2] != b"ER":
        raise RuntimeError(f"{image}: no Apple Partition Map (no driver descriptor 'ER')")
    block = struct.unpack_from(">H", head, 2)[0]
    count = struct.unpack_from(">I", head, 512 + 4)[0]
    for n in range(1, count + 1):
        entry = head[n * block : (n + 1) * block]
        if entry[:2] != b"PM":
            break
        first, blocks = struct.unpack_from(">II", entry, 8)
        if entry[48:80].rstrip(b"\0") == b"Apple_HFS":
            return first * block, blocks * block
    raise RuntimeError(f"{image}: no Apple_HFS partition in its partition map")


# -- the DMGs ---------------------------------------------------------------------------------------


# Run in the imgfs venv (tests/udifwriter.py needs the lzfse package): the writer, with a progress line
# every 128 chunks on stderr.
BUILD_DMG = r"""
import sys, time
hfs, dmg, codec, tests = sys.argv[1:5]
sys.path.insert(0, tests)
import udifwriter
size, chunk_sectors = int(sys.argv[5]), int(sys.argv[6])
total = -(-size // (chunk_sectors * 512))
original = udifwriter.COMPRESSORS[codec]
done = [0]
started = time.monotonic()
def counted(data):
    done[0] += 1
    if done[0] % 128 == 0:
        elapsed = time.monotonic() - started
        print(f"[{time.strftime('%H:%M:%S')}]   {codec}: {done[0]:,}/{total:,} chunks, {elapsed:.0f} s, "
              f"about {elapsed * (total - done[0]) / done[0]:.0f} s to go", file=sys.stderr, flush=True)
    return original(data)
udifwriter.COMPRESSORS[codec] = counted
udifwriter.write_udif(dmg, hfs, codec=codec, chunk_sectors=chunk_sectors)
"""


def build_dmg(dmg: Path, hfs: Path, codec: str, python: str, log: Callable[[str], None]) -> None:
    """``hfs`` as a UDIF image of ``codec`` chunks, by tests/udifwriter.py, with progress in the log."""
    size = hfs.stat().st_size
    log(f"building {dmg} ({CODECS[codec]}: {-(-size // (CHUNK_SECTORS * 512)):,} chunks of {codec}), once")
    started = time.monotonic()
    partial = dmg.with_name(dmg.name + ".partial")
    try:
        subprocess.run([python, "-c", BUILD_DMG, str(hfs), str(partial), codec, str(TESTS_DIR), str(size),
                        str(CHUNK_SECTORS)],
                       check=True, cwd="/")
        partial.rename(dmg)
    finally:
        partial.unlink(missing_ok=True)
    log(f"  {dmg.name}: {dmg.stat().st_size / 1e6:,.0f} MB for {size / 1e6:,.0f} MB of volume, "
        f"{time.monotonic() - started:.0f} s")
