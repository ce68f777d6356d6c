"""Raw optical disc images for tests: CD sectors with real EDC/ECC, a disc layout, and the image formats
imgfs reads (BIN/CUE, NRG, MDS/MDF, CloneCD), built from ISO images made with real tools.

Written from the specifications, independently of imgfs (nothing here imports it): ECMA-130 for the
sector layout, EDC and the P/Q Reed-Solomon product code; CD-ROM XA for Mode 2 Form 1 and Form 2; the
Red Book for the Q subchannel and CD-TEXT packs; the CDRWIN cue sheet; libmirage's notes on NRG, MDS
and CCD. The EDC/ECC encoder reproduces libcdio's ``isofs-m1.bin`` (302 Mode 1 sectors) and the Form 1
sectors of ``videocd.nrg`` byte for byte (``tests/test_cdwriter.py``).

Layout conventions (the lead's reader must agree; see ``Disc.layout``):

* LBA 0 is MSF 00:02:00. Track 1 of session 1 starts at LBA 0; its 150-sector pregap is LBA -150..-1.
* A later track's INDEX 00 is the previous track's end; its INDEX 01 is INDEX 00 + ``pregap``.
* Session N+1's first track has INDEX 01 at session N's lead-out + 11400 after session 1 (lead-out 6750
  + lead-in 4500 + pregap 150) and + 6900 after later sessions (lead-out 2250 + 4500 + 150): the Orange
  Book lengths, which libmirage uses too (its cue parser: 11250 then 6750 for lead-out + lead-in).

Run ``python tests/cdwriter.py --help`` to make images by hand.
"""

from __future__ import annotations

import argparse
import operator
import struct
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

SYNC = b"\x00" + b"\xff" * 10 + b"\x00"
RAW = 2352  # a whole sector (or 2352 bytes of PCM)
USER = 2048  # Mode 1 / Mode 2 Form 1 user data
FORM2 = 2324  # Mode 2 Form 2 user data
M2RAW = 2336  # Mode 2 without sync and header
SUB = 96  # P-W subchannel bytes of one sector
PREGAP = 150  # the pregap of the first track of a session (2 seconds)
FIRST_SESSION_GAP = 11400  # session 1 lead-out .. session 2 INDEX 01: 6750 + 4500 + 150
NEXT_SESSION_GAP = 6900  # later lead-outs are 2250 sectors: 2250 + 4500 + 150

AUDIO = "AUDIO"
MODE1 = "MODE1"
MODE2_FORM1 = "MODE2_FORM1"  # CD-ROM XA Form 1: 2048 user bytes at +24
MODE2_FORM2 = "MODE2_FORM2"  # CD-ROM XA Form 2: 2324 user bytes at +24
MODE2 = "MODE2"  # Mode 2 formless: 2336 user bytes at +16
UNIT = {AUDIO: RAW, MODE1: USER, MODE2_FORM1: USER, MODE2_FORM2: FORM2, MODE2: M2RAW}
FORM1_SUBHEADER = b"\x00\x00\x08\x00"  # file 0, channel 0, submode "data", coding 0
FORM2_SUBHEADER = b"\x00\x00\x20\x00"  # submode bit 5: Form 2


# -- GF(2^8), EDC and the RSPC product code (ECMA-130 annexes A and B) -----------------------------------

def _gf_tables() -> tuple[list[int], list[int]]:
    """Powers and logarithms of alpha = x in GF(2^8) with P(x) = x^8 + x^4 + x^3 + x^2 + 1."""
    exp, log = [0] * 512, [0] * 256
    value = 1
    for power in range(255):
        exp[power], log[value] = value, power
        value <<= 1
        if value & 0x100:
            value ^= 0x11D
    exp[255:510] = exp[:255]
    return exp, log


_EXP, _LOG = _gf_tables()


def _times(constant: int) -> bytes:
    """A bytes.translate table multiplying every symbol by ``constant``."""
    return bytes(0 if v == 0 else _EXP[_LOG[v] + _LOG[constant]] for v in range(256))


_ALPHA = [_times(_EXP[k]) for k in range(46)]  # multiply by alpha^k
_DIVIDE_1_PLUS_ALPHA = _times(_EXP[255 - _LOG[1 ^ 2]])
# Q vectors run diagonally: word (44 * Mq + 43 * Nq) mod 1118 of the 1118-word area (header .. P parity).
_Q_GATHER = operator.itemgetter(*[2 * ((44 * m + 43 * (j >> 1)) % 1118) + (j & 1)
                                  for m in range(43) for j in range(52)])


def _edc_table() -> list[int]:
    table = []
    for byte in range(256):
        value = byte
        for _ in range(8):  # x^32+x^31+x^16+x^15+x^4+x^3+x+1, least significant bit first
            value = (value >> 1) ^ (0xD8018001 if value & 1 else 0)
        table.append(value)
    return table


_EDC = _edc_table()


def edc(data: bytes) -> int:
    """The CD-ROM EDC: CRC-32 with P(x) = (x^16+x^15+x^2+1)(x^16+x^2+x+1), LSB first, no inversion."""
    crc, table = 0, _EDC
    for byte in data:
        crc = (crc >> 8) ^ table[(crc ^ byte) & 0xFF]
    return crc


def _parity(rows: list[bytes], width: int) -> tuple[bytes, bytes]:
    """Two parity symbols per column so that sum(c_i) = 0 and sum(c_i alpha^(n-1-i)) = 0 over GF(2^8).

    Every column of ``rows`` is one codeword's data symbols; the columns are worked in parallel as wide
    integers (XOR) and ``bytes.translate`` tables (multiplication by a constant)."""
    s0 = s1 = 0
    count = len(rows)
    for i, row in enumerate(rows):
        s0 ^= int.from_bytes(row, "big")
        s1 ^= int.from_bytes(row.translate(_ALPHA[count + 1 - i]), "big")
    # c_n-2 + c_n-1 = S0 and alpha c_n-2 + c_n-1 = S1, so c_n-2 = (S0 + S1) / (1 + alpha).
    first = (s0 ^ s1).to_bytes(width, "big").translate(_DIVIDE_1_PLUS_ALPHA)
    second = (s0 ^ int.from_bytes(first, "big")).to_bytes(width, "big")
    return first, second


def write_ecc(sector: bytearray) -> None:
    """P parity (86 codewords RSPC(26,24)) then Q parity (52 codewords RSPC(45,43)), bytes 2076..2351.

    The 2340 bytes from the header on are 1170 16-bit words; their MSB and LSB bytes are separate codes,
    which in byte terms makes 86 P columns of 24 bytes (row stride 86) and 52 diagonal Q vectors."""
    area = bytes(sector[12:2076])
    p0, p1 = _parity([area[86 * row : 86 * row + 86] for row in range(24)], 86)
    sector[2076:2162], sector[2162:2248] = p0, p1
    gathered = bytes(_Q_GATHER(bytes(sector[12:2248])))
    q0, q1 = _parity([gathered[52 * row : 52 * row + 52] for row in range(43)], 52)
    sector[2248:2300], sector[2300:2352] = q0, q1


# -- sectors ---------------------------------------------------------------------------------------------

def bcd(value: int) -> int:
    return (value // 10) << 4 | value % 10


def msf(lba: int) -> tuple[int, int, int]:
    """Minutes, seconds, frames of an LBA (LBA 0 = 00:02:00)."""
    frames = lba + PREGAP
    return frames // 4500, frames // 75 % 60, frames % 75


def msf_text(frames: int) -> str:
    """A cue sheet time: ``frames`` sectors as mm:ss:ff."""
    return f"{frames // 4500:02d}:{frames // 75 % 60:02d}:{frames % 75:02d}"


def sector_header(lba: int, mode: int) -> bytes:
    return SYNC + bytes(bcd(v) for v in msf(lba)) + bytes([mode])


def mode1_sector(lba: int, data: bytes) -> bytes:
    """A Mode 1 sector: sync, header (BCD MSF, mode 1), 2048 user bytes, EDC over 0..2063, 8 zeros, P/Q ECC."""
    assert len(data) == USER
    sector = bytearray(sector_header(lba, 1) + data + bytes(288))
    sector[2064:2068] = edc(sector[:2064]).to_bytes(4, "little")
    write_ecc(sector)
    return bytes(sector)


def mode2_form1_sector(lba: int, data: bytes, subheader: bytes = FORM1_SUBHEADER) -> bytes:
    """XA Form 1: subheader twice at +16, data at +24, EDC over 16..2071, ECC computed with a zero header."""
    assert len(data) == USER and len(subheader) == 4 and not subheader[2] & 0x20
    sector = bytearray(SYNC + bytes(4) + subheader * 2 + data + bytes(280))
    sector[2072:2076] = edc(sector[16:2072]).to_bytes(4, "little")
    write_ecc(sector)
    sector[12:16] = sector_header(lba, 2)[12:]
    return bytes(sector)


def mode2_form2_sector(lba: int, data: bytes, subheader: bytes = FORM2_SUBHEADER, with_edc: bool = True) -> bytes:
    """XA Form 2: subheader twice, 2324 user bytes at +24, EDC over 16..2347 (or 0: it is optional)."""
    assert len(data) == FORM2 and len(subheader) == 4 and subheader[2] & 0x20
    body = subheader * 2 + data
    return sector_header(lba, 2) + body + (edc(body).to_bytes(4, "little") if with_edc else bytes(4))


def mode2_formless_sector(lba: int, data: bytes) -> bytes:
    """Mode 2 without XA forms: 2336 user bytes after the header, no EDC or ECC."""
    assert len(data) == M2RAW
    return sector_header(lba, 2) + data


def encode_sector(mode: str, lba: int, data: bytes) -> bytes:
    if mode == MODE1:
        return mode1_sector(lba, data)
    if mode == MODE2_FORM1:
        return mode2_form1_sector(lba, data)
    if mode == MODE2_FORM2:
        return mode2_form2_sector(lba, data)
    if mode == MODE2:
        return mode2_formless_sector(lba, data)
    assert mode == AUDIO and len(data) == RAW
    return data


def swap16(pcm: bytes) -> bytes:
    """16-bit samples the other way round: little-endian PCM <-> cue ``MOTOROLA`` (big-endian)."""
    swapped = bytearray(pcm)
    swapped[0::2], swapped[1::2] = pcm[1::2], pcm[0::2]
    return bytes(swapped)


def wav_header(pcm_size: int) -> bytes:
    """RIFF/WAVE header for 44.1 kHz, 16-bit, stereo PCM."""
    return (b"RIFF" + struct.pack("<I", 36 + pcm_size) + b"WAVEfmt " +
            struct.pack("<IHHIIHH", 16, 1, 2, 44100, 44100 * 4, 4, 16) + b"data" + struct.pack("<I", pcm_size))


def pcm(sectors: int, seed: int) -> bytes:
    """Pseudo-random CD audio (2352 bytes per sector): every byte order mistake shows."""
    import random

    return random.Random(seed).randbytes(sectors * RAW)


# -- subchannel and CD-TEXT ------------------------------------------------------------------------------

def crc16(data: bytes) -> int:
    """CRC-16 with x^16 + x^12 + x^5 + 1, initial 0, inverted (CRC-16/GSM): Q subchannel and CD-TEXT."""
    crc = 0
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021 if crc & 0x8000 else crc << 1) & 0xFFFF
    return crc ^ 0xFFFF


def q_subchannel(lba: int, control: int, track: int, index: int, relative: int) -> bytes:
    """Mode-1 Q: CONTROL/ADR, TNO, INDEX, relative MSF (counting down in a pregap), 0, absolute MSF, CRC."""
    rel = (abs(relative) // 4500, abs(relative) // 75 % 60, abs(relative) % 75)
    body = bytes([control << 4 | 1, bcd(track), bcd(index), *map(bcd, rel), 0, *map(bcd, msf(lba))])
    return body + crc16(body).to_bytes(2, "big")


def interleave(p: bytes, q: bytes) -> bytes:
    """Raw P-W (96 bytes, bit 7 = P, bit 6 = Q, R-W zero) from the 12-byte P and Q channels."""
    out = bytearray(SUB)
    for bit in range(SUB):
        shift = 7 - bit % 8
        out[bit] = ((p[bit // 8] >> shift) & 1) << 7 | ((q[bit // 8] >> shift) & 1) << 6
    return bytes(out)


def cdtext_packs(album: dict[int, str], tracks: list[dict[int, str]], first: int) -> bytes:
    """CD-TEXT block 0 (ISO 8859-1, English): one pack type per key (0x80 TITLE, 0x81 PERFORMER) with the
    album string then one NUL-terminated string per track, then three size-information packs (0x8F)."""
    packs: list[bytes] = []
    counts = [0] * 16
    for kind in sorted(album):
        strings = [album[kind]] + [t.get(kind, "") for t in tracks]
        text = b"".join(s.encode("latin-1") + b"\0" for s in strings)
        starts = []  # (offset in text, track number) of every string
        offset = 0
        for number, s in enumerate(strings):
            starts.append((offset, 0 if number == 0 else first + number - 1))
            offset += len(s.encode("latin-1")) + 1
        for pos in range(0, len(text), 12):
            owner, begin = max((s for s in starts if s[0] <= pos), key=lambda s: s[0])[::-1]
            chunk = text[pos : pos + 12].ljust(12, b"\0")
            packs.append(bytes([kind, owner, len(packs), min(15, pos - begin)]) + chunk)
            counts[kind - 0x80] += 1
    counts[15] = 3
    last = first + len(tracks) - 1
    total = len(packs) + 3
    size_info = (bytes([0, first, last, 0]) + bytes(counts) + bytes([total - 1]) + bytes(7) +
                 bytes([0x09]) + bytes(7))
    for n in range(3):
        packs.append(bytes([0x8F, n, len(packs), 0]) + size_info[12 * n : 12 * n + 12])
    return b"".join(p + crc16(p).to_bytes(2, "big") for p in packs)


# -- the disc --------------------------------------------------------------------------------------------

@dataclass
class Track:
    mode: str  # AUDIO, MODE1, MODE2_FORM1, MODE2_FORM2, MODE2
    data: bytes  # user data (whole units of UNIT[mode]) or 16-bit little-endian stereo PCM
    pregap: int = 0  # sectors before INDEX 01 (the first track of a session always has 150)
    pregap_stored: Optional[bool] = None  # in the data files (cue INDEX 00) or not (PREGAP); None: default
    sector_size: int = RAW  # as stored: 2048, 2336, 2352 or 2448 (2352 + raw P-W subchannel)
    isrc: str = ""
    title: str = ""
    performer: str = ""
    flags: tuple[str, ...] = ()  # cue FLAGS: DCP, 4CH, PRE
    number: int = 0  # the rest is set by Disc.layout()
    session: int = 1
    start: int = 0  # LBA of INDEX 01
    first_in_session: bool = False

    def __post_init__(self) -> None:
        unit = UNIT[self.mode]
        if len(self.data) % unit:
            self.data += bytes(unit - len(self.data) % unit)

    @property
    def sectors(self) -> int:
        """Sectors from INDEX 01 to the end of this track's own data."""
        return len(self.data) // UNIT[self.mode]

    @property
    def end(self) -> int:
        return self.start + self.sectors

    @property
    def index0(self) -> int:
        return self.start - self.pregap

    @property
    def control(self) -> int:
        """The Q CONTROL nibble: 4 = data, 2 = digital copy permitted, 1 = pre-emphasis, 8 = four channels."""
        value = 0 if self.mode == AUDIO else 4
        for flag, bit in (("DCP", 2), ("PRE", 1), ("4CH", 8)):
            if flag in self.flags:
                value |= bit
        return value

    @property
    def is_audio(self) -> bool:
        return self.mode == AUDIO


@dataclass
class Disc:
    sessions: list[list[Track]]
    catalog: str = ""  # MCN, 13 digits
    title: str = ""
    performer: str = ""
    leadouts: list[int] = field(default_factory=list)  # lead-out LBA of each session
    _raw: dict[int, bytes] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self.layout()

    @property
    def tracks(self) -> list[Track]:
        return [t for tracks in self.sessions for t in tracks]

    def layout(self) -> None:
        """Track numbers and absolute LBAs; see the module docstring for the conventions."""
        number, lba, self.leadouts = 1, -PREGAP, []
        for index, tracks in enumerate(self.sessions, 1):
            if index > 1:
                lba = self.leadouts[-1] + (FIRST_SESSION_GAP if index == 2 else NEXT_SESSION_GAP) - PREGAP
            for position, track in enumerate(tracks):
                track.number, track.session, track.first_in_session = number, index, position == 0
                if position == 0:
                    track.pregap = PREGAP
                    if track.pregap_stored is None:
                        track.pregap_stored = index > 1  # redump stores session 2's pregap, never LBA -150
                elif track.pregap_stored is None:
                    track.pregap_stored = True
                track.start = lba + track.pregap
                lba = track.end
                number += 1
            self.leadouts.append(lba)
        self._raw.clear()

    def raw(self, track: Track) -> bytes:
        """The track's 2352-byte sectors from INDEX 00 (its pregap, zero data in its own mode) to its end."""
        if track.number not in self._raw:
            unit = UNIT[track.mode]
            zero = bytes(unit)
            parts = [encode_sector(track.mode, lba, zero) for lba in range(track.index0, track.start)]
            parts += [encode_sector(track.mode, track.start + i, track.data[i * unit : (i + 1) * unit])
                      for i in range(track.sectors)]
            self._raw[track.number] = b"".join(parts)
        return self._raw[track.number]

    def subchannel(self, track: Track, lba: int) -> tuple[bytes, bytes]:
        """The P and Q channels (12 bytes each) of one sector of ``track``. P is set through the pregap and
        the track's first sector (P lags Q by one sector: the last all-ones P block is the track's first)."""
        index = 0 if lba < track.start else 1
        q = q_subchannel(lba, track.control, track.number, index, lba - track.start)
        return (b"\xff" * 12 if lba <= track.start else bytes(12)), q

    def stored(self, track: Track, size: int, *, pregap: bool = True, sub: str = "interleaved") -> bytes:
        """The track as a file holds it: ``size`` bytes per sector, from INDEX 00 (``pregap``) or INDEX 01.

        2352: whole sectors; 2448: plus 96 bytes of P-W (``sub``: raw ``interleaved``, or ``linear``
        P, Q, R..W as CloneCD's .sub keeps it); 2336: Mode 2 without sync and header; 2048: user data."""
        raw = self.raw(track)
        first = 0 if pregap else track.pregap
        lbas = range(track.index0 + first, track.end)
        if size == RAW:
            return raw[first * RAW :]
        if size == RAW + SUB:
            return b"".join(raw[(i + first) * RAW : (i + first + 1) * RAW] + self.sub96(track, lba, sub)
                            for i, lba in enumerate(lbas))
        if size == M2RAW and track.mode in (MODE2, MODE2_FORM1, MODE2_FORM2):
            return b"".join(raw[(i + first) * RAW + 16 : (i + first + 1) * RAW] for i in range(len(lbas)))
        if size == USER and track.mode in (MODE1, MODE2_FORM1):
            return (bytes(USER * (track.pregap - first)) if pregap else b"") + track.data
        raise ValueError(f"track {track.number} ({track.mode}) cannot be stored in {size}-byte sectors")

    def sub96(self, track: Track, lba: int, layout: str = "interleaved") -> bytes:
        p, q = self.subchannel(track, lba)
        return interleave(p, q) if layout == "interleaved" else p + q + bytes(72)

    def user_extents(self) -> list[tuple[int, bytes]]:
        """(first LBA, 2048-byte user data) of every Mode 1 / Form 1 track: what a reader must show at LBA * 2048."""
        return [(t.start, t.data) for t in self.tracks if t.mode in (MODE1, MODE2_FORM1)]

    def cdtext(self) -> bytes:
        if not (self.title or self.performer or any(t.title or t.performer for t in self.tracks)):
            return b""
        album = {0x80: self.title, 0x81: self.performer}
        return cdtext_packs(album, [{0x80: t.title, 0x81: t.performer} for t in self.tracks], 1)


# -- ISO images made by real tools -----------------------------------------------------------------------

def make_iso(out: Path, source: Path, *extra: str, volume: str = "CDWRITER", tool: str = "xorriso") -> bytes:
    """An ISO 9660 + Rock Ridge + Joliet image of ``source`` (xorriso -as mkisofs, or genisoimage)."""
    command = ["xorriso", "-as", "mkisofs"] if tool == "xorriso" else ["genisoimage"]
    subprocess.run([*command, "-quiet", "-R", "-J", "-V", volume, *extra, "-o", str(out), str(source)],
                   check=True, capture_output=True)
    return out.read_bytes()


def multisession_isos(sources: list[Path], work: Path, *, tool: str = "genisoimage",
                      before: Optional[list[list[Track]]] = None) -> list[tuple[int, bytes]]:
    """One ISO session per source folder, each built for its absolute LBA with ``-C last_start,NWA -M``,
    so that a later session's tree holds the earlier sessions' files (merged, newer wins).

    Returns (INDEX 01 LBA, image bytes) per session, laid out as ``Disc.layout`` will: session N+1 starts
    11400 (then 6900) sectors after session N's lead-out. ``before``: sessions of other tracks ahead of
    the ISOs, e.g. the audio session of a CD Extra, whose ISO is then made with ``-C 0,start`` alone.
    ``-M`` reads a sparse file holding every earlier session at its LBA * 2048."""
    work.mkdir(parents=True, exist_ok=True)
    previous = work / "sessions.img"
    previous.write_bytes(b"")
    sessions = list(before or [])
    result: list[tuple[int, bytes]] = []
    for number, source in enumerate(sources, 1):
        start = next_session_start(sessions)
        if result:
            extra = ["-C", f"{result[-1][0]},{start}", "-M", str(previous)]
        else:
            extra = ["-C", f"0,{start}"] if start else []
        image = make_iso(work / f"session{number}.iso", source, *extra, volume=f"SESSION{number}", tool=tool)
        result.append((start, image))
        sessions.append([Track(MODE1, image)])
        with open(previous, "r+b") as f:
            f.seek(start * USER)
            f.write(image)
    return result


def next_session_start(sessions: list[list[Track]]) -> int:
    """The LBA of INDEX 01 of the first track of a session after ``sessions`` (0 when there are none)."""
    if not sessions:
        return 0
    copies = [[Track(t.mode, t.data, t.pregap, t.pregap_stored) for t in session] for session in sessions]
    return Disc(copies + [[Track(AUDIO, b"")]]).tracks[-1].start


def data_disc(iso: bytes, mode: str = MODE1, sector_size: int = RAW, **disc_fields) -> Disc:
    return Disc([[Track(mode, iso, sector_size=sector_size)]], **disc_fields)


# -- BIN/CUE ---------------------------------------------------------------------------------------------

CUE_MODES: dict[tuple[str, int], str] = {
    (MODE1, USER): "MODE1/2048", (MODE1, RAW): "MODE1/2352", (MODE2_FORM1, RAW): "MODE2/2352",
    (MODE2_FORM2, RAW): "MODE2/2352", (MODE2, RAW): "MODE2/2352", (MODE2_FORM1, M2RAW): "MODE2/2336",
    (MODE2_FORM2, M2RAW): "MODE2/2336", (MODE2, M2RAW): "MODE2/2336", (AUDIO, RAW): "AUDIO",
    (AUDIO, RAW + SUB): "CDG"}


def _quote(text: str) -> str:
    return '"' + text.replace('"', "'") + '"'


def _cue_track_lines(track: Track, index1: int, index0: Optional[int], pregap_line: bool) -> list[str]:
    lines = [f"  TRACK {track.number:02d} {_lookup(CUE_MODES, track, 'a cue sheet')}"]
    lines += [f"    TITLE {_quote(track.title)}"] if track.title else []
    lines += [f"    PERFORMER {_quote(track.performer)}"] if track.performer else []
    lines += [f"    ISRC {track.isrc}"] if track.isrc else []
    lines += [f"    FLAGS {' '.join(track.flags)}"] if track.flags else []
    lines += [f"    PREGAP {msf_text(track.pregap)}"] if pregap_line else []
    lines += [f"    INDEX 00 {msf_text(index0)}"] if index0 is not None else []
    lines.append(f"    INDEX 01 {msf_text(index1)}")
    return lines


def _cue_stores_pregap(track: Track, split: bool) -> bool:
    if track.first_in_session and track.session > 1 and not split:
        return False  # one file for several sessions: no gap and no first pregap in the file
    return bool(track.pregap_stored)


def _cue_header(disc: Disc, split: bool, audio: str) -> list[str]:
    if not split and audio != "BINARY" and not all(t.is_audio for t in disc.tracks):
        raise ValueError(f"one {audio} file holds only audio tracks")
    if not split and len(disc.sessions) > 1 and disc.tracks[0].pregap_stored:
        raise ValueError("one file for several sessions cannot store track 1's pregap")
    lines = [f"CATALOG {disc.catalog}"] if disc.catalog else []
    lines += [f"TITLE {_quote(disc.title)}"] if disc.title else []
    return lines + ([f"PERFORMER {_quote(disc.performer)}"] if disc.performer else [])


def _cue_payload(disc: Disc, track: Track, stored: bool, audio: str) -> bytes:
    payload = disc.stored(track, track.sector_size, pregap=stored)
    return swap16(payload) if track.is_audio and audio == "MOTOROLA" else payload


def write_cue(disc: Disc, folder: Path, name: str = "disc", *, split: bool = False, audio: str = "BINARY",
              session_times: str = "lba") -> Path:
    """A cue sheet and its data: one BINARY file for the disc, or one file per track (redump names,
    ``name (Track NN).bin``) with audio tracks as ``audio``: ``BINARY``, ``WAVE`` (RIFF .wav) or ``MOTOROLA``
    (big-endian samples). Multi-session sheets carry ``REM SESSION nn`` before the session's first track.

    Pregaps: INDEX 00 when ``pregap_stored``, else a PREGAP line (none for track 1). One file per track:
    a later session's first track stores its 150-sector pregap (INDEX 00 00:00:00, INDEX 01 00:02:00), as
    redump does. One file for a multi-session disc: the file holds no gap between sessions and no first
    pregap of a later session; its INDEX times are the tracks' LBAs (``session_times="lba"``: the
    UltraISO/IsoBuster layout libmirage reads, and the LSNs cd-info shows), or positions in the file
    (``"file"``: the reader adds the gaps for each REM SESSION)."""
    folder.mkdir(parents=True, exist_ok=True)
    lines = _cue_header(disc, split, audio)
    lba_times = len(disc.sessions) > 1 and session_times == "lba"
    one_file = f"{name}.wav" if audio == "WAVE" else f"{name}.bin"
    data = bytearray()
    position = 0  # sectors already in the one file
    for track in disc.tracks:
        if len(disc.sessions) > 1 and track.first_in_session:
            lines.append(f"REM SESSION {track.session:02d}")
        stored = _cue_stores_pregap(track, split)
        payload = _cue_payload(disc, track, stored, audio)
        if split:
            wave = track.is_audio and audio == "WAVE"
            filename = f"{name} (Track {track.number:02d}){'.wav' if wave else '.bin'}"
            (folder / filename).write_bytes(wav_header(len(payload)) + payload if wave else payload)
            lines.append(f'FILE "{filename}" {audio if track.is_audio else "BINARY"}')
            base = 0
        else:
            lines += [f'FILE "{one_file}" {audio}'] if track.number == 1 else []
            base = (track.index0 if stored else track.start) if lba_times else position
            data += payload
            position += len(payload) // track.sector_size
        implicit = track.first_in_session and (track.session == 1 or not split)
        pregap_line = not stored and track.pregap > 0 and not implicit
        lines += _cue_track_lines(track, base + (track.pregap if stored else 0), base if stored else None,
                                  pregap_line)
    if not split:
        (folder / one_file).write_bytes(wav_header(len(data)) + data if audio == "WAVE" else bytes(data))
    sheet = folder / f"{name}.cue"
    sheet.write_text("\r\n".join(lines) + "\r\n")
    return sheet


# -- NRG -------------------------------------------------------------------------------------------------

NRG_MODES: dict[tuple[str, int], int] = {  # libmirage's mode codes
    (MODE1, USER): 0x00, (MODE2_FORM1, USER): 0x02, (MODE2_FORM1, M2RAW): 0x03, (MODE2, M2RAW): 0x03,
    (MODE2_FORM2, M2RAW): 0x03, (MODE1, RAW): 0x05, (MODE2_FORM1, RAW): 0x06, (MODE2, RAW): 0x06,
    (MODE2_FORM2, RAW): 0x06, (AUDIO, RAW): 0x07, (MODE1, RAW + SUB): 0x0F, (AUDIO, RAW + SUB): 0x10,
    (MODE2_FORM1, RAW + SUB): 0x11, (MODE2, RAW + SUB): 0x11}


def _lookup(table: dict, track: Track, where: str):
    try:
        return table[(track.mode, track.sector_size)]
    except KeyError:
        raise ValueError(f"{where} has no {track.mode} track in {track.sector_size}-byte sectors") from None


def _chunk(kind: bytes, body: bytes) -> bytes:
    return kind + struct.pack(">I", len(body)) + body


def _nrg_cue(disc: Disc, session: list[Track], version: int, cues_bcd: bool) -> bytes:
    """CUEX (v2: big-endian LBA) or CUES (v1: MSF) entries: lead-in marker, INDEX 00 and 01 of every
    track (INDEX 00 is present even when it equals INDEX 01), lead-out (track 0xAA)."""
    def entry(adr_ctl: int, number: int, index: int, lba: int) -> bytes:
        if version == 2:
            return bytes([adr_ctl, number, index, 0]) + struct.pack(">i", lba)
        m, s, f = msf(lba)
        return bytes([adr_ctl, number, index, 0, 0]) + bytes(map(bcd, (m, s, f)) if cues_bcd else (m, s, f))

    first, last = session[0], session[-1]
    body = entry(first.control << 4 | 1, 0, 0, first.index0)
    for track in session:
        body += entry(track.control << 4 | 1, bcd(track.number), 0, track.index0)
        body += entry(track.control << 4 | 1, bcd(track.number), 1, track.start)
    body += entry(last.control << 4 | 1, 0xAA, 1, disc.leadouts[last.session - 1])
    return body


def _nrg_dao(disc: Disc, session: list[Track], version: int, offsets: dict[int, tuple[int, int, int]]) -> bytes:
    """DAOI/DAOX: little-endian chunk size, MCN, TOC type, first and last track, then per track ISRC,
    sector size, mode code, and the file offsets of INDEX 00, INDEX 01 and the track's end."""
    xa = any(t.mode != AUDIO and t.mode != MODE1 for t in session)
    per_track = 42 if version == 2 else 30
    size = 22 + per_track * len(session)
    body = struct.pack("<I", size) + disc.catalog.encode().ljust(14, b"\0")[:14]
    body += struct.pack(">HBB", 0x20 if xa else 0, session[0].number, session[-1].number)
    for track in session:
        body += track.isrc.encode().ljust(12, b"\0")[:12]
        body += struct.pack(">H", track.sector_size) + bytes([_lookup(NRG_MODES, track, "NRG"), 0, 0, 0])
        body += struct.pack(">QQQ" if version == 2 else ">III", *offsets[track.number])
    return body


def _nrg_tao(disc: Disc, session: list[Track], version: int, offsets: dict[int, tuple[int, int, int]]) -> bytes:
    """ETNF/ETN2: per track its data's file offset and length, mode, and start LBA without the 150-sector
    gaps (Nero's and libcdio's convention: LBA = start + 150 x the track's index on the disc)."""
    body = b""
    for track in session:
        offset, _, end = offsets[track.number]
        mode = _lookup(NRG_MODES, track, "NRG")
        start = track.start - PREGAP * (track.number - 1)
        if version == 2:
            body += struct.pack(">QQIIII", offset, end - offset, mode, start, 0, track.sectors)
        else:
            body += struct.pack(">IIIII", offset, end - offset, mode, start, 0)
    return body


def write_nrg(path: Path, disc: Disc, *, version: int = 2, dao: bool = True, cues_bcd: bool = False) -> Path:
    """A Nero image: track data, then the chunks, then the footer (``NER5`` + 64-bit offset for version 2,
    ``NERO`` + 32-bit for version 1).

    Disc-at-once: CUEX/CUES, DAOX/DAOI and SINF (tracks in the session) per session; every pregap is
    stored, including track 1's LBA -150..-1 (Nero's layout: nrg2iso skips those 150 sectors).
    Track-at-once: ETN2/ETNF and SINF per session; no pregap is stored, and every track but a session's
    first must have a 150-sector pregap. Version 2 adds CDTX (CD-TEXT packs, when the disc has titles)
    and MTYP (1 = CD). ``cues_bcd``: write CUES times as BCD (libmirage reads binary, Aaru BCD)."""
    data = bytearray()
    chunks = b""
    for session in disc.sessions:
        offsets: dict[int, tuple[int, int, int]] = {}
        for track in session:
            if not dao and not track.first_in_session and track.pregap != PREGAP:
                raise ValueError(f"track-at-once: track {track.number} needs a {PREGAP}-sector pregap")
            payload = disc.stored(track, track.sector_size, pregap=dao)
            index1 = len(data) + (track.pregap * track.sector_size if dao else 0)
            offsets[track.number] = (len(data), index1, len(data) + len(payload))
            data += payload
        if dao:
            chunks += _chunk(b"CUEX" if version == 2 else b"CUES", _nrg_cue(disc, session, version, cues_bcd))
            chunks += _chunk(b"DAOX" if version == 2 else b"DAOI", _nrg_dao(disc, session, version, offsets))
        else:
            chunks += _chunk(b"ETN2" if version == 2 else b"ETNF", _nrg_tao(disc, session, version, offsets))
        chunks += _chunk(b"SINF", struct.pack(">I", len(session)))
    if version == 2:
        text = disc.cdtext()
        chunks += _chunk(b"CDTX", text) if text else b""
        chunks += _chunk(b"MTYP", struct.pack(">I", 1))
    chunks += _chunk(b"END!", b"")
    footer = b"NER5" + struct.pack(">Q", len(data)) if version == 2 else b"NERO" + struct.pack(">I", len(data))
    path.write_bytes(bytes(data) + chunks + footer)
    return path


# -- MDS / MDF -------------------------------------------------------------------------------------------

MDS_MODES = {AUDIO: 0xA9, MODE1: 0xAA, MODE2: 0xAB, MODE2_FORM1: 0xAC, MODE2_FORM2: 0xAD}


def _mds_block(mode: int, sub: int, adr_ctl: int, point: int, pmsf: tuple[int, int, int], extra: int = 0,
               size: int = 0, start: int = 0, offset: int = 0, files: int = 0, footer: int = 0) -> bytes:
    """An 80-byte track block: a full-TOC entry (binary MSF), then where the track's data is."""
    head = bytes([mode, sub, adr_ctl, 0, point, 0, 0, 0, 0, *pmsf])
    indexes = 2 if extra else 0  # entries in the extra ("index") block: pregap, length (Alcohol writes 2)
    return head + struct.pack("<IHB17xIQII24x", extra, size, indexes, start, offset, files, footer)


def _mdf_data(disc: Disc, size: int) -> tuple[bytes, dict[int, int], dict[int, int]]:
    """The MDF bytes, and per track the offset of its INDEX 01 and its length up to the next INDEX 01."""
    data = bytearray()
    placed: dict[int, int] = {}
    lengths: dict[int, int] = {}
    for session in disc.sessions:
        for track, following in zip(session, session[1:] + [None]):
            placed[track.number] = len(data)
            data += disc.stored(track, size, pregap=False)
            lengths[track.number] = track.sectors
            if following is not None:  # the next track's pregap, at the end of this track's data
                data += disc.stored(following, size)[: following.pregap * size]
                lengths[track.number] += following.pregap
    return bytes(data), placed, lengths


def _mds_descriptor(disc: Disc, placed: dict[int, int], lengths: dict[int, int], names: list[str],
                    medium: int) -> bytes:
    """Header, session blocks, track blocks (A0, A1, A2, tracks), extra blocks, footers and file names."""
    counts = [3 + len(s) for s in disc.sessions]
    blocks_at = 88 + 24 * len(disc.sessions)
    extras_at = blocks_at + 80 * sum(counts)
    footer_at = extras_at + 8 * sum(counts)
    name_at = footer_at + 16 * len(names)
    sessions, blocks, extras = b"", b"", b""
    for number, session in enumerate(disc.sessions, 1):
        first, last, leadout = session[0], session[-1], disc.leadouts[number - 1]
        xa = 0x20 if any(t.mode not in (AUDIO, MODE1) for t in session) else 0
        sessions += struct.pack("<iiHBBHHII", first.index0, leadout, number, counts[number - 1], 3, first.number,
                                last.number, 0, blocks_at + len(blocks))
        blocks += _mds_block(0, 0, 0x10 | first.control, 0xA0, (first.number, xa, 0))
        blocks += _mds_block(0, 0, 0x10 | last.control, 0xA1, (last.number, 0, 0))
        blocks += _mds_block(0, 0, 0x10 | last.control, 0xA2, msf(leadout))
        extras += bytes(24)
        for track in session:
            blocks += _mds_block(MDS_MODES[track.mode], 0x08 if track.sector_size == RAW + SUB else 0,
                                 0x10 | track.control, track.number, msf(track.start), extras_at + len(extras),
                                 track.sector_size, track.start, placed[track.number], len(names), footer_at)
            extras += struct.pack("<II", PREGAP if track.first_in_session else 0, lengths[track.number])
    text = b"".join(n.encode() + b"\0" for n in names)
    offsets = [name_at + sum(len(n) + 1 for n in names[:i]) for i in range(len(names))]
    footers = b"".join(struct.pack("<IIII", offset, 0, 0, 0) for offset in offsets)
    header = (b"MEDIA DESCRIPTOR" + bytes([1, 3]) + struct.pack("<HHHH", medium, len(disc.sessions), 2, 0) +
              bytes(54) + struct.pack("<II", 88, 0))
    return header + sessions + blocks + extras + footers + text


def write_mds(path: Path, disc: Disc, *, parts: int = 1, medium: int = 0) -> Path:
    """An Alcohol 120% MDS v1.3 descriptor and its data: ``name.mdf`` (or, with ``parts`` > 1, the data
    cut at sector boundaries into ``name.mdf``, ``name.md0``, ``name.md1``, ...; every track block lists all
    the files, named ``*.mdf``, ``*.md0``, ... after the descriptor's own name).

    Each session: A0/A1/A2 blocks, then one block per track; an 8-byte extra block (pregap, length) per
    block. A session's first track has pregap 150 (not stored); every track's data runs from its INDEX 01
    to the next track's INDEX 01 (or the lead-out), so later pregaps sit at the end of the track before
    (what Aaru's Alcohol writer does too). One sector size for the whole MDF: 2048, 2336, 2352, or 2448
    (2352 + interleaved P-W, subchannel byte 0x08). A one-track disc comes out byte for byte as Alcohol
    120% wrote mdf2iso's TEST.mds and TEST2.mds."""
    size = disc.tracks[0].sector_size
    if any(t.sector_size != size for t in disc.tracks):
        raise ValueError("an MDF holds one sector size for every track")
    data, placed, lengths = _mdf_data(disc, size)
    names = ["*.mdf"] + [f"*.md{i}" for i in range(parts - 1)]
    path.write_bytes(_mds_descriptor(disc, placed, lengths, names, medium))
    per_part = -(-len(data) // size // parts) * size
    for i, name in enumerate(names):
        path.with_suffix(name[1:]).write_bytes(data[i * per_part : (i + 1) * per_part])
    return path


# -- CloneCD ---------------------------------------------------------------------------------------------

def _ccd_entry(number: int, session: int, point: int, control: int, pmsf: tuple[int, int, int],
               adr: int = 1, amsf: tuple[int, int, int] = (0, 0, 0), zero: int = 0) -> list[str]:
    pm, ps, pf = pmsf
    am, as_, af = amsf
    return [f"[Entry {number}]", f"Session={session}", f"Point=0x{point:02x}", f"ADR=0x{adr:02x}",
            f"Control=0x{control:02x}", "TrackNo=0", f"AMin={am}", f"ASec={as_}", f"AFrame={af}",
            f"ALBA={(am * 60 + as_) * 75 + af - PREGAP}", f"Zero={zero}", f"PMin={pm}", f"PSec={ps}",
            f"PFrame={pf}", f"PLBA={(pm * 60 + ps) * 75 + pf - PREGAP}"]


def _ccd_entries(disc: Disc) -> list[list[str]]:
    """The full TOC: per session A0 (first track, disc type), A1 (last track), A2 (lead-out), one entry
    per track, and B0 (ADR 5: where the next session's program area starts) for every session but the last."""
    entries: list[list[str]] = []
    for number, session in enumerate(disc.sessions, 1):
        first, last, leadout = session[0], session[-1], disc.leadouts[number - 1]
        xa = 0x20 if any(t.mode not in (AUDIO, MODE1) for t in session) else 0
        rows = [(0xA0, first.control, (first.number, xa, 0)), (0xA1, last.control, (last.number, 0, 0)),
                (0xA2, last.control, msf(leadout))] + [(t.number, t.control, msf(t.start)) for t in session]
        entries += [_ccd_entry(len(entries) + i, number, *row) for i, row in enumerate(rows)]
        if number < len(disc.sessions):
            next_area = leadout + (6750 if number == 1 else 2250) + 4500
            entries.append(_ccd_entry(len(entries), number, 0xB0, last.control, (79, 59, 74), adr=5,
                                      amsf=msf(next_area), zero=len(disc.sessions) - number))
    return entries


def _ccd_text(disc: Disc) -> str:
    entries = _ccd_entries(disc)
    text = disc.cdtext()
    lines = ["[CloneCD]", "Version=3", "", "[Disc]", f"TocEntries={len(entries)}", f"Sessions={len(disc.sessions)}",
             "DataTracksScrambled=0", f"CDTextLength={len(text)}"]
    lines += [f"CATALOG={disc.catalog}"] if disc.catalog else []
    if text:
        lines += ["", "[CDText]", f"Entries={len(text) // 18}"]
        lines += [f"Entry {i}=" + " ".join(f"{b:02x}" for b in text[18 * i : 18 * i + 18])
                  for i in range(len(text) // 18)]
    for number, session in enumerate(disc.sessions, 1):
        lines += ["", f"[Session {number}]", f"PreGapMode={_ccd_mode(session[0])}", "PreGapSubC=0"]
    for entry in entries:
        lines += [""] + entry
    for track in disc.tracks:
        lines += ["", f"[TRACK {track.number}]", f"MODE={_ccd_mode(track)}"]
        lines += [f"ISRC={track.isrc}"] if track.isrc else []
        if track.pregap and not (track.first_in_session and track.session == 1):
            lines.append(f"INDEX 0={track.index0}")
        lines.append(f"INDEX 1={track.start}")
    return "\r\n".join(lines) + "\r\n"


def write_ccd(path: Path, disc: Disc, *, sub: bool = True) -> Path:
    """A CloneCD set: ``.ccd`` (full TOC entries, [TRACK n] with absolute INDEX 0/1 LBAs), ``.img``
    (2352-byte sectors: session 1 from LBA 0, later sessions from their first track's INDEX 00, each to its
    lead-out, sessions back to back; every pregap stored) and ``.sub`` (96 bytes per sector: P, Q, then
    R-W zeros, not interleaved)."""
    img, subs = bytearray(), bytearray()
    for track in disc.tracks:
        stored = not (track.first_in_session and track.session == 1)
        img += disc.stored(track, RAW, pregap=stored)
        first = track.index0 if stored else track.start
        subs += b"".join(disc.sub96(track, lba, "linear") for lba in range(first, track.end))
    path.write_text(_ccd_text(disc))
    path.with_suffix(".img").write_bytes(bytes(img))
    if sub:
        path.with_suffix(".sub").write_bytes(bytes(subs))
    return path


def _ccd_mode(track: Track) -> int:
    return 0 if track.is_audio else 1 if track.mode == MODE1 else 2


# -- command line ----------------------------------------------------------------------------------------

FORMATS = ("cue", "cue-split", "cue-wave", "cue-motorola", "nrg", "nrg-v1", "nrg-tao", "nrg-v1-tao", "mds",
           "mds-split", "ccd")


def write_format(kind: str, disc: Disc, out: Path, name: str) -> Path:
    """One image of ``disc`` in ``out``, by format name (see FORMATS)."""
    out.mkdir(parents=True, exist_ok=True)
    if kind.startswith("cue"):
        audio = {"cue-wave": "WAVE", "cue-motorola": "MOTOROLA"}.get(kind, "BINARY")
        return write_cue(disc, out / kind, name, split=kind != "cue", audio=audio)
    if kind.startswith("nrg"):
        return write_nrg(out / f"{name}-{kind}.nrg", disc, version=1 if "v1" in kind else 2, dao="tao" not in kind)
    if kind.startswith("mds"):
        (out / kind).mkdir(exist_ok=True)
        return write_mds(out / kind / f"{name}.mds", disc, parts=3 if kind == "mds-split" else 1)
    (out / kind).mkdir(exist_ok=True)
    return write_ccd(out / kind / f"{name}.ccd", disc)


def build_disc(sources: list[Path], *, mode: str = MODE1, sector_size: int = RAW, audio_tracks: int = 0,
               audio_seconds: float = 4, cd_extra: bool = False, title: str = "") -> Disc:
    """A disc from an ISO file or folders: one folder or ISO = one data track; several folders = one session
    each (genisoimage -C/-M, so that the last session shows them all). ``audio_tracks`` audio tracks (noise,
    2-second stored pregaps) follow the data in session 1, or with ``cd_extra`` make session 1 on their own
    (a CD Extra: the data sessions come after them)."""
    audio_size = RAW + SUB if sector_size == RAW + SUB else RAW
    audio = [Track(AUDIO, pcm(int(audio_seconds * 75), n), pregap=PREGAP, sector_size=audio_size,
                   title=f"Noise {n}", performer="cdwriter")
             for n in range(1, audio_tracks + 1)]
    before = [audio] if cd_extra and audio else []
    if len(sources) == 1 and sources[0].is_file():
        if before:
            raise SystemExit("a CD Extra needs folders: its ISO is made for its LBA in session 2")
        images = [(0, sources[0].read_bytes())]
    else:
        with tempfile.TemporaryDirectory() as tmp:
            images = multisession_isos(sources, Path(tmp), tool="genisoimage", before=before)
    sessions = before + [[Track(mode, image, sector_size=sector_size)] for _, image in images]
    if audio and not cd_extra:
        if len(sessions) > 1:
            raise SystemExit("audio tracks after the data: single-session discs only (or --cd-extra)")
        sessions[0] += audio
    disc = Disc(sessions, title=title, performer="cdwriter" if title else "")
    for (start, _), session in zip(images, disc.sessions[len(before) :]):
        assert session[0].start == start, "the ISO was built for another LBA"
    return disc


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="Formats: " + ", ".join(FORMATS))
    parser.add_argument("sources", nargs="+", type=Path,
                        help="an ISO file, or folders: one session per folder (genisoimage -C/-M)")
    parser.add_argument("-o", "--out", type=Path, required=True, help="folder for the images")
    parser.add_argument("-f", "--format", action="append", choices=FORMATS + ("all",),
                        help="image format (repeatable; default cue)")
    parser.add_argument("--name", default="disc", help="base name of the files (default: disc)")
    parser.add_argument("--mode", choices=("mode1", "xa"), default="mode1", help="data track sectors")
    parser.add_argument("--sector-size", type=int, choices=(USER, M2RAW, RAW, RAW + SUB), default=RAW)
    parser.add_argument("--audio", type=int, default=0, metavar="N", help="add N audio tracks after the data")
    parser.add_argument("--cd-extra", action="store_true", help="put the audio tracks first, in session 1 alone")
    parser.add_argument("--title", default="", help="CD-TEXT / cue TITLE of the disc")
    args = parser.parse_args(argv)
    kinds = FORMATS if "all" in (args.format or []) else tuple(args.format or ["cue"])
    mode = MODE1 if args.mode == "mode1" else MODE2_FORM1
    disc = build_disc(args.sources, mode=mode, sector_size=args.sector_size, audio_tracks=args.audio,
                      cd_extra=args.cd_extra, title=args.title)
    for kind in kinds:
        try:
            print(write_format(kind, disc, args.out, args.name))
        except ValueError as problem:
            print(f"{kind}: skipped: {problem}", file=sys.stderr)
    for track in disc.tracks:
        print(f"  session {track.session} track {track.number:02d} {track.mode:12s} INDEX 00 {track.index0:7d}"
              f"  INDEX 01 {track.start:7d}  end {track.end:7d}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
