"""Nero Burning ROM images (.nrg): the stored sectors, then a list of chunks, then a footer that points to it.

The footer is ``NERO`` + a 32-bit big-endian offset in the last 8 bytes (version 1, Nero 5.0) or ``NER5`` +
a 64-bit offset in the last 12 bytes (version 2, Nero 5.5 and later). From that offset to the footer lie
chunks, each a 4-byte id, a 32-bit big-endian length and that many bytes, until ``END!``:

* ``CUES`` (v1) / ``CUEX`` (v2): the cue of a disc-at-once session, 8-byte entries ``adr/ctl, track (BCD),
  index (BCD), 0, position``; the position is an MSF in bytes 1..3 (CUES, 00:00:00 = LBA -150) or a signed
  LBA (CUEX). Track 0 is the lead-in, track 0xAA the lead-out.
* ``DAOI`` (v1) / ``DAOX`` (v2): a 22-byte header (MCN, first and last track) and per track: ISRC, sector
  size, mode code, and the file offsets of its INDEX 00, INDEX 01 and end (32-bit in DAOI, 64-bit in DAOX).
* ``ETNF`` (v1, 20-byte entries) / ``ETN2`` (v2, 32-byte entries): a track-at-once session, per track the
  file offset, byte length, mode code and a start LBA that leaves out the gaps (it is the file offset over
  the sector size). TAO gaps are not stored: each track is preceded by a 150-sector pregap, as libcdio
  (``start + index * 150``) and libmirage lay them out; cd-info reports those LSNs.
* ``SINF``: tracks in a session (one per session); ``MTYP``: medium type bits; ``CDTX``: CD-TEXT packs.

Each CUE/DAO pair or ETN chunk is one session, in chunk order. Later sessions of a track-at-once disc start
after the previous lead-out (6750 sectors after the first session, 2250 after later ones), a lead-in (4500)
and the first track's pregap (150).

Mode codes (the low byte of ETNF's mode word, DAO's mode byte), from libmirage and libcdio:

====  =====  ======  ===============================================
code  mode   bytes   stored sector
====  =====  ======  ===============================================
0x00  MODE1  2048    Mode 1 user data
0x02  MODE2  2048    Mode 2 Form 1 user data
0x03  MODE2  2336    Mode 2 without sync and header (XA subheader first)
0x05  MODE1  2352    Mode 1, whole sector
0x06  MODE2  2352    Mode 2 (Form 1/2 mixed), whole sector
0x07  AUDIO  2352    audio
0x0F  MODE1  2448    Mode 1, whole sector + 96 bytes of P-W subchannel
0x10  AUDIO  2448    audio + subchannel
0x11  MODE2  2448    Mode 2, whole sector + subchannel
0x20  MODE2  2336    Mode 2 without sync and header (seen by libcdio)
====  =====  ======  ===============================================
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Optional

from imgfs.containers.optical.cdtext import apply_cdtext, control_flags
from imgfs.containers.optical.disc import (
    AUDIO,
    LATER_SESSION_GAP,
    MODE1,
    MODE2,
    RAW,
    SECTOR_SIZES,
    SESSION_GAP,
    SYNC,
    Disc,
    Track,
)
from imgfs.errors import CorruptImage, UnsupportedFormat
from imgfs.io.stream import Stream, read_exact
from imgfs.layer import OpenContext

LAYER = "nrg"
FOOTER_V1 = struct.Struct(">4sI")
FOOTER_V2 = struct.Struct(">4sQ")
CHUNK_HEAD = struct.Struct(">4sI")
CUE_ENTRY = struct.Struct(">BBBBi")
DAO_HEAD = struct.Struct(">I13sBBBBB")
DAOI_TRACK = struct.Struct(">12sHBBHIII")
DAOX_TRACK = struct.Struct(">12sHBBHQQQ")
ETNF_TRACK = struct.Struct(">IIIII")
ETN2_TRACK = struct.Struct(">QQIIQ")
MAX_CHUNK_AREA = 4 << 20  # chunk lists are a few KiB; CD-TEXT adds at most 8 blocks of 256 packs
MAX_TRACKS = 99
TAO_PREGAP = 150


class NrgMode(NamedTuple):
    mode: str
    sector_size: int
    what: str


MODES = {
    0x00: NrgMode(MODE1, 2048, "Mode 1 user data"),
    0x02: NrgMode(MODE2, 2048, "Mode 2 Form 1 user data"),
    0x03: NrgMode(MODE2, 2336, "Mode 2, 2336 bytes"),
    0x05: NrgMode(MODE1, 2352, "Mode 1 raw"),
    0x06: NrgMode(MODE2, 2352, "Mode 2 raw"),
    0x07: NrgMode(AUDIO, 2352, "audio"),
    0x0F: NrgMode(MODE1, 2448, "Mode 1 raw + subchannel"),
    0x10: NrgMode(AUDIO, 2448, "audio + subchannel"),
    0x11: NrgMode(MODE2, 2448, "Mode 2 raw + subchannel"),
    0x20: NrgMode(MODE2, 2336, "Mode 2, 2336 bytes"),
}

MEDIA_BITS = ((0x00001, "CD"), (0x00002, "DDCD"), (0x00004, "DVD-R/RW"), (0x00008, "DVD+R/RW"),
              (0x00010, "DVD-RAM"), (0x00200, "DVD-ROM"), (0x00400, "CD-ROM"), (0x40000, "DVD+R DL"),
              (0x80000, "DVD-R DL"), (0x100000, "BD-ROM"), (0x200000, "BD-R"), (0x400000, "BD-RE"),
              (0x0800000, "HD DVD-ROM"), (0x1000000, "HD DVD-R"), (0x2000000, "HD DVD-RW"))


@dataclass(frozen=True)
class Chunk:
    id: str
    offset: int  # of the chunk's header in the file
    data: bytes


@dataclass
class Layout:
    """Where the sessions built so far end, for the next one."""

    data_end: int  # where stored sectors must end: the chunk list starts there
    leadout: Optional[int] = None  # the previous session's lead-out LBA
    sessions: int = 0
    next_track: int = 1
    info: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def first_start(self) -> int:
        if self.leadout is None:
            return 0
        return self.leadout + (SESSION_GAP if self.sessions == 1 else LATER_SESSION_GAP)


# -- detection and the chunk list --------------------------------------------------------------------------


def probe(stream: Stream) -> bool:
    """A ``NER5`` or ``NERO`` footer whose offset points inside the file."""
    try:
        read_footer(stream)
    except CorruptImage:
        return False
    except UnsupportedFormat:
        return False
    return True


def read_footer(stream: Stream) -> tuple[int, int, int]:
    """(version, offset of the first chunk, offset of the footer)."""
    for version, footer in ((2, FOOTER_V2), (1, FOOTER_V1)):
        if stream.size < footer.size:
            continue
        at = stream.size - footer.size
        magic, offset = footer.unpack(stream.pread(at, footer.size))
        if magic == (b"NER5" if version == 2 else b"NERO"):
            if offset >= at:
                raise CorruptImage(f"the {magic.decode()} footer points to byte {offset}, outside the chunk area "
                                   f"that ends at byte {at} (file size {stream.size})", layer=LAYER, offset=at + 4)
            return version, offset, at
    raise UnsupportedFormat(f"{stream.name} has no NERO or NER5 footer", layer=LAYER)


def read_chunks(stream: Stream, start: int, end: int) -> list[Chunk]:
    """The chunks from ``start`` to ``end``, up to ``END!``; every length checked before it is used."""
    if end - start > MAX_CHUNK_AREA:
        raise CorruptImage(f"the chunk list from byte {start} is {end - start} bytes long, more than a Nero image "
                           f"ever holds ({MAX_CHUNK_AREA})", layer=LAYER, offset=start)
    area = read_exact(stream, start, end - start, LAYER, "the chunk list")
    chunks: list[Chunk] = []
    pos = 0
    while pos < len(area):  # each pass moves on by at least 8 bytes: bounded by the area's size
        if pos + CHUNK_HEAD.size > len(area):
            raise CorruptImage("a chunk header runs into the footer", layer=LAYER, offset=start + pos)
        raw_id, length = CHUNK_HEAD.unpack_from(area, pos)
        chunk_id = _chunk_id(raw_id, start + pos)
        _check_length(chunk_id, length, start + pos, len(area) - pos - CHUNK_HEAD.size)
        chunks.append(Chunk(chunk_id, start + pos, area[pos + 8 : pos + 8 + length]))
        if chunk_id == "END!":
            return chunks
        pos += CHUNK_HEAD.size + length
    raise CorruptImage("the chunk list ends without an END! chunk", layer=LAYER, offset=end)


def _chunk_id(raw: bytes, offset: int) -> str:
    if raw in (b"NERO", b"NER5"):
        raise CorruptImage(f"the chunk list loops back to the {raw.decode()} footer", layer=LAYER, offset=offset)
    if not all(0x20 < b < 0x7F for b in raw):
        raise CorruptImage(f"expected a chunk id, got {raw!r}", layer=LAYER, offset=offset)
    return raw.decode("ascii")


def _check_length(chunk_id: str, length: int, offset: int, room: int) -> None:
    if length >= 0x80000000:  # Nero's readers take it as signed: the walk would step back and loop
        raise CorruptImage(f"chunk {chunk_id} has length {length - (1 << 32)} ({length:#x}): the chunk list "
                           f"would loop back on itself", layer=LAYER, offset=offset + 4)
    if length > room:
        raise CorruptImage(f"chunk {chunk_id} claims {length} bytes, but only {room} remain before the footer",
                           layer=LAYER, offset=offset + 4)


# -- opening --------------------------------------------------------------------------------------------


def open_nrg(stream: Stream, ctx: OpenContext) -> Disc:
    return parse_nrg(stream, ctx.path).opened(ctx.verify)


def parse_nrg(stream: Stream, name: str = "") -> Disc:
    version, start, footer_at = read_footer(stream)
    chunks = read_chunks(stream, start, footer_at)
    disc = Disc("nrg", [], name=name or stream.name)
    layout = Layout(data_end=start)
    cue: Optional[Chunk] = None
    extras: dict[str, Any] = {}
    for chunk in chunks:
        if chunk.id in ("CUES", "CUEX"):
            cue = chunk
        elif chunk.id in ("DAOI", "DAOX"):
            if cue is None:
                raise CorruptImage(f"chunk {chunk.id} has no CUES/CUEX chunk before it", layer=LAYER,
                                   offset=chunk.offset)
            _add_session(disc, layout, dao_tracks(stream, chunk, cue, layout, disc))
            cue = None
        elif chunk.id in ("ETNF", "ETN2"):
            _add_session(disc, layout, tao_tracks(stream, chunk, layout))
        else:
            _read_extra(chunk, extras, disc)
    if not disc.tracks:
        raise CorruptImage("the chunk list describes no track (no DAOI/DAOX or ETNF/ETN2 chunk)", layer=LAYER,
                           offset=start)
    _check_sinf(extras.get("sinf", []), layout, disc)
    disc.notes.extend(layout.notes)
    cdtext = next((c for c in chunks if c.id == "CDTX"), None)
    if cdtext is not None:  # after the tracks, which it names
        extras["cdtext"] = apply_cdtext(disc, cdtext.data)
    disc.details["nrg"] = {"version": version, "footer": "NER5" if version == 2 else "NERO", "chunk_offset": start,
                           "chunks": [{"id": c.id, "offset": c.offset, "length": len(c.data)} for c in chunks],
                           "sessions": layout.info, **{k: v for k, v in extras.items() if k != "sinf"}}
    return disc


def _add_session(disc: Disc, layout: Layout, tracks: list[Track]) -> None:
    if tracks and tracks[-1].number > MAX_TRACKS:
        raise CorruptImage(f"session {layout.sessions + 1} would number its tracks up to {tracks[-1].number}; a CD "
                           f"has at most {MAX_TRACKS}", layer=LAYER, offset=layout.data_end)
    layout.sessions += 1
    for track in tracks:
        track.session = layout.sessions
    disc.tracks.extend(tracks)
    layout.next_track = tracks[-1].number + 1 if tracks else layout.next_track
    layout.leadout = tracks[-1].end if tracks else layout.leadout
    layout.info.append({"session": layout.sessions, "tracks": len(tracks), "leadout": layout.leadout})


def _read_extra(chunk: Chunk, extras: dict[str, Any], disc: Disc) -> None:
    if chunk.id == "SINF" and len(chunk.data) >= 4:
        extras.setdefault("sinf", []).append(struct.unpack(">I", chunk.data[:4])[0])
    elif chunk.id == "MTYP" and len(chunk.data) >= 4:
        bits = struct.unpack(">I", chunk.data[:4])[0]
        extras["media_type"] = describe_media(bits)
    elif chunk.id not in ("CDTX", "END!"):
        disc.notes.append(f"chunk {chunk.id} ({len(chunk.data)} bytes) is not used")


def _check_sinf(counts: list[int], layout: Layout, disc: Disc) -> None:
    found = [s["tracks"] for s in layout.info]
    if counts and counts != found:
        disc.notes.append(f"SINF chunks give {counts} tracks per session, the track chunks {found}")


def describe_media(bits: int) -> str:
    names = [name for bit, name in MEDIA_BITS if bits & bit]
    return f"{bits:#x} ({', '.join(names)})" if names else f"{bits:#x}"


# -- track-at-once ----------------------------------------------------------------------------------------


def tao_tracks(stream: Stream, chunk: Chunk, layout: Layout) -> list[Track]:
    entry = ETNF_TRACK if chunk.id == "ETNF" else ETN2_TRACK
    count = _entry_count(chunk, entry.size, 0)
    tracks: list[Track] = []
    lba = layout.first_start()
    for i in range(count):
        offset, size, mode_word, _start, _ = entry.unpack_from(chunk.data, i * entry.size)
        code = mode_word & 0xFF
        mode = _mode(code, chunk, i)
        number = layout.next_track + i
        sectors = size // mode.sector_size
        if size % mode.sector_size:
            layout.notes.append(f"track {number}: {size % mode.sector_size} bytes after its last whole sector "
                                f"are ignored")
        _check_stored(number, offset, sectors * mode.sector_size, layout, chunk)
        if i:
            lba += TAO_PREGAP
        tracks.append(Track(number, mode.mode, lba, sectors, sector_size=mode.sector_size, source=stream,
                            file_lba=lba, file_offset=offset, file_sectors=sectors, pregap=TAO_PREGAP,
                            user_offset=_user_offset(mode), sheet_mode=f"{chunk.id} mode {code}"))
        lba += sectors
    _tao_lengths(tracks)
    return tracks


def _tao_lengths(tracks: list[Track]) -> None:
    """INDEX 01 to the next track's INDEX 01: the stored sectors plus the next track's gap."""
    for track, following in zip(tracks, tracks[1:]):
        track.length = following.start - track.start


def _entry_count(chunk: Chunk, size: int, head: int) -> int:
    body = len(chunk.data) - head
    if body < 0 or body % size:
        raise CorruptImage(f"chunk {chunk.id} is {len(chunk.data)} bytes long, not a {head}-byte header and "
                           f"{size}-byte entries", layer=LAYER, offset=chunk.offset + 4)
    count = body // size
    if count > MAX_TRACKS:
        raise CorruptImage(f"chunk {chunk.id} lists {count} tracks; a CD has at most {MAX_TRACKS}", layer=LAYER,
                           offset=chunk.offset + 4)
    return count


def _mode(code: int, chunk: Chunk, index: int) -> NrgMode:
    mode = MODES.get(code)
    if mode is None:
        raise UnsupportedFormat(f"track {index + 1} of chunk {chunk.id} has mode code {code:#04x}, which imgfs does "
                                f"not know", layer=LAYER, offset=chunk.offset)
    return mode


def _user_offset(mode: NrgMode) -> Optional[int]:
    if mode.sector_size == 2048:
        return 0
    if mode.sector_size == 2336:
        return 8  # XA subheader, then the data
    return None  # whole sectors: the sector header says


def _check_stored(number: int, offset: int, size: int, layout: Layout, chunk: Chunk) -> None:
    if offset + size > layout.data_end:
        raise CorruptImage(f"track {number} is stored at bytes {offset}..{offset + size}, past the start of the "
                           f"chunk list at byte {layout.data_end}", layer=LAYER, offset=chunk.offset)


# -- disc-at-once -----------------------------------------------------------------------------------------


class CuePoint(NamedTuple):
    control: int
    track: int  # 0: lead-in, 0xAA: lead-out
    index_number: int
    lba: int


def read_cue(chunk: Chunk) -> list[CuePoint]:
    count = len(chunk.data) // CUE_ENTRY.size
    if len(chunk.data) % CUE_ENTRY.size or count > 4 * (MAX_TRACKS + 2) * 2:
        raise CorruptImage(f"chunk {chunk.id} is {len(chunk.data)} bytes long, not a list of 8-byte entries",
                           layer=LAYER, offset=chunk.offset + 4)
    points = []
    for i in range(count):
        adr_ctl, track, index, _, position = CUE_ENTRY.unpack_from(chunk.data, i * 8)
        if chunk.id == "CUES":
            m, s, f = chunk.data[i * 8 + 5 : i * 8 + 8]
            position = (m * 60 + s) * 75 + f - 150
        points.append(CuePoint(adr_ctl >> 4, track if track == 0xAA else _bcd(track), _bcd(index), position))
    return points


def _bcd(value: int) -> int:
    return (value >> 4) * 10 + (value & 0x0F) if (value >> 4) < 10 and (value & 0x0F) < 10 else value


def dao_tracks(stream: Stream, chunk: Chunk, cue: Chunk, layout: Layout, disc: Disc) -> list[Track]:
    wide = chunk.id == "DAOX"
    entry = DAOX_TRACK if wide else DAOI_TRACK
    count = _entry_count(chunk, entry.size, DAO_HEAD.size)
    _, mcn, _, _, _, first, _ = DAO_HEAD.unpack_from(chunk.data, 0)
    if mcn.strip(b"\0 ") and not disc.catalog:
        disc.catalog = mcn.rstrip(b"\0").decode("latin-1")
    points = read_cue(cue)
    lba = layout.first_start()
    tracks: list[Track] = []
    for i in range(count):
        fields = entry.unpack_from(chunk.data, DAO_HEAD.size + i * entry.size)
        number = (first or layout.next_track) + i
        track = _dao_track(stream, chunk, fields, number, points, lba, layout)
        tracks.append(track)
        lba = track.file_lba + track.file_sectors
    leadout = next((p.lba for p in points if p.track == 0xAA), None)
    _dao_lengths(tracks, leadout)
    return tracks


def _dao_track(stream: Stream, chunk: Chunk, fields: tuple, number: int, points: list[CuePoint], lba: int,
               layout: Layout) -> Track:
    isrc, sector_size, code, _, _, index0_offset, index1_offset, end_offset = fields
    if sector_size not in SECTOR_SIZES:
        raise CorruptImage(f"track {number} has a sector size of {sector_size} bytes", layer=LAYER,
                           offset=chunk.offset)
    if not index0_offset <= index1_offset <= end_offset:
        raise CorruptImage(f"track {number}'s file offsets are out of order: INDEX 00 at {index0_offset}, "
                           f"INDEX 01 at {index1_offset}, end at {end_offset}", layer=LAYER, offset=chunk.offset)
    _check_stored(number, index0_offset, end_offset - index0_offset, layout, chunk)
    mode = MODES.get(code) or _guess_mode(stream, index1_offset, sector_size)
    stored_pregap = (index1_offset - index0_offset) // sector_size
    indexes = {p.index_number: p.lba for p in points if p.track == number}
    start = indexes.get(1, lba + stored_pregap)
    control = next((p.control for p in points if p.track == number), 4 if mode.mode != AUDIO else 0)
    return Track(number, mode.mode, start, 0, sector_size=sector_size, source=stream,
                 file_lba=start - stored_pregap, file_offset=index0_offset,
                 file_sectors=(end_offset - index0_offset) // sector_size, pregap=start - indexes.get(0, start),
                 user_offset=_user_offset(mode) if sector_size == mode.sector_size else None,
                 sheet_mode=f"{chunk.id} mode {code:#04x}", isrc=_text(isrc), flags=control_flags(control))


def _guess_mode(stream: Stream, offset: int, sector_size: int) -> NrgMode:
    """An unknown mode code: the stored sector tells data from audio."""
    if sector_size < RAW:
        return NrgMode(MODE1 if sector_size == 2048 else MODE2, sector_size, "guessed from the sector size")
    head = stream.pread(offset, 16)
    if head[:12] != SYNC:
        return NrgMode(AUDIO, sector_size, "guessed: no sync pattern")
    return NrgMode(MODE1 if head[15] == 1 else MODE2, sector_size, "guessed from the sector header")


def _dao_lengths(tracks: list[Track], leadout: Optional[int]) -> None:
    for track, following in zip(tracks, tracks[1:]):
        track.length = following.start - track.start
    if tracks:
        last = tracks[-1]
        stored_end = last.file_lba + last.file_sectors
        last.length = max(0, (leadout if leadout is not None and leadout >= last.start else stored_end) - last.start)


def _text(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode("latin-1").strip()
