"""CloneCD images: a ``.ccd`` control file (INI-like text) beside an ``.img`` of raw sectors (and a ``.sub``).

The control file::

    [CloneCD]       Version=3
    [Disc]          TocEntries=, Sessions=, DataTracksScrambled=, CDTextLength=, CATALOG=
    [Session N]     PreGapMode=, PreGapSubC=
    [Entry N]       Session=, Point=, ADR=, Control=, TrackNo=, AMin=, ASec=, AFrame=, ALBA=, Zero=,
                    PMin=, PSec=, PFrame=, PLBA=
    [TRACK N]       MODE=0|1|2, INDEX 0=, INDEX 1=, ISRC=
    [CDText]        Entries=, Entry N=<16 hex bytes of a CD-TEXT pack>

``[Entry]`` sections are the disc's full TOC: in each session Point 0xA0 names the first track, 0xA1 the
last, 0xA2 places the lead-out (PLBA); Points 1..99 are the tracks, PLBA their INDEX 01, Control bit 0x04
marks data. ``[TRACK N]`` adds the mode (0 audio, 1 Mode 1, 2 Mode 2; without it, the control bit decides)
and the indexes.

The ``.img`` holds 2352-byte sectors (2448 or 2048 when its size says so) from LBA 0 to the first session's
lead-out; each later session follows at once, from its first track's INDEX 00: the INDEX 1 - INDEX 0 of that
track (INDEX values are relative to the session's start, as libmirage reads them) is the stored pregap.
What lies between sessions (lead-out, lead-in) is not stored. The ``.sub`` (96 bytes of P-W subchannel per
sector) is not used.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import Any, Optional

from imgfs.containers.optical.cdtext import apply_cdtext, control_flags
from imgfs.containers.optical.disc import AUDIO, MODE1, MODE2, RAW, Disc, Track
from imgfs.containers.optical.files import renamed_data_file, sibling
from imgfs.errors import CorruptImage, MissingFile, UnsupportedFormat
from imgfs.io.stream import FileStream, Stream, read_exact
from imgfs.layer import OpenContext

log = logging.getLogger(__name__)

LAYER = "ccd"
MAX_CCD_SIZE = 1 << 20  # a control file of 99 tracks is a few KiB
MAX_SECTIONS = 4096
PROBE_SIZE = 512
TRACK_MODES = {0: AUDIO, 1: MODE1, 2: MODE2}


@dataclass
class Value:
    text: str
    line: int
    offset: int  # byte offset of the line in the control file


@dataclass
class Section:
    name: str  # upper case, single spaces: "ENTRY 3", "TRACK 1", "CLONECD"
    line: int
    offset: int
    values: dict[str, Value] = field(default_factory=dict)  # keys upper case
    label: str = ""  # the name as written

    def number(self, key: str, default: Optional[int] = None) -> Optional[int]:
        value = self.values.get(key)
        if value is None:
            return default
        return parse_number(value, key)


@dataclass
class Entry:
    session: int
    point: int
    control: int
    lba: int  # PLBA, or PMin:PSec:PFrame - 150


def parse_number(value: Value, key: str) -> int:
    text = value.text.strip()
    try:
        return int(text[2:], 16) if text[:2].lower() == "0x" else int(text, 10)
    except ValueError:
        raise CorruptImage(f"line {value.line}: {key}={value.text!r} is not a number", layer=LAYER,
                           offset=value.offset) from None


# -- the control file -------------------------------------------------------------------------------------


def probe(stream: Stream) -> bool:
    """``[CloneCD]`` as the first section of a text file."""
    head = stream.pread(0, PROBE_SIZE).lstrip(b"\xef\xbb\xbf \t\r\n")
    return head[:9].upper() == b"[CLONECD]"


def read_sections(stream: Stream) -> list[Section]:
    if stream.size > MAX_CCD_SIZE:
        raise UnsupportedFormat(f"{stream.name} is {stream.size} bytes long, too large for a CloneCD control file",
                                layer=LAYER)
    data = read_exact(stream, 0, stream.size, LAYER, "the control file")
    sections: list[Section] = []
    offset = 0
    for number, raw in enumerate(data.split(b"\n"), 1):
        line = raw.decode("latin-1").strip()
        if line.startswith("[") and line.endswith("]"):
            if len(sections) >= MAX_SECTIONS:
                raise CorruptImage(f"more than {MAX_SECTIONS} sections", layer=LAYER, offset=offset)
            label = " ".join(line[1:-1].split())
            sections.append(Section(label.upper(), number, offset, label=label))
        elif "=" in line and sections and not line.startswith(";"):
            key, _, text = line.partition("=")
            sections[-1].values[" ".join(key.upper().split())] = Value(text.strip(), number, offset)
        offset += len(raw) + 1
    if not sections or sections[0].name != "CLONECD":
        raise UnsupportedFormat(f"{stream.name} does not start with a [CloneCD] section", layer=LAYER, offset=0)
    return sections


def _entries(sections: list[Section]) -> list[Entry]:
    entries = []
    for section in sections:
        if not section.name.startswith("ENTRY "):
            continue
        point = section.number("POINT")
        if point is None:
            raise CorruptImage(f"line {section.line}: [{section.name}] has no Point", layer=LAYER,
                               offset=section.offset)
        lba = section.number("PLBA")
        if lba is None:
            msf = [section.number(k, 0) or 0 for k in ("PMIN", "PSEC", "PFRAME")]
            lba = (msf[0] * 60 + msf[1]) * 75 + msf[2] - 150
        adr = section.number("ADR", 1)
        if adr in (1, None):  # ADR 5 and 6 entries (B0, C0, disc ID) place nothing
            entries.append(Entry(section.number("SESSION", 1) or 1, point, section.number("CONTROL", 0) or 0, lba))
    return entries


def _tracks_info(sections: list[Section]) -> dict[int, Section]:
    tracks = {}
    for section in sections:
        if section.name.startswith("TRACK "):
            number = parse_number(Value(section.label[6:], section.line, section.offset), "TRACK")
            tracks[number] = section
    return tracks


# -- opening --------------------------------------------------------------------------------------------


def open_ccd(stream: Stream, ctx: OpenContext) -> Disc:
    disc = parse_ccd(stream, ctx.path)
    attach_image(disc, ctx.path)
    return disc.opened(ctx.verify)


def parse_ccd(stream: Stream, name: str = "") -> Disc:
    """The control file's sessions and tracks; no data file is opened (``Track.source`` stays None)."""
    sections = read_sections(stream)
    by_name = {s.name: s for s in sections}
    disc_section = by_name.get("DISC") or Section("DISC", 0, 0)
    if disc_section.number("DATATRACKSSCRAMBLED", 0):
        raise UnsupportedFormat("the data tracks are stored scrambled (DataTracksScrambled=1), which imgfs "
                                "does not read", layer=LAYER, offset=disc_section.values["DATATRACKSSCRAMBLED"].offset)
    disc = Disc("ccd", [], name=name or stream.name)
    disc.catalog = disc_section.values.get("CATALOG", Value("", 0, 0)).text
    entries = _entries(sections)
    infos = _tracks_info(sections)
    sessions = sorted({e.session for e in entries})
    if len(sessions) > 99:
        raise CorruptImage(f"the entries name {len(sessions)} sessions", layer=LAYER, offset=0)
    for session in sessions:
        members = [e for e in entries if e.session == session]
        if session != sessions[-1] and not any(e.point == 0xA2 for e in members):
            raise CorruptImage(f"session {session} has no lead-out entry (Point=0xa2), so where session "
                               f"{session + 1} is stored in the image is unknown", layer=LAYER, offset=0)
        disc.tracks.extend(_session_tracks(session, members, infos))
    if not disc.tracks:
        raise CorruptImage("the control file lists no track (no [Entry] with Point 1..99)", layer=LAYER, offset=0)
    _check_order(disc.tracks)
    version = by_name["CLONECD"].values.get("VERSION")
    disc.details["ccd"] = {"version": version.text if version else "", "sessions": len(sessions),
                           "toc_entries": len(entries)}
    if "CDTEXT" in by_name:
        disc.details["ccd"]["cdtext"] = _cdtext(disc, by_name["CDTEXT"])
    return disc


def _session_tracks(session: int, entries: list[Entry], infos: dict[int, Section]) -> list[Track]:
    points = sorted((e for e in entries if 1 <= e.point <= 99), key=lambda e: e.lba)
    leadout = next((e.lba for e in entries if e.point == 0xA2), None)
    tracks: list[Track] = []
    for entry in points:
        info = infos.get(entry.point) or Section(f"TRACK {entry.point}", 0, 0)
        mode_number = info.number("MODE")
        mode = TRACK_MODES.get(mode_number) if mode_number is not None else None
        if mode is None:
            mode = MODE1 if entry.control & 0x4 else AUDIO
        isrc = info.values.get("ISRC")
        sheet = f"MODE={mode_number}" if mode_number is not None else f"Control={entry.control:#04x}"
        later_first = session > 1 and not tracks
        tracks.append(Track(entry.point, mode, entry.lba, 0, session=session, pregap=_pregap(info, later_first),
                            sheet_mode=sheet, isrc=isrc.text if isrc else "", flags=control_flags(entry.control)))
    for track, following in zip(tracks, tracks[1:]):
        track.length = following.start - track.start
    if tracks and leadout is not None:
        tracks[-1].length = max(0, leadout - tracks[-1].start)
    return tracks


def _pregap(info: Section, later_first: bool) -> int:
    """INDEX 1 - INDEX 0; a later session's first track without INDEX 0 counts from the session's start."""
    index1 = info.number("INDEX 1")
    index0 = info.number("INDEX 0")
    if index1 is None:
        return 0
    if index0 is not None:
        return max(0, index1 - index0)
    return index1 if later_first and 0 < index1 <= 150 else 0


def _check_order(tracks: list[Track]) -> None:
    numbers = [t.number for t in tracks]
    if len(set(numbers)) != len(numbers):
        raise CorruptImage(f"the entries list a track twice: {numbers}", layer=LAYER, offset=0)
    for track, following in zip(tracks, tracks[1:]):
        if following.start < track.start or (following.session == track.session and following.start == track.start):
            raise CorruptImage(f"track {following.number} starts at LBA {following.start}, not after track "
                               f"{track.number} at LBA {track.start}", layer=LAYER, offset=0)


def _cdtext(disc: Disc, section: Section) -> dict[str, Any]:
    packs = []
    for key, value in section.values.items():
        if key.startswith("ENTRY "):
            try:
                packs.append(bytes.fromhex(value.text))
            except ValueError:
                raise CorruptImage(f"line {value.line}: {key}={value.text!r} is not hex bytes", layer=LAYER,
                                   offset=value.offset) from None
    size = 18 if packs and all(len(p) == 18 for p in packs) else 16
    return apply_cdtext(disc, b"".join(p[:size].ljust(size, b"\0") for p in packs), pack_size=size)


# -- the image file ---------------------------------------------------------------------------------------


def attach_image(disc: Disc, path: str) -> None:
    """Open the ``.img`` beside the control file and place every track's sectors in it."""
    image_path = sibling(path, (".img",))
    if image_path is None:
        image_path = renamed_data_file(path)
        if image_path is not None:
            log.warning("%s: its image file %s.img is missing; using %s, the one data file named like it",
                        os.path.basename(path), os.path.splitext(os.path.basename(path))[0],
                        os.path.basename(image_path))
    if image_path is None:
        stem = os.path.splitext(os.path.basename(path))[0]
        raise MissingFile(f"{os.path.basename(path)} needs its image file '{stem}.img', which is not in "
                          f"{os.path.dirname(os.path.abspath(path))}")
    image = FileStream(image_path)
    disc.files.append(image)
    if sibling(path, (".sub",)):
        disc.notes.append(f"the subchannel file {os.path.splitext(os.path.basename(image_path))[0]}.sub is not used")
    stored = _layout(disc.tracks, image.size)
    sector_size = _sector_size(disc.tracks, image.size, stored)
    for track in disc.tracks:
        track.source = image
        track.sector_size = sector_size
        track.file_offset *= sector_size
        if sector_size == 2048:
            track.user_offset = 0
    disc.details["ccd"]["image"] = {"file": os.path.basename(image_path), "sector_size": sector_size,
                                    "sectors": stored}


def _layout(tracks: list[Track], image_size: int) -> int:
    """Place each session's sectors after the previous one's (``file_offset`` in sectors for now).

    A track's stored sectors run from its INDEX 00 (its pregap belongs to it) to the next track's INDEX 00.
    """
    position, previous_end = 0, None
    for session in sorted({t.session for t in tracks}):
        members = [t for t in tracks if t.session == session]
        stored_start = min(0, members[0].start) if previous_end is None else members[0].start - members[0].pregap
        if previous_end is not None and stored_start < previous_end:
            raise CorruptImage(f"session {session} starts at LBA {stored_start}, inside the previous session "
                               f"(lead-out at {previous_end})", layer=LAYER, offset=0)
        last = members[-1]
        if last.length == 0 and session == tracks[-1].session:  # no lead-out entry: the image's size says
            last.length = max(0, image_size // RAW - position - (last.start - stored_start))
        firsts = [stored_start] + [max(t.start - t.pregap, p.start + 1) for p, t in zip(members, members[1:])]
        for track, first, following in zip(members, firsts, firsts[1:] + [last.end]):
            track.file_lba, track.file_sectors = first, following - first
            track.file_offset = position + first - stored_start
        position += last.end - stored_start
        previous_end = last.end
    return position


def _sector_size(tracks: list[Track], image_size: int, sectors: int) -> int:
    """2352-byte sectors, unless the image's size fits 2448 (with subchannel) or 2048 (user data) exactly."""
    if sectors and image_size == sectors * 2448:
        return 2448
    if sectors and image_size == sectors * 2048 and not any(t.is_audio for t in tracks):
        return 2048
    return RAW
