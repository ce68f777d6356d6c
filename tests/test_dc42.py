"""Disk Copy 4.2: an 800 KiB HFS floppy (hfsutils) in images written by our writer and by MAME's floptool,
each read by the other side; both checksums; damaged headers.
"""

from __future__ import annotations

import shutil
import struct
import subprocess
from pathlib import Path

import pytest
from hfstools import Hfsutils, mac_date, needs_hfsutils
from macwriter import MacFile, dc42, macbinary

from imgfs.containers.dc42 import DiskCopy42, open_dc42, probe
from imgfs.errors import CorruptImage, UnsupportedFormat
from imgfs.filesystems.hfs import HfsFilesystem
from imgfs.io.cache import BlockCache
from imgfs.io.stream import BytesStream, FileStream
from imgfs.layer import OpenContext

needs_floptool = pytest.mark.skipif(shutil.which("floptool") is None,
                                    reason="floptool (mame-tools) is not installed (make deps installs it)")
TAGS = bytes(range(256)) * 75  # 12 bytes for each of 1600 sectors


@pytest.fixture(scope="module")
def floppy(tmp_path_factory) -> Path:
    """An 800 KiB HFS floppy with a text file and an application with a resource fork."""
    if shutil.which("hformat") is None:
        pytest.skip("hfsutils is not installed")
    tmp = tmp_path_factory.mktemp("dc42")
    hfs = Hfsutils(tmp)
    image = tmp / "floppy.img"
    hfs.format(image, 819200, "Floppy")
    (tmp / "read me").write_bytes(b"Disk Copy 4.2\n" * 100)
    hfs.copy_raw(tmp / "read me", "Read Me")
    app = MacFile(b"TeachText", b"", b"CODE" * 1000, b"APPL", b"ttxt", 0, mac_date(5), mac_date(6))
    (tmp / "app.bin").write_bytes(macbinary(app))
    hfs.copy_macbinary(tmp / "app.bin", "")
    hfs.unmount()
    return image


def ctx(path: str = "floppy.image", verify: bool = False) -> OpenContext:
    return OpenContext(path, BlockCache(8 << 20), verify=verify)


def check_floppy(disk: DiskCopy42, raw: bytes) -> None:
    assert disk.size == len(raw) == 819200 and disk.pread(0, disk.size) == raw
    fs = HfsFilesystem(disk, ctx())
    kids = fs.children(fs.root)
    assert fs.label == "Floppy" and sorted(kids) == ["Read Me", "TeachText"]
    assert fs.open(kids["Read Me"]).pread(0, 1 << 20) == b"Disk Copy 4.2\n" * 100
    assert fs.xattrs(kids["TeachText"])["user.com.apple.ResourceFork"] == b"CODE" * 1000


@needs_hfsutils
def test_our_dc42_reads_back_and_its_checksums_hold(floppy: Path, tmp_path: Path) -> None:
    raw = floppy.read_bytes()
    image = tmp_path / "floppy.image"
    image.write_bytes(dc42(raw, b"Floppy", TAGS))
    stream = FileStream(str(image))
    assert probe(stream)
    disk = open_dc42(stream, ctx(verify=True))
    check_floppy(disk, raw)
    assert disk.verify() == []
    info = disk.describe()
    assert info["name"] == "Floppy" and info["disk_format"] == "800K GCR" and info["tag_size"] == 19200


@needs_hfsutils
@needs_floptool
def test_floptool_reads_ours_and_we_read_floptools(floppy: Path, tmp_path: Path) -> None:
    """MAME's floptool, an independent reader and writer of Disk Copy 4.2, agrees in both directions."""
    raw = floppy.read_bytes()
    ours = tmp_path / "ours.dc42"
    ours.write_bytes(dc42(raw, b"Floppy", TAGS))
    subprocess.run(["floptool", "flopconvert", "dc42", "apple_gcr", str(ours), str(tmp_path / "back.img")],
                   check=True, capture_output=True)
    assert (tmp_path / "back.img").read_bytes() == raw
    theirs = tmp_path / "theirs.dc42"
    subprocess.run(["floptool", "flopconvert", "apple_gcr", "dc42", str(floppy), str(theirs)], check=True,
                   capture_output=True)
    disk = open_dc42(FileStream(str(theirs)), ctx(verify=True))
    check_floppy(disk, raw)
    assert disk.verify() == []


def test_checksum_mismatches_are_named(tmp_path: Path) -> None:
    disk = bytes(range(256)) * 3200
    good = dc42(disk, b"Sums", TAGS)
    assert DiskCopy42(BytesStream(good)).verify() == []
    bad_data = bytearray(good)
    bad_data[84 + 1000] ^= 1
    problems = DiskCopy42(BytesStream(bytes(bad_data))).verify()
    assert len(problems) == 1 and "data checksum mismatch" in problems[0]
    with pytest.raises(CorruptImage, match="data checksum mismatch"):
        open_dc42(BytesStream(bytes(bad_data)), ctx(verify=True))
    bad_tags = bytearray(good)
    bad_tags[84 + len(disk) + 500] ^= 1
    assert "tag checksum mismatch" in DiskCopy42(BytesStream(bytes(bad_tags))).verify()[0]
    unchecked = bytearray(good)
    unchecked[84 + len(disk) + 5] ^= 1  # the first 12 tag bytes are not in the tag checksum
    assert DiskCopy42(BytesStream(bytes(unchecked))).verify() == []


def test_detection_needs_consistent_fields() -> None:
    disk = bytes(819200)
    good = dc42(disk)
    assert probe(BytesStream(good))
    assert not probe(BytesStream(good + b"extra"))  # bytes the header does not account for
    odd = bytearray(good)
    struct.pack_into(">I", odd, 64, 1000)  # not a multiple of 512
    assert not probe(BytesStream(bytes(odd)))
    tags = bytearray(good)
    struct.pack_into(">I", tags, 68, 77)
    assert not probe(BytesStream(bytes(tags)))
    assert not probe(BytesStream(b"\0" * 84 + disk))
    with pytest.raises(UnsupportedFormat, match="0x0100"):
        DiskCopy42(BytesStream(b"\0" * 84 + disk))


def test_a_data_size_larger_than_the_file_mounts_what_is_there(caplog) -> None:
    disk = bytes(range(256)) * 3200
    short = dc42(disk, b"Short")[: 84 + 400_000]
    stream = BytesStream(short)
    assert probe(stream)
    image = open_dc42(stream, ctx())
    assert "lacks the last 419200 bytes" in caplog.text
    assert image.size == 400_000 and image.describe()["data_size"] == 819200
    assert image.pread(0, 4096) == disk[:4096]
    assert image.pread(399_000, 4096) == disk[399_000:400_000]  # the disk as far as the file goes
    problems = image.verify()
    assert len(problems) == 1 and "cannot be checked" in problems[0]
