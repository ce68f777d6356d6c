"""The optical image writers of ``tests/cdwriter.py``, checked against readers that are not ours.

Sectors: libcdio's isofs-m1.bin (cdrecord) and videocd.nrg (Nero) re-encoded byte for byte. Descriptors:
Alcohol's own TEST.mds/TEST2.mds reproduced byte for byte. Images: bchunk, cd-info/cd-read (libcdio), iat,
nrg2iso, mdf2iso, ccd2iso, xorriso and Python's wave/configparser read what the writers made. Where a
reader is known to be wrong, the test says so and checks what it does get right.
"""

from __future__ import annotations

import configparser
import re
import shutil
import subprocess
import sys
import wave
from pathlib import Path

import cdwriter as cw
import pytest
from corpuslib import CORPUS

TOOLS = ("bchunk", "cd-info", "cd-read", "iat", "nrg2iso", "mdf2iso", "ccd2iso", "xorriso", "genisoimage")
pytestmark = pytest.mark.skipif(any(shutil.which(t) is None for t in TOOLS),
                                reason="needs " + ", ".join(t for t in TOOLS if shutil.which(t) is None))

PCM2, PCM3 = cw.pcm(300, 2), cw.pcm(200, 3)


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(list(args), cwd=cwd, capture_output=True, text=True, errors="replace", timeout=60)


def cd_info(*source: str) -> dict:
    """cd-info's track list (number -> (LSN, type)), lead-out LSN, MCN and CD-TEXT lines."""
    out = run("cd-info", "--no-header", "--no-device-info", "--no-cddb", *source).stdout
    tracks = {int(m[1]): (int(m[2]), m[3]) for m in re.finditer(r"^\s*(\d+): \d\d:\d\d:\d\d\s+(\d+) (\w+)", out, re.M)}
    mcn = re.search(r"Media Catalog Number \(MCN\): (\S+)", out)
    return {"tracks": {n: v for n, v in tracks.items() if n != 170}, "leadout": tracks.get(170, (None,))[0],
            "mcn": mcn[1] if mcn else None, "text": re.findall(r"^\t(TITLE|PERFORMER): (.*)$", out, re.M), "out": out}


def cd_read(source: str, mode: str, lsn: int, count: int, out: Path) -> bytes:
    out.unlink(missing_ok=True)
    run("cd-read", "--no-header", source, "-m", mode, "-s", str(lsn), "-n", str(count), "-o", str(out))
    return out.read_bytes()


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cdwriter")


@pytest.fixture(scope="module")
def iso(work: Path) -> bytes:
    source = work / "tree"
    (source / "docs").mkdir(parents=True)
    (source / "numbers.txt").write_text("".join(f"{n}\n" for n in range(40000)))
    (source / "docs" / "readme.txt").write_text("an ISO inside a raw CD image\n")
    return cw.make_iso(work / "tree.iso", source)


def mixed(iso: bytes, size: int = cw.RAW, mode: str = cw.MODE1, stored: bool = True) -> cw.Disc:
    """Data track, then two audio tracks with 150- and 75-sector pregaps; CD-TEXT, ISRC and MCN. Audio is
    stored in 2352 bytes, or 2448 with a 2448-byte data track. No CD-TEXT string is empty: libcdio drops
    an empty string without moving on to the next track, and would give P2 to track 1."""
    audio = cw.RAW + cw.SUB if size == cw.RAW + cw.SUB else cw.RAW
    return cw.Disc([[cw.Track(mode, iso, sector_size=size, title="Data track", performer="Writer"),
                     cw.Track(cw.AUDIO, PCM2, pregap=150, pregap_stored=stored, title="Second", performer="P2",
                              isrc="USXYZ2400001", sector_size=audio),
                     cw.Track(cw.AUDIO, PCM3, pregap=75, pregap_stored=stored, title="Third", performer="P3",
                              sector_size=audio)]],
                   catalog="0123456789012", title="Album title", performer="Album artist")


@pytest.fixture(scope="module")
def disc(iso: bytes) -> cw.Disc:
    return mixed(iso)


@pytest.fixture(scope="module")
def sessions(work: Path) -> list[tuple[int, bytes]]:
    """Three ISO sessions made by genisoimage -C/-M, each adding files to the ones before."""
    roots = []
    for n, files in enumerate(({"one.txt": "first\n" * 3000}, {"two.txt": "second\n", "dir/deep.txt": "deep\n"},
                               {"three.txt": "third\n"}), 1):
        root = work / f"session{n}"
        for name, text in files.items():
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            (root / name).write_text(text)
        roots.append(root)
    return cw.multisession_isos(roots, work / "multisession")


def slices(sheet: Path) -> list[tuple[str, str]]:
    """(file name, the sheet's lines for that FILE) of a multi-FILE sheet, cut as text at every FILE line:
    bchunk and libcdio read one data file per sheet."""
    parts: list[tuple[str, str]] = []
    for line in sheet.read_text().splitlines():
        if line.startswith("FILE "):
            parts.append((line.split('"')[1], line + "\n"))
        elif parts and not line.startswith(("REM", "CATALOG", "TITLE", "PERFORMER")):
            parts[-1] = (parts[-1][0], parts[-1][1] + line + "\n")
    return parts


def bchunk_slice(folder: Path, filename: str, text: str, *flags: str) -> list[Path]:
    """bchunk on one FILE of a sheet; returns its outputs (``out-NN.iso`` / ``.wav`` / ``.ugh``)."""
    (folder / "slice.cue").write_text(text)
    for old in folder.glob("out-*"):
        old.unlink()
    done = run("bchunk", *flags, filename, "slice.cue", "out-", cwd=folder)
    assert done.returncode == 0, done.stderr
    return sorted(folder.glob("out-*"))


def wav_pcm(path: Path) -> bytes:
    with wave.open(str(path)) as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (2, 2, 44100)
        return w.readframes(w.getnframes())


# -- sectors ---------------------------------------------------------------------------------------------

def test_mode1_sectors_reproduce_cdrecord_image():
    """All 302 sectors of libcdio's isofs-m1.bin (mkisofs + cdrecord raw image) from their user data and LBA."""
    path = CORPUS / "bincue" / "libcdio" / "isofs-m1.bin"
    if not path.exists():
        pytest.skip("corpus not present")
    image = path.read_bytes()
    for lba in range(len(image) // cw.RAW):
        sector = image[lba * cw.RAW : (lba + 1) * cw.RAW]
        assert cw.mode1_sector(lba, sector[16:2064]) == sector, f"LBA {lba}"


def test_mode2_sectors_reproduce_nero_image():
    """Track 1 of libcdio's videocd.nrg (Nero, 2336-byte Mode 2): Form 1 sectors re-encoded byte for byte
    (ECC over a zeroed header), Form 2 sectors' EDC equal."""
    path = CORPUS / "nrg" / "libcdio" / "videocd.nrg"
    if not path.exists():
        pytest.skip("corpus not present")
    image = path.read_bytes()
    forms = {1: 0, 2: 0}
    for lba in range(676):
        block = image[lba * cw.M2RAW : (lba + 1) * cw.M2RAW]
        subheader = block[:4]
        if subheader[2] & 0x20:
            assert cw.mode2_form2_sector(lba, block[8:2332], subheader)[16:] == block, f"LBA {lba}"
            forms[2] += 1
        else:
            assert cw.mode2_form1_sector(lba, block[8:2056], subheader)[16:] == block, f"LBA {lba}"
            forms[1] += 1
    assert forms[1] > 200 and forms[2] > 100


def test_sector_layouts():
    data = bytes(range(256)) * 8
    m1 = cw.mode1_sector(0, data)
    assert m1[:16] == cw.SYNC + bytes([0x00, 0x02, 0x00, 0x01]) and m1[16:2064] == data and m1[2068:2076] == bytes(8)
    assert cw.mode1_sector(-150, data)[12:16] == bytes([0, 0, 0, 1])
    assert cw.mode1_sector(4350 + 740, data)[12:15] == bytes([0x01, 0x09, 0x65])  # 1:09:65 (BCD)
    f1 = cw.mode2_form1_sector(7, data)
    assert f1[12:24] == bytes([0, 2, 7, 2]) + cw.FORM1_SUBHEADER * 2 and f1[24:2072] == data
    f2 = cw.mode2_form2_sector(7, (data * 2)[: cw.FORM2])
    assert len(f2) == cw.RAW and f2[18] == 0x20 and f2[24:2348] == (data * 2)[: cw.FORM2]
    assert cw.mode2_form2_sector(7, bytes(cw.FORM2), with_edc=False)[2348:] == bytes(4)
    formless = cw.mode2_formless_sector(7, bytes(range(256)) * 9 + bytes(32))
    assert len(formless) == cw.RAW and formless[15] == 2
    flipped = bytearray(m1)
    flipped[100] ^= 1
    assert cw.edc(bytes(flipped[:2064])) != int.from_bytes(m1[2064:2068], "little")


def test_q_subchannel_crc():
    """CRC-16/GSM's catalogue check value, and a Q frame of track 1 at LBA 0 (absolute 00:02:00)."""
    assert cw.crc16(b"123456789") == 0xCE3C
    q = cw.q_subchannel(0, 4, 1, 1, 0)
    assert q[:10] == bytes([0x41, 0x01, 0x01, 0, 0, 0, 0, 0x00, 0x02, 0x00])
    assert cw.crc16(q[:10]) == int.from_bytes(q[10:], "big")
    pregap = cw.q_subchannel(-75, 0, 1, 0, -75)
    assert pregap[2] == 0 and pregap[3:6] == bytes([0, 1, 0]) and pregap[7:10] == bytes([0, 1, 0x00])


def test_disc_layout(disc: cw.Disc, iso: bytes):
    n = len(iso) // 2048
    assert [(t.number, t.index0, t.start, t.end) for t in disc.tracks] == [
        (1, -150, 0, n), (2, n, n + 150, n + 450), (3, n + 450, n + 525, n + 725)]
    assert disc.leadouts == [n + 725]
    two = cw.Disc([[cw.Track(cw.MODE1, iso)], [cw.Track(cw.MODE1, iso)], [cw.Track(cw.AUDIO, PCM3)]])
    assert [t.start for t in two.tracks] == [0, n + 11400, 2 * n + 11400 + 6900]
    assert [t.index0 for t in two.tracks] == [-150, n + 11250, 2 * n + 11400 + 6750]


# -- BIN/CUE ---------------------------------------------------------------------------------------------

def test_cue_single_file_bchunk(work: Path, disc: cw.Disc, iso: bytes):
    """bchunk: the data track is the ISO; an audio WAV runs from INDEX 01 to the next INDEX 00 (bchunk's rule)."""
    sheet = cw.write_cue(disc, work / "single", "disc")
    done = run("bchunk", "-w", "disc.bin", "disc.cue", "out", cwd=sheet.parent)
    assert done.returncode == 0, done.stderr
    assert (sheet.parent / "out01.iso").read_bytes() == iso
    assert wav_pcm(sheet.parent / "out02.wav") == PCM2
    assert wav_pcm(sheet.parent / "out03.wav") == PCM3


def test_cue_single_file_cd_info(work: Path, disc: cw.Disc, iso: bytes):
    sheet = cw.write_cue(disc, work / "single", "disc")
    info = cd_info("--cue-file", str(sheet))
    assert info["tracks"] == {1: (0, "data"), 2: (disc.tracks[1].start, "audio"), 3: (disc.tracks[2].start, "audio")}
    assert info["leadout"] == disc.leadouts[0] == len(iso) // 2048 + 725
    assert info["mcn"] == "0123456789012"
    assert info["text"] == [("TITLE", "Album title"), ("PERFORMER", "Album artist"), ("TITLE", "Data track"),
                            ("PERFORMER", "Writer"), ("TITLE", "Second"), ("PERFORMER", "P2"),
                            ("TITLE", "Third"), ("PERFORMER", "P3")]
    assert f"ISO 9660: {len(iso) // 2048} blocks" in info["out"]


def test_cue_single_file_cd_read(work: Path, disc: cw.Disc, iso: bytes):
    sheet = str(cw.write_cue(disc, work / "single", "disc"))
    assert cd_read(f"--cue-file={sheet}", "m1f1", 16, 4, work / "read") == iso[16 * 2048 : 20 * 2048]
    start2, start3 = disc.tracks[1].start, disc.tracks[2].start
    assert cd_read(f"--cue-file={sheet}", "audio", start2, 3, work / "read") == PCM2[: 3 * cw.RAW]
    # the last sectors of track 2, then track 3's pregap (silence), then track 3
    got = cd_read(f"--cue-file={sheet}", "audio", start3 - 76, 78, work / "read")
    assert got == PCM2[-cw.RAW :] + bytes(75 * cw.RAW) + PCM3[: 2 * cw.RAW]


def test_cue_not_stored_pregaps(work: Path, iso: bytes):
    """PREGAP lines: nothing stored. bchunk's files are unchanged; libcdio ignores PREGAP in its LSNs (a
    known libcdio limitation: it reports the file position, ours is the disc address)."""
    disc = mixed(iso, stored=False)
    sheet = cw.write_cue(disc, work / "pregap", "disc")
    text = sheet.read_text()
    assert "PREGAP 00:02:00" in text and "PREGAP 00:01:00" in text and "INDEX 00" not in text
    assert (sheet.parent / "disc.bin").stat().st_size == (disc.leadouts[0] - 225) * cw.RAW
    done = run("bchunk", "-w", "disc.bin", "disc.cue", "out", cwd=sheet.parent)
    assert done.returncode == 0
    assert (sheet.parent / "out01.iso").read_bytes() == iso
    assert wav_pcm(sheet.parent / "out02.wav") == PCM2 and wav_pcm(sheet.parent / "out03.wav") == PCM3
    info = cd_info("--cue-file", str(sheet))
    assert info["tracks"][2][0] == disc.tracks[1].start - 150 and info["tracks"][3][0] == disc.tracks[2].start - 225


def test_cue_split_files(work: Path, disc: cw.Disc, iso: bytes):
    """One file per track (redump): each FILE, cut out of the sheet, read by bchunk; together the files are
    the single-file image. (bchunk and libcdio take one data file per sheet: libcdio even ignores the FILE
    names and opens <sheet>.bin, so the whole sheet cannot be given to them.)"""
    sheet = cw.write_cue(disc, work / "split", "disc", split=True)
    single = cw.write_cue(disc, work / "split-single", "disc").with_suffix(".bin").read_bytes()
    parts = slices(sheet)
    assert [name for name, _ in parts] == [f"disc (Track {n:02d}).bin" for n in (1, 2, 3)]
    assert b"".join((sheet.parent / name).read_bytes() for name, _ in parts) == single
    assert "INDEX 00 00:00:00\n    INDEX 01 00:02:00" in parts[1][1] and "INDEX 01 00:01:00" in parts[2][1]
    expected = [iso, PCM2, PCM3]
    for (name, text), want in zip(parts, expected):
        outputs = bchunk_slice(sheet.parent, name, text, "-w")
        got = outputs[0].read_bytes() if outputs[0].suffix == ".iso" else wav_pcm(outputs[0])
        assert got == want, name


def test_cue_wave_and_motorola(work: Path, disc: cw.Disc):
    """WAVE: RIFF files that Python's wave module reads, holding the pregap's silence and the PCM.
    MOTOROLA: big-endian samples; bchunk -s (swab) turns them back into the PCM."""
    sheet = cw.write_cue(disc, work / "wave", "disc", split=True, audio="WAVE")
    assert 'FILE "disc (Track 02).wav" WAVE' in sheet.read_text()
    assert wav_pcm(sheet.parent / "disc (Track 02).wav") == bytes(150 * cw.RAW) + PCM2
    assert wav_pcm(sheet.parent / "disc (Track 03).wav") == bytes(75 * cw.RAW) + PCM3
    sheet = cw.write_cue(disc, work / "motorola", "disc", split=True, audio="MOTOROLA")
    parts = slices(sheet)
    assert parts[1][1].startswith('FILE "disc (Track 02).bin" MOTOROLA')
    for (name, text), want in zip(parts[1:], (PCM2, PCM3)):
        assert (sheet.parent / name).read_bytes()[-len(want) :] == cw.swap16(want)
        outputs = bchunk_slice(sheet.parent, name, text.replace("MOTOROLA", "BINARY"), "-w", "-s")
        assert wav_pcm(outputs[0]) == want


def test_cue_single_file_audio_cd(work: Path):
    """An audio CD in one MOTOROLA file (bchunk -s reads it back) and in one WAVE file (Python's wave)."""
    audio = cw.Disc([[cw.Track(cw.AUDIO, PCM2), cw.Track(cw.AUDIO, PCM3, pregap=150)]])
    sheet = cw.write_cue(audio, work / "motorola-single", "cd", audio="MOTOROLA")
    assert 'FILE "cd.bin" MOTOROLA' in sheet.read_text()
    (sheet.parent / "bin.cue").write_text(sheet.read_text().replace("MOTOROLA", "BINARY"))
    done = run("bchunk", "-w", "-s", "cd.bin", "bin.cue", "out", cwd=sheet.parent)
    assert done.returncode == 0
    assert wav_pcm(sheet.parent / "out01.wav") == PCM2 and wav_pcm(sheet.parent / "out02.wav") == PCM3
    assert cd_info("--cue-file", str(sheet))["tracks"] == {1: (0, "audio"), 2: (450, "audio")}
    sheet = cw.write_cue(audio, work / "wave-single", "cd", audio="WAVE")
    assert 'FILE "cd.wav" WAVE' in sheet.read_text() and "INDEX 01 00:06:00" in sheet.read_text()
    assert wav_pcm(sheet.with_suffix(".wav")) == PCM2 + bytes(150 * cw.RAW) + PCM3


@pytest.mark.parametrize(("mode", "size", "cue_mode"), [(cw.MODE2_FORM1, 2352, "MODE2/2352"),
                                                         (cw.MODE2_FORM1, 2336, "MODE2/2336"),
                                                         (cw.MODE1, 2048, "MODE1/2048")])
def test_cue_other_sector_formats(work: Path, iso: bytes, mode: str, size: int, cue_mode: str):
    """XA Form 1 in 2352 and 2336 bytes and cooked 2048: iat finds the ISO in the bin, cd-info the track
    table. bchunk reads MODE2/2352 only (it copies 2336 as is and calls 2048 '.ugh'); libcdio's cd-read
    reads cue tracks right only at 2352 bytes (2336: 8 bytes late; 2048: zeros)."""
    disc = mixed(iso, size=size, mode=mode)
    sheet = cw.write_cue(disc, work / f"format{size}", "disc")
    assert f"TRACK 01 {cue_mode}" in sheet.read_text()
    binary = sheet.with_suffix(".bin")
    assert binary.stat().st_size == len(iso) // 2048 * size + (150 + 300 + 75 + 200) * cw.RAW
    done = run("iat", str(binary), str(work / f"iat{size}.iso"))
    assert done.returncode == 0 and (work / f"iat{size}.iso").read_bytes()[: len(iso)] == iso
    info = cd_info("--cue-file", str(sheet))
    kind = "XA" if mode == cw.MODE2_FORM1 else "data"
    assert info["tracks"] == {1: (0, kind), 2: (disc.tracks[1].start, "audio"), 3: (disc.tracks[2].start, "audio")}
    if size == cw.RAW:
        assert cd_read(f"--cue-file={sheet}", "m2f1", 16, 2, work / "read") == iso[16 * 2048 : 18 * 2048]
        run("bchunk", "disc.bin", "disc.cue", "out", cwd=sheet.parent)
        assert (sheet.parent / "out01.iso").read_bytes() == iso
    if size == 2336:
        blocks = binary.read_bytes()[: len(iso) // 2048 * 2336]
        assert b"".join(blocks[i + 8 : i + 2056] for i in range(0, len(blocks), 2336)) == iso


# -- NRG -------------------------------------------------------------------------------------------------

def test_nrg_v2_dao(work: Path, disc: cw.Disc, iso: bytes):
    """cd-info reads the CUEX table, MCN and CDTX CD-TEXT; iat finds the ISO after the stored 150-sector
    pregap; cd-read's audio comes from LSN + 150 sectors. (libcdio takes every track's mode from the first
    DAOX entry and does not know mode code 5, Mode 1/2352, so it calls all three tracks audio.)"""
    image = cw.write_nrg(work / "dao2.nrg", disc, version=2)
    assert image.read_bytes()[-12:-8] == b"NER5"
    info = cd_info(f"--nrg-file={image}")
    assert {n: lsn for n, (lsn, _) in info["tracks"].items()} == {t.number: t.start for t in disc.tracks}
    assert info["leadout"] == disc.leadouts[0] and info["mcn"] == "0123456789012"
    assert ("PERFORMER", "P2") in info["text"] and ("TITLE", "Album title") in info["text"]
    assert info["text"] == cd_info("--cue-file", str(cw.write_cue(disc, work / "single", "disc")))["text"]
    done = run("iat", str(image), str(work / "dao2.iso"))
    assert done.returncode == 0 and (work / "dao2.iso").read_bytes()[: len(iso)] == iso
    start3 = disc.tracks[2].start
    got = cd_read(f"--nrg-file={image}", "audio", start3 - 1, 2, work / "read")
    assert got == bytes(cw.RAW) + PCM3[: cw.RAW]


@pytest.mark.parametrize("version", [1, 2])
def test_nrg_dao_cooked_nrg2iso(work: Path, iso: bytes, version: int):
    """A Mode 1/2048 disc-at-once image: nrg2iso drops Nero's 150 stored pregap sectors (307200 bytes) and
    copies the rest, chunks and footer included; iat gives the ISO exactly."""
    image = cw.write_nrg(work / f"cooked{version}.nrg", cw.data_disc(iso, sector_size=2048), version=version)
    raw = image.read_bytes()
    assert raw[: 150 * 2048] == bytes(150 * 2048) and raw[150 * 2048 : 150 * 2048 + len(iso)] == iso
    run("nrg2iso", str(image), str(work / f"n2i{version}.iso"))
    assert (work / f"n2i{version}.iso").read_bytes()[: len(iso)] == iso
    run("iat", str(image), str(work / f"iat-cooked{version}.iso"))
    assert (work / f"iat-cooked{version}.iso").read_bytes() == iso
    if version == 2:
        info = cd_info(f"--nrg-file={image}")
        assert info["tracks"] == {1: (0, "data")} and info["leadout"] == len(iso) // 2048


def test_nrg_tao(work: Path, iso: bytes):
    """Track-at-once: ETN2 (v2) and ETNF (v1) with no pregap stored; libcdio puts track n at its start
    field + 150 x (n - 1). ETNF needs one block size for all tracks (libcdio asserts start x size ==
    offset), so the v1 image holds three data tracks."""
    tao = cw.Disc([[cw.Track(cw.MODE1, iso, sector_size=2048), cw.Track(cw.AUDIO, PCM2, pregap=150),
                    cw.Track(cw.AUDIO, PCM3, pregap=150)]])
    image = cw.write_nrg(work / "tao2.nrg", tao, version=2, dao=False)
    assert image.stat().st_size == len(iso) + len(PCM2) + len(PCM3) + 8 + 96 + 8 + 4 + 8 + 4 + 8 + 12
    info = cd_info(f"--nrg-file={image}")
    assert info["tracks"] == {1: (0, "data"), 2: (tao.tracks[1].start, "audio"), 3: (tao.tracks[2].start, "audio")}
    assert info["leadout"] == tao.leadouts[0]
    assert cd_read(f"--nrg-file={image}", "audio", tao.tracks[2].start, 2, work / "read") == PCM3[: 2 * cw.RAW]
    data3 = cw.Disc([[cw.Track(cw.MODE1, iso, sector_size=2048), cw.Track(cw.MODE1, iso[:40960], pregap=150,
                                                                            sector_size=2048),
                      cw.Track(cw.MODE1, iso[:20480], pregap=150, sector_size=2048)]])
    image = cw.write_nrg(work / "tao1.nrg", data3, version=1, dao=False)
    assert image.read_bytes()[-8:-4] == b"NERO"
    info = cd_info(f"--nrg-file={image}")
    assert info["tracks"] == {t.number: (t.start, "data") for t in data3.tracks}
    run("iat", str(image), str(work / "tao1.iso"))
    assert (work / "tao1.iso").read_bytes()[: len(iso)] == iso
    with pytest.raises(ValueError, match="150-sector pregap"):
        cw.write_nrg(work / "bad.nrg", mixed(iso), dao=False)


def test_nrg_v1_dao_cues(work: Path, disc: cw.Disc, iso: bytes):
    """CUES/DAOI (Nero before 5.5): iat finds the data. libcdio misreads CUES (it takes the MSF bytes for
    an LBA), so only the chunk chain is checked here: CUES times are binary MSF (libmirage's reading;
    ``cues_bcd`` writes BCD, as Aaru reads them)."""
    image = cw.write_nrg(work / "dao1.nrg", disc, version=1)
    raw = image.read_bytes()
    assert raw[-8:-4] == b"NERO"
    chunks = raw[int.from_bytes(raw[-4:], "big") : -8]
    assert chunks[:4] == b"CUES" and chunks[-8:] == b"END!" + bytes(4)
    cues = chunks[8 : 8 + int.from_bytes(chunks[4:8], "big")]
    def time(lba: int) -> bytes:
        frames = lba + 150
        return bytes([frames // 4500, frames // 75 % 60, frames % 75])

    # lead-in marker at -150 (00:00:00), INDEX 00 and 01 of each track, lead-out (track 0xAA)
    entries = [cues[i : i + 8] for i in range(0, len(cues), 8)]
    assert entries[0] == bytes([0x41, 0, 0, 0, 0, 0, 0, 0]) and len(entries) == 8
    assert entries[5] == bytes([0x01, 3, 0, 0, 0]) + time(disc.tracks[2].index0)
    assert entries[6] == bytes([0x01, 3, 1, 0, 0]) + time(disc.tracks[2].start)
    assert entries[-1] == bytes([0x01, 0xAA, 1, 0, 0]) + time(disc.leadouts[0])
    bcd = cw.write_nrg(work / "dao1bcd.nrg", disc, version=1, cues_bcd=True).read_bytes()
    as_bcd = bytes((v // 10) << 4 | v % 10 for v in time(disc.tracks[2].start))
    assert bytes([0x01, 3, 1, 0, 0]) + as_bcd in bcd
    run("iat", str(image), str(work / "dao1.iso"))
    assert (work / "dao1.iso").read_bytes()[: len(iso)] == iso


# -- MDS / MDF -------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("size", "reference"), [(2352, "TEST.mds"), (2448, "TEST2.mds")])
def test_mds_reproduces_alcohol(work: Path, size: int, reference: str):
    """Alcohol 120%'s own descriptors (mdf2iso's test data: one Mode 1 track of 181 sectors, 2352 and 2448
    bytes) come out byte for byte."""
    path = CORPUS / "mds" / "mdf2iso" / reference
    if not path.exists():
        pytest.skip("corpus not present")
    one_track = cw.Disc([[cw.Track(cw.MODE1, bytes(181 * 2048), sector_size=size)]])
    assert cw.write_mds(work / f"alcohol{size}.mds", one_track).read_bytes() == path.read_bytes()


@pytest.mark.parametrize("size", [2048, 2352, 2448])
def test_mdf2iso(work: Path, iso: bytes, size: int):
    """mdf2iso (which reads the .mdf alone, by its sync patterns) gives the ISO back."""
    disc = mixed(iso, size=size) if size != 2048 else cw.data_disc(iso, sector_size=2048)
    (work / f"mdf{size}").mkdir()
    mds = cw.write_mds(work / f"mdf{size}" / "disc.mds", disc)
    done = run("mdf2iso", str(mds.with_suffix(".mdf")), str(work / f"mdf{size}.iso"))
    mdf = mds.with_suffix(".mdf").read_bytes()
    if size == 2048:  # nothing to convert
        assert "is already ISO9660" in done.stdout and mdf == iso
        return
    assert (work / f"mdf{size}.iso").read_bytes()[: len(iso)] == iso
    if size == 2448:  # raw P-W after each sector: Q of track 1's first sector, interleaved in bit 6
        sub = mdf[2352:2448]
        q = bytes(sum(((sub[8 * i + b] >> 6) & 1) << (7 - b) for b in range(8)) for i in range(12))
        assert q == cw.q_subchannel(0, 4, 1, 1, 0) and all(byte & 0x80 for byte in sub)  # P still set at LBA 0
        assert not any(byte & 0x80 for byte in mdf[2448 + 2352 : 2 * 2448])  # cleared at LBA 1
    if size != 2048:  # track 2's data starts with track 3's pregap appended to its end
        start2 = len(iso) // 2048 * size + 150 * size
        assert mdf[start2 : start2 + 300 * size : size] == bytes(PCM2[i * cw.RAW] for i in range(300))


def test_mds_split(work: Path, iso: bytes):
    """Three parts (.mdf, .md0, .md1) at sector boundaries; the descriptor names all of them."""
    (work / "mdsplit").mkdir()
    whole = cw.write_mds(work / "mdsplit" / "whole.mds", mixed(iso)).with_suffix(".mdf").read_bytes()
    mds = cw.write_mds(work / "mdsplit" / "parts.mds", mixed(iso), parts=3)
    parts = [mds.with_suffix(s).read_bytes() for s in (".mdf", ".md0", ".md1")]
    assert all(len(p) % cw.RAW == 0 for p in parts) and b"".join(parts) == whole
    text = mds.read_bytes()
    assert b"*.mdf\0*.md0\0*.md1\0" in text
    (work / "mdsplit" / "joined.mdf").write_bytes(b"".join(parts))
    run("mdf2iso", str(work / "mdsplit" / "joined.mdf"), str(work / "mdsplit" / "joined.iso"))
    assert (work / "mdsplit" / "joined.iso").read_bytes()[: len(iso)] == iso


# -- CloneCD ---------------------------------------------------------------------------------------------

def test_ccd(work: Path, disc: cw.Disc, iso: bytes):
    """ccd2iso turns the .img into the ISO (stopping at the first audio sector); the .ccd is an INI file
    whose full TOC matches cd-info's reading of the same disc's cue sheet; the .sub holds P and Q (with a
    valid CRC and the sector's own address) for every sector of the .img."""
    (work / "ccd").mkdir()
    ccd = cw.write_ccd(work / "ccd" / "disc.ccd", disc)
    run("ccd2iso", str(ccd.with_suffix(".img")), str(work / "ccd" / "disc.iso"))
    assert (work / "ccd" / "disc.iso").read_bytes() == iso
    img = ccd.with_suffix(".img").read_bytes()
    single = cw.write_cue(disc, work / "single", "disc").with_suffix(".bin").read_bytes()
    assert img == single
    ini = configparser.ConfigParser()
    ini.read_string(ccd.read_text())
    entries = [ini[s] for s in ini.sections() if s.startswith("Entry")]
    assert int(ini["Disc"]["TocEntries"]) == len(entries) == 6 and ini["Disc"]["CATALOG"] == "0123456789012"
    points = {int(e["Point"], 16): int(e["PLBA"]) for e in entries}
    info = cd_info("--cue-file", str(work / "single" / "disc.cue"))
    assert {p: points[p] for p in (1, 2, 3)} == {n: lsn for n, (lsn, _) in info["tracks"].items()}
    assert points[0xA2] == info["leadout"] and points[0xA0] == 1 * 4500 - 150 and points[0xA1] == 3 * 4500 - 150
    n = len(iso) // 2048
    assert [ini[f"TRACK {t}"].get("INDEX 0") for t in (1, 2, 3)] == [None, str(n), str(n + 450)]
    packs = bytes.fromhex(" ".join(ini["CDText"][f"Entry {i}"] for i in range(int(ini["CDText"]["Entries"]))))
    assert packs == disc.cdtext() and int(ini["Disc"]["CDTextLength"]) == len(packs)
    sub = ccd.with_suffix(".sub").read_bytes()
    assert len(sub) == len(img) // cw.RAW * cw.SUB
    for n in range(0, len(img) // cw.RAW, 7):
        p, q = sub[n * 96 : n * 96 + 12], sub[n * 96 + 12 : n * 96 + 24]
        assert cw.crc16(q[:10]) == int.from_bytes(q[10:], "big")
        m, s, f = ((b >> 4) * 10 + (b & 15) for b in q[7:10])
        assert (m * 60 + s) * 75 + f - 150 == n  # .img sector n is LBA n
        assert p == (b"\xff" * 12 if q[2] == 0 or q[3:6] == bytes(3) else bytes(12))


# -- several sessions ------------------------------------------------------------------------------------

def test_multisession_isos(work: Path, sessions: list[tuple[int, bytes]]):
    """xorriso, loading the last session of the sparse image the later sessions were built against, finds
    every session's files at LBAs inside their own session; sessions start 11400, then 6900, sectors after
    the lead-out before them."""
    (s1, one), (s2, two), (s3, three) = sessions
    assert s1 == 0 and s2 == len(one) // 2048 + 11400 and s3 == s2 + len(two) // 2048 + 6900
    done = run("xorriso", "-indev", str(work / "multisession" / "sessions.img"), "-load", "sbsector", str(s3),
               "-find", "/", "-type", "f", "-exec", "report_lba", "--")
    found = {m[2]: int(m[1]) for m in re.finditer(r"File data lba:\s+\d+ ,\s+(\d+) ,.*'/(.+)'", done.stdout)}
    assert set(found) == {"one.txt", "two.txt", "dir/deep.txt", "three.txt"}
    assert found["one.txt"] < len(one) // 2048 and s2 <= found["two.txt"] < s3 <= found["three.txt"]


def test_multisession_cue(work: Path, sessions: list[tuple[int, bytes]]):
    """Redump style (a file per track, REM SESSION, stored first pregap): each FILE cut out for bchunk gives
    its session's ISO. One file (UltraISO style): cd-info's LSNs are the sessions' LBAs."""
    disc = cw.Disc([[cw.Track(cw.MODE1, image)] for _, image in sessions])
    assert [t.start for t in disc.tracks] == [start for start, _ in sessions]
    sheet = cw.write_cue(disc, work / "ms-split", "ms", split=True)
    text = sheet.read_text()
    assert text.index("REM SESSION 02") < text.index('FILE "ms (Track 02).bin"') and text.count("REM SESSION") == 3
    for (name, part), (_, image) in zip(slices(sheet), sessions):
        assert bchunk_slice(sheet.parent, name, part)[0].read_bytes() == image
    assert (sheet.parent / "ms (Track 02).bin").read_bytes()[: 150 * cw.RAW] == disc.raw(disc.tracks[1])[: 150 * cw.RAW]
    single = cw.write_cue(disc, work / "ms-single", "ms")
    info = cd_info("--cue-file", str(single))
    assert info["tracks"] == {t.number: (t.start, "data") for t in disc.tracks}
    assert single.with_suffix(".bin").stat().st_size == sum(len(image) for _, image in sessions) // 2048 * cw.RAW
    packed = cd_info("--cue-file", str(cw.write_cue(disc, work / "ms-packed", "ms", session_times="file")))
    sizes = [len(image) // 2048 for _, image in sessions]
    assert packed["tracks"] == {1: (0, "data"), 2: (sizes[0], "data"), 3: (sizes[0] + sizes[1], "data")}


def test_cd_extra(work: Path, sessions: list[tuple[int, bytes]]):
    """Audio in session 1, an ISO in session 2 made with ``-C 0,start``: xorriso, told the image's
    displacement, finds the files at their absolute LBAs; cd-info and bchunk read the cue sheets."""
    audio = [[cw.Track(cw.AUDIO, PCM2, title="One", performer="Band"),
              cw.Track(cw.AUDIO, PCM3, pregap=150, title="Two", performer="Band")]]
    (start, data), = cw.multisession_isos([work / "session1"], work / "extra", before=audio)
    assert start == 300 + 150 + 200 + 11400
    done = run("xorriso", "-displacement", f"-{start}", "-indev", str(work / "extra" / "session1.iso"),
               "-find", "/", "-type", "f", "-exec", "report_lba", "--")
    lba = int(re.search(r"File data lba:\s+\d+ ,\s+(\d+) ,.*'/one.txt'", done.stdout)[1])
    assert start + 16 < lba < start + len(data) // 2048
    disc = cw.Disc(audio + [[cw.Track(cw.MODE1, data)]])
    info = cd_info("--cue-file", str(cw.write_cue(disc, work / "extra-cue", "extra")))
    assert info["tracks"] == {1: (0, "audio"), 2: (450, "audio"), 3: (start, "data")}
    sheet = cw.write_cue(disc, work / "extra-split", "extra", split=True)
    got = []
    for name, text in slices(sheet):
        output = bchunk_slice(sheet.parent, name, text, "-w")[0]
        got.append(wav_pcm(output) if output.suffix == ".wav" else output.read_bytes())
    assert got == [PCM2, PCM3, data]


def test_multisession_other_formats(work: Path, sessions: list[tuple[int, bytes]]):
    """No installed tool reads several sessions from NRG, MDS or CCD (libcdio asserts on a second CUEX or
    ETNF; iat, mdf2iso and ccd2iso see the first ISO only): those see session 1, and each session's bytes
    sit where the descriptor says, as raw sectors the cue test above had bchunk read."""
    disc = cw.Disc([[cw.Track(cw.MODE1, image)] for _, image in sessions])
    raws = [disc.raw(t) for t in disc.tracks]
    (work / "ms-ccd").mkdir()
    ccd = cw.write_ccd(work / "ms-ccd" / "ms.ccd", disc)
    assert ccd.with_suffix(".img").read_bytes() == raws[0][150 * cw.RAW :] + raws[1] + raws[2]
    run("ccd2iso", str(ccd.with_suffix(".img")), str(work / "ms-ccd" / "ms.iso"))
    assert (work / "ms-ccd" / "ms.iso").read_bytes()[: len(sessions[0][1])] == sessions[0][1]
    ini = configparser.ConfigParser()
    ini.read_string(ccd.read_text())
    assert ini["Disc"]["Sessions"] == "3" and [ini[f"TRACK {n}"]["INDEX 1"] for n in (1, 2, 3)] == \
        [str(start) for start, _ in sessions]
    (work / "ms-mds").mkdir()
    mds = cw.write_mds(work / "ms-mds" / "ms.mds", disc)
    assert mds.with_suffix(".mdf").read_bytes() == b"".join(r[150 * cw.RAW :] for r in raws)
    nrg = cw.write_nrg(work / "ms.nrg", disc).read_bytes()
    assert nrg.startswith(b"".join(raws))
    assert nrg.count(b"CUEX") == nrg.count(b"DAOX") == nrg.count(b"SINF") == 3
    run("iat", str(work / "ms.nrg"), str(work / "ms-nrg.iso"))
    assert (work / "ms-nrg.iso").read_bytes()[: len(sessions[0][1])] == sessions[0][1]


# -- the command line ------------------------------------------------------------------------------------

def test_command_line(work: Path, iso: bytes, sessions: list[tuple[int, bytes]]):
    (work / "tree.iso").write_bytes(iso)
    done = subprocess.run([sys.executable, str(Path(cw.__file__)), str(work / "tree.iso"), "-o", str(work / "cli"),
                           "-f", "cue", "-f", "ccd", "--audio", "1", "--title", "CLI"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    info = cd_info("--cue-file", str(work / "cli" / "cue" / "disc.cue"))
    assert info["tracks"] == {1: (0, "data"), 2: (len(iso) // 2048 + 150, "audio")}
    run("ccd2iso", str(work / "cli" / "ccd" / "disc.img"), str(work / "cli.iso"))
    assert (work / "cli.iso").read_bytes() == iso
    done = subprocess.run([sys.executable, str(Path(cw.__file__)), str(work / "session1"), str(work / "session2"),
                           "-o", str(work / "cli-extra"), "--audio", "2", "--cd-extra"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    info = cd_info("--cue-file", str(work / "cli-extra" / "cue" / "disc.cue"))
    assert [lsn for lsn, _ in info["tracks"].values()][:3] == [0, 450, 750 + 11400]
    assert [kind for _, kind in info["tracks"].values()] == ["audio", "audio", "data", "data"]
