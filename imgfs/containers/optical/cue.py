"""CUE sheets (CDRWIN): FILE, TRACK, INDEX, PREGAP/POSTGAP, REM SESSION, CATALOG, ISRC and CD-TEXT.

Addressing follows libcdio and cd-info: LBA 0 is frame 0 of the first FILE; each later FILE starts
where the previous one ends; a ``PREGAP`` (not stored) or ``POSTGAP`` moves everything after it by
its length. A ``REM SESSION nn`` starts a new session: its first track's INDEX 01 lies 11,400 sectors
after the previous session's end (lead-out 6,750 + lead-in 4,500 + pregap 150), 6,900 for the sessions
after the second (lead-out 2,250), so that the absolute sector numbers written in a later session's
filesystem land where they belong. In a redump sheet the session starts a new FILE, whose times count
from 0, and imgfs adds the gap; when a session starts inside a FILE (UltraISO, IsoBuster), the times are
already disc addresses and the file does not hold the gap (libmirage reads both so).

``FILE`` types: BINARY (little-endian audio), MOTOROLA (big-endian audio, swapped on reading),
WAVE (the PCM of the WAV's ``data`` chunk). MP3/AIFF are refused by name.
"""

from __future__ import annotations

import logging
import os
import re
import struct
from dataclasses import dataclass, field
from typing import Callable, Optional

from imgfs.containers.optical.disc import AUDIO, LATER_SESSION_GAP, MODE1, MODE2, SESSION_GAP, Disc, Track
from imgfs.containers.optical.files import resolve
from imgfs.errors import CorruptImage, ImageError, UnsupportedFormat
from imgfs.io.stream import FileStream, SliceStream, Stream
from imgfs.layer import OpenContext

log = logging.getLogger(__name__)

MAX_SHEET = 1 << 20  # a cue sheet is text of a few KiB; anything much bigger is not one

# TRACK modes: (mode, bytes per stored sector, where the 2048 user bytes are; None = from the header)
TRACK_MODES: dict[str, tuple[str, int, Optional[int]]] = {
    "AUDIO": (AUDIO, 2352, None),
    "CDG": (AUDIO, 2448, None),
    "MODE1/2048": (MODE1, 2048, 0),
    "MODE1/2352": (MODE1, 2352, None),
    "MODE1/2448": (MODE1, 2448, None),
    "MODE2/2048": (MODE2, 2048, 0),
    "MODE2/2324": (MODE2, 2324, 0),
    "MODE2/2328": (MODE2, 2328, 0),
    "MODE2/2336": (MODE2, 2336, 8),
    "MODE2/2352": (MODE2, 2352, None),
    "MODE2/2448": (MODE2, 2448, None),
    "CDI/2336": (MODE2, 2336, 8),
    "CDI/2352": (MODE2, 2352, None),
}
CDTEXT_KEYS = ("TITLE", "PERFORMER", "SONGWRITER", "COMPOSER", "ARRANGER", "MESSAGE", "DISC_ID", "GENRE",
               "UPC_EAN", "SIZE_INFO", "TOC_INFO1", "TOC_INFO2")
_MSF = re.compile(r"^(\d{1,3}):(\d{1,2}):(\d{1,2})$")


def probe(stream: Stream) -> bool:
    """Text with a FILE line and a TRACK line."""
    if stream.size > MAX_SHEET:
        return False
    text = _decode(stream.pread(0, min(stream.size, 65536)))
    if "\0" in text:
        return False
    words = {line.split(None, 1)[0].upper() for line in text.splitlines() if line.strip()}
    return "FILE" in words and "TRACK" in words


def data_files(path: str) -> list[str]:
    """The names the FILE lines of the sheet at ``path`` give, as written (``ImageError`` when it is none)."""
    if os.path.getsize(path) > MAX_SHEET:
        return []
    with open(path, "rb") as handle:
        return [entry.name for entry in parse(_decode(handle.read()), path).files]


def _decode(raw: bytes) -> str:
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("cp1252", errors="replace")


@dataclass
class _Track:
    number: int
    mode_name: str
    line: int
    indexes: dict[int, int] = field(default_factory=dict)  # index -> frame within its FILE
    pregap: int = 0
    postgap: int = 0
    session: int = 1
    isrc: str = ""
    flags: list[str] = field(default_factory=list)
    cdtext: dict[str, str] = field(default_factory=dict)


@dataclass
class _File:
    name: str
    kind: str
    line: int
    tracks: list[_Track] = field(default_factory=list)


@dataclass
class Sheet:
    files: list[_File] = field(default_factory=list)
    catalog: str = ""
    cdtext: dict[str, str] = field(default_factory=dict)
    rems: list[str] = field(default_factory=list)
    cdtextfile: str = ""


def parse(text: str, name: str = "cue sheet") -> Sheet:
    sheet = Sheet()
    session = 1
    track: Optional[_Track] = None
    for number, raw_line in enumerate(text.splitlines(), 1):
        line = raw_line.strip()
        if not line:
            continue
        words = _split(line)
        key = words[0].upper()
        args = words[1:]

        def bad(why: str, where: str = f"{name} line {number}", text: str = line) -> CorruptImage:
            return CorruptImage(f"{where}: {why}: {text!r}", layer="cue")

        if key == "REM":
            if len(args) >= 2 and args[0].upper() == "SESSION":
                session = _int(args[1], bad)
                if not 1 <= session <= 99:
                    raise bad("session number out of range")
            else:
                sheet.rems.append(" ".join(args))
        elif key == "FILE":
            if len(args) < 1:
                raise bad("FILE without a file name")
            kind = args[1].upper() if len(args) > 1 else "BINARY"
            sheet.files.append(_File(args[0], kind, number))
            track = None
        elif key == "TRACK":
            if not sheet.files:
                raise bad("TRACK before any FILE")
            if len(args) < 2:
                raise bad("TRACK needs a number and a mode")
            mode = args[1].upper()
            if mode not in TRACK_MODES:
                raise UnsupportedFormat(f"{name} line {number}: track mode {args[1]!r} is not one of "
                                        f"{', '.join(TRACK_MODES)}", layer="cue")
            track = _Track(_int(args[0], bad), mode, number, session=session)
            if not 1 <= track.number <= 99:
                raise bad("track number out of range")
            sheet.files[-1].tracks.append(track)
        elif key == "INDEX":
            if track is None or len(args) < 2:
                raise bad("INDEX outside a TRACK or without a time")
            index = _int(args[0], bad)
            if not 0 <= index <= 99:
                raise bad("index number out of range")
            track.indexes[index] = _frames(args[1], bad)
        elif key in ("PREGAP", "POSTGAP"):
            if track is None or not args:
                raise bad(f"{key} outside a TRACK")
            setattr(track, key.lower(), _frames(args[0], bad))
        elif key == "CATALOG":
            sheet.catalog = args[0] if args else ""
        elif key == "ISRC" and track is not None:
            track.isrc = args[0] if args else ""
        elif key == "FLAGS" and track is not None:
            track.flags = [a.upper() for a in args]
        elif key == "CDTEXTFILE":
            sheet.cdtextfile = args[0] if args else ""
        elif key in CDTEXT_KEYS:
            (track.cdtext if track is not None else sheet.cdtext)[key] = " ".join(args)
        else:
            log.debug("%s line %d: %s ignored", name, number, key)
    if not any(f.tracks for f in sheet.files):
        raise CorruptImage(f"{name} has no TRACK", layer="cue")
    return sheet


def _split(line: str) -> list[str]:
    """Words of a line; a double-quoted word may hold spaces (and the quotes may be missing)."""
    words: list[str] = []
    for match in re.finditer(r'"([^"]*)"?|(\S+)', line):
        words.append(match.group(1) if match.group(1) is not None else match.group(2))
    # FILE names without quotes but with spaces: "FILE My Disc.bin BINARY"
    if words and words[0].upper() == "FILE" and len(words) > 3 and '"' not in line:
        words = [words[0], " ".join(words[1:-1]), words[-1]]
    return words


def _int(text: str, bad: Callable[[str], Exception]) -> int:
    try:
        return int(text)
    except ValueError:
        raise bad("not a number") from None


def _frames(text: str, bad: Callable[[str], Exception]) -> int:
    match = _MSF.match(text)
    if not match:
        raise bad("expected a time as mm:ss:ff")
    minutes, seconds, frames = (int(g) for g in match.groups())
    if seconds >= 60 or frames >= 75:
        raise bad("seconds must be below 60 and frames below 75")
    return (minutes * 60 + seconds) * 75 + frames


# -- from the sheet to the disc -----------------------------------------------------------------------


def open_cue(stream: Stream, ctx: OpenContext) -> Disc:
    if stream.size > MAX_SHEET:
        raise UnsupportedFormat(f"{ctx.path}: {stream.size} bytes is too big for a cue sheet", layer="cue")
    name = os.path.basename(ctx.path)
    sheet = parse(_decode(stream.pread(0, stream.size)), name)
    disc = Disc("cue", [], name=ctx.path, catalog=sheet.catalog, cdtext=dict(sheet.cdtext))
    if sheet.rems:
        disc.details["rem"] = sheet.rems
    try:
        _lay_out(sheet, disc, ctx.path)
    except BaseException:
        disc.close()
        raise
    return disc.opened(ctx.verify)


def _open_file(sheet_path: str, entry: _File, renamed: bool) -> tuple[Stream, bool]:
    """The bytes a FILE line names, and whether its audio is big-endian; with ``renamed`` (the sheet's only
    FILE), a renamed data file stands in for a missing one."""
    if entry.kind in ("MP3", "AIFF", "FLAC", "OGG"):
        raise UnsupportedFormat(f"{os.path.basename(sheet_path)} line {entry.line}: {entry.kind} files are not "
                                f"supported (convert {entry.name!r} to WAV)", layer="cue")
    stream = FileStream(resolve(sheet_path, entry.name, renamed=renamed))
    if entry.kind == "WAVE":
        try:
            return _wav_data(stream), False
        except ImageError:
            stream.close()
            raise
    return stream, entry.kind == "MOTOROLA"


def _wav_data(stream: FileStream) -> Stream:
    """The PCM of a WAV file's ``data`` chunk (44.1 kHz 16-bit stereo expected; anything else is noted)."""
    head = stream.pread(0, 12)
    if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        raise CorruptImage(f"{stream.name} is not a WAV file (no RIFF/WAVE header)", layer="cue", offset=0)
    pos = 12
    for _ in range(1000):
        chunk = stream.pread(pos, 8)
        if len(chunk) < 8:
            break
        kind, length = chunk[:4], struct.unpack("<I", chunk[4:])[0]
        if kind == b"fmt ":
            fmt = stream.pread(pos + 8, 16)
            if len(fmt) == 16:
                tag, channels, rate, _, _, bits = struct.unpack("<HHIIHH", fmt)
                if (tag, channels, rate, bits) != (1, 2, 44100, 16):
                    log.warning("%s: %d Hz, %d-bit, %d channel(s), format %d: not CD audio; used as it is",
                                stream.name, rate, bits, channels, tag)
        elif kind == b"data":
            length = min(length, stream.size - pos - 8)
            wav = SliceStream(stream, pos + 8, length, name=stream.name)
            wav.close = stream.close  # type: ignore[attr-defined]
            return wav
        pos += 8 + length + (length & 1)
    raise CorruptImage(f"{stream.name}: no data chunk in the WAV file", layer="cue", offset=pos)


def _lay_out(sheet: Sheet, disc: Disc, sheet_path: str) -> None:
    sheet_name = os.path.basename(sheet_path)
    tracks: list[Track] = []
    file_base = 0  # LBA of the current FILE's frame 0
    session, session_end = 1, 0
    single = sum(1 for entry in sheet.files if entry.tracks) == 1
    for entry in sheet.files:
        if not entry.tracks:
            continue
        source, swap = _open_file(sheet_path, entry, single)
        disc.files.append(source)
        shift = 0  # PREGAPs, POSTGAPs and session gaps met so far in this FILE
        first_frames = []  # each track's first INDEX, as the sheet gives it
        positions = []  # where that sector is in the file, in sectors
        skip = 0
        for i, cue_track in enumerate(entry.tracks):
            if 1 not in cue_track.indexes:
                raise CorruptImage(f"{sheet_name} line {cue_track.line}: track {cue_track.number} has no INDEX 01",
                                   layer="cue")
            first_frames.append(min(cue_track.indexes.values()))
            if i and cue_track.session != entry.tracks[i - 1].session:
                # A session starting inside a FILE (UltraISO, IsoBuster; libmirage reads them so): the
                # times are disc addresses, and the file does not hold the gap between the sessions.
                gap = SESSION_GAP if entry.tracks[i - 1].session == 1 else LATER_SESSION_GAP
                skip += gap - (cue_track.indexes[1] - first_frames[-1])
            positions.append(first_frames[-1] - skip)
        offset = positions[0] * TRACK_MODES[entry.tracks[0].mode_name][1]  # bytes into the file
        frames_used = positions[0]
        for i, cue_track in enumerate(entry.tracks):
            mode, sector_size, user_offset = TRACK_MODES[cue_track.mode_name]
            first_frame = first_frames[i]
            if cue_track.session != session:
                gap = SESSION_GAP if session == 1 else LATER_SESSION_GAP
                session = cue_track.session
                shift = session_end + gap - (file_base + cue_track.indexes[1] + cue_track.pregap)
            shift += cue_track.pregap
            available = (source.size - offset) // sector_size if offset < source.size else 0
            if i + 1 < len(entry.tracks):
                stored = positions[i + 1] - positions[i]
                if stored < 0:
                    raise CorruptImage(f"{sheet_name} line {entry.tracks[i + 1].line}: track "
                                       f"{entry.tracks[i + 1].number} starts before track {cue_track.number}",
                                       layer="cue")
            else:
                stored = available
            if stored > available or (i + 1 == len(entry.tracks) and available == 0):
                raise CorruptImage(f"{sheet_name}: track {cue_track.number} starts at sector {first_frame} of "
                                   f"{os.path.basename(source.name)} and needs {max(stored, 1)} sectors of "
                                   f"{sector_size} bytes, but the file ends after {source.size} bytes "
                                   f"({available} such sectors from there)", layer="cue", offset=source.size)
            file_lba = file_base + shift + first_frame
            start = file_base + shift + cue_track.indexes[1]
            stored_pregap = cue_track.indexes[1] - first_frame
            track = Track(number=cue_track.number, mode=mode, start=start,
                          length=max(0, file_lba + stored - start) + cue_track.postgap, sector_size=sector_size,
                          source=source, file_lba=file_lba, file_offset=offset, file_sectors=stored,
                          session=session, pregap=stored_pregap + cue_track.pregap, swap=swap and mode == AUDIO,
                          user_offset=user_offset, sheet_mode=cue_track.mode_name, isrc=cue_track.isrc,
                          title=cue_track.cdtext.get("TITLE", ""), performer=cue_track.cdtext.get("PERFORMER", ""),
                          flags=cue_track.flags)
            tracks.append(track)
            offset += stored * sector_size
            frames_used = positions[i] + stored
            shift += cue_track.postgap
            session_end = max(session_end, track.end)
        file_base += shift + frames_used
    _fix_lengths(tracks)
    disc.tracks = tracks


def _fix_lengths(tracks: list[Track]) -> None:
    """Each track runs from its INDEX 01 to the next track's INDEX 01 in the same session."""
    for track, nxt in zip(tracks, tracks[1:]):
        if nxt.session == track.session:
            if nxt.start < track.start:
                raise CorruptImage(f"track {nxt.number} starts before track {track.number}", layer="cue")
            track.length = nxt.start - track.start
