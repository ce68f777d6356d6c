"""The optical part's images: a MODE1/2352 BIN/CUE made from an ISO part image, and an audio BIN/CUE.

Both are cached in the cache directory beside the ISO images, under names that carry the recipe (and a
version), and renamed into place only when complete, like the other images.

The data BIN is the ISO's 2048-byte sectors wrapped into raw 2352-byte Mode 1 sectors: 12 sync bytes,
the header (BCD minute, second, frame of LBA + 150, mode 1), the 2048 user bytes, then 288 bytes where
a real disc keeps its EDC and ECC. Those are left as zeros: computing them in Python for 500,000
sectors would take minutes, and neither imgfs (EDC/ECC are checked only with ``-o verify``, off by
default) nor fuseiso nor bchunk looks at them. A 1 GiB file makes the disc longer than a CD's 99 BCD
minutes (about 125 minutes of sectors): the minute wraps at 100, since nothing here reads the header's
address either. The writer fills a preformatted buffer of 4,096 sectors with slice assignments and
writes it whole: about 5 s for 1 GiB.

The audio BIN is one AUDIO track of 16-bit stereo PCM: a pseudo-random block of a prime number of bytes
repeated, so that the data is neither constant nor aligned with sectors or pages.
"""

from __future__ import annotations

import hashlib
import os
import random
from dataclasses import dataclass
from pathlib import Path

RECIPE_VERSION = 1
RAW, USER = 2352, 2048
SYNC = b"\x00" + b"\xff" * 10 + b"\x00"
LEADIN_FRAMES = 150  # LBA 0 is MSF 00:02:00
CHUNK_SECTORS = 4096  # sectors per write: 9.2 MiB of BIN
AUDIO_PATTERN_BYTES = 1_048_573  # a prime: the pattern repeats out of step with sectors and pages
BCD = [((v // 10) << 4) | (v % 10) for v in range(100)]


@dataclass(frozen=True)
class Disc:
    """A BIN/CUE pair."""

    bin: Path
    cue: Path


@dataclass(frozen=True)
class Span:
    """A file's bytes inside a BIN: ``size`` bytes of content in the raw sectors from ``offset`` on."""

    offset: int  # the first raw sector's byte offset in the BIN
    length: int  # bytes of raw sectors (what a raw pread of the same sectors reads)
    size: int  # bytes of content


def data_disc(iso: Path, cache_dir: Path, log) -> Disc:
    """``iso`` as a single-track MODE1/2352 BIN/CUE, built on first use."""
    return _cached(cache_dir, f"{iso.stem}-mode1_2352-v{RECIPE_VERSION}", "MODE1/2352",
                   f"from {iso.name} (MODE1/2352, EDC/ECC left zero)", lambda out: write_mode1(iso, out), log)


def audio_disc(sectors: int, cache_dir: Path, log) -> Disc:
    """A disc with one AUDIO track of ``sectors`` sectors of PCM, built on first use."""
    return _cached(cache_dir, f"audio-{sectors}s-v{RECIPE_VERSION}", "AUDIO",
                   f"({sectors * RAW / 1e6:,.0f} MB of PCM)", lambda out: write_pcm(sectors, out), log)


def _cached(cache_dir: Path, stem: str, mode: str, what: str, write, log) -> Disc:
    disc = Disc(cache_dir / f"{stem}.bin", cache_dir / f"{stem}.cue")
    if disc.bin.exists() and disc.cue.exists():
        log(f"reusing {disc.cue}")
        return disc
    log(f"building {disc.bin} {what}, once")
    _build(disc, mode, write)
    return disc


def _build(disc: Disc, mode: str, write) -> None:
    disc.bin.parent.mkdir(parents=True, exist_ok=True)
    partial_bin = disc.bin.with_name(disc.bin.name + ".partial")
    partial_cue = disc.cue.with_name(disc.cue.name + ".partial")
    try:
        with open(partial_bin, "wb") as out:
            write(out)
        partial_cue.write_text(f'FILE "{disc.bin.name}" BINARY\n  TRACK 01 {mode}\n    INDEX 01 00:00:00\n')
        partial_bin.rename(disc.bin)
        partial_cue.rename(disc.cue)
    finally:
        partial_bin.unlink(missing_ok=True)
        partial_cue.unlink(missing_ok=True)


def write_mode1(iso: Path, out) -> None:
    """Every 2048-byte sector of ``iso`` as a raw Mode 1 sector (EDC/ECC zero), written to ``out``."""
    if iso.stat().st_size % USER:
        raise RuntimeError(f"{iso} is not a whole number of 2048-byte sectors")
    template = bytearray(CHUNK_SECTORS * RAW)
    for i in range(CHUNK_SECTORS):  # sync and mode byte never change; EDC/ECC stay zero
        template[i * RAW : i * RAW + 12] = SYNC
        template[i * RAW + 15] = 1
    buf = memoryview(template)
    data = bytearray(CHUNK_SECTORS * USER)
    lba = 0
    with open(iso, "rb", buffering=0) as src:
        while n := src.readinto(data):
            count = n // USER
            view = memoryview(data)
            for i in range(count):
                frame = lba + i + LEADIN_FRAMES
                base = i * RAW
                buf[base + 12 : base + 15] = bytes((BCD[frame // 4500 % 100], BCD[frame // 75 % 60], BCD[frame % 75]))
                buf[base + 16 : base + 16 + USER] = view[i * USER : (i + 1) * USER]
            out.write(buf[: count * RAW])
            lba += count


def write_pcm(sectors: int, out) -> None:
    """``sectors`` x 2352 bytes: a pseudo-random block of a prime length, repeated."""
    pattern = random.Random(2352).randbytes(AUDIO_PATTERN_BYTES)
    chunk = CHUNK_SECTORS * RAW
    repeated = memoryview(pattern * (chunk // AUDIO_PATTERN_BYTES + 2))
    total, pos = sectors * RAW, 0
    while pos < total:
        n = min(chunk, total - pos)
        start = pos % AUDIO_PATTERN_BYTES
        out.write(repeated[start : start + n])
        pos += n


def data_span(lba_offset: int, size: int) -> Span:
    """Where a file at byte ``lba_offset`` of the ISO (a multiple of 2048) lies in the MODE1/2352 BIN."""
    first, sectors = lba_offset // USER, -(-size // USER)
    return Span(first * RAW, sectors * RAW, size)


def sha256_range(path: Path, offset: int, size: int) -> str:
    digest = hashlib.sha256()
    buf = bytearray(8 << 20)
    fd = os.open(path, os.O_RDONLY)
    try:
        done = 0
        while done < size:
            n = os.preadv(fd, [memoryview(buf)[: min(len(buf), size - done)]], offset + done)
            if n == 0:
                raise OSError(f"{path}: unexpected end at {offset + done}")
            digest.update(memoryview(buf)[:n])
            done += n
    finally:
        os.close(fd)
    return digest.hexdigest()
