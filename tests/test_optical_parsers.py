"""The NRG, MDS/MDF and CCD parsers at library level: hand-built images, the corpus, and bad input.

Images are built here from small synthetic sectors whose 2048 user bytes name their LBA, so that every
sector read through ``Disc.user_stream()`` can be checked against the LBA it must come from.
"""

from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path
from typing import Optional

import pytest
from corpuslib import corpus_dir

from imgfs.containers.optical import ccd, mds, nrg
from imgfs.containers.optical.disc import AUDIO, MODE1, MODE2, SYNC, Disc
from imgfs.errors import CorruptImage, ImageError, MissingFile, UnsupportedFormat
from imgfs.io.cache import BlockCache
from imgfs.io.stream import BytesStream, FileStream
from imgfs.layer import OpenContext

SUBHEADER = b"\x00\x00\x08\x00\x00\x00\x08\x00"


# -- synthetic sectors ------------------------------------------------------------------------------------


def user(lba: int) -> bytes:
    return (f"LBA {lba:+08d} ".encode() * 160)[:2048]


def header(lba: int, mode: int) -> bytes:
    m, rest = divmod(lba + 150, 75 * 60)
    s, f = divmod(rest, 75)
    return SYNC + bytes(int(str(v), 16) for v in (m, s, f)) + bytes([mode])


def mode1_raw(lba: int) -> bytes:
    return header(lba, 1) + user(lba) + bytes(288)


def mode2_raw(lba: int) -> bytes:
    return header(lba, 2) + SUBHEADER + user(lba) + bytes(280)


def mode2_2336(lba: int) -> bytes:
    return SUBHEADER + user(lba) + bytes(280)


def audio(lba: int) -> bytes:
    return struct.pack("<I", lba & 0xFFFFFFFF) * 588


def with_subchannel(sector: bytes) -> bytes:
    return sector + b"\xa5" * 96


def sectors(make, first: int, count: int) -> bytes:
    return b"".join(make(lba) for lba in range(first, first + count))


def blank(make, count: int) -> bytes:
    """Pregap sectors: their user bytes are zeros."""
    return b"".join(make(0).replace(user(0), bytes(2048)) for _ in range(count))


def context(path: Path) -> OpenContext:
    return OpenContext(str(path), BlockCache(1 << 20))


def check_user_bytes(disc: Disc, data_lbas: list[range]) -> None:
    """Every sector of ``data_lbas`` reads as its own user bytes, the sector before and after each as zeros."""
    disc.prepare()
    view = disc.user_stream()
    assert view.size == disc.leadout * 2048
    for lbas in data_lbas:
        got = view.pread(lbas.start * 2048, len(lbas) * 2048)
        assert got == b"".join(user(lba) for lba in lbas), f"user bytes of LBAs {lbas}"
        if lbas.start > 0 and not any(lbas.start - 1 in other for other in data_lbas):
            assert view.pread((lbas.start - 1) * 2048, 2048) == bytes(2048)
        if lbas.stop < disc.leadout and not any(lbas.stop in other for other in data_lbas):
            assert view.pread(lbas.stop * 2048, 2048) == bytes(2048)


def table(disc: Disc) -> list[tuple]:
    return [(t.number, t.session, t.mode, t.start, t.length) for t in disc.tracks]


# -- NRG builders -----------------------------------------------------------------------------------------


def nrg_image(data: bytes, chunks: list[tuple[bytes, bytes]], version: int = 1, end: bool = True) -> bytes:
    body = b"".join(cid + struct.pack(">I", len(payload)) + payload for cid, payload in chunks)
    body += b"END!" + bytes(4) if end else b""
    footer = b"NER5" + struct.pack(">Q", len(data)) if version == 2 else b"NERO" + struct.pack(">I", len(data))
    return data + body + footer


def etnf(entries: list[tuple[int, int, int]], wide: bool = False) -> tuple[bytes, bytes]:
    """(offset, bytes, mode) per track."""
    if wide:
        return b"ETN2", b"".join(struct.pack(">QQIIQ", o, n, m, 0, 0) for o, n, m in entries)
    return b"ETNF", b"".join(struct.pack(">IIIII", o, n, m, 0, 0) for o, n, m in entries)


def bcd(value: int) -> int:
    return value if value == 0xAA else int(str(value), 16)


def cue(points: list[tuple[int, int, int, int]], msf: bool = False) -> tuple[bytes, bytes]:
    """(control, track, index, lba) per point; CUES stores an MSF, CUEX an LBA."""
    out = b""
    for control, track, index, lba in points:
        head = bytes([control << 4 | 1, bcd(track), bcd(index), 0])
        if msf:
            m, rest = divmod(lba + 150, 4500)
            out += head + bytes([0, m, rest // 75, rest % 75])
        else:
            out += head + struct.pack(">i", lba)
    return (b"CUES" if msf else b"CUEX"), out


def dao(first: int, tracks: list[tuple[int, int, int, int, int]], wide: bool = True, mcn: bytes = b"") -> tuple:
    """(sector size, mode code, INDEX 00 offset, INDEX 01 offset, end offset) per track."""
    head = struct.pack(">I13sBBBBB", 0, mcn.ljust(13, b"\0"), 0, 0, 0, first, first + len(tracks) - 1)
    fmt = ">12sHBBHQQQ" if wide else ">12sHBBHIII"
    body = b"".join(struct.pack(fmt, b"", size, code, 0, 0, p0, p1, e) for size, code, p0, p1, e in tracks)
    return (b"DAOX" if wide else b"DAOI"), head + body


def cdtx(fields: dict[int, list[str]]) -> tuple[bytes, bytes]:
    """CD-TEXT packs of block 0: per pack type, the strings of the disc (track 0) and tracks 1, 2, ..."""
    packs = b""
    seq = 0
    for kind, strings in fields.items():
        text = b"".join(s.encode("latin-1") + b"\0" for s in strings)
        text += bytes(-len(text) % 12)
        for i in range(0, len(text), 12):
            packs += bytes([kind, 0, seq, 0]) + text[i : i + 12] + b"\0\0"
            seq += 1
    return b"CDTX", packs


def open_bytes(tmp_path: Path, name: str, data: bytes, opener) -> Disc:
    path = tmp_path / name
    path.write_bytes(data)
    return opener(FileStream(str(path)), context(path))


# -- NRG --------------------------------------------------------------------------------------------------


def test_nrg_v1_tao_three_sessions(tmp_path: Path) -> None:
    data = sectors(user, 0, 20) + sectors(user, 11420, 10) + sectors(user, 18330, 5)
    chunks = [etnf([(0, 20 * 2048, 0)]), (b"SINF", struct.pack(">I", 1)),
              etnf([(20 * 2048, 10 * 2048, 0)]), (b"SINF", struct.pack(">I", 1)),
              etnf([(30 * 2048, 5 * 2048, 0)]), (b"SINF", struct.pack(">I", 1)), (b"MTYP", struct.pack(">I", 1))]
    disc = open_bytes(tmp_path, "tao.nrg", nrg_image(data, chunks), nrg.open_nrg)
    # session 2 starts after a lead-out of 6750, a lead-in of 4500 and a pregap of 150; session 3 after 2250 + ...
    assert table(disc) == [(1, 1, MODE1, 0, 20), (2, 2, MODE1, 11420, 10), (3, 3, MODE1, 18330, 5)]
    assert [t.sector_size for t in disc.tracks] == [2048] * 3
    assert disc.sessions == [1, 2, 3]
    info = disc.describe()
    assert info["nrg"]["version"] == 1 and info["nrg"]["media_type"] == "0x1 (CD)"
    assert [c["id"] for c in info["nrg"]["chunks"]] == ["ETNF", "SINF", "ETNF", "SINF", "ETNF", "SINF", "MTYP", "END!"]
    check_user_bytes(disc, [range(0, 20), range(11420, 11430), range(18330, 18335)])


def test_nrg_v2_tao_audio_and_mode2(tmp_path: Path) -> None:
    data = sectors(audio, 0, 10) + sectors(mode2_2336, 160, 8) + sectors(mode2_raw, 318, 4)
    chunks = [etnf([(0, 10 * 2352, 7), (10 * 2352, 8 * 2336, 3), (10 * 2352 + 8 * 2336, 4 * 2352, 6)], wide=True),
              cdtx({0x80: ["Album", "Song", "Clip"], 0x81: ["Band", "Singer"]})]
    disc = open_bytes(tmp_path, "tao2.nrg", nrg_image(data, chunks, version=2), nrg.open_nrg)
    assert table(disc) == [(1, 1, AUDIO, 0, 160), (2, 1, MODE2, 160, 158), (3, 1, MODE2, 318, 4)]
    assert [t.sheet_mode for t in disc.tracks] == ["ETN2 mode 7", "ETN2 mode 3", "ETN2 mode 6"]
    assert disc.cdtext == {"TITLE": "Album", "PERFORMER": "Band"}
    assert [(t.title, t.performer) for t in disc.tracks] == [("Song", "Singer"), ("Clip", ""), ("", "")]
    check_user_bytes(disc, [range(160, 168), range(318, 322)])
    assert disc.user_stream().pread(0, 10 * 2048) == bytes(10 * 2048)  # audio is no user data
    pcm = disc.pcm_stream(disc.tracks[0])
    assert pcm.size == 160 * 2352
    assert pcm.pread(0, 10 * 2352) == sectors(audio, 0, 10)
    assert pcm.pread(10 * 2352, 150 * 2352) == bytes(150 * 2352)  # the next track's TAO gap


def test_nrg_v2_dao_two_sessions(tmp_path: Path) -> None:
    pregap1 = bytes(150 * 2048)
    track1 = sectors(user, 0, 20)
    track2 = sectors(audio, 20, 15)  # INDEX 00 at 20, INDEX 01 at 25
    track3 = blank(mode2_2336, 150) + sectors(mode2_2336, 11435, 10)  # INDEX 00 at 11285, INDEX 01 at 11435
    o1 = len(pregap1)
    o2 = o1 + len(track1)
    o3 = o2 + len(track2)
    data = pregap1 + track1 + track2 + track3
    chunks = [cue([(4, 0, 0, -150), (4, 1, 0, -150), (4, 1, 1, 0), (0, 2, 0, 20), (0, 2, 1, 25), (0, 0xAA, 1, 35)]),
              dao(1, [(2048, 0x00, 0, o1, o2), (2352, 0x07, o2, o2 + 5 * 2352, o3)], mcn=b"0123456789012"),
              (b"SINF", struct.pack(">I", 2)),
              cue([(4, 0, 0, 11285 - 4500), (4, 3, 0, 11285), (4, 3, 1, 11435), (4, 0xAA, 1, 11445)]),
              dao(3, [(2336, 0x03, o3, o3 + 150 * 2336, len(data))]), (b"SINF", struct.pack(">I", 1))]
    disc = open_bytes(tmp_path, "dao.nrg", nrg_image(data, chunks, version=2), nrg.open_nrg)
    assert table(disc) == [(1, 1, MODE1, 0, 25), (2, 1, AUDIO, 25, 10), (3, 2, MODE2, 11435, 10)]
    assert [(t.file_lba, t.file_sectors, t.pregap) for t in disc.tracks] == [(-150, 170, 150), (20, 15, 5),
                                                                             (11285, 160, 150)]
    assert disc.catalog == "0123456789012"
    assert disc.leadout == 11445
    check_user_bytes(disc, [range(0, 20), range(11435, 11445)])
    assert disc.pcm_stream(disc.tracks[1]).pread(0, 10 * 2352) == sectors(audio, 25, 10)


def test_nrg_v1_dao_cues_msf(tmp_path: Path) -> None:
    data = sectors(mode1_raw, -150, 150) + sectors(mode1_raw, 0, 30)
    chunks = [cue([(4, 0, 0, -150), (4, 1, 0, -150), (4, 1, 1, 0), (4, 0xAA, 1, 30)], msf=True),
              dao(1, [(2352, 0x05, 0, 150 * 2352, len(data))], wide=False)]
    disc = open_bytes(tmp_path, "cues.nrg", nrg_image(data, chunks), nrg.open_nrg)
    assert table(disc) == [(1, 1, MODE1, 0, 30)]
    assert disc.tracks[0].sheet_mode == "DAOI mode 0x05"
    check_user_bytes(disc, [range(0, 30)])
    assert disc.tracks[0].user_offset == 16


def test_nrg_probe(tmp_path: Path) -> None:
    good = nrg_image(sectors(user, 0, 2), [etnf([(0, 4096, 0)])])
    assert nrg.probe(BytesStream(good))
    assert nrg.probe(BytesStream(nrg_image(sectors(user, 0, 2), [etnf([(0, 4096, 0)])], version=2)))
    assert not nrg.probe(BytesStream(sectors(user, 0, 2)))
    assert not nrg.probe(BytesStream(b"NERO" + struct.pack(">I", 10**6)))  # points outside the file


# -- NRG: bad input -----------------------------------------------------------------------------------------


def nrg_error(tmp_path: Path, data: bytes) -> ImageError:
    path = tmp_path / "bad.nrg"
    path.write_bytes(data)
    with pytest.raises(ImageError) as caught:
        nrg.open_nrg(FileStream(str(path)), context(path))
    return caught.value


def test_nrg_footer_outside_the_file(tmp_path: Path) -> None:
    data = sectors(user, 0, 4) + b"NERO" + struct.pack(">I", 0x7FFFFFF0)
    error = nrg_error(tmp_path, data)
    assert isinstance(error, CorruptImage) and error.layer == "nrg"
    assert "the NERO footer points to byte 2147483632, outside the chunk area" in str(error)
    data = sectors(user, 0, 4) + b"NER5" + struct.pack(">Q", 1 << 62)
    assert "the NER5 footer points to byte 4611686018427387904" in str(nrg_error(tmp_path, data))


def test_nrg_chunk_length_past_the_end(tmp_path: Path) -> None:
    data = sectors(user, 0, 4)
    image = data + b"ETNF" + struct.pack(">I", 1 << 30) + bytes(20) + b"NERO" + struct.pack(">I", len(data))
    error = nrg_error(tmp_path, image)
    assert isinstance(error, CorruptImage)
    assert str(error) == (f"nrg: chunk ETNF claims 1073741824 bytes, but only 20 remain before the footer "
                          f"(at byte offset {len(data) + 4})")


def test_nrg_chunk_loop(tmp_path: Path) -> None:
    data = sectors(user, 0, 4)
    footer = b"NERO" + struct.pack(">I", len(data))
    looping = data + b"ETNF" + struct.pack(">I", 0xFFFFFFF8) + b"END!" + bytes(4) + footer
    error = nrg_error(tmp_path, looping)
    assert isinstance(error, CorruptImage)
    assert "chunk ETNF has length -8 (0xfffffff8): the chunk list would loop back on itself" in str(error)
    # a footer inside the chunk list (an image saved twice): walking on would start over
    nested = data + b"NERO" + struct.pack(">I", len(data)) + b"END!" + bytes(4) + footer
    error = nrg_error(tmp_path, nested)
    assert str(error) == f"nrg: the chunk list loops back to the NERO footer (at byte offset {len(data)})"


def test_nrg_other_bad_chunks(tmp_path: Path) -> None:
    data = sectors(user, 0, 4)
    no_end = nrg_image(data, [etnf([(0, 4 * 2048, 0)])], end=False)
    assert "the chunk list ends without an END! chunk" in str(nrg_error(tmp_path, no_end))
    past_data = nrg_image(data, [etnf([(0, 40 * 2048, 0)])])
    assert "track 1 is stored at bytes 0..81920, past the start of the chunk list at byte 8192" in str(
        nrg_error(tmp_path, past_data))
    odd = nrg_image(data, [(b"ETNF", bytes(21))])
    assert "chunk ETNF is 21 bytes long, not a 0-byte header and 20-byte entries" in str(nrg_error(tmp_path, odd))
    mode = nrg_error(tmp_path, nrg_image(data, [etnf([(0, 4 * 2048, 0x42)])]))
    assert isinstance(mode, UnsupportedFormat) and "mode code 0x42" in str(mode)
    sizes = nrg_image(data, [cue([(4, 1, 1, 0)]), dao(1, [(0, 0, 0, 0, 8192)])])
    assert "track 1 has a sector size of 0 bytes" in str(nrg_error(tmp_path, sizes))
    empty = nrg_image(data, [(b"SINF", struct.pack(">I", 1))])
    assert "describes no track" in str(nrg_error(tmp_path, empty))


# -- MDS builders -----------------------------------------------------------------------------------------


def msf(lba: int) -> tuple[int, int, int]:
    m, rest = divmod(lba + 150, 4500)
    return m, rest // 75, rest % 75


def mds_descriptor(sessions: list[tuple[int, int, list[dict]]], names: list[str], medium: int = 0,
                   version: bytes = b"\x01\x03", wide: bool = False) -> bytes:
    """sessions: (start, end, tracks); a track: point, mode, sector_size, start, offset, pregap, length[, sub]."""
    blocks_at = []
    pos = 88 + 24 * len(sessions)
    for _, _, tracks in sessions:
        blocks_at.append(pos)
        pos += 80 * (3 + len(tracks))
    extra_at = pos
    pos += 8 * sum(3 + len(t) for _, _, t in sessions)
    files_at = pos
    pos += 16 * len(names)
    encoded = [n.encode("utf-16-le") + b"\0\0" if wide else n.encode() + b"\0" for n in names]
    name_at = []
    for raw in encoded:
        name_at.append(pos)
        pos += len(raw)
    out = struct.pack("<16s2sHH4xH8xI24xI12xII", b"MEDIA DESCRIPTOR", version, medium, len(sessions), 0, 0, 0, 88, 0)
    blocks, extras = b"", b""
    for number, (start, end, tracks) in enumerate(sessions, 1):
        out += struct.pack("<iiHBBHH4xI", start, end, number, 3 + len(tracks), 3, tracks[0]["point"],
                           tracks[-1]["point"], blocks_at[number - 1])
        toc = [(0xA0, (tracks[0]["point"], 0, 0)), (0xA1, (tracks[-1]["point"], 0, 0)), (0xA2, msf(end))]
        for point, pmsf in toc:
            blocks += struct.pack("<12BIH18xIQII24x", 0, 0, 0x14, 0, point, 0, 0, 0, 0, *pmsf, 0, 0, 0, 0, 0, 0)
            extras += bytes(8)
        for t in tracks:
            extra = extra_at + len(extras)
            blocks += struct.pack("<12BIH18xIQII24x", t["mode"], t.get("sub", 0), 0x14 if t["mode"] != 0xA9 else 0x10,
                                  0, t["point"], 0, 0, 0, 0, *msf(t["start"]), extra, t["size"], t["start"],
                                  t["offset"], len(names), files_at)
            extras += struct.pack("<II", t["pregap"], t["length"])
    out += blocks + extras
    out += b"".join(struct.pack("<II8x", at, int(wide)) for at in name_at)
    return out + b"".join(encoded)


def test_mds_2048_single_track(tmp_path: Path) -> None:
    (tmp_path / "Game.mdf").write_bytes(sectors(user, 0, 25))
    descriptor = mds_descriptor([(-150, 25, [dict(point=1, mode=0xAA, size=2048, start=0, offset=0, pregap=150,
                                                  length=25)])], ["*.mdf"])
    disc = open_bytes(tmp_path, "Game.mds", descriptor, mds.open_mds)
    assert table(disc) == [(1, 1, MODE1, 0, 25)]
    assert disc.tracks[0].user_offset == 0 and disc.tracks[0].pregap == 150
    assert disc.tracks[0].source is not None and disc.tracks[0].source.name.endswith("Game.mdf")
    check_user_bytes(disc, [range(0, 25)])
    disc.close()


def test_mds_2352_two_sessions_with_audio(tmp_path: Path) -> None:
    data = sectors(mode1_raw, 0, 20) + sectors(audio, 20, 30) + sectors(mode2_raw, 11450, 12)
    (tmp_path / "mixed.mdf").write_bytes(data)
    session1 = [dict(point=1, mode=0xAA, size=2352, start=0, offset=0, pregap=150, length=20),
                dict(point=2, mode=0xA9, size=2352, start=20, offset=20 * 2352, pregap=0, length=30)]
    session2 = [dict(point=3, mode=0xAC, size=2352, start=11450, offset=50 * 2352, pregap=150, length=12)]
    descriptor = mds_descriptor([(-150, 50, session1), (11300, 11462, session2)], ["*.mdf"])
    disc = open_bytes(tmp_path, "mixed.mds", descriptor, mds.open_mds)
    assert table(disc) == [(1, 1, MODE1, 0, 20), (2, 1, AUDIO, 20, 30), (3, 2, MODE2, 11450, 12)]
    assert [t.sheet_mode for t in disc.tracks] == ["0xaa (Mode 1)", "0xa9 (audio)", "0xac (Mode 2 Form 1)"]
    check_user_bytes(disc, [range(0, 20), range(11450, 11462)])
    assert [t.user_offset for t in disc.tracks] == [16, None, 24]
    assert disc.pcm_stream(disc.tracks[1]).pread(0, 30 * 2352) == sectors(audio, 20, 30)
    sessions = disc.describe()["mds"]["sessions"]
    assert [(s["number"], s["start"], s["end"]) for s in sessions] == [(1, -150, 50), (2, 11300, 11462)]
    disc.close()


def test_mds_2448_with_subchannel(tmp_path: Path) -> None:
    (tmp_path / "sub.mdf").write_bytes(b"".join(with_subchannel(mode1_raw(lba)) for lba in range(0, 16)))
    descriptor = mds_descriptor([(-150, 16, [dict(point=1, mode=0xAA, size=2448, start=0, offset=0, pregap=150,
                                                  length=16, sub=8)])], ["*.mdf"])
    disc = open_bytes(tmp_path, "sub.mds", descriptor, mds.open_mds)
    assert table(disc) == [(1, 1, MODE1, 0, 16)] and disc.tracks[0].sector_size == 2448
    check_user_bytes(disc, [range(0, 16)])
    assert disc.describe()["mds"]["sessions"][0]["toc"][3]["subchannel"] == 8
    disc.close()


@pytest.mark.parametrize("listed", [True, False], ids=["footer-lists-parts", "parts-beside-mdf"])
def test_mds_split_data_files(tmp_path: Path, listed: bool) -> None:
    data = sectors(mode2_2336, 0, 40)
    cut1, cut2 = 13 * 2336, 29 * 2336
    if listed:
        names = ["*.md0", "*.md1", "*.md2"]
        parts = {"split.md0": data[:cut1], "split.md1": data[cut1:cut2], "split.md2": data[cut2:]}
    else:
        names = ["*.mdf"]
        parts = {"split.mdf": data[:cut1], "split.md0": data[cut1:cut2], "SPLIT.MD1": data[cut2:]}
    for name, part in parts.items():
        (tmp_path / name).write_bytes(part)
    descriptor = mds_descriptor([(-150, 40, [dict(point=1, mode=0xAB, size=2336, start=0, offset=0, pregap=150,
                                                  length=40)])], names)
    disc = open_bytes(tmp_path, "split.mds", descriptor, mds.open_mds)
    assert len(disc.files) == 3
    assert disc.tracks[0].user_offset == 8
    check_user_bytes(disc, [range(0, 40)])
    disc.close()


def test_mds_wide_file_name(tmp_path: Path) -> None:
    (tmp_path / "Café.mdf").write_bytes(sectors(user, 0, 3))
    descriptor = mds_descriptor([(-150, 3, [dict(point=1, mode=0xAA, size=2048, start=0, offset=0, pregap=150,
                                                 length=3)])], ["Café.mdf"], wide=True)
    disc = open_bytes(tmp_path, "other.mds", descriptor, mds.open_mds)
    check_user_bytes(disc, [range(0, 3)])
    disc.close()


def test_mds_probe() -> None:
    assert mds.probe(BytesStream(b"MEDIA DESCRIPTOR\x01\x03" + bytes(100)))
    assert mds.probe(BytesStream(b"MEDIA DESCRIPTOR\x02\x00" + bytes(100)))  # refused by the opener, with a reason
    assert not mds.probe(BytesStream(b"MEDIA DESCRIPTIO"))


# -- MDS: bad input ---------------------------------------------------------------------------------------


def mds_error(tmp_path: Path, descriptor: bytes) -> ImageError:
    path = tmp_path / "bad.mds"
    path.write_bytes(descriptor)
    (tmp_path / "bad.mdf").write_bytes(sectors(user, 0, 4))
    with pytest.raises(ImageError) as caught:
        mds.open_mds(FileStream(str(path)), context(path))
    return caught.value


ONE_TRACK = [(-150, 4, [dict(point=1, mode=0xAA, size=2048, start=0, offset=0, pregap=150, length=4)])]


def test_mds_track_blocks_outside_the_file(tmp_path: Path) -> None:
    descriptor = bytearray(mds_descriptor(ONE_TRACK, ["*.mdf"]))
    struct.pack_into("<I", descriptor, 88 + 20, 0x10000000)  # the session's track block offset
    error = mds_error(tmp_path, bytes(descriptor))
    assert isinstance(error, CorruptImage) and error.layer == "mds"
    assert str(error).startswith("mds: 4 track blocks of session 1 at byte 268435456 run past the end of the "
                                 "descriptor")


def test_mds_absurd_session_count(tmp_path: Path) -> None:
    descriptor = bytearray(mds_descriptor(ONE_TRACK, ["*.mdf"]))
    struct.pack_into("<H", descriptor, 20, 60000)
    error = mds_error(tmp_path, bytes(descriptor))
    assert isinstance(error, CorruptImage)
    assert str(error) == "mds: the descriptor claims 60000 session blocks; at most 99 make sense (at byte offset 20)"
    struct.pack_into("<H", descriptor, 20, 50)
    error = mds_error(tmp_path, bytes(descriptor))
    assert "50 session blocks at byte 88 run past the end of the descriptor" in str(error)


def parsed_mds(stream: FileStream, ctx: OpenContext) -> Disc:
    """What ``mds.open_mds`` does before it checks the tracks against the data file."""
    disc = mds.parse_mds(stream, ctx.path)
    mds.attach_data(disc, ctx.path)
    return disc


def test_mds_other_bad_input(tmp_path: Path) -> None:
    v2 = mds_error(tmp_path, mds_descriptor(ONE_TRACK, ["*.mdf"], version=b"\x02\x00"))
    assert isinstance(v2, UnsupportedFormat)
    assert "MDX/MDS v2 (compressed or encrypted Alcohol image) is not supported" in str(v2)
    descriptor = bytearray(mds_descriptor(ONE_TRACK, ["*.mdf"]))
    track_block = 88 + 24 + 3 * 80
    struct.pack_into("<I", descriptor, track_block + 12, 1 << 30)  # extra block offset
    assert "the extra block of track 1: the image ends at byte" in str(mds_error(tmp_path, bytes(descriptor)))
    descriptor = bytearray(mds_descriptor(ONE_TRACK, ["*.mdf"]))
    struct.pack_into("<H", descriptor, track_block + 16, 1234)
    assert "track 1 has a sector size of 1234 bytes" in str(mds_error(tmp_path, bytes(descriptor)))
    missing = mds_descriptor(ONE_TRACK, ["*.mdf"])
    (tmp_path / "lost.mds").write_bytes(missing)
    with pytest.raises(MissingFile, match=r"^lost.mds names the data file 'lost.mdf', which is not in "):
        mds.open_mds(FileStream(str(tmp_path / "lost.mds")), context(tmp_path / "lost.mds"))
    long = bytearray(mds_descriptor(ONE_TRACK, ["*.mdf"]))
    struct.pack_into("<I", long, track_block + 52, 0)  # no file blocks: "*.mdf" is assumed
    struct.pack_into("<I", long, len(long) - 16 - 6 - 8 + 4, 5)  # the track's extra block: 5 sectors, not 4
    disc = open_bytes(tmp_path, "bad.mds", bytes(long), parsed_mds)  # the opener would check it at once
    assert disc.tracks[0].source is not None and disc.tracks[0].source.name.endswith("bad.mdf")
    with pytest.raises(CorruptImage, match="which holds only 4: the file is truncated"):
        disc.prepare()
    disc.close()


# -- CCD builders -----------------------------------------------------------------------------------------


def ccd_text(entries: list[tuple[int, int, int, int]], tracks: dict[int, dict[str, int]],
             extra: str = "", sessions: int = 1) -> str:
    """entries: (session, point, control, plba)."""
    lines = ["[CloneCD]", "Version=3", "[Disc]", f"TocEntries={len(entries)}", f"Sessions={sessions}",
             "DataTracksScrambled=0", "CDTextLength=0"]
    lines += [f"[Session {s}]\nPreGapMode=2\nPreGapSubC=1" for s in range(1, sessions + 1)]
    for i, (session, point, control, plba) in enumerate(entries):
        m, s, f = msf(plba)
        lines += [f"[Entry {i}]", f"Session={session}", f"Point={point:#04x}", "ADR=0x01", f"Control={control:#04x}",
                  "TrackNo=0", "AMin=0", "ASec=0", "AFrame=0", "ALBA=-150", "Zero=0", f"PMin={m}", f"PSec={s}",
                  f"PFrame={f}", f"PLBA={plba}"]
    for number, fields in tracks.items():
        lines.append(f"[TRACK {number}]")
        lines += [f"{key}={value}" for key, value in fields.items()]
    return "\r\n".join(lines) + "\r\n" + extra


TWO_SESSIONS = [(1, 0xA0, 4, 0), (1, 0xA1, 0, 0), (1, 0xA2, 0, 35), (1, 1, 4, 0), (1, 2, 0, 25),
                (2, 0xA0, 4, 0), (2, 0xA1, 4, 0), (2, 0xA2, 4, 11445), (2, 3, 4, 11435)]


def test_ccd_two_sessions(tmp_path: Path) -> None:
    img = (sectors(mode1_raw, 0, 20) + sectors(audio, 20, 15)  # session 1: LBA 0 to its lead-out
           + blank(mode2_raw, 150) + sectors(mode2_raw, 11435, 10))  # session 2: from its first track's INDEX 00
    (tmp_path / "DISC.IMG").write_bytes(img)
    (tmp_path / "disc.sub").write_bytes(bytes(96))
    cdtext = "[CDText]\r\nEntries=1\r\nEntry 0=" + " ".join(f"{b:02x}" for b in b"\x80\0\0\0Album\0Song\0\0") + "\r\n"
    text = ccd_text(TWO_SESSIONS, {1: {"MODE": 1, "INDEX 1": 0}, 2: {"MODE": 0, "INDEX 0": 20, "INDEX 1": 25},
                                   3: {"MODE": 2, "INDEX 0": 0, "INDEX 1": 150}}, cdtext, sessions=2)
    disc = open_bytes(tmp_path, "Disc.ccd", text.encode(), ccd.open_ccd)
    assert table(disc) == [(1, 1, MODE1, 0, 25), (2, 1, AUDIO, 25, 10), (3, 2, MODE2, 11435, 10)]
    assert [(t.file_lba, t.file_offset // 2352, t.file_sectors, t.pregap) for t in disc.tracks] == [
        (0, 0, 20, 0), (20, 20, 15, 5), (11285, 35, 160, 150)]
    assert disc.notes == ["the subchannel file DISC.sub is not used"]
    assert disc.cdtext == {"TITLE": "Album"} and disc.tracks[0].title == "Song"
    check_user_bytes(disc, [range(0, 20), range(11435, 11445)])
    assert disc.pcm_stream(disc.tracks[1]).pread(0, 10 * 2352) == sectors(audio, 25, 10)
    assert disc.describe()["ccd"]["image"] == {"file": "DISC.IMG", "sector_size": 2352, "sectors": 195}
    disc.close()


def test_ccd_modes_from_control_and_2048_image(tmp_path: Path) -> None:
    (tmp_path / "plain.img").write_bytes(sectors(user, 0, 12))
    entries = [(1, 0xA0, 4, 0), (1, 0xA1, 4, 0), (1, 0xA2, 4, 12), (1, 1, 4, 0)]
    disc = open_bytes(tmp_path, "plain.ccd", ccd_text(entries, {}).encode(), ccd.open_ccd)
    assert table(disc) == [(1, 1, MODE1, 0, 12)] and disc.tracks[0].sheet_mode == "Control=0x04"
    assert disc.tracks[0].sector_size == 2048
    check_user_bytes(disc, [range(0, 12)])
    disc.close()


def test_ccd_probe() -> None:
    assert ccd.probe(BytesStream(b"\xef\xbb\xbf\r\n[CloneCD]\r\nVersion=3\r\n"))
    assert ccd.probe(BytesStream(b"[CLONECD]\nVersion=3\n"))
    assert not ccd.probe(BytesStream(b"FILE \"x.bin\" BINARY\n"))


# -- CCD: bad input ---------------------------------------------------------------------------------------


def ccd_error(tmp_path: Path, text: str, image: Optional[bytes] = b"") -> ImageError:
    path = tmp_path / "bad.ccd"
    path.write_text(text)
    if image is not None:
        (tmp_path / "bad.img").write_bytes(image)
    with pytest.raises(ImageError) as caught:
        ccd.open_ccd(FileStream(str(path)), context(path))
    return caught.value


SIMPLE = [(1, 0xA0, 4, 0), (1, 0xA1, 4, 0), (1, 0xA2, 4, 4), (1, 1, 4, 0)]


def test_ccd_missing_image(tmp_path: Path) -> None:
    error = ccd_error(tmp_path, ccd_text(SIMPLE, {1: {"MODE": 1, "INDEX 1": 0}}), image=None)
    assert isinstance(error, MissingFile)
    assert str(error) == f"bad.ccd needs its image file 'bad.img', which is not in {tmp_path}"


def test_ccd_non_numeric_fields(tmp_path: Path) -> None:
    text = ccd_text(SIMPLE, {1: {"MODE": 1, "INDEX 1": 0}}).replace("PLBA=4\r\n", "PLBA=four\r\n")
    error = ccd_error(tmp_path, text, sectors(mode1_raw, 0, 4))
    assert isinstance(error, CorruptImage) and error.layer == "ccd"
    line = text.split("\n").index("PLBA=four\r") + 1
    assert str(error).startswith(f"ccd: line {line}: PLBA='four' is not a number (at byte offset ")
    error = ccd_error(tmp_path, ccd_text(SIMPLE, {1: {"MODE": "one"}}), sectors(mode1_raw, 0, 4))
    assert "MODE='one' is not a number" in str(error)
    assert "TRACK='x' is not a number" in str(ccd_error(tmp_path, ccd_text(SIMPLE, {}) + "[TRACK x]\r\n"))


def test_ccd_other_bad_input(tmp_path: Path) -> None:
    scrambled = ccd_text(SIMPLE, {}).replace("DataTracksScrambled=0", "DataTracksScrambled=1")
    assert "stored scrambled" in str(ccd_error(tmp_path, scrambled))
    no_tracks = ccd_text(SIMPLE[:3], {})
    assert "lists no track" in str(ccd_error(tmp_path, no_tracks))
    no_leadout = [e for e in TWO_SESSIONS if e[:2] != (1, 0xA2)]
    assert "session 1 has no lead-out entry" in str(ccd_error(tmp_path, ccd_text(no_leadout, {}, sessions=2)))
    overlapping = [(1, 0xA2, 4, 40), (1, 1, 4, 0), (2, 0xA2, 4, 30), (2, 2, 4, 20)]
    assert "session 2 starts at LBA 20, inside the previous session (lead-out at 40)" in str(
        ccd_error(tmp_path, ccd_text(overlapping, {}, sessions=2)))
    same_start = [(1, 0xA2, 4, 40), (1, 1, 4, 0), (1, 2, 4, 0)]
    assert "track 2 starts at LBA 0, not after track 1 at LBA 0" in str(ccd_error(tmp_path, ccd_text(same_start, {})))
    assert "does not start with a [CloneCD] section" in str(ccd_error(tmp_path, "[Disc]\nSessions=1\n"))


# -- the corpus -------------------------------------------------------------------------------------------

CORPUS = corpus_dir()


def corpus_file(rel: str) -> Path:
    path = CORPUS / rel
    if not path.is_file():
        pytest.skip(f"no {rel} in the image corpus at {CORPUS} (set IMGFS_CORPUS)")
    return path


def oracle(path: Path) -> dict:
    return json.loads(path.with_name(path.name + ".json").read_text())


def test_corpus_videocd_nrg_tracks() -> None:
    path = corpus_file("nrg/libcdio/videocd.nrg")
    expected = oracle(path)
    disc = nrg.open_nrg(FileStream(str(path)), context(path))
    tracks = [t for t in expected["cd_info"]["tracks"] if t["type"] != "leadout"]
    assert [(t.number, t.start) for t in disc.tracks] == [(t["track"], t["lsn"]) for t in tracks]
    assert all(t.mode == MODE2 and t.sector_size == 2336 for t in disc.tracks)  # cd-info: XA
    leadout = next(t["lsn"] for t in expected["cd_info"]["tracks"] if t["type"] == "leadout")
    assert disc.leadout == leadout
    etnf_chunk = expected["nrg"]["chunks"][0]
    assert [(t.file_offset, t.file_sectors * 2336) for t in disc.tracks] == [
        (e["offset"], e["length"]) for e in etnf_chunk["tracks"]]
    assert disc.details["nrg"]["chunk_offset"] == expected["nrg"]["chunk_offset"]


def test_corpus_videocd_nrg_user_data() -> None:
    """The oracle's image: 2048 user bytes per LSN, TAO gaps as zeros. It is one zero sector longer than the
    lead-out (1727 sectors for a lead-out at 1726), so the comparison pads the user view to its size."""
    path = corpus_file("nrg/libcdio/videocd.nrg")
    expected = oracle(path)["disc_userdata_image"]
    disc = nrg.open_nrg(FileStream(str(path)), context(path))
    disc.prepare()
    view = disc.user_stream()
    padding = expected["size"] - view.size
    assert 0 <= padding <= 2048
    digest = hashlib.sha256(view.pread(0, view.size) + bytes(padding))
    assert digest.hexdigest() == expected["sha256"]


def test_corpus_videocd_nrg_iso_files() -> None:
    from imgfs.filesystems.iso9660 import IsoFilesystem

    path = corpus_file("nrg/libcdio/videocd.nrg")
    volume = next(v for v in oracle(path)["volumes"] if v.get("filesystem") == "iso9660")
    disc = nrg.open_nrg(FileStream(str(path)), context(path))
    disc.prepare()
    fs = IsoFilesystem(disc.user_stream(), OpenContext("test", BlockCache(64 << 20)))
    assert fs.label == volume["label"]
    found: dict[str, tuple] = {}

    def walk(node, prefix: str) -> None:
        for name, child in fs.children(node).items():
            if child.is_dir:
                found[prefix + name] = ("dir",)
                walk(child, prefix + name + "/")
            else:
                data = fs.open(child).pread(0, child.size)
                found[prefix + name] = ("file", child.size, hashlib.sha256(data).hexdigest())

    walk(fs.root, "/")
    wanted = {e["path"]: ("dir",) if e["type"] == "dir" else ("file", e["size"], e["sha256"])
              for e in volume["entries"]}
    assert found == wanted


@pytest.mark.parametrize("name, sector_size", [("TEST", 2352), ("TEST2", 2448)])
def test_corpus_mds_descriptor_only(name: str, sector_size: int) -> None:
    path = corpus_file(f"mds/mdf2iso/{name}.mds")
    expected = oracle(path)["mds"]
    disc = mds.parse_mds(FileStream(str(path)), str(path))
    info = disc.details["mds"]
    assert info["version"] == expected["version"] and info["medium_type"] == expected["medium_type"]
    assert len(info["sessions"]) == expected["sessions_count"]
    session, want = info["sessions"][0], expected["sessions"][0]
    assert (session["start"], session["end"], session["first_track"], session["last_track"]) == (
        want["start_sector"], want["end_sector"], want["first_track"], want["last_track"])
    assert [(e["point"], e["adr_ctl"], e["pmsf"]) for e in session["toc"]] == [
        (e["point"], e["adr_ctl"], e["pmsf"]) for e in want["entries"]]
    track = next(e for e in want["entries"] if "track" in e)
    assert table(disc) == [(1, 1, MODE1, track["start_sector"], track["length_sectors"])]
    t = disc.tracks[0]
    assert (t.sector_size, t.pregap, t.file_offset, t.sheet_mode) == (sector_size, track["pregap"],
                                                                      track["start_offset_in_mdf"], "0xaa (Mode 1)")
    assert session["toc"][3]["subchannel"] == track["subchannel"]
    assert t.file_sectors * t.sector_size == track["data_bytes_in_mdf"]
    assert info["data_files"] == track["filenames"]
    with pytest.raises(MissingFile) as caught:
        mds.open_mds(FileStream(str(path)), context(path))
    assert str(caught.value) == f"{name}.mds names the data file '{name}.mdf', which is not in {path.parent}"
    assert "\n" not in str(caught.value)
