"""Alcohol 120% media descriptors (.mds, version 1.x) and their data files (.mdf, or .md0, .md1, ... when split).

Layout (little-endian), from libmirage's reverse engineering:

* header, 88 bytes: ``MEDIA DESCRIPTOR``, version (major, minor), medium type (0x00 CD-ROM, 0x01 CD-R,
  0x02 CD-RW, 0x10 DVD-ROM, 0x12 DVD-R), number of sessions, ..., offset of the session blocks (at 80).
* session block, 24 bytes: start and end LBA (signed), session number, number of all blocks and of
  non-track blocks, first and last track, offset of its track blocks.
* track block, 80 bytes: mode, subchannel (8: 96 bytes of P-W interleaved after each sector), the Q
  subchannel TOC entry (ADR/control, TNO, point, MSF, PMSF), offset of its extra block, sector size, start
  LBA, start offset in the data, number of data files, offset of its file blocks. Points 1..99 are tracks;
  0xA0, 0xA1, 0xA2 (first track, last track, lead-out) and others are TOC entries only.
* extra block, 8 bytes (CDs): pregap (not stored) and length in sectors of the track. DVDs have none: the
  field holds the track's length.
* file block, 16 bytes: offset of the file name, 1 if it is UTF-16, two unknown words. ``*.mdf`` means the
  descriptor's own stem with that extension.

Version 2 (Daemon Tools' MDX and the MDS that goes with it) is compressed or encrypted: refused.

Track modes: only the low three bits count (libmirage found that Alcohol ignores the rest, and that x and
x + 8 are the same mode):

======================  ====================
mode & 7                mode
======================  ====================
1 (0xA9)                AUDIO
2 (0xAA)                MODE1
4 (0xAC)                MODE2 (Form 1)
5 (0xAD)                MODE2 (Form 2)
0, 3 (0xAB), 7          MODE2 (formless)
6                       unknown: read as MODE2
======================  ====================

The data file holds each track's sectors from its INDEX 01 (``start offset``), ``length`` of them; pregaps
are not stored.
"""

from __future__ import annotations

import os
import struct
from typing import Any, NamedTuple

from imgfs.containers.optical.disc import AUDIO, MODE1, MODE2, SECTOR_SIZES, Disc, Track
from imgfs.containers.optical.files import open_data_file, sibling
from imgfs.errors import CorruptImage, ImageError, UnsupportedFormat
from imgfs.io.stream import ConcatStream, FileStream, Stream, read_exact
from imgfs.layer import OpenContext

LAYER = "mds"
SIGNATURE = b"MEDIA DESCRIPTOR"
HEADER = struct.Struct("<16s2sHH4xH8xI24xI12xII")
SESSION = struct.Struct("<iiHBBHH4xI")
TRACK = struct.Struct("<12BIH18xIQII24x")
EXTRA = struct.Struct("<II")
FILE_BLOCK = struct.Struct("<II8x")
MAX_SESSIONS = 99
MAX_FILES = 100
MAX_NAME = 1024
SPLIT_PARTS = 100  # .md0 .. .md99
MEDIA = {0x00: "CD-ROM", 0x01: "CD-R", 0x02: "CD-RW", 0x10: "DVD-ROM", 0x12: "DVD-R"}
MODES = {0x1: (AUDIO, "audio"), 0x2: (MODE1, "Mode 1"), 0x4: (MODE2, "Mode 2 Form 1"), 0x5: (MODE2, "Mode 2 Form 2"),
         0x0: (MODE2, "Mode 2"), 0x3: (MODE2, "Mode 2"), 0x7: (MODE2, "Mode 2")}  # by mode & 7


class TrackBlock(NamedTuple):
    mode: int
    subchannel: int
    adr_ctl: int
    point: int
    pmsf: tuple[int, int, int]
    extra_offset: int
    sector_size: int
    start_lba: int
    start_offset: int
    files: int
    files_offset: int

    @classmethod
    def parse(cls, raw: bytes) -> TrackBlock:
        f = TRACK.unpack(raw)
        return cls(f[0], f[1], f[2], f[4], (f[9], f[10], f[11]), *f[12:])


def probe(stream: Stream) -> bool:
    """Any ``MEDIA DESCRIPTOR`` header: version 2 too, so that the opener says why it is refused."""
    return stream.pread(0, len(SIGNATURE)) == SIGNATURE


def open_mds(stream: Stream, ctx: OpenContext) -> Disc:
    disc = parse_mds(stream, ctx.path)
    attach_data(disc, ctx.path)
    return disc.opened(ctx.verify)


def parse_mds(stream: Stream, name: str = "") -> Disc:
    """The descriptor's sessions and tracks; no data file is opened (``Track.source`` stays None)."""
    signature, version, medium, sessions, _, _, _, sessions_offset, _ = HEADER.unpack(
        read_exact(stream, 0, HEADER.size, LAYER, "the descriptor header"))
    if signature != SIGNATURE:
        raise UnsupportedFormat(f"expected {SIGNATURE.decode()!r} at byte 0, got {signature!r}", layer=LAYER, offset=0)
    if version[0] == 2:
        raise UnsupportedFormat("MDX/MDS v2 (compressed or encrypted Alcohol image) is not supported", layer=LAYER,
                                offset=16)
    if version[0] != 1:
        raise UnsupportedFormat(f"MDS version {version[0]}.{version[1]} is not supported (only 1.x)", layer=LAYER,
                                offset=16)
    _check_table(stream, "session blocks", sessions_offset, sessions, SESSION.size, MAX_SESSIONS, 20)
    disc = Disc("mds", [], name=name or stream.name)
    info: dict[str, Any] = {"version": f"{version[0]}.{version[1]}", "medium_type": _medium(medium),
                            "sessions": [], "track_files": {}}
    disc.details["mds"] = info
    dvd = medium >= 0x10
    for i in range(sessions):
        raw = read_exact(stream, sessions_offset + i * SESSION.size, SESSION.size, LAYER, f"session block {i + 1}")
        info["sessions"].append(_read_session(stream, SESSION.unpack(raw), dvd, disc))
    if not disc.tracks:
        raise CorruptImage("the descriptor lists no track", layer=LAYER, offset=sessions_offset)
    numbers = [t.number for t in disc.tracks]
    if len(set(numbers)) != len(numbers):
        raise CorruptImage(f"the descriptor lists a track twice: {numbers}", layer=LAYER, offset=sessions_offset)
    info["data_files"] = sorted({name for names in info["track_files"].values() for name in names})
    return disc


def _medium(code: int) -> str:
    return f"{code:#04x} ({MEDIA.get(code, 'unknown')})"


def _check_table(stream: Stream, what: str, offset: int, count: int, size: int, limit: int, field_at: int) -> None:
    """``count`` entries of ``size`` bytes at ``offset`` must be plausible and inside the descriptor."""
    if count > limit:
        raise CorruptImage(f"the descriptor claims {count} {what}; at most {limit} make sense", layer=LAYER,
                           offset=field_at)
    if offset + count * size > stream.size:
        raise CorruptImage(f"{count} {what} at byte {offset} run past the end of the descriptor ({stream.size} bytes)",
                           layer=LAYER, offset=offset)


def _read_session(stream: Stream, fields: tuple, dvd: bool, disc: Disc) -> dict[str, Any]:
    start, end, number, blocks, nontrack, first, last, blocks_offset = fields
    _check_table(stream, f"track blocks of session {number}", blocks_offset, blocks, TRACK.size, 255, blocks_offset)
    toc: list[dict[str, Any]] = []
    tracks: list[Track] = []
    files = disc.details["mds"]["track_files"]
    for i in range(blocks):
        at = blocks_offset + i * TRACK.size
        block = TrackBlock.parse(read_exact(stream, at, TRACK.size, LAYER, f"track block {i + 1}"))
        entry: dict[str, Any] = {"point": f"{block.point:#04x}", "adr_ctl": f"{block.adr_ctl:#04x}",
                                 "pmsf": "{:02d}:{:02d}:{:02d}".format(*block.pmsf)}
        if 1 <= block.point <= 99:
            tracks.append(_track(stream, block, number, dvd, at))
            files[block.point] = _file_names(stream, block, at)
            entry.update(mode=f"{block.mode:#04x}", subchannel=block.subchannel, sector_size=block.sector_size,
                         start_sector=block.start_lba, start_offset=block.start_offset, pregap=tracks[-1].pregap,
                         length=tracks[-1].file_sectors, files=files[block.point])
        toc.append(entry)
    _set_lengths(tracks, end)
    disc.tracks.extend(tracks)
    return {"number": number, "start": start, "end": end, "first_track": first, "last_track": last,
            "blocks": blocks, "non_track_blocks": nontrack, "toc": toc}


def _set_lengths(tracks: list[Track], leadout: int) -> None:
    """INDEX 01 to the next track's INDEX 01; the last one to the session's end (its lead-out)."""
    tracks.sort(key=lambda t: t.start)
    for track, following in zip(tracks, tracks[1:]):
        track.length = following.start - track.start
    if tracks and leadout > tracks[-1].start:
        tracks[-1].length = leadout - tracks[-1].start


def _track(stream: Stream, block: TrackBlock, session: int, dvd: bool, at: int) -> Track:
    if block.sector_size not in SECTOR_SIZES:
        raise CorruptImage(f"track {block.point} has a sector size of {block.sector_size} bytes", layer=LAYER,
                           offset=at + 16)
    pregap, length = _extra(stream, block, dvd, at)
    mode, what = MODES.get(block.mode & 0x07, (MODE2, "unknown mode, read as Mode 2"))
    track = Track(block.point, mode, block.start_lba, length, sector_size=block.sector_size,
                  file_lba=block.start_lba, file_offset=block.start_offset, file_sectors=length, session=session,
                  pregap=pregap, sheet_mode=f"{block.mode:#04x} ({what})", flags=_flags(block.adr_ctl & 0x0F))
    if block.sector_size in (2048, 2324, 2328):
        track.user_offset = 0
    elif block.sector_size in (2336, 2340) and mode == MODE2:
        track.user_offset = 8
    return track


def _flags(control: int) -> list[str]:
    if control & 0x4:
        return ["DCP"] if control & 0x2 else []
    return [name for bit, name in ((0x2, "DCP"), (0x1, "PRE"), (0x8, "4CH")) if control & bit]


def _extra(stream: Stream, block: TrackBlock, dvd: bool, at: int) -> tuple[int, int]:
    """(pregap, length): from the extra block of a CD track; a DVD track keeps its length in the offset."""
    if dvd:
        return 0, block.extra_offset
    if block.extra_offset == 0:
        raise CorruptImage(f"track {block.point} has no extra block (its length)", layer=LAYER, offset=at + 12)
    raw = read_exact(stream, block.extra_offset, EXTRA.size, LAYER, f"the extra block of track {block.point}")
    return EXTRA.unpack(raw)


def _file_names(stream: Stream, block: TrackBlock, at: int) -> list[str]:
    if block.files == 0 or block.files_offset == 0:
        return []
    _check_table(stream, f"file blocks of track {block.point}", block.files_offset, block.files, FILE_BLOCK.size,
                 MAX_FILES, at + 48)
    names = []
    for j in range(block.files):
        name_offset, wide = FILE_BLOCK.unpack(stream.pread(block.files_offset + j * FILE_BLOCK.size, FILE_BLOCK.size))
        names.append(_file_name(stream, name_offset, bool(wide), block.point))
    return names


def _file_name(stream: Stream, offset: int, wide: bool, point: int) -> str:
    if offset >= stream.size:
        raise CorruptImage(f"the data file name of track {point} is at byte {offset}, past the end of the "
                           f"descriptor ({stream.size} bytes)", layer=LAYER, offset=offset)
    raw = stream.pread(offset, MAX_NAME * (2 if wide else 1))
    if wide:
        end = next((i for i in range(0, len(raw) - 1, 2) if raw[i : i + 2] == b"\0\0"), len(raw) & ~1)
        return raw[:end].decode("utf-16-le", "replace")
    text = raw.split(b"\0", 1)[0]
    try:
        return text.decode("utf-8")
    except UnicodeDecodeError:
        return text.decode("latin-1")


# -- the data files ---------------------------------------------------------------------------------------


def data_file_name(pattern: str, descriptor: str) -> str:
    """``*.mdf`` is the descriptor's stem with that extension; anything else is a name as given."""
    if pattern.startswith("*."):
        return os.path.splitext(os.path.basename(descriptor))[0] + pattern[1:]
    return pattern


def attach_data(disc: Disc, path: str) -> None:
    """Open the data files the tracks name (once per distinct list) and make them the tracks' sources."""
    opened: dict[tuple[str, ...], Stream] = {}
    single = len({_track_files(disc, t, path) for t in disc.tracks}) == 1  # one data file: it may be renamed
    try:
        for track in disc.tracks:
            names = _track_files(disc, track, path)
            if names not in opened:
                needed = max(t.file_offset + t.file_sectors * t.sector_size for t in disc.tracks
                             if _track_files(disc, t, path) == names)
                opened[names] = _open_set(disc, path, names, needed, single and len(names) == 1)
            track.source = opened[names]
    except ImageError:
        disc.close()
        raise


def _track_files(disc: Disc, track: Track, path: str) -> tuple[str, ...]:
    names = disc.details["mds"]["track_files"].get(track.number) or ["*.mdf"]
    return tuple(data_file_name(n, path) for n in names)


def _open_set(disc: Disc, path: str, names: tuple[str, ...], needed: int, renamed: bool = False) -> Stream:
    parts: list[FileStream] = []
    for name in names:
        parts.append(open_data_file(path, name, renamed=renamed))
        disc.files.append(parts[-1])
    if sum(p.size for p in parts) < needed:  # a split image the descriptor names by its first part only
        for extra in _split_parts(path, names[-1], needed - sum(p.size for p in parts)):
            parts.append(extra)
            disc.files.append(extra)
    if len(parts) == 1:
        return parts[0]
    return ConcatStream(parts, name=" + ".join(os.path.basename(p.name) for p in parts))


def _split_parts(path: str, last: str, missing: int) -> list[FileStream]:
    """``.md0``, ``.md1``, ... beside the descriptor after ``last``, until ``missing`` bytes are found."""
    stem, ext = os.path.splitext(os.path.basename(last.replace("\\", "/")))
    first = int(ext[3:]) + 1 if ext[:3].lower() == ".md" and ext[3:].isdigit() else 0
    found: list[FileStream] = []
    for i in range(first, SPLIT_PARTS):
        candidate = sibling(os.path.join(os.path.dirname(os.path.abspath(path)), stem), (f".md{i}",))
        if candidate is None or missing <= 0:
            break
        found.append(FileStream(candidate))
        missing -= found[-1].size
    return found
