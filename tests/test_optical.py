"""Raw optical disc images mounted through FUSE: BIN/CUE, NRG, MDS/MDF and CloneCD made by ``cdwriter``
from ISOs built with xorriso and genisoimage.

What the mount must show: the ISO's files at the root, exactly as in the tree the ISO was made from;
``Track NN.wav`` for each audio track (a RIFF header for 44.1 kHz 16-bit stereo, then the PCM from the
track's INDEX 01 to the next track's INDEX 01); the last session of a multi-session disc, whose tree
holds the earlier sessions' files; and with ``-o verify``, EIO for a file whose sector fails its EDC/ECC.
"""

from __future__ import annotations

import errno
import shutil
from pathlib import Path
from typing import Callable

import cdwriter as cw
import pytest
from conftest import compare_trees, read_errno
from isotools import find_record, record_fields, write_file

pytestmark = pytest.mark.skipif(shutil.which("xorriso") is None or shutil.which("genisoimage") is None,
                                reason="needs xorriso and genisoimage")

PCM2, PCM3 = cw.pcm(300, 2), cw.pcm(200, 3)
WAVS = frozenset({"Track 02.wav", "Track 03.wav"})


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("optical")


@pytest.fixture(scope="module")
def tree(work: Path) -> Path:
    root = work / "tree"
    write_file(root / "README.txt", b"the data track of a raw CD image\n", mtime=1_500_000_000)
    write_file(root / "numbers.txt", "".join(f"{n}\n" for n in range(60000)).encode(), mode=0o600)
    write_file(root / "docs" / "nested" / "deep.txt", b"deep\n", mode=0o640)
    write_file(root / "docs" / "empty.txt", b"")
    return root


@pytest.fixture(scope="module")
def iso(work: Path, tree: Path) -> bytes:
    return cw.make_iso(work / "tree.iso", tree)


@pytest.fixture(scope="module")
def mixed(iso: bytes) -> cw.Disc:
    """Mode 1 data, then audio with a stored 150-sector pregap, then audio with a 75-sector one."""
    return cw.Disc([[cw.Track(cw.MODE1, iso, title="Data track", performer="cdwriter"),
                     cw.Track(cw.AUDIO, PCM2, pregap=150, title="Second", performer="P2", isrc="USXYZ2400001"),
                     cw.Track(cw.AUDIO, PCM3, pregap=75, title="Third", performer="P3")]],
                   catalog="0123456789012", title="Album", performer="Artist")


Writer = Callable[[cw.Disc, Path], Path]
WRITERS: dict[str, Writer] = {
    "cue": lambda disc, d: cw.write_cue(disc, d, "disc"),
    "cue-split": lambda disc, d: cw.write_cue(disc, d, "disc", split=True),
    "cue-wave": lambda disc, d: cw.write_cue(disc, d, "disc", split=True, audio="WAVE"),
    "cue-motorola": lambda disc, d: cw.write_cue(disc, d, "disc", split=True, audio="MOTOROLA"),
    "nrg-v2": lambda disc, d: cw.write_nrg(d / "disc.nrg", disc, version=2),
    "nrg-v1": lambda disc, d: cw.write_nrg(d / "disc.nrg", disc, version=1),
    "nrg-v2-tao": lambda disc, d: cw.write_nrg(d / "disc.nrg", disc, version=2, dao=False),
    "nrg-v1-tao": lambda disc, d: cw.write_nrg(d / "disc.nrg", disc, version=1, dao=False),
    "mds": lambda disc, d: cw.write_mds(d / "disc.mds", disc),
    "mds-split": lambda disc, d: cw.write_mds(d / "disc.mds", disc, parts=3),
    "ccd": lambda disc, d: cw.write_ccd(d / "disc.ccd", disc),
}


def image(kind: str, disc: cw.Disc, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    return WRITERS[kind](disc, folder)


def expected_wav(pcm: bytes) -> bytes:
    return cw.wav_header(len(pcm)) + pcm


@pytest.mark.parametrize("kind", ["cue", "cue-split", "cue-wave", "cue-motorola", "nrg-v2", "nrg-v1", "mds",
                                  "mds-split", "ccd"])
def test_mixed_mode(mount, tmp_path: Path, tree: Path, mixed: cw.Disc, kind: str):
    """The ISO's tree at the root; Track 02.wav runs on through track 3's 75-sector pregap (silence)."""
    with mount(image(kind, mixed, tmp_path / kind)) as root:
        compare_trees(tree, root, ignore=WAVS)
        assert (root / "Track 02.wav").read_bytes() == expected_wav(PCM2 + bytes(75 * cw.RAW))
        assert (root / "Track 03.wav").read_bytes() == expected_wav(PCM3)


@pytest.mark.parametrize("kind", ["nrg-v2", "nrg-v2-tao", "mds", "ccd"])
def test_mixed_mode_with_subchannel(mount, tmp_path: Path, tree: Path, iso: bytes, kind: str):
    """2448-byte sectors (2352 + 96 bytes of P-W) in NRG and MDS; CloneCD keeps them apart in .sub."""
    size = cw.RAW + cw.SUB
    disc = cw.Disc([[cw.Track(cw.MODE1, iso, sector_size=size),
                     cw.Track(cw.AUDIO, PCM2, pregap=150, sector_size=size)]])
    with mount(image(kind, disc, tmp_path / kind)) as root:
        compare_trees(tree, root, ignore=WAVS)
        assert (root / "Track 02.wav").read_bytes() == expected_wav(PCM2)


@pytest.mark.parametrize("kind", ["nrg-v2-tao", "nrg-v1-tao"])
def test_track_at_once(mount, tmp_path: Path, tree: Path, iso: bytes, kind: str):
    """Track-at-once NRG: nothing of the 150-sector gaps is stored; the gap before track 3 reads as silence
    at the end of Track 02.wav."""
    disc = cw.Disc([[cw.Track(cw.MODE1, iso, sector_size=2048), cw.Track(cw.AUDIO, PCM2, pregap=150),
                     cw.Track(cw.AUDIO, PCM3, pregap=150)]])
    with mount(image(kind, disc, tmp_path / kind)) as root:
        compare_trees(tree, root, ignore=WAVS)
        assert (root / "Track 02.wav").read_bytes() == expected_wav(PCM2 + bytes(150 * cw.RAW))
        assert (root / "Track 03.wav").read_bytes() == expected_wav(PCM3)


@pytest.mark.parametrize(("kind", "mode", "size"), [
    ("cue", cw.MODE1, 2048), ("nrg-v2", cw.MODE1, 2048), ("nrg-v1", cw.MODE1, 2048), ("mds", cw.MODE1, 2048),
    ("cue", cw.MODE2_FORM1, 2352), ("cue", cw.MODE2_FORM1, 2336), ("nrg-v2", cw.MODE2_FORM1, 2352),
    ("nrg-v2", cw.MODE2_FORM1, 2336), ("mds", cw.MODE2_FORM1, 2352), ("ccd", cw.MODE2_FORM1, 2352),
    ("nrg-v1-tao", cw.MODE2_FORM1, 2336)])
def test_data_track_formats(mount, tmp_path: Path, tree: Path, iso: bytes, kind: str, mode: str, size: int):
    """Cooked Mode 1 (2048) and CD-ROM XA Mode 2 Form 1, whole (2352) or without sync and header (2336)."""
    disc = cw.Disc([[cw.Track(mode, iso, sector_size=size)]])
    with mount(image(kind, disc, tmp_path / kind)) as root:
        compare_trees(tree, root)


# -- several sessions ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def sessions(work: Path) -> tuple[list[Path], list[tuple[int, bytes]]]:
    """Three session folders and their ISOs (genisoimage -C/-M: each session's tree holds the earlier files)."""
    roots = [work / f"session{n}" for n in (1, 2, 3)]
    write_file(roots[0] / "first.txt", b"written in session 1\n" * 500)
    write_file(roots[0] / "shared" / "old.txt", b"old\n", mode=0o600)
    write_file(roots[1] / "second.txt", b"written in session 2\n")
    write_file(roots[1] / "shared" / "new.txt", b"new\n")
    write_file(roots[2] / "third.txt", b"written in session 3\n", mtime=1_700_000_000)
    return roots, cw.multisession_isos(roots, work / "multisession")


@pytest.fixture(scope="module")
def multisession(work: Path, sessions) -> dict[int, tuple[cw.Disc, Path]]:
    """Discs of the first 2 and all 3 sessions, each with the tree its last session shows (later files on top)."""
    roots, images = sessions
    result = {}
    for count in (2, 3):
        expected = work / f"expected{count}"
        for folder in roots[:count]:
            shutil.copytree(folder, expected, dirs_exist_ok=True)
        result[count] = (cw.Disc([[cw.Track(cw.MODE1, data)] for _, data in images[:count]]), expected)
    return result


@pytest.fixture(scope="module")
def cd_extra(work: Path, sessions) -> cw.Disc:
    """Two audio tracks in session 1, an ISO made for its LBA in session 2 (-C 0,start)."""
    roots, _ = sessions
    audio = [[cw.Track(cw.AUDIO, PCM2), cw.Track(cw.AUDIO, PCM3, pregap=150)]]
    (_, data), = cw.multisession_isos(roots[:1], work / "cd-extra", before=audio)
    return cw.Disc(audio + [[cw.Track(cw.MODE1, data)]])


MULTI_WRITERS = {**{k: WRITERS[k] for k in ("cue-split", "nrg-v2", "nrg-v1", "nrg-v2-tao", "mds", "ccd")},
                 "cue-one-file": lambda disc, d: cw.write_cue(disc, d, "disc")}


@pytest.mark.parametrize("count", [2, 3])
@pytest.mark.parametrize("kind", sorted(MULTI_WRITERS))
def test_multisession(mount, tmp_path: Path, multisession, kind: str, count: int):
    """The mount shows the last session: its tree, which holds the earlier sessions' files at their LBAs."""
    disc, expected = multisession[count]
    tmp_path.joinpath(kind).mkdir()
    with mount(MULTI_WRITERS[kind](disc, tmp_path / kind)) as root:
        compare_trees(expected, root)


@pytest.mark.parametrize("kind", sorted(MULTI_WRITERS))
def test_cd_extra(mount, tmp_path: Path, sessions, cd_extra: cw.Disc, kind: str):
    """Audio tracks of session 1 as WAV files beside session 2's tree."""
    tmp_path.joinpath(kind).mkdir()
    with mount(MULTI_WRITERS[kind](cd_extra, tmp_path / kind)) as root:
        compare_trees(sessions[0][0], root, ignore=frozenset({"Track 01.wav", "Track 02.wav"}))
        assert (root / "Track 01.wav").read_bytes() == expected_wav(PCM2 + bytes(150 * cw.RAW))
        assert (root / "Track 02.wav").read_bytes() == expected_wav(PCM3)


# -- -o verify -------------------------------------------------------------------------------------------

def flip(path: Path, offset: int) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)[0]
        f.seek(offset)
        f.write(bytes([byte ^ 0x40]))


@pytest.mark.parametrize(("kind", "where"), [("cue", 16 + 100), ("cue", 2100), ("ccd", 16 + 5), ("nrg-v2", 2300)])
def test_verify(mount, tmp_path: Path, tree: Path, iso: bytes, mixed: cw.Disc, kind: str, where: int):
    """One byte flipped in a sector of numbers.txt (in its user data, or in its EDC/ECC only): with
    ``-o verify`` reading the file fails with EIO and the other files still read; without, it reads
    (the flipped byte included, when it was user data)."""
    extent, size = record_fields(iso, find_record(iso, b"NUMBERS.TXT;1"))
    path = image(kind, mixed, tmp_path / kind)
    data_file = {"cue": path.with_suffix(".bin"), "ccd": path.with_suffix(".img"), "nrg-v2": path}[kind]
    stored_pregap = 150 if kind.startswith("nrg") else 0  # Nero stores track 1's pregap
    sector = extent + 3
    flip(data_file, (stored_pregap + sector) * cw.RAW + where)
    with mount(path, "verify") as root:
        assert read_errno(root / "numbers.txt") == errno.EIO
        assert (root / "README.txt").read_bytes() == (tree / "README.txt").read_bytes()
        assert (root / "Track 03.wav").read_bytes() == expected_wav(PCM3)
    with mount(path) as root:
        got, want = (root / "numbers.txt").read_bytes(), (tree / "numbers.txt").read_bytes()
        assert len(got) == size == len(want)
        changed = [i for i in range(len(want)) if got[i] != want[i]]
        assert changed == ([3 * 2048 + where - 16] if 16 <= where < 2064 else [])


def test_verify_clean_image(mount, tmp_path: Path, tree: Path, mixed: cw.Disc):
    """Every sector of an untouched image passes: the whole tree reads with -o verify."""
    with mount(image("cue", mixed, tmp_path / "cue"), "verify") as root:
        compare_trees(tree, root, ignore=WAVS)


def test_verify_xa_form1(mount, tmp_path: Path, tree: Path, iso: bytes):
    """Mode 2 Form 1 sectors carry EDC/ECC too (computed over a zeroed header): a flipped user byte is EIO."""
    extent, _ = record_fields(iso, find_record(iso, b"NUMBERS.TXT;1"))
    sheet = cw.write_cue(cw.Disc([[cw.Track(cw.MODE2_FORM1, iso)]]), tmp_path / "xa", "xa")
    flip(sheet.with_suffix(".bin"), (extent + 2) * cw.RAW + 24 + 7)
    with mount(sheet, "verify") as root:
        assert read_errno(root / "numbers.txt") == errno.EIO
        assert (root / "docs" / "nested" / "deep.txt").read_bytes() == b"deep\n"
    with mount(sheet) as root:
        assert (root / "numbers.txt").read_bytes()[2 * 2048 + 7] != (tree / "numbers.txt").read_bytes()[2 * 2048 + 7]
