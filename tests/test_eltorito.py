"""El Torito boot images with their true size.

Catalogs built in memory for the parser's edge cases; bootable ISOs made by ``xorriso -as mkisofs`` from
known boot files (BIOS no-emulation, EFI in and out of the tree, EFI over 32 MiB, floppy and hard-disk
emulation), whose images must come back byte for byte; damaged catalogs that must not stop the ISO from
opening; and, once the mount exposes them (``-o rawviews`` → ``/.imgfs/boot``), the same through FUSE.

What 7-Zip 26.02 (``7zz l``, the ``[BOOT]`` folder) reports for the ISOs built here, against the true size
(imgfs's, equal to the source file's):

==============================================  =================================  ==========
boot image                                      7-Zip                              true size
==============================================  =================================  ==========
BIOS no-emulation, 24 KiB, -boot-load-size 4    2048: the catalog's load size      24576
EFI FAT image of 2.88 MB, catalog count 5760    2949120                            2949120
EFI FAT image of 33 MiB, catalog count 0        34914304: up to the end of the ISO 34603008
floppy emulation, 1.44 MB, catalog count 1      1474560                            1474560
hard-disk emulation, 4 MiB disk, count 1        512: one sector                    4194304
==============================================  =================================  ==========

``test_seven_zip_agrees_on_the_common_bytes`` checks that where both have bytes they are the same (the two
agree on where each image starts) and that imgfs's image is the source file, whatever 7-Zip's size; it
records 7-Zip's sizes as test properties (``--junitxml``) rather than asserting them.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import shutil
import struct
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Optional

import pytest
from conftest import run_imgfs, unmount
from isotools import find_record, pseudo_random, write_file

from imgfs.errors import CorruptImage
from imgfs.filesystems.iso9660 import IsoFilesystem, eltorito
from imgfs.filesystems.iso9660.eltorito import BootImage, boot_images, find_catalog, read_catalog
from imgfs.filesystems.iso9660.reader import FileHandle
from imgfs.io.cache import BlockCache
from imgfs.io.stream import BytesStream, FileStream
from imgfs.layer import OpenContext

LOGGER = "imgfs.filesystems.iso9660.eltorito"
MiB = 1 << 20

# -- catalogs built in memory ------------------------------------------------------------------------

CATALOG_LBA = 20


def validation(platform: int = 0, id_string: bytes = b"imgfs test") -> bytes:
    raw = bytearray(struct.pack("<BBH24sH", 1, platform, 0, id_string.ljust(24, b"\0"), 0) + b"\x55\xaa")
    checksum = -sum(struct.unpack("<16H", raw)) & 0xFFFF
    struct.pack_into("<H", raw, 28, checksum)
    return bytes(raw)


def entry(rba: int, count: int = 4, media: int = 0, bootable: bool = True, system: int = 0) -> bytes:
    return struct.pack("<BBHBxHI", 0x88 if bootable else 0, media, 0, system, count, rba).ljust(32, b"\0")


def header(platform: int, count: int, final: bool = False, id_string: bytes = b"") -> bytes:
    return struct.pack("<BBH28s", 0x91 if final else 0x90, platform, count, id_string)


def extension(more: bool = False) -> bytes:
    return bytes([0x44, 0x20 if more else 0]).ljust(32, b"\xee")


def synthetic(catalog: bytes, images: Optional[dict[int, bytes]] = None, sectors: int = 64,
              catalog_lba: int = CATALOG_LBA) -> BytesStream:
    """Sectors 0-15 empty, a boot record at 16, the terminator at 17, the catalog at ``catalog_lba``."""
    data = bytearray(sectors * 2048)
    data[16 * 2048 : 16 * 2048 + 39] = b"\x00CD001\x01" + b"EL TORITO SPECIFICATION".ljust(32, b"\0")
    struct.pack_into("<I", data, 16 * 2048 + 0x47, catalog_lba)
    data[17 * 2048 : 17 * 2048 + 7] = b"\xffCD001\x01"
    if catalog_lba < sectors:
        data[catalog_lba * 2048 : catalog_lba * 2048 + len(catalog)] = catalog
    for lba, content in (images or {}).items():
        data[lba * 2048 : lba * 2048 + len(content)] = content
    return BytesStream(bytes(data), name="synthetic.iso")


def test_catalog_with_sections_and_extensions():
    catalog = (validation(0) + entry(30, 4) + header(0xEF, 2, id_string=b"efi section") + entry(31, 0, media=0x20)
               + extension(more=True) + extension() + extension() + entry(32, 8, bootable=False)
               + header(0x01, 1, final=True) + entry(33, 1) + entry(99, 1))  # after the final section: ignored
    found = read_catalog(synthetic(catalog), CATALOG_LBA)  # the third extension was not announced: skipped too
    assert [(e.index, e.platform_id, e.load_rba, e.bootable) for e in found] == [
        (1, 0, 30, True), (2, 0xEF, 31, True), (3, 0xEF, 32, False), (4, 1, 33, True)]
    assert found[1].section_id == b"efi section"
    assert found[1].offset == CATALOG_LBA * 2048 + 96
    images = boot_images(synthetic(catalog))
    assert [(b.name, b.platform, b.emulation) for b in images] == [
        ("1-bios-noemul.img", "bios", "none"), ("2-efi.img", "efi", "none"), ("3-efi.img", "efi", "none"),
        ("4-ppc-noemul.img", "ppc", "none")]
    assert [(b.size, b.size_source) for b in images] == [
        (2048, "catalog sector count"), (512, "catalog sector count"), (4096, "catalog sector count"),
        (512, "catalog sector count")]


def test_emulation_names_and_unknown_platform():
    catalog = (validation(0x02) + entry(30, 1, media=1) + header(0x42, 3, final=True) + entry(31, 1, media=3)
               + entry(32, 1, media=4, system=0x0C) + entry(33, 2, media=2))
    images = boot_images(synthetic(catalog, sectors=8192))
    assert [(b.name, b.emulation, b.size, b.size_source) for b in images] == [
        ("1-mac-floppy1.2M.img", "floppy-1.2M", 1200 * 1024, "floppy emulation"),
        ("2-0x42-floppy2.88M.img", "floppy-2.88M", 2880 * 1024, "floppy emulation"),
        ("3-0x42-hdd.img", "hard-disk", 512, "catalog sector count"),
        ("4-0x42-floppy1.44M.img", "floppy-1.44M", 1440 * 1024, "floppy emulation")]
    assert images[2].system_type == 0x0C
    assert images[0].describe()["emulation"] == "floppy-1.2M"


def test_sizes_from_content_mbr_and_gpt():
    mbr = bytearray(512)
    struct.pack_into("<B3sB3sII", mbr, 446, 0x80, b"", 0x0C, b"", 1, 15)  # sectors 1..15: 8 KiB
    struct.pack_into("<B3sB3sII", mbr, 462, 0x00, b"", 0x83, b"", 16, 8)  # ...then 16..23: 12 KiB
    mbr[510:512] = b"\x55\xaa"
    protective = bytearray(512)
    struct.pack_into("<B3sB3sII", protective, 446, 0, b"", 0xEE, b"", 1, 0xFFFFFFFF)
    protective[510:512] = b"\x55\xaa"
    gpt = b"EFI PART".ljust(32, b"\0") + struct.pack("<QQQ", 39, 34, 6)  # backup header at sector 39: 20 KiB
    catalog = validation() + entry(30, 1, media=4) + header(0, 2, final=True) + entry(40, 1, media=4) + entry(50, 1)
    images = boot_images(synthetic(catalog, {30: bytes(mbr), 40: bytes(protective) + gpt, 50: bytes(mbr)}))
    assert [(b.size, b.size_source) for b in images] == [
        (12 * 1024, "MBR partition end"), (20 * 1024, "MBR partition end"),
        (512, "catalog sector count")]  # an MBR in a no-emulation image says nothing


def test_catalog_count_wins_over_a_smaller_partition_end():
    mbr = bytearray(512)
    struct.pack_into("<B3sB3sII", mbr, 446, 0x80, b"", 0x0C, b"", 1, 3)
    mbr[510:512] = b"\x55\xaa"
    images = boot_images(synthetic(validation() + entry(30, 16, media=4), {30: bytes(mbr)}))
    assert (images[0].size, images[0].size_source) == (8192, "catalog sector count")


def test_no_boot_record():
    data = bytearray(64 * 2048)
    data[16 * 2048 : 16 * 2048 + 7] = b"\x01CD001\x01"
    data[17 * 2048 : 17 * 2048 + 7] = b"\xffCD001\x01"
    assert find_catalog(BytesStream(bytes(data))) is None
    assert boot_images(BytesStream(bytes(data))) == []
    assert boot_images(BytesStream(b"")) == []


def test_bad_validation_checksum(caplog):
    bad = bytearray(validation())
    bad[5] ^= 0x01
    with pytest.raises(CorruptImage, match="checksum"):
        read_catalog(synthetic(bytes(bad) + entry(30)), CATALOG_LBA)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        assert boot_images(synthetic(bytes(bad) + entry(30))) == []
    assert "checksum" in caplog.text


@pytest.mark.parametrize("garbage", [b"\x00" * 32, b"\x01\x00" + b"\x00" * 28 + b"\xaa\x55", bytes(range(32))])
def test_no_validation_entry(garbage, caplog):
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        assert boot_images(synthetic(garbage + entry(30))) == []
    assert "validation entry" in caplog.text


def test_catalog_past_the_end(caplog):
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        assert boot_images(synthetic(b"", catalog_lba=0xFFFFFFFF)) == []
        assert boot_images(synthetic(b"", catalog_lba=64)) == []
    assert "past the end" in caplog.text


def test_catalog_in_the_last_sector_is_read():
    stream = synthetic(b"", {63: validation() + entry(30)}, catalog_lba=63)
    assert [b.load_rba for b in boot_images(stream)] == [30]


def test_bad_initial_entry():
    with pytest.raises(CorruptImage, match="initial entry"):
        read_catalog(synthetic(validation() + b"\x42" + entry(30)[1:]), CATALOG_LBA)
    with pytest.raises(CorruptImage, match="initial entry"):
        read_catalog(synthetic(validation() + entry(30, media=9)), CATALOG_LBA)


def test_endless_section_headers_are_bounded():
    """Every slot of the catalog's sixteen sectors a header that promises more: the walk ends at the last."""
    catalog = validation() + entry(30) + header(0, 0) * (eltorito.MAX_CATALOG_SIZE // 32)
    assert [b.index for b in boot_images(synthetic(catalog))] == [1]


def test_absurd_entry_count(caplog):
    catalog = validation() + entry(30) + header(0xEF, 0xFFFF) + entry(31) + entry(32)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        found = boot_images(synthetic(catalog))
    assert [b.load_rba for b in found] == [30, 31, 32]
    assert "promises 65535 entries" in caplog.text


def test_count_larger_than_the_section_then_another_section():
    catalog = (validation() + entry(30) + header(0, 5) + entry(31) + header(0xEF, 1, final=True) + entry(32))
    assert [(b.load_rba, b.platform) for b in boot_images(synthetic(catalog))] == [
        (30, "bios"), (31, "bios"), (32, "efi")]


def test_garbage_after_some_entries_gives_a_partial_list(caplog):
    catalog = validation() + entry(30) + header(0xEF, 2) + entry(31) + bytes([0x37]) * 32
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        assert [b.load_rba for b in boot_images(synthetic(catalog))] == [30, 31]
    assert "no section entry" in caplog.text
    catalog = validation() + entry(30) + bytes(range(1, 33))
    assert [b.load_rba for b in boot_images(synthetic(catalog))] == [30]


def test_unterminated_extension_chain():
    catalog = validation() + entry(30) + header(0, 1, final=True) + entry(31, media=0x20) + extension(more=True)
    assert [b.load_rba for b in boot_images(synthetic(catalog))] == [30, 31]


def test_images_clamped_to_the_end(caplog):
    catalog = validation() + entry(62, 16) + header(0, 2, final=True) + entry(64, 4) + entry(0x7FFFFFFF, 1, media=2)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        images = boot_images(synthetic(catalog))
    assert [(b.size, b.size_source) for b in images] == [
        (4096, "catalog sector count; clamped to the end of the image (8192 bytes recorded)"),
        (0, "catalog sector count; starts past the end of the image"),
        (0, "floppy emulation; starts past the end of the image")]
    assert [len(b.stream().pread(0, 1 << 20)) for b in images] == [4096, 0, 0]
    assert "runs past the end" in caplog.text


def test_tree_match_needs_one_contiguous_range():
    class Node:
        def __init__(self, handle, size=0):
            self.handle, self.size = handle, size

    class Iso:
        data_runs = IsoFilesystem.data_runs  # the reader's own: an int handle is one extent of the node's size

    def runs(pieces, zf=None):
        return Node(FileHandle(pieces, zf))

    found: dict[int, tuple[str, int]] = {}
    wanted = {4096, 8192, 12288, 16384, 24576}
    iso = Iso()
    eltorito._match(iso, runs(((4096, 2048), (6144, 100))), "/contiguous", wanted, found)
    eltorito._match(iso, runs(((8192, 2048), (20480, 100))), "/scattered", wanted, found)
    eltorito._match(iso, runs(((12288, 2048),), zf=(b"pz", 4, 15, 9999)), "/zisofs", wanted, found)
    eltorito._match(iso, runs(((2048, 2048),)), "/elsewhere", wanted, found)
    eltorito._match(iso, runs(((16384, 10),)), "/first", wanted, found)
    eltorito._match(iso, runs(((16384, 20),)), "/second", wanted, found)
    eltorito._match(iso, Node(24576, size=5000), "/one-extent", wanted, found)
    assert found == {4096: ("/contiguous", 2148), 16384: ("/first", 10), 24576: ("/one-extent", 5000)}


# -- bootable ISOs made by xorriso ---------------------------------------------------------------------

needs_tools = pytest.mark.skipif(not all(shutil.which(t) for t in ("xorriso", "mkfs.fat", "mcopy", "sfdisk")),
                                 reason="xorriso, mkfs.fat, mcopy and sfdisk are needed")


def fat_image(path: Path, kib: int, payload: bytes) -> Path:
    subprocess.run(["mkfs.fat", "-C", "-i", "12345678", str(path), str(kib)], check=True, capture_output=True)
    source = path.with_suffix(".payload")
    source.write_bytes(payload)
    subprocess.run(["mmd", "-i", str(path), "::/EFI", "::/EFI/BOOT"], check=True, capture_output=True)
    subprocess.run(["mcopy", "-i", str(path), str(source), "::/EFI/BOOT/BOOTX64.EFI"], check=True,
                   capture_output=True)
    source.unlink()
    return path


def mbr_disk(path: Path, size: int) -> Path:
    """A disk with one FAT partition that reaches its last sector, the partition's bytes random."""
    path.write_bytes(bytes(512) + pseudo_random(size - 512, 7))
    layout = f"label: dos\nstart=2048, size={size // 512 - 2048}, type=c, bootable\n"
    subprocess.run(["sfdisk", "-q", str(path)], input=layout.encode(), check=True, capture_output=True)
    return path


def mkisofs(out: Path, tree: Path, *flags: str) -> Path:
    subprocess.run(["xorriso", "-as", "mkisofs", "-R", "-J", "-o", str(out), *flags, str(tree)], check=True,
                   capture_output=True)
    return out


class Built:
    """The source boot files and the ISOs made from them, built once per module on first use."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.files: dict[str, Path] = {}
        self.isos: dict[str, Path] = {}

    def file(self, name: str) -> Path:
        if name not in self.files:
            path = self.root / "files" / name
            path.parent.mkdir(parents=True, exist_ok=True)
            if name == "isolinux.bin":
                write_file(path, pseudo_random(24 * 1024, 11))
            elif name == "efiboot.img":
                fat_image(path, 2880, pseudo_random(50_000, 12))
            elif name == "bigefi.img":
                fat_image(path, 33 * 1024, pseudo_random(300_000, 13))
            elif name == "floppy.img":
                fat_image(path, 1440, pseudo_random(20_000, 14))
            elif name == "hd.img":
                mbr_disk(path, 4 * MiB)
            self.files[name] = path
        return self.files[name]

    def tree(self, name: str, boot_files: dict[str, str]) -> Path:
        """A small tree with the boot files at the given paths and a few directories around them."""
        tree = self.root / "trees" / name
        write_file(tree / "README.TXT", b"a bootable test disc\n")
        write_file(tree / "aaa" / "deep" / "deeper" / "x.txt", b"x\n")
        for target, source in boot_files.items():
            (tree / target).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(self.file(source), tree / target)
        return tree

    def iso(self, name: str) -> Path:
        if name not in self.isos:
            self.isos[name] = self._make(name, self.root / f"{name}.iso")
        return self.isos[name]

    def _make(self, name: str, out: Path) -> Path:
        if name == "bios_efi":
            tree = self.tree(name, {"isolinux/isolinux.bin": "isolinux.bin", "boot/efiboot.img": "efiboot.img"})
            return mkisofs(out, tree, "-b", "isolinux/isolinux.bin", "-c", "isolinux/boot.cat", "-no-emul-boot",
                           "-boot-load-size", "4", "-boot-info-table", "-eltorito-alt-boot", "-e",
                           "boot/efiboot.img", "-no-emul-boot")
        if name == "efi_appended":  # the EFI image is a partition appended after the ISO, not a file
            tree = self.tree(name, {})
            return mkisofs(out, tree, "-append_partition", "2", "0xef", str(self.file("efiboot.img")), "-e",
                           "--interval:appended_partition_2:all::", "-no-emul-boot")
        if name in ("efi_big", "efi_big_hidden"):
            tree = self.tree(name, {"efi.img": "bigefi.img"})
            hide = ["-hide", "efi.img", "-hide-joliet", "efi.img"] if name.endswith("hidden") else []
            return mkisofs(out, tree, *hide, "-e", "efi.img", "-no-emul-boot")
        if name == "floppy":
            return mkisofs(out, self.tree(name, {"floppy.img": "floppy.img"}), "-b", "floppy.img")
        if name in ("hd", "hd_hidden"):
            tree = self.tree(name, {"disk/hd.img": "hd.img"})
            hide = ["-hide", "hd.img", "-hide-joliet", "hd.img"] if name.endswith("hidden") else []
            return mkisofs(out, tree, *hide, "-b", "disk/hd.img", "-hard-disk-boot")
        raise KeyError(name)


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Built:
    return Built(tmp_path_factory.mktemp("eltorito"))


def open_iso(path: Path) -> tuple[FileStream, IsoFilesystem]:
    stream = FileStream(str(path))
    return stream, IsoFilesystem(stream, OpenContext("test", BlockCache(1 * MiB)))


def read_all(image: BootImage) -> bytes:
    return image.stream().pread(0, image.size)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def extent_of(iso_path: Path, *names: bytes) -> int:
    """The extent of a file, found by an ISO 9660 reader independent of imgfs."""
    image = iso_path.read_bytes()
    return int(struct.unpack_from("<I", image, find_record(image, *names) + 2)[0])


@needs_tools
def test_bios_no_emulation_and_efi_from_the_tree(built):
    path = built.iso("bios_efi")
    stream, iso = open_iso(path)
    bios, efi = boot_images(stream, iso.descriptors, iso)
    assert (bios.index, bios.platform, bios.emulation, bios.bootable) == (1, "bios", "none", True)
    assert (efi.index, efi.platform, efi.emulation, efi.bootable) == (2, "efi", "none", True)
    assert (bios.name, efi.name) == ("1-bios-noemul.img", "2-efi.img")
    assert bios.load_rba == extent_of(path, b"ISOLINUX", b"ISOLINUX.BIN;1")
    assert efi.load_rba == extent_of(path, b"BOOT", b"EFIBOOT.IMG;1")
    assert bios.sector_count == 4  # the catalog records the load size, 2048 bytes: not the file's size
    assert (bios.size, bios.size_source) == (24 * 1024, "file /isolinux/isolinux.bin in the directory tree")
    assert (efi.size, efi.size_source) == (2880 * 1024, "file /boot/efiboot.img in the directory tree")
    assert sha256(read_all(efi)) == hashlib.sha256(built.file("efiboot.img").read_bytes()).hexdigest()
    # -boot-info-table patched bytes 8-63 of the copy on the disc; everything else is the source file
    source, data = built.file("isolinux.bin").read_bytes(), read_all(bios)
    assert data[:8] == source[:8] and data[64:] == source[64:]
    pvd, lba, length, checksum = struct.unpack_from("<IIII", data, 8)
    assert (pvd, lba, length) == (16, bios.load_rba, len(source))
    assert checksum == sum(struct.unpack_from(f"<{(len(source) - 64) // 4}I", source, 64)) & 0xFFFFFFFF
    node = iso.children(iso.children(iso.root)["isolinux"])["isolinux.bin"]
    assert data == iso.open(node).pread(0, node.size)


@needs_tools
def test_the_tree_walk_stops_at_the_last_boot_file(built):
    stream, iso = open_iso(built.iso("bios_efi"))
    boot_images(stream, iso.descriptors, iso)
    aaa = iso.children(iso.root)["aaa"]
    assert aaa.children is not None  # a sibling of the boot files' folders: read on the way
    assert iso.children(aaa)["deep"].children is None  # one level further: never needed


@needs_tools
def test_without_the_tree_sizes_come_from_content(built):
    stream, _ = open_iso(built.iso("bios_efi"))
    bios, efi = boot_images(stream)
    assert (bios.size, bios.size_source) == (2048, "catalog sector count")
    assert (efi.size, efi.size_source) == (2880 * 1024, "FAT boot sector")


@needs_tools
def test_a_walk_that_gives_up_falls_back(built, monkeypatch):
    monkeypatch.setattr(eltorito, "MAX_WALK_DIRECTORIES", 1)  # the root only; the boot files are one level down
    stream, iso = open_iso(built.iso("bios_efi"))
    sources = [b.size_source for b in boot_images(stream, iso.descriptors, iso)]
    assert sources == ["catalog sector count", "FAT boot sector"]


@needs_tools
def test_efi_image_appended_outside_the_tree(built):
    stream, iso = open_iso(built.iso("efi_appended"))
    (efi,) = boot_images(stream, iso.descriptors, iso)
    assert (efi.platform, efi.emulation, efi.name) == ("efi", "none", "1-efi.img")
    assert (efi.size, efi.size_source) == (2880 * 1024, "FAT boot sector")
    assert efi.load_rba * 2048 >= iso.vd.space_blocks * 2048 - 2880 * 1024  # after the ISO's files
    assert sha256(read_all(efi)) == hashlib.sha256(built.file("efiboot.img").read_bytes()).hexdigest()


@needs_tools
@pytest.mark.parametrize("name, source", [("efi_big", "file /efi.img in the directory tree"),
                                          ("efi_big_hidden", "FAT boot sector")])
def test_efi_image_over_32_mib(built, name, source):
    stream, iso = open_iso(built.iso(name))
    (efi,) = boot_images(stream, iso.descriptors, iso)
    assert efi.sector_count in (0, 1, 0xFFFF)  # a 16-bit count of 512-byte sectors cannot say 33 MiB
    assert (efi.size, efi.size_source) == (33 * MiB, source)
    assert sha256(read_all(efi)) == hashlib.sha256(built.file("bigefi.img").read_bytes()).hexdigest()
    assert ("efi.img" in iso.children(iso.root)) == (name == "efi_big")


@needs_tools
def test_floppy_emulation(built):
    stream, iso = open_iso(built.iso("floppy"))
    (floppy,) = boot_images(stream, iso.descriptors, iso)
    assert (floppy.platform, floppy.emulation, floppy.name) == ("bios", "floppy-1.44M", "1-bios-floppy1.44M.img")
    assert floppy.sector_count == 1
    assert (floppy.size, floppy.size_source) == (1440 * 1024, "floppy emulation")
    assert floppy.load_rba == extent_of(built.iso("floppy"), b"FLOPPY.IMG;1")
    assert sha256(read_all(floppy)) == hashlib.sha256(built.file("floppy.img").read_bytes()).hexdigest()


@needs_tools
@pytest.mark.parametrize("name, source", [("hd", "file /disk/hd.img in the directory tree"),
                                          ("hd_hidden", "MBR partition end")])
def test_hard_disk_emulation(built, name, source):
    stream, iso = open_iso(built.iso(name))
    (disk,) = boot_images(stream, iso.descriptors, iso)
    assert (disk.platform, disk.emulation, disk.name) == ("bios", "hard-disk", "1-bios-hdd.img")
    assert disk.system_type == 0x0C  # the partition's type, copied into the catalog
    assert (disk.size, disk.size_source) == (4 * MiB, source)
    assert sha256(read_all(disk)) == hashlib.sha256(built.file("hd.img").read_bytes()).hexdigest()


# -- what 7-Zip makes of the same ISOs ------------------------------------------------------------------

def seven_zip_boot(iso_path: Path, out: Path) -> dict[int, bytes]:
    """7-Zip's ``[BOOT]`` images by catalog order (its names: ``Boot-NoEmul.img`` or ``2-Boot-NoEmul.img``)."""
    subprocess.run(["7zz", "x", "-y", f"-o{out}", str(iso_path), "[BOOT]"], check=True, capture_output=True)
    found = {}
    for path in sorted((out / "[BOOT]").iterdir()):
        prefix = path.name.split("-")[0]
        found[int(prefix) if prefix.isdigit() else 1] = path.read_bytes()
    return found


@pytest.mark.skipif(not shutil.which("7zz"), reason="7-Zip (7zz) is not installed")
@needs_tools
@pytest.mark.parametrize("name, sources", [
    ("bios_efi", [None, "efiboot.img"]),  # isolinux.bin is patched by -boot-info-table: checked above
    ("efi_appended", ["efiboot.img"]),
    ("efi_big", ["bigefi.img"]),
    ("floppy", ["floppy.img"]),
    ("hd_hidden", ["hd.img"]),
])
def test_seven_zip_agrees_on_the_common_bytes(built, tmp_path, name, sources, record_property):
    stream, iso = open_iso(built.iso(name))
    ours = {b.index: read_all(b) for b in boot_images(stream, iso.descriptors, iso)}
    theirs = seven_zip_boot(built.iso(name), tmp_path / "7z")
    assert sorted(theirs) == sorted(ours)
    for index, source in enumerate(sources, start=1):
        if source is not None:
            assert ours[index] == built.file(source).read_bytes()
        record_property(f"image {index}", f"imgfs {len(ours[index])} bytes, 7-Zip {len(theirs[index])} bytes")
        common = min(len(ours[index]), len(theirs[index]))
        assert ours[index][:common] == theirs[index][:common], f"image {index}: 7-Zip reads other bytes"


# -- damaged catalogs in real ISOs ----------------------------------------------------------------------

def catalog_offset(image: bytes) -> int:
    return int(struct.unpack_from("<I", image, 17 * 2048 + 0x47)[0]) * 2048


def damage(built: Built, tmp_path: Path, how: str) -> Path:
    image = bytearray(built.iso("bios_efi").read_bytes())
    assert image[17 * 2048 + 1 : 17 * 2048 + 6] == b"CD001" and image[17 * 2048] == 0
    cat = catalog_offset(image)
    if how == "checksum":
        image[cat + 4] ^= 0xFF
    elif how == "catalog-past-end":
        struct.pack_into("<I", image, 17 * 2048 + 0x47, len(image) // 2048 + 1000)
    elif how == "header-loop":  # the section header repeated over the rest of the sector, never final
        image[cat + 64 : cat + 2048] = header(0xEF, 0) * 62
    elif how == "absurd-count":
        image[cat + 64] = 0x90
        struct.pack_into("<H", image, cat + 66, 0xFFFF)
        image[cat + 96 + 32 : cat + 2048] = bytes([0x5A]) * (2048 - 128)
    elif how == "image-past-end":
        struct.pack_into("<I", image, cat + 96 + 8, len(image) // 2048 + 5)
    out = tmp_path / f"{how}.iso"
    out.write_bytes(bytes(image))
    return out


DAMAGE = {  # how: (load RBAs found, of the original two)
    "checksum": 0,
    "catalog-past-end": 0,
    "header-loop": 1,
    "absurd-count": 2,
    "image-past-end": 2,
}


@needs_tools
@pytest.mark.parametrize("how", sorted(DAMAGE))
def test_damaged_catalog_leaves_the_iso_readable(built, tmp_path, how, caplog):
    path = damage(built, tmp_path, how)
    stream, iso = open_iso(path)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        images = boot_images(stream, iso.descriptors, iso)
    assert len(images) == DAMAGE[how]
    assert caplog.records, "the damage is logged"
    for image in images:
        assert image.size == 0 or image.offset + image.size <= stream.size
        assert len(read_all(image)) == image.size
    if how == "image-past-end":
        assert (images[1].size, images[1].size_source) == (0, "catalog sector count; starts past the end of the image")
    assert "README.TXT" in iso.children(iso.root)
    listing = run_imgfs("ls", str(path), check=True)
    assert "README.TXT" in listing.stdout


# -- through the mount ----------------------------------------------------------------------------------

@contextlib.contextmanager
def raw_views(image: Path, mountpoint: Path) -> Iterator[Path]:
    """The ``/.imgfs`` folder of a mount with ``-o rawviews``."""
    mountpoint.mkdir(parents=True, exist_ok=True)
    done = run_imgfs(str(image), str(mountpoint), "-o", "rawviews")
    assert done.returncode == 0, f"imgfs failed: {done.stderr}"
    try:
        assert (mountpoint / ".imgfs").is_dir()
        yield mountpoint / ".imgfs"
    finally:
        unmount(mountpoint)


def boot_names(views: Path) -> list[str]:
    boot = views / "boot"
    return sorted(p.name for p in boot.iterdir()) if boot.is_dir() else []


@needs_tools
@pytest.mark.parametrize("name, expected", [
    ("bios_efi", {"1-bios-noemul.img": None, "2-efi.img": "efiboot.img"}),
    ("efi_appended", {"1-efi.img": "efiboot.img"}),
    ("floppy", {"1-bios-floppy1.44M.img": "floppy.img"}),
    ("hd_hidden", {"1-bios-hdd.img": "hd.img"}),
])
def test_mounted_boot_images(built, tmp_path, name, expected):
    with raw_views(built.iso(name), tmp_path / "mnt") as views:
        assert boot_names(views) == sorted(expected)
        boot = views / "boot"
        for file_name, source in expected.items():
            data = (boot / file_name).read_bytes()
            if source is None:  # isolinux.bin, patched by -boot-info-table
                assert (boot / file_name).stat().st_size == 24 * 1024 == len(data)
                assert data[64:] == built.file("isolinux.bin").read_bytes()[64:]
            else:
                assert (boot / file_name).stat().st_size == built.file(source).stat().st_size
                assert sha256(data) == hashlib.sha256(built.file(source).read_bytes()).hexdigest()


@needs_tools
@pytest.mark.parametrize("how", sorted(DAMAGE))
def test_mounted_damaged_catalog(built, tmp_path, how):
    with raw_views(damage(built, tmp_path, how), tmp_path / "mnt") as views:
        names = boot_names(views)
        assert len(names) <= DAMAGE[how]
        for name in names:
            (views / "boot" / name).read_bytes()
        assert (views.parent / "README.TXT").read_bytes() == b"a bootable test disc\n"
