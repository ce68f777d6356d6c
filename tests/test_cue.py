"""Cue sheets: how a sheet is read and laid out on the disc, and how a bad one is refused.

Small discs are made here from plain bytes (a data track of 2048-byte user sectors wrapped in raw
MODE1/2352 sectors with a sync pattern and header, audio as PCM), so that each case is a few lines;
the full writers with real EDC/ECC and the cross-checks with bchunk live in ``cdwriter.py``.
"""

from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path

import pytest
from conftest import run_imgfs
from corpuslib import mounted, refusal_line

from imgfs.containers.optical.cue import open_cue
from imgfs.errors import CorruptImage, MissingFile
from imgfs.io.cache import BlockCache
from imgfs.io.stream import FileStream
from imgfs.layer import OpenContext

SYNC = b"\x00" + b"\xff" * 10 + b"\x00"


def bcd(value: int) -> int:
    return (value // 10) << 4 | value % 10


def mode1(lba: int, data: bytes) -> bytes:
    frames = lba + 150
    header = bytes([bcd(frames // 4500), bcd(frames // 75 % 60), bcd(frames % 75), 1])
    return SYNC + header + data + bytes(288)


def data_track(tmp: Path, sectors: int = 40, first_lba: int = 0) -> bytes:
    """An ISO made by xorriso, as raw MODE1/2352 sectors from ``first_lba``, padded to ``sectors``."""
    import subprocess

    src = tmp / "src"
    src.mkdir(exist_ok=True)
    (src / "hello.txt").write_text("hello from the data track\n")
    iso = tmp / "d.iso"
    subprocess.run(["xorriso", "-as", "mkisofs", "-quiet", "-R", "-no-pad", "-o", str(iso), str(src)], check=True,
                   capture_output=True)
    user = iso.read_bytes()
    assert len(user) <= sectors * 2048, f"the ISO has {len(user) // 2048} sectors, more than {sectors}"
    user += bytes(sectors * 2048 - len(user))
    return b"".join(mode1(first_lba + i, user[i * 2048 : (i + 1) * 2048]) for i in range(len(user) // 2048))


def pcm(frames: int, seed: int) -> bytes:
    """Frames of 2352 bytes of a deterministic, non-repeating sample pattern."""
    out = bytearray()
    counter = seed
    while len(out) < frames * 2352:
        out += hashlib.sha256(struct.pack("<Q", counter)).digest()
        counter += 1
    return bytes(out[: frames * 2352])


def open_sheet(path: Path):  # type: ignore[no-untyped-def]
    disc = open_cue(FileStream(str(path)), OpenContext(str(path), BlockCache(1 << 20)))
    disc.prepare()
    return disc


def wav_pcm(path: Path) -> bytes:
    data = path.read_bytes()
    assert data[:4] == b"RIFF" and data[8:16] == b"WAVEfmt " and data[36:40] == b"data"
    assert struct.unpack("<HHIIHH", data[20:36]) == (1, 2, 44100, 176400, 4, 16)
    assert struct.unpack("<I", data[40:44])[0] == len(data) - 44
    return data[44:]


# -- layout -------------------------------------------------------------------------------------------------


def test_mixed_mode_disc_in_one_file_shows_data_and_wavs(tmp_path: Path) -> None:
    data = data_track(tmp_path, 40)
    a1, a2 = pcm(100, 1), pcm(80, 2)
    (tmp_path / "disc.bin").write_bytes(data + a1 + a2)
    (tmp_path / "disc.cue").write_text(
        'FILE "disc.bin" BINARY\n  TRACK 01 MODE1/2352\n    INDEX 01 00:00:00\n'
        '  TRACK 02 AUDIO\n    INDEX 00 00:00:40\n    INDEX 01 00:00:50\n'  # 10 frames of stored pregap
        '  TRACK 03 AUDIO\n    INDEX 01 00:01:65\n')  # frame 140
    disc = open_sheet(tmp_path / "disc.cue")
    assert [(t.number, t.start, t.length, t.pregap) for t in disc.tracks] == [(1, 0, 50, 0), (2, 50, 90, 10),
                                                                              (3, 140, 80, 0)]
    with mounted(tmp_path / "disc.cue", tmp_path / "mnt") as root:
        assert sorted(p.name for p in root.iterdir()) == ["Track 02.wav", "Track 03.wav", "hello.txt"]
        assert (root / "hello.txt").read_text() == "hello from the data track\n"
        # INDEX 01 to the next INDEX 01: track 2 is a1 without its 10 pregap frames; track 3 is a2
        assert wav_pcm(root / "Track 02.wav") == a1[10 * 2352 :]
        assert wav_pcm(root / "Track 03.wav") == a2


def test_one_file_per_track_with_pregap_and_postgap(tmp_path: Path) -> None:
    data = data_track(tmp_path, 40)
    a1 = pcm(60, 3)
    (tmp_path / "Game (Track 1).bin").write_bytes(data)
    (tmp_path / "Game (Track 2).bin").write_bytes(a1)
    (tmp_path / "Game.cue").write_text(
        'FILE "Game (Track 1).bin" BINARY\n  TRACK 01 MODE1/2352\n    INDEX 01 00:00:00\n    POSTGAP 00:00:05\n'
        'FILE "Game (Track 2).bin" BINARY\n  TRACK 02 AUDIO\n    PREGAP 00:02:00\n    INDEX 01 00:00:00\n')
    disc = open_sheet(tmp_path / "Game.cue")
    assert [(t.number, t.start, t.length, t.pregap) for t in disc.tracks] == [(1, 0, 40 + 5 + 150, 0),
                                                                              (2, 195, 60, 150)]
    # mounting a track's BIN finds the redump sheet that names it
    with mounted(tmp_path / "Game (Track 2).bin", tmp_path / "mnt") as root:
        assert (root / "hello.txt").is_file()
        assert wav_pcm(root / "Track 02.wav") == a1


def test_wave_and_motorola_files(tmp_path: Path) -> None:
    data = data_track(tmp_path, 40)
    a1, a2 = pcm(30, 4), pcm(20, 5)
    (tmp_path / "data.bin").write_bytes(data)
    fmt = struct.pack("<4sIHHIIHH", b"fmt ", 16, 1, 2, 44100, 176400, 4, 16)
    (tmp_path / "a1.wav").write_bytes(b"RIFF" + struct.pack("<I", 4 + 24 + 8 + len(a1) + 10) + b"WAVE" + fmt
                                      + b"LIST" + struct.pack("<I", 2) + b"xx" + b"data"
                                      + struct.pack("<I", len(a1)) + a1)
    swapped = bytearray(a2)
    swapped[0::2], swapped[1::2] = a2[1::2], a2[0::2]
    (tmp_path / "a2.raw").write_bytes(bytes(swapped))
    (tmp_path / "d.cue").write_text(
        'FILE "data.bin" BINARY\n  TRACK 01 MODE1/2352\n    INDEX 01 00:00:00\n'
        'FILE "a1.wav" WAVE\n  TRACK 02 AUDIO\n    INDEX 01 00:00:00\n'
        'FILE "a2.raw" MOTOROLA\n  TRACK 03 AUDIO\n    INDEX 01 00:00:00\n')
    with mounted(tmp_path / "d.cue", tmp_path / "mnt") as root:
        assert wav_pcm(root / "Track 02.wav") == a1
        assert wav_pcm(root / "Track 03.wav") == a2


def test_all_audio_disc_shows_only_wavs_and_info_keeps_cdtext(tmp_path: Path) -> None:
    (tmp_path / "cd.bin").write_bytes(pcm(50, 6) + pcm(25, 7))
    (tmp_path / "cd.cue").write_text(
        'CATALOG 1234567890123\nPERFORMER "The Band"\nTITLE "The Album"\nREM GENRE Rock\n'
        'FILE "cd.bin" BINARY\n  TRACK 01 AUDIO\n    TITLE "One"\n    ISRC USXXX0000001\n    INDEX 01 00:00:00\n'
        '  TRACK 02 AUDIO\n    TITLE "Two"\n    FLAGS DCP PRE\n    INDEX 01 00:00:50\n')
    with mounted(tmp_path / "cd.cue", tmp_path / "mnt") as root:
        assert sorted(p.name for p in root.iterdir()) == ["Track 01.wav", "Track 02.wav"]
    info = json.loads(run_imgfs("info", "--json", str(tmp_path / "cd.cue"), check=True).stdout)
    disc = next(layer for layer in info["layers"] if layer["layer"] == "cue")
    assert disc["catalog"] == "1234567890123"
    assert disc["cdtext"] == {"PERFORMER": "The Band", "TITLE": "The Album"}
    assert disc["tracks"][0]["isrc"] == "USXXX0000001" and disc["tracks"][0]["title"] == "One"
    assert disc["tracks"][1]["flags"] == "DCP PRE"
    text = run_imgfs("info", str(tmp_path / "cd.cue"), check=True).stdout
    assert "\n  cdtext:\n    PERFORMER  The Band\n    TITLE      The Album\n" in text
    assert "AUDIO" in text and "cd.bin" in text


def test_redump_second_session_lies_after_the_session_gap(tmp_path: Path) -> None:
    """REM SESSION 02: INDEX 01 of the session's first track is the first session's end + 11,400."""
    (tmp_path / "t1.bin").write_bytes(pcm(300, 8))
    (tmp_path / "t2.bin").write_bytes(bytes(2352 * 200))
    (tmp_path / "x.cue").write_text(
        'REM SESSION 01\nFILE "t1.bin" BINARY\n  TRACK 01 AUDIO\n    INDEX 01 00:00:00\n'
        'REM SESSION 02\nFILE "t2.bin" BINARY\n  TRACK 02 MODE1/2352\n    INDEX 00 00:00:00\n'
        '    INDEX 01 00:02:00\n')
    disc = open_sheet(tmp_path / "x.cue")
    assert [(t.number, t.session, t.start, t.file_lba) for t in disc.tracks] == [(1, 1, 0, 0),
                                                                                (2, 2, 11700, 11550)]


def test_names_in_another_case_and_windows_paths_are_found(tmp_path: Path) -> None:
    (tmp_path / "cd.bin").write_bytes(pcm(10, 9))
    (tmp_path / "cd.cue").write_text('FILE "C:\\Rips\\CD.BIN" BINARY\n  TRACK 01 AUDIO\n    INDEX 01 00:00:00\n')
    assert open_sheet(tmp_path / "cd.cue").tracks[0].source.name == str(tmp_path / "cd.bin")


# -- bad sheets -------------------------------------------------------------------------------------------


def test_a_missing_data_file_is_one_line_naming_it(tmp_path: Path) -> None:
    (tmp_path / "gone.cue").write_text('FILE "gone.bin" BINARY\n  TRACK 01 MODE1/2352\n    INDEX 01 00:00:00\n')
    with pytest.raises(MissingFile, match="gone.bin"):
        open_sheet(tmp_path / "gone.cue")
    (tmp_path / "mnt").mkdir()
    line = refusal_line(run_imgfs(str(tmp_path / "gone.cue"), str(tmp_path / "mnt")))
    assert "gone.bin" in line and "gone.cue" in line


def test_a_track_past_the_end_of_the_bin_is_refused(tmp_path: Path) -> None:
    (tmp_path / "short.bin").write_bytes(pcm(100, 10))
    (tmp_path / "short.cue").write_text('FILE "short.bin" BINARY\n  TRACK 01 AUDIO\n    INDEX 01 00:00:00\n'
                                        '  TRACK 02 AUDIO\n    INDEX 01 00:03:00\n')  # frame 225 > 100
    with pytest.raises(CorruptImage, match="track 1 .*needs 225 sectors"):
        open_sheet(tmp_path / "short.cue")
    (tmp_path / "mnt").mkdir()
    line = refusal_line(run_imgfs(str(tmp_path / "short.cue"), str(tmp_path / "mnt")))
    assert "short.bin" in line and "cue" in line


@pytest.mark.parametrize(("sheet", "message"), [
    ('FILE "x.bin" BINARY\n  TRACK 01 MODE1/2352\n    INDEX 01 00:99:00\n', "seconds must be below 60"),
    ('FILE "x.bin" BINARY\n  TRACK 01 MODE7/2352\n    INDEX 01 00:00:00\n', "track mode 'MODE7/2352'"),
    ('FILE "x.bin" BINARY\n  TRACK 01 AUDIO\n', "track 1 has no INDEX 01"),
    ('  TRACK 01 AUDIO\nFILE "x.bin" BINARY\n    INDEX 01 00:00:00\n', "TRACK before any FILE"),
    ('FILE "x.bin" BINARY\n  TRACK 01 AUDIO\n    INDEX 01 00:00:10\n  TRACK 02 AUDIO\n    INDEX 01 00:00:05\n',
     "starts before track 1"),
])
def test_malformed_sheets_get_one_clear_line(tmp_path: Path, sheet: str, message: str) -> None:
    (tmp_path / "x.bin").write_bytes(pcm(20, 11))
    (tmp_path / "x.cue").write_text(sheet)
    (tmp_path / "mnt").mkdir()
    line = refusal_line(run_imgfs(str(tmp_path / "x.cue"), str(tmp_path / "mnt")))
    assert message in line, line


def test_a_raw_bin_without_a_sheet_mounts_its_data_track(tmp_path: Path) -> None:
    (tmp_path / "lonely.bin").write_bytes(data_track(tmp_path, 40))
    with mounted(tmp_path / "lonely.bin", tmp_path / "mnt") as root:
        assert (root / "hello.txt").read_text() == "hello from the data track\n"
