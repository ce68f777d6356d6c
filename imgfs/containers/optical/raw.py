"""A raw sector dump with no sheet: a ``.bin`` or ``.img`` of 2352- or 2448-byte data sectors.

Without a cue sheet the whole file is taken as one data track from LBA 0; its mode (and so where the
user bytes are) comes from the sector headers. Audio cannot be told from data without a sheet.
"""

from __future__ import annotations

import os

from imgfs.containers.optical.disc import MODE1, MODE2, RAW, SUBCHANNEL, SYNC, Disc, Track
from imgfs.io.stream import Stream
from imgfs.layer import OpenContext


def _sector_size(stream: Stream) -> int:
    for size in (RAW, RAW + SUBCHANNEL):
        if stream.size >= 2 * size and stream.pread(size, 12) == SYNC:
            return size
    return 0


def probe(stream: Stream) -> bool:
    return stream.pread(0, 12) == SYNC and _sector_size(stream) > 0


def open_raw_sectors(stream: Stream, ctx: OpenContext) -> Disc:
    size = _sector_size(stream)
    count = stream.size // size
    mode = MODE1 if stream.pread(15, 1) == b"\x01" else MODE2
    track = Track(number=1, mode=mode, start=0, length=count, sector_size=size, source=stream, file_lba=0,
                  file_offset=0, file_sectors=count, sheet_mode=f"{mode}/{size} (from the sector headers)")
    disc = Disc("raw-sectors", [track], name=ctx.path)
    if stream.size % size:
        disc.notes.append(f"{stream.size % size} bytes after the last whole sector are ignored")
    disc.notes.append(f"no cue sheet beside {os.path.basename(ctx.path)}: one data track assumed")
    return disc.opened(ctx.verify)
