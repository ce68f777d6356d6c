"""Checking a UDIF image's checksums: ``imgfs verify IMAGE`` and ``-o verify``, not every mount.

A UDIF image may hold three kinds of CRC32 (checksum type 2; other types are reported as not checked):

* the data fork's, over its bytes as stored;
* each partition's (blkx table), over its decoded bytes in order, leaving out "ignore" runs (free space);
* the master checksum, over the partitions' checksums one after the other.

Every chunk is decoded once on the way (without going through the mount's cache), so a chunk that
does not decode is reported too.
"""

from __future__ import annotations

import zlib
from typing import TYPE_CHECKING, Callable

from imgfs.containers.dmg.structs import HOLES, IGNORE, LAYER, RAW, Checksum
from imgfs.errors import ImageError
from imgfs.layer import Progress, no_progress

if TYPE_CHECKING:
    from imgfs.containers.dmg.udif import UdifImage

_STEP = 1 << 20
_ZEROS = bytes(_STEP)


def verify_image(image: UdifImage, progress: Progress = no_progress) -> list[str]:
    koly = image.trailer.koly
    problems = []
    if koly.segment_count <= 1:
        problems += _check("the data fork", koly.data_checksum, lambda: _data_fork_crc(image))
    total = sum(p.length for p in image.pieces if p.table >= 0 and p.kind != IGNORE)
    done = [0]

    def advance(size: int) -> None:
        done[0] += size
        progress("checking the checksums", done[0], total)

    for index, table in enumerate(image.tables):
        problems += _check(f"partition {table.name!r}", table.checksum,
                           lambda i=index: _partition_crc(image, i, advance))
    master = b"".join(t.checksum.digest() for t in image.tables)
    problems += _check("the master checksum", koly.master_checksum, lambda: zlib.crc32(master))
    return problems


def _check(what: str, expected: Checksum, compute) -> list[str]:
    if expected.kind == 0:
        return []
    if not expected.is_crc32:
        return [f"{LAYER}: {what}: checksum type {expected.kind} ({expected.bits} bits) is not checked"]
    try:
        actual = compute()
    except ImageError as exc:
        return [f"{what}: cannot be checked: {exc}"]
    if actual != expected.crc32:
        return [f"{LAYER}: {what}: CRC32 is {actual:08x}, the image says {expected.crc32:08x}"]
    return []


def _data_fork_crc(image: UdifImage) -> int:
    koly = image.trailer.koly
    start = image.trailer.base + koly.data_fork_offset
    crc = 0
    for at in range(start, start + koly.data_fork_length, _STEP):
        want = min(_STEP, start + koly.data_fork_length - at)
        data = image.file.pread(at, want)
        if len(data) < want:
            raise ImageError(f"the data fork runs past the end of the image at byte {at + len(data)}", layer=LAYER)
        crc = zlib.crc32(data, crc)
    return crc


def _partition_crc(image: UdifImage, table: int, advance: Callable[[int], None]) -> int:
    crc = 0
    for i, piece in enumerate(image.pieces):
        if piece.table != table or piece.kind == IGNORE:
            continue
        advance(piece.length)  # in bytes of the disk, for the progress line
        if piece.kind in HOLES:
            for at in range(0, piece.length, _STEP):
                crc = zlib.crc32(_ZEROS[: min(_STEP, piece.length - at)], crc)
        elif piece.kind == RAW:
            for at in range(0, piece.length, _STEP):
                crc = zlib.crc32(image.pread(piece.start + at, min(_STEP, piece.length - at)), crc)
        else:
            crc = zlib.crc32(image.decode(i), crc)
    return crc
