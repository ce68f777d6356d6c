"""A CD or DVD as a sidecar (cue, NRG, MDS, CCD) describes it: sessions of tracks of raw sectors.

Addresses are absolute logical block addresses (LBA 0 = MSF 00:02:00), as in the disc's TOC and in
the directory records of its filesystems. A track's ``start`` is its INDEX 01; its ``length`` runs to
the next track's INDEX 01 (or to the end of the stored data for the last one): the TOC convention,
which is also what ``cd-info`` reports. Each track says where its sectors are stored: ``file_lba`` is
the LBA of the first stored sector (INDEX 00 when the pregap is stored, else INDEX 01), at
``file_offset`` in ``source``, ``sector_size`` bytes per sector, ``file_sectors`` of them. Sectors of a
track that are not stored (a ``PREGAP``, a TAO gap, the gap between sessions) read as zeros.

A disc is a volume set (``imgfs.layer``): its sessions are the volumes, the last one with a filesystem
shown at the root (earlier ones among the raw views), its audio tracks are ``Track NN.wav`` files beside
it, and a disc with no readable session shows its data tracks as ``Track NN.iso`` files instead.

Two views come out of a disc:

* ``user_stream()``: the 2048 user bytes of every sector of the whole disc at ``LBA * 2048``, data
  tracks at their absolute place, zeros elsewhere. Filesystems read through it, never through one
  track, because their directory records hold absolute LBAs.
* ``pcm_stream(track)`` / ``wav_stream(track)``: an audio track's 2352-byte sectors as 16-bit
  little-endian stereo PCM, from INDEX 01 to the next track's INDEX 01.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Optional

from imgfs.containers.optical.edc import check_sector
from imgfs.errors import CorruptImage
from imgfs.io.sectors import SectorStream, SwappedStream
from imgfs.io.stream import BytesStream, ConcatStream, Extent, ExtentStream, SessionView, SliceStream, Stream
from imgfs.layer import Progress, View, Volume, VolumeSet, no_progress

SYNC = b"\x00" + b"\xff" * 10 + b"\x00"
RAW = 2352  # a whole CD sector: sync, header, user data, EDC/ECC (or 2352 bytes of audio)
USER = 2048  # the user data of a Mode 1 or Mode 2 Form 1 sector
SUBCHANNEL = 96  # P-W subchannel bytes after a raw sector in 2448-byte images
SESSION_GAP = 11400  # lead-out (6750) + lead-in (4500) + pregap (150) between sessions 1 and 2
LATER_SESSION_GAP = 6900  # lead-out (2250) + lead-in (4500) + pregap (150) after a later session
SECTOR_SIZES = (2048, 2324, 2328, 2336, 2340, 2352, 2368, 2448)

AUDIO = "AUDIO"
MODE1 = "MODE1"
MODE2 = "MODE2"  # XA Form 1/Form 2 (2048 user bytes at +24 of a raw sector) or formless
MODE0 = "MODE0"
DATA_MODES = (MODE1, MODE2, MODE0)


@dataclass
class Track:
    number: int
    mode: str  # AUDIO, MODE1, MODE2 (also CD-i, XA); MODE0 only for empty tracks
    start: int  # LBA of INDEX 01
    length: int  # sectors from INDEX 01 to the next track's INDEX 01
    sector_size: int = RAW  # bytes per stored sector: 2048, 2336, 2352 or 2448 (2352 + subchannel)
    source: Optional[Stream] = None  # the data file; None: nothing stored (a descriptor without data)
    file_lba: int = 0  # LBA of the first stored sector
    file_offset: int = 0  # where that sector is in ``source``
    file_sectors: int = 0  # how many sectors are stored, from ``file_lba``
    session: int = 1
    pregap: int = 0  # sectors before INDEX 01 that belong to this track (stored or not)
    swap: bool = False  # audio stored big-endian (cue MOTOROLA)
    user_offset: Optional[int] = None  # where the 2048 user bytes sit in a stored sector; None: detect
    sheet_mode: str = ""  # the mode as the sheet names it ("MODE2/2352", "ETNF mode 3", ...)
    isrc: str = ""
    title: str = ""
    performer: str = ""
    flags: list[str] = field(default_factory=list)

    @property
    def is_audio(self) -> bool:
        return self.mode == AUDIO

    @property
    def end(self) -> int:
        return self.start + self.length

    def describe(self) -> dict[str, Any]:
        info: dict[str, Any] = {"track": self.number, "session": self.session, "mode": self.sheet_mode or self.mode,
                                "start": self.start, "length": self.length, "pregap": self.pregap,
                                "start_time": msf(self.start), "duration": msf(self.length),
                                "sector_size": self.sector_size}
        if not self.is_audio and self.user_offset is not None:
            info["user_data_at"] = self.user_offset
        for key in ("isrc", "title", "performer"):
            if getattr(self, key):
                info[key] = getattr(self, key)
        if self.flags:
            info["flags"] = " ".join(self.flags)
        if self.source is not None:
            info["file"] = self.source.name
        return info


def msf(sectors: int) -> str:
    """A sector count as a CD player shows time: minutes, seconds and frames (75 sectors a second)."""
    return f"{sectors // 4500:02d}:{sectors // 75 % 60:02d}:{sectors % 75:02d}"


@dataclass
class Disc(VolumeSet):
    format: str  # "cue", "nrg", "mds", "ccd", "raw"
    tracks: list[Track]  # in disc order
    name: str = ""  # the sidecar or image file
    catalog: str = ""  # MCN / UPC
    cdtext: dict[str, str] = field(default_factory=dict)  # TITLE, PERFORMER, ... of the disc
    notes: list[str] = field(default_factory=list)  # what the sheet held that imgfs does not use
    details: dict[str, Any] = field(default_factory=dict)  # format-specific, for ``imgfs info``
    files: list[Stream] = field(default_factory=list)  # every data file opened, to close
    verify_reads: bool = False  # -o verify: check the EDC/ECC of every raw data sector read
    _user: Optional[Stream] = field(default=None, init=False, repr=False)

    choose_one = True  # the sessions, last first: the first that holds a filesystem is shown
    others = "sessions"
    checks = "EDC/ECC of the raw data sectors"

    @property
    def sessions(self) -> list[int]:
        return sorted({t.session for t in self.tracks})

    def session_tracks(self, session: int) -> list[Track]:
        return [t for t in self.tracks if t.session == session]

    @property
    def leadout(self) -> int:
        return max((t.end for t in self.tracks), default=0)

    def close(self) -> None:
        for stream in self.files:
            close = getattr(stream, "close", None)
            if close:
                close()

    def opened(self, verify: bool = False) -> Disc:
        """The disc, checked against its data files: what an opener returns (it closes the files on failure)."""
        try:
            self.prepare()
        except BaseException:
            self.close()
            raise
        self.verify_reads = verify
        return self

    def describe(self) -> dict[str, Any]:
        info: dict[str, Any] = {"layer": self.format, "file": self.name, "sessions": len(self.sessions),
                                "tracks": [t.describe() for t in self.tracks], "leadout": self.leadout}
        if self.catalog:
            info["catalog"] = self.catalog
        if self.cdtext:
            info["cdtext"] = dict(self.cdtext)
        if self.notes:
            info["notes"] = list(self.notes)
        info.update(self.details)
        return info

    # -- views ---------------------------------------------------------------------------------------

    def prepare(self) -> None:
        """Check every track against its data file and find where data sectors keep their user bytes."""
        for track in self.tracks:
            if track.source is None or track.file_sectors <= 0:
                continue
            stored_end = track.file_offset + track.file_sectors * track.sector_size
            if stored_end > track.source.size:
                whole = max(0, (track.source.size - track.file_offset) // track.sector_size)
                raise CorruptImage(f"track {track.number} needs {track.file_sectors} sectors of "
                                   f"{track.sector_size} bytes from byte {track.file_offset} of "
                                   f"{track.source.name}, which holds only {whole}: the file is truncated",
                                   layer=self.format, offset=track.source.size)
            if not track.is_audio and track.user_offset is None:
                track.user_offset = detect_user_offset(track)

    def user_stream(self) -> Stream:
        """The 2048-byte user data of every sector of the disc, at ``LBA * 2048``."""
        extents: list[Extent] = []
        pos = 0  # in sectors
        for track in sorted(self.tracks, key=lambda t: t.file_lba):
            if track.is_audio or track.source is None or track.file_sectors <= 0:
                continue
            first = max(track.file_lba, pos)
            if first > pos:
                extents.append(Extent((first - pos) * USER, None))
            skip = first - track.file_lba
            count = track.file_sectors - skip
            if count <= 0:
                continue
            raw = track.sector_size in (RAW, RAW + SUBCHANNEL)
            view = SectorStream(track.source, track.file_offset + skip * track.sector_size, count,
                                track.sector_size, track.user_offset or 0,
                                check=check_sector if self.verify_reads and raw else None,
                                first_lba=first, name=f"track {track.number}")
            extents.append(Extent(view.size, view, 0))
            pos = first + count
        if self.leadout > pos:
            extents.append(Extent((self.leadout - pos) * USER, None))
        return ExtentStream(extents, name=f"{self.name} (user data)")

    def verify(self, progress: Progress = no_progress) -> list[str]:
        """Every raw data sector whose EDC/ECC does not match (``imgfs verify``), one line each."""
        problems = []
        for track in self.tracks:
            if track.is_audio or track.source is None or track.sector_size not in (RAW, RAW + SUBCHANNEL):
                continue
            view = SectorStream(track.source, track.file_offset, track.file_sectors, track.sector_size,
                                track.user_offset or 0, check=check_sector, first_lba=track.file_lba,
                                name=f"track {track.number}")
            step = 256 * USER
            for offset in range(0, view.size, step):
                progress(f"checking track {track.number}", offset, view.size)
                try:
                    view.pread(offset, step)
                except CorruptImage:  # find which sectors, one by one
                    for sector in range(offset, min(view.size, offset + step), USER):
                        try:
                            view.pread(sector, USER)
                        except CorruptImage as exc:
                            problems.append(str(exc))
        return problems

    def raw_stream(self, track: Track) -> Stream:
        """A track's stored sectors as they are in the file (``Track NN.bin``)."""
        if track.source is None:
            return BytesStream(b"", name=f"track {track.number}")
        return SliceStream(track.source, track.file_offset, track.file_sectors * track.sector_size)

    def pcm_stream(self, track: Track) -> Stream:
        """Audio: 2352 bytes per sector from INDEX 01 to the next track's INDEX 01, little-endian."""
        extents: list[Extent] = []
        lba = track.start
        for part in sorted(self.tracks, key=lambda t: t.file_lba):
            if part.source is None or part.file_sectors <= 0 or lba >= track.end:
                continue
            first, last = max(lba, part.file_lba), min(track.end, part.file_lba + part.file_sectors)
            if last <= first:
                continue
            if first > lba:
                extents.append(Extent((first - lba) * RAW, None))
            start = part.file_offset + (first - part.file_lba) * part.sector_size
            view: Stream = (SliceStream(part.source, start, (last - first) * RAW) if part.sector_size == RAW else
                            SectorStream(part.source, start, last - first, part.sector_size, 0, user_size=RAW,
                                         name=f"track {part.number}"))
            if part.swap:
                view = SwappedStream(view)
            extents.append(Extent(view.size, view, 0))
            lba = last
        if track.end > lba:
            extents.append(Extent((track.end - lba) * RAW, None))
        return ExtentStream(extents, name=f"track {track.number} (audio)")

    def wav_stream(self, track: Track) -> Stream:
        pcm = self.pcm_stream(track)
        header = BytesStream(wav_header(pcm.size), "RIFF header")
        return ConcatStream([header, pcm], name=f"Track {track.number:02d}.wav")

    def track_iso(self, track: Track) -> Stream:
        """A data track's user bytes from its INDEX 01 to the end of what is stored (what bchunk writes)."""
        first = max(track.start, track.file_lba, 0)  # the user data starts at LBA 0 (a damaged sheet may not)
        count = max(0, track.file_lba + track.file_sectors - first)
        return SliceStream(self.user, first * USER, count * USER, name=f"track {track.number}")

    # -- as a volume set -----------------------------------------------------------------------------

    @property
    def user(self) -> Stream:
        """The user data stream, made once."""
        if self._user is None:
            self._user = self.user_stream()
        return self._user

    def _data_tracks(self) -> list[Track]:
        return [t for t in self.tracks if not t.is_audio and t.file_sectors > 0]

    def volumes(self) -> Sequence[Volume]:
        """One per session with data, last first; a later session's filesystem addresses the whole disc."""
        found = []
        for session in reversed(self.sessions):
            data = [t for t in self._data_tracks() if t.session == session]
            if data:
                start = max(0, data[0].start)
                stream = SessionView(self.user, start * USER, name=self.user.name) if start else self.user
                found.append(Volume(f"Session {session}", stream, details={"session": session, "start": start}))
        return found

    def extras(self) -> Sequence[tuple[str, Stream]]:
        return [(f"Track {t.number:02d}.wav", self.wav_stream(t)) for t in self.tracks if t.is_audio]

    def fallback(self) -> Sequence[tuple[str, Stream]]:
        return [(f"Track {t.number:02d}.iso", self.track_iso(t)) for t in self._data_tracks()]

    def views(self) -> Sequence[View]:
        found = [View("disc.iso", self.user)]
        for track in self.tracks:
            if not track.is_audio and track.file_sectors > 0:
                found.append(View(f"tracks/Track {track.number:02d}.iso", self.track_iso(track)))
            found.append(View(f"tracks/Track {track.number:02d}.bin", self.raw_stream(track)))
        return found

    def empty_reason(self) -> str:
        return f"{self.format}: no track of {self.name} holds data or audio imgfs can show"


def wav_header(pcm_size: int) -> bytes:
    """RIFF/WAVE header for 44.1 kHz, 16-bit, stereo PCM of ``pcm_size`` bytes."""
    riff_size = min(0xFFFFFFFF, 36 + pcm_size)
    return (b"RIFF" + struct.pack("<I", riff_size) + b"WAVEfmt " +
            struct.pack("<IHHIIHH", 16, 1, 2, 44100, 44100 * 4, 4, 16) +
            b"data" + struct.pack("<I", min(0xFFFFFFFF, pcm_size)))


def detect_user_offset(track: Track) -> int:
    """Where a data track's 2048 user bytes sit in each stored sector, from the sector size and header."""
    size = track.sector_size
    if size in (2048, 2324, 2328):
        return 0
    if size in (2336, 2340, 2368):  # Mode 2 without sync and header: XA subheader, then data
        return 8 if track.mode != MODE1 else 0
    mode = track.mode
    assert track.source is not None
    # Look at the sector header of the volume descriptor area, or of the first stored sector.
    for index in (16, 0):
        if index >= track.file_sectors:
            continue
        head = track.source.pread(track.file_offset + index * size, 24)
        if len(head) == 24 and head[:12] == SYNC:
            if head[15] == 1:
                return 16
            if head[15] == 2:
                return 24 if head[16:20] == head[20:24] else 16
    return 16 if mode == MODE1 else 24
