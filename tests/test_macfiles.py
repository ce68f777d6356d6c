"""MacBinary I/II/III, AppleSingle and AppleDouble: files written by ``macwriter`` (checked with unar, an
independent reader), opened as containers whose data fork is detected again and whose resource fork
travels as ``forks["rsrc"]``; bad CRCs, entries past the end of the file.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import zipfile
from pathlib import Path

import pytest
from macwriter import (
    DOUBLE_MAGIC,
    RESOURCE_FORK,
    MacFile,
    Resource,
    apple_entries,
    appledouble,
    applesingle,
    macbinary,
    resource_fork,
)

from imgfs.containers import applesingle as single
from imgfs.containers import macbinary as mb
from imgfs.errors import CorruptImage, UnsupportedFormat
from imgfs.io.cache import BlockCache
from imgfs.io.stream import BytesStream, FileStream
from imgfs.layer import OpenContext

needs_unar = pytest.mark.skipif(shutil.which("unar") is None, reason="unar is not installed (make deps installs it)")
SAMPLE = MacFile(b"Disk \xa5 Image", b"the data fork\n" * 100, b"the resource fork" * 40, b"dImg", b"dCpy", 0x4000,
                 3_000_000_000, 3_100_000_000)


def ctx(path: str = "file") -> OpenContext:
    return OpenContext(path, BlockCache(1 << 20))


@pytest.mark.parametrize("version", [1, 2, 3])
def test_macbinary_versions(version: int) -> None:
    stream = BytesStream(macbinary(SAMPLE, version=version))
    assert mb.probe(stream)
    opened = mb.open_macbinary(stream, ctx())
    assert opened.pread(0, opened.size) == SAMPLE.data
    rsrc = opened.forks["rsrc"]
    assert rsrc.pread(0, rsrc.size) == SAMPLE.rsrc
    info = opened.describe()
    assert info["version"] == ["MacBinary I", "MacBinary II", "MacBinary III"][version - 1]
    assert info["name"] == "Disk • Image" and info["type"] == "dImg" and info["rsrc_fork_size"] == len(SAMPLE.rsrc)


def test_macbinary_with_a_comment_and_no_resource_fork() -> None:
    f = MacFile(b"plain", b"x" * 1000, b"", comment=b"a Get Info comment")
    opened = mb.open_macbinary(BytesStream(macbinary(f)), ctx())
    assert opened.pread(0, 2000) == b"x" * 1000 and opened.forks["rsrc"].size == 0


def test_macbinary_crc_mismatch_is_one_line() -> None:
    data = macbinary(SAMPLE, version=2, crc=0x1234)
    stream = BytesStream(data)
    assert mb.probe(stream), "the structure is MacBinary's: the opener says what is wrong with it"
    with pytest.raises(CorruptImage) as caught:
        mb.open_macbinary(stream, ctx())
    line = str(caught.value)
    assert "\n" not in line and "MacBinary II header CRC mismatch" in line and "0x1234" in line


def test_macbinary_detection_rejects_other_files() -> None:
    good = macbinary(SAMPLE)
    assert not mb.probe(BytesStream(good + bytes(512)))  # bytes the forks do not account for
    assert not mb.probe(BytesStream(good[:-200]))  # a fork cut short
    assert not mb.probe(BytesStream(bytes(4096)))
    assert not mb.probe(BytesStream(b"\xeb\x3c\x90" + bytes(8189)))  # a FAT boot sector
    renamed = bytearray(good)
    renamed[1] = 70
    assert not mb.probe(BytesStream(bytes(renamed)))


@needs_unar
@pytest.mark.parametrize("version", [2, 3])
def test_unar_reads_our_macbinary(tmp_path: Path, version: int) -> None:
    (tmp_path / "f.bin").write_bytes(macbinary(SAMPLE, version=version))
    listing = json.loads(subprocess.run(["lsar", "-j", str(tmp_path / "f.bin")], capture_output=True, check=True,
                                        text=True).stdout)
    assert listing["lsarFormatName"] == "MacBinary"
    out = tmp_path / "out"
    subprocess.run(["unar", "-q", "-o", str(out), "-forks", "visible", str(tmp_path / "f.bin")], check=True,
                   capture_output=True)
    data = out / "Disk • Image"
    assert data.read_bytes() == SAMPLE.data
    # unar writes the resource fork as an AppleDouble file: our reader must find the same fork in it
    double = FileStream(str(out / "Disk • Image.rsrc"))
    parsed = single.parse(double)
    rsrc = parsed.stream(double, single.RESOURCE_FORK)
    assert rsrc.pread(0, rsrc.size) == SAMPLE.rsrc


@needs_unar
def test_unar_rejects_a_bad_crc_too(tmp_path: Path) -> None:
    (tmp_path / "f.bin").write_bytes(macbinary(SAMPLE, version=2, crc=0x1234))
    done = subprocess.run(["lsar", "-j", str(tmp_path / "f.bin")], capture_output=True, text=True)
    assert done.returncode != 0 or json.loads(done.stdout).get("lsarFormatName") != "MacBinary"


def test_applesingle_container() -> None:
    stream = BytesStream(applesingle(SAMPLE))
    assert single.probe(stream)
    opened = single.open_applesingle(stream, ctx())
    assert opened.pread(0, opened.size) == SAMPLE.data
    assert opened.forks["rsrc"].pread(0, 1 << 20) == SAMPLE.rsrc
    assert opened.label == "Disk • Image" and opened.describe()["version"] == 2


@needs_unar
def test_unar_reads_our_applesingle(tmp_path: Path) -> None:
    (tmp_path / "f.as").write_bytes(applesingle(SAMPLE))
    out = tmp_path / "out"
    subprocess.run(["unar", "-q", "-o", str(out), "-forks", "visible", str(tmp_path / "f.as")], check=True,
                   capture_output=True)
    assert (out / "Disk • Image").read_bytes() == SAMPLE.data
    double = FileStream(str(out / "Disk • Image.rsrc"))
    assert single.parse(double).stream(double, RESOURCE_FORK).pread(0, 1 << 20) == SAMPLE.rsrc


@needs_unar
def test_unar_reads_our_appledouble_in_a_zip(tmp_path: Path) -> None:
    """A zip made on macOS keeps resource forks as __MACOSX/._NAME, AppleDouble files like ours."""
    archive = tmp_path / "f.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("disk.img", SAMPLE.data)
        z.writestr("__MACOSX/._disk.img", appledouble(SAMPLE))
    out = tmp_path / "out"
    subprocess.run(["unar", "-q", "-o", str(out), "-forks", "visible", str(archive)], check=True, capture_output=True)
    assert (out / "disk.img").read_bytes() == SAMPLE.data
    double = FileStream(str(out / "disk.img.rsrc"))
    assert single.parse(double).stream(double, RESOURCE_FORK).pread(0, 1 << 20) == SAMPLE.rsrc


def test_an_appledouble_header_file_alone_names_its_data_file() -> None:
    stream = BytesStream(appledouble(SAMPLE))
    with pytest.raises(UnsupportedFormat, match=r"mount the file it belongs to \(/some/where/disk.img\)"):
        single.open_applesingle(stream, ctx("/some/where/__MACOSX/._disk.img"))
    with pytest.raises(UnsupportedFormat, match=r"\(/nas/share/disk.img\)"):
        single.open_applesingle(stream, ctx("/nas/share/.AppleDouble/disk.img"))


def test_an_entry_past_the_end_of_its_file_is_one_line() -> None:
    data = apple_entries(DOUBLE_MAGIC, [(RESOURCE_FORK, b"short")], lengths={RESOURCE_FORK: 5000})
    with pytest.raises(CorruptImage) as caught:
        single.parse(BytesStream(data))
    line = str(caught.value)
    assert "\n" not in line and "resource fork (5000 bytes at byte 38) runs past the end" in line


def test_a_huge_entry_count_is_refused_before_reading() -> None:
    data = apple_entries(DOUBLE_MAGIC, [])
    data = data[:24] + (60000).to_bytes(2, "big")
    with pytest.raises(CorruptImage, match="60000 entries"):
        single.parse(BytesStream(data))


def test_our_resource_forks_parse_with_macresources() -> None:
    """macresources (machfs's companion, MIT) reads the resource forks the tests write."""
    macresources = pytest.importorskip("macresources")
    fork = resource_fork([Resource(b"bcem", 128, b"chunk table", b"Image"), Resource(b"CODE", 0, b"\x4e\x75"),
                          Resource(b"CODE", 1, b"more code", attributes=0x20)])
    found = {(bytes(r.type), r.id): bytes(r) for r in macresources.parse_file(fork)}
    assert found == {(b"bcem", 128): b"chunk table", (b"CODE", 0): b"\x4e\x75", (b"CODE", 1): b"more code"}
