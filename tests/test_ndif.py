"""NDIF (Disk Copy 6): an HFS floppy (hfsutils) written as raw, zero and ADC chunks by ``macwriter.ndif``, its
resource fork reaching the reader through MacBinary and AppleSingle; a MacBinary ``.smi`` whose data fork
starts with PowerPC code; the data fork alone; refused chunk types; chunks past the data fork.
"""

from __future__ import annotations

import hashlib
import struct
from pathlib import Path

import pytest
from hfstools import build_floppy, needs_hfsutils
from macwriter import (
    DOUBLE_MAGIC,
    NDIF_ADC,
    NDIF_KENCODE,
    NDIF_RAW,
    RESOURCE_FORK,
    MacFile,
    Resource,
    apple_entries,
    appledouble,
    applesingle,
    macbinary,
    ndif,
    ndif_resource_fork,
    pef_code,
)

from imgfs.containers import applesingle as single
from imgfs.containers import companions, smi
from imgfs.containers import macbinary as mb
from imgfs.containers import ndif as nd
from imgfs.containers.forks import ForkedFile
from imgfs.errors import CorruptImage, UnsupportedFormat
from imgfs.filesystems.hfs import HfsFilesystem
from imgfs.io.cache import BlockCache
from imgfs.io.stream import BytesStream, Stream
from imgfs.layer import OpenContext

KINDS = {"raw": [NDIF_RAW], "adc": [NDIF_ADC], "mixed": [NDIF_ADC, NDIF_RAW]}


def ctx(path: str = "image.img") -> OpenContext:
    return OpenContext(path, BlockCache(16 << 20))


@pytest.fixture(scope="module")
def floppy(tmp_path_factory) -> tuple[bytes, Path]:
    image, source, _expected = build_floppy(tmp_path_factory.mktemp("ndif"))
    return image.read_bytes(), source


def with_fork(data: bytes, rsrc: bytes) -> ForkedFile:
    base = BytesStream(data + rsrc, name="image.img")
    return ForkedFile(base, 0, len(data), {"rsrc": BytesStream(rsrc)}, "test", {})


def check_disk(disk: Stream, raw: bytes) -> None:
    assert disk.size == len(raw)
    assert hashlib.sha256(disk.pread(0, disk.size)).digest() == hashlib.sha256(raw).digest()
    for offset in (0, 511, 32768 - 7, len(raw) - 100):  # across chunk edges
        assert disk.pread(offset, 1000) == raw[offset : offset + 1000]
    fs = HfsFilesystem(disk, ctx())
    kids = fs.children(fs.root)
    assert sorted(kids) == ["Dossier été", "Read Me", "TeachText"]
    assert fs.open(kids["Read Me"]).pread(0, 1 << 20) == b"An old Mac floppy\n" * 200
    assert fs.xattrs(kids["TeachText"])["user.com.apple.ResourceFork"] == b"CODE" * 1000


@needs_hfsutils
@pytest.mark.parametrize("kinds", sorted(KINDS))
def test_ndif_chunks_through_a_resource_fork(floppy, kinds: str) -> None:
    raw, _source = floppy
    data, bcem = ndif(raw, KINDS[kinds])
    stream = with_fork(data, ndif_resource_fork(bcem))
    assert nd.probe(stream)
    disk = nd.open_ndif(stream, ctx())
    check_disk(disk, raw)
    info = disk.describe()
    assert info["name"] == "Test Image" and info["chunks"]["zero"] > 0
    assert ("adc" in info["chunks"]) == (kinds != "raw") and ("raw" in info["chunks"]) == (kinds != "adc")


@needs_hfsutils
def test_ndif_in_macbinary_and_applesingle(floppy) -> None:
    raw, _ = floppy
    data, bcem = ndif(raw, [NDIF_ADC])
    f = MacFile(b"Floppy.img", data, ndif_resource_fork(bcem), b"dimg", b"dCpy")
    for container, opener in ((macbinary(f), mb.open_macbinary), (applesingle(f), single.open_applesingle)):
        outer = opener(BytesStream(container, name="Floppy.img.bin"), ctx())
        assert nd.probe(outer)
        check_disk(nd.open_ndif(outer, ctx()), raw)


@needs_hfsutils
def test_a_macbinary_smi_with_code_before_its_image(floppy) -> None:
    """A self-mounting image: PowerPC code first in the data fork, the chunks after it (the table's data offset
    says where), the chunk table and the application's resources in the resource fork."""
    raw, _ = floppy
    code = pef_code(30_000)
    code += bytes(-len(code) % 512)
    chunks, bcem = ndif(raw, [NDIF_ADC, NDIF_RAW], data_offset=len(code))
    rsrc = ndif_resource_fork(bcem, extra=[Resource(b"cfrg", 0, b"\0" * 32), Resource(b"SIZE", -1, b"\0" * 10)])
    f = MacFile(b"Floppy.smi", code + chunks, rsrc, b"APPL", b"oneb")
    outer = mb.open_macbinary(BytesStream(macbinary(f), name="Floppy.smi"), ctx())
    assert nd.probe(outer)
    check_disk(nd.open_ndif(outer, ctx()), raw)


@needs_hfsutils
def test_an_smi_data_fork_alone_is_read_past_its_code(floppy) -> None:
    raw, _ = floppy
    code = pef_code(30_000)
    code += bytes(-len(code) % 512)
    chunks, _bcem = ndif(raw, [NDIF_RAW], zeros=False)  # uncompressed: the data fork holds the disk as it is
    stream = BytesStream(code + chunks, name="Floppy.smi")
    assert smi.probe(stream) and not nd.probe(stream)
    image = smi.open_smi(stream, ctx())
    assert image.start == len(code)
    check_disk(image, raw)


@needs_hfsutils
def test_a_compressed_smi_without_its_resource_fork_names_the_companions(floppy) -> None:
    raw, _ = floppy
    code = pef_code(1000)
    chunks, _bcem = ndif(raw, [NDIF_ADC])
    with pytest.raises(UnsupportedFormat) as caught:
        smi.open_smi(BytesStream(code + chunks), ctx("/data/Floppy.smi"))
    line = str(caught.value)
    assert "\n" not in line and "resource fork, which is missing" in line
    assert "/data/._Floppy.smi" in line and "/data/.AppleDouble/Floppy.smi" in line


def test_refused_chunk_types_are_named() -> None:
    disk = bytes(range(256)) * 512
    data, bcem = ndif(disk, [NDIF_RAW, NDIF_KENCODE])
    with pytest.raises(UnsupportedFormat, match=r"chunk 1 \(sector 64\) is compressed with KenCode \(type 0x80\)"):
        nd.open_ndif(with_fork(data, ndif_resource_fork(bcem)), ctx())
    table = bytearray(bcem)
    table[128 + 3] = 0x42  # the first entry's type byte
    with pytest.raises(UnsupportedFormat, match="unknown type 0x42"):
        nd.open_ndif(with_fork(data, ndif_resource_fork(bytes(table))), ctx())


def test_encrypted_and_segmented_images_are_refused() -> None:
    data, bcem = ndif(bytes(range(256)) * 256, [NDIF_RAW])
    encrypted = bytearray(bcem)
    struct.pack_into(">I", encrypted, 116, 1)
    with pytest.raises(Exception, match="ShrinkWrap-encrypted"):
        nd.open_ndif(with_fork(data, ndif_resource_fork(bytes(encrypted))), ctx())
    segmented = bytearray(bcem)
    struct.pack_into(">I", segmented, 84, 1)
    with pytest.raises(UnsupportedFormat, match="segmented"):
        nd.open_ndif(with_fork(data, ndif_resource_fork(bytes(segmented))), ctx())


def test_a_chunk_past_the_data_fork_ends_the_disk_there(caplog) -> None:
    disk = bytes(range(256)) * 2048  # 1024 sectors: 16 chunks of 64
    data, bcem = ndif(disk, [NDIF_ADC, NDIF_RAW])
    cut = data[: len(data) - 20_000]
    image = nd.open_ndif(with_fork(cut, ndif_resource_fork(bcem)), ctx())
    assert "lie past the end of the" in caplog.text
    assert 0 < image.size < len(disk) and image.size % 32768 == 0
    assert image.describe()["size"] == len(disk) and image.describe()["available"] == image.size
    assert image.pread(0, image.size) == disk[: image.size]


def test_a_broken_table_is_one_line() -> None:
    disk = bytes(range(256)) * 512
    data, bcem = ndif(disk, [NDIF_RAW])
    overlapping = bytearray(bcem)
    struct.pack_into(">I", overlapping, 128 + 12, (0 << 8) | NDIF_RAW)  # the second chunk starts at sector 0
    with pytest.raises(CorruptImage, match="out of order"):
        nd.open_ndif(with_fork(data, ndif_resource_fork(bytes(overlapping))), ctx())
    with pytest.raises(CorruptImage, match="says 9999 chunks"):
        too_many = bytearray(bcem)
        struct.pack_into(">I", too_many, 124, 9999)
        nd.open_ndif(with_fork(data, ndif_resource_fork(bytes(too_many))), ctx())
    bad_adc = bytearray(bcem)
    struct.pack_into(">I", bad_adc, 128, (0 << 8) | NDIF_ADC)  # raw bytes read as ADC
    image = nd.open_ndif(with_fork(data, ndif_resource_fork(bytes(bad_adc))), ctx())
    with pytest.raises(CorruptImage, match="ADC chunk 0"):
        image.pread(0, 512)


def test_a_resource_fork_without_bcem_is_not_ndif() -> None:
    stream = with_fork(b"x" * 1024, ndif_resource_fork(b"", extra=[]).replace(b"bcem", b"junk"))
    assert not nd.probe(stream)
    assert not nd.probe(BytesStream(b"x" * 1024))


COMPANIONS = {"dot-underscore": "._{name}", "zip": "__MACOSX/._{name}", "zip-nested": "../__MACOSX/sub/._{name}",
              "netatalk": ".AppleDouble/{name}"}


@needs_hfsutils
@pytest.mark.parametrize("form", sorted(COMPANIONS))
def test_the_resource_fork_from_a_companion_file(floppy, tmp_path: Path, form: str) -> None:
    raw, _ = floppy
    data, bcem = ndif(raw, [NDIF_ADC, NDIF_RAW])
    folder = tmp_path / "sub"
    folder.mkdir()
    (folder / "Floppy.img").write_bytes(data)
    place = folder / COMPANIONS[form].format(name="Floppy.img")
    place.parent.mkdir(parents=True, exist_ok=True)
    place.write_bytes(appledouble(MacFile(b"Floppy.img", b"", ndif_resource_fork(bcem))))
    opened = companions.open_with_companion(str(folder / "Floppy.img"))
    assert opened is not None and opened.describe()["resource_fork"] == str(place.resolve())
    assert nd.probe(opened)
    check_disk(nd.open_ndif(opened, ctx()), raw)


def test_no_companion_and_a_damaged_one(tmp_path: Path) -> None:
    (tmp_path / "disk.img").write_bytes(b"x" * 4096)
    assert not companions.claims(str(tmp_path / "disk.img"))
    (tmp_path / "._disk.img").write_bytes(b"not AppleDouble at all")  # a stray file is passed over
    assert not companions.claims(str(tmp_path / "disk.img"))
    assert "looked for" in companions.where_looked(str(tmp_path / "disk.img"))
    (tmp_path / "._disk.img").write_bytes(apple_entries(DOUBLE_MAGIC, [(RESOURCE_FORK, b"short")],
                                                        lengths={RESOURCE_FORK: 5000}))
    with pytest.raises(CorruptImage) as caught:
        companions.open_with_companion(str(tmp_path / "disk.img"))
    assert str(tmp_path / "._disk.img") in str(caught.value) and "runs past the end" in str(caught.value)
    assert not companions.claims(str(tmp_path / "disk.img"))  # the file may read without it
    assert "runs past the end" in companions.where_looked(str(tmp_path / "disk.img"))
