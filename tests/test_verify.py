"""``imgfs verify IMAGE`` and ``-o verify``: every checksum an image carries, checked on request.

Optical images: the EDC/ECC of each raw data sector (a damaged sector is EIO at read time, see
``test_optical.py``; ``imgfs verify`` lists every damaged sector). DMGs: the data-fork, per-partition and
master CRC32s; ``-o verify`` checks them before mounting and refuses a mismatch with one line.
"""

from __future__ import annotations

import subprocess
import time
import zlib
from pathlib import Path

import cdwriter as cw
import pytest
from applewriter import write_sparseimage
from conftest import run_imgfs
from corpuslib import mounted, refusal_line
from udifwriter import write_udif

from imgfs.containers.dmg.verify import crc32_of_zeros


def _disc(tmp_path: Path) -> tuple[Path, Path]:
    src = tmp_path / "src"
    src.mkdir()
    (src / "hello.txt").write_bytes(b"verify me\n" * 500)
    iso = cw.make_iso(tmp_path / "d.iso", src)
    sheet = cw.write_cue(cw.data_disc(iso), tmp_path / "cue", "disc")
    return sheet, tmp_path / "cue" / "disc.bin"


def test_verify_a_good_disc_and_a_damaged_one(tmp_path: Path) -> None:
    sheet, data = _disc(tmp_path)
    done = run_imgfs("verify", str(sheet))
    assert done.returncode == 0, done.stderr
    assert "OK" in done.stdout and "EDC/ECC" in done.stdout
    raw = bytearray(data.read_bytes())
    for lba in (20, 21):  # two damaged sectors: one in the user data, one in the ECC only
        raw[lba * 2352 + (100 if lba == 20 else 2300)] ^= 0x40
    data.write_bytes(bytes(raw))
    done = run_imgfs("verify", str(sheet))
    assert done.returncode == 1
    assert "2 problem(s)" in done.stdout
    assert "sector LBA 20 fails its EDC check" in done.stderr
    assert "sector LBA 21 fails its ECC check" in done.stderr


def _fat_disk(tmp_path: Path) -> bytes:
    disk = tmp_path / "fat.img"
    subprocess.run(["mkfs.fat", "-C", str(disk), "4096"], check=True, capture_output=True)
    (tmp_path / "note.txt").write_text("inside a DMG\n")
    subprocess.run(["mcopy", "-i", str(disk), str(tmp_path / "note.txt"), "::note.txt"], check=True,
                   capture_output=True, env={"MTOOLS_SKIP_CHECK": "1", "PATH": "/usr/bin:/bin"})
    return disk.read_bytes()


def test_dmg_checksums_are_checked_by_verify_and_by_the_mount_option(tmp_path: Path) -> None:
    disk = _fat_disk(tmp_path)
    good = write_udif(tmp_path / "good.dmg", disk, codec="raw").path
    done = run_imgfs("verify", str(good))
    assert done.returncode == 0 and "OK" in done.stdout, done.stdout + done.stderr
    with mounted(good, tmp_path / "mnt", "verify") as root:
        assert (root / "note.txt").read_text() == "inside a DMG\n"

    bad = tmp_path / "bad.dmg"
    raw = bytearray(good.read_bytes())
    at = bytes(raw).index(b"inside a DMG")
    raw[at] ^= 0x20  # a raw run: the bytes read back changed, only the checksums can tell
    bad.write_bytes(bytes(raw))
    done = run_imgfs("verify", str(bad))
    assert done.returncode == 1, done.stdout
    assert "CRC32" in done.stderr
    (tmp_path / "mnt2").mkdir()
    line = refusal_line(run_imgfs(str(bad), str(tmp_path / "mnt2"), "-o", "verify"))
    assert "udif" in line and "checksum mismatch" in line
    with mounted(bad, tmp_path / "mnt3") as root:  # without the option it mounts, and shows the bytes
        assert (root / "note.txt").read_text() == "Inside a DMG\n"


def test_a_dmg_of_an_unknown_disk_is_verified_and_refused_as_before(tmp_path: Path) -> None:
    """A DMG whose disk holds no format imgfs knows (a UFS volume, random bytes): the mount, ls and info refuse
    it in the one line they always gave, but verify still checks the DMG's own checksums."""
    disk = bytes(range(256)) * 8192 + b"middle".ljust(512, b"-") + bytes(range(256)) * 8192  # 4 MiB, nothing known
    good = write_udif(tmp_path / "unknown.dmg", disk, codec="raw").path
    done = run_imgfs("verify", str(good))
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout == f"{good}: OK (udif: CRC32 checksums of the data fork, each partition and the master " \
                          "checksum)\n"
    bad = tmp_path / "bad.dmg"
    raw = bytearray(good.read_bytes())
    raw[bytes(raw).index(b"middle")] ^= 0x20  # a raw run that no detection reads: only the checksums tell
    bad.write_bytes(bytes(raw))
    done = run_imgfs("verify", str(bad))
    assert done.returncode == 1 and done.stdout.startswith(f"{bad}: 2 problem(s)"), done.stdout + done.stderr
    assert "CRC32" in done.stderr, done.stderr
    expected = f"imgfs: no known image format in {good} (udif) ({len(disk):,} bytes); `imgfs info -v {good}` " \
               "lists what was tried"
    for command in (["ls", str(good)], ["info", str(good)], [str(good), str(tmp_path)]):
        done = run_imgfs(*command)
        assert done.returncode != 0 and done.stderr.strip().splitlines()[-1] == expected, (command, done.stderr)
    assert "whole disk" in run_imgfs("info", str(good)).stdout  # the DMG's table, as before
    sparse = tmp_path / "unknown.sparseimage"
    write_sparseimage(sparse, disk)  # a container without checksums: nothing to check, nothing to show
    done = run_imgfs("verify", str(sparse))
    assert done.returncode == 1 and "no known image format" in done.stderr, done.stdout + done.stderr


@pytest.mark.parametrize("length", [0, 1, 7, 8, 4095, 65537, (1 << 20) + 3, 5 << 20])
def test_the_crc_of_a_zero_run_is_zlibs(length: int) -> None:
    for seed in (0, 1, 0xDEADBEEF, zlib.crc32(b"before the run")):
        assert crc32_of_zeros(length, seed) == zlib.crc32(bytes(length), seed)


def test_a_zero_run_of_petabytes_is_verified_at_once(tmp_path: Path) -> None:
    """A hostile DMG's zero run may claim 2**49 bytes: its CRC is computed, not fed a MiB at a time (the fuzzer
    found verify spending minutes on one). The writer's checksum leaves the run out, so verify says so."""
    def add_zero_run(parts, fork) -> None:  # noqa: ANN001 - udifwriter's
        part = parts[0]
        end = part.runs[-2][2] + part.runs[-2][3]  # the last run before the terminator
        part.runs.insert(-1, (0, 0, end, 1 << 40, 0, 0))
        kind, comment, _, sectors, offset, length = part.runs[-1]
        part.runs[-1] = (kind, comment, end + (1 << 40), sectors, offset, length)
        part.sectors += 1 << 40

    image = write_udif(tmp_path / "huge.dmg", bytes(range(256)) * 8192, codec="raw", edit=add_zero_run).path
    started = time.monotonic()
    done = run_imgfs("verify", str(image))
    assert time.monotonic() - started < 10
    assert done.returncode == 1 and "1 problem(s)" in done.stdout, done.stdout + done.stderr
    assert "partition 'whole disk (Apple_HFS : 0)': CRC32 is " in done.stderr, done.stderr


def test_classic_hfs_mounts_and_a_damaged_one_is_one_line(tmp_path: Path) -> None:
    """Classic HFS was refused by name; it now mounts (see test_hfs.py). A master directory block without a
    catalog is refused in one line that says so."""
    machfs = pytest.importorskip("machfs")
    vol = machfs.Volume()
    note = machfs.File()
    note.data = b"Mac OS Standard\n"
    vol["Read Me"] = note
    (tmp_path / "old.img").write_bytes(vol.write(size=800 * 1024, desktopdb=False, bootable=False))
    with mounted(tmp_path / "old.img", tmp_path / "mnt") as root:
        assert (root / "Read Me").read_bytes() == b"Mac OS Standard\n"
    image = bytearray(1 << 20)
    image[1024:1026] = b"BD"
    image[1042:1044] = (250).to_bytes(2, "big")  # allocation blocks
    image[1044:1048] = (4096).to_bytes(4, "big")  # their size
    (tmp_path / "bad.img").write_bytes(bytes(image))
    (tmp_path / "mnt2").mkdir()
    line = refusal_line(run_imgfs(str(tmp_path / "bad.img"), str(tmp_path / "mnt2")))
    assert "hfs: master directory block: the catalog file has no extents" in line
