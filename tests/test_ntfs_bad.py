"""Damaged NTFS volumes: each damage is one clear line at mount, or EIO (CorruptImage) on the files it
touches and nothing else. The volume is made by mkntfs and ntfs-3g; damages are placed with ntfsinfo."""

from __future__ import annotations

import errno
import logging
import os
import shutil
import struct
from pathlib import Path
from typing import Any

import pytest
from conftest import read_errno, run_imgfs
from disktools import fat_image
from ntfspatch import (
    attribute_at,
    entry_name,
    index_blocks,
    node_entries,
    patch,
    read,
    read_fixed,
    read_record,
    record_number,
    record_offset,
    resident_value,
    runlist,
    write_fixed,
    write_record,
)
from ntfstools import COMPRESSIBLE, mkntfs, ntfs3g, populate_compressed, pseudo_random, write

from imgfs.errors import CorruptImage, EncryptedImage, ImageError
from imgfs.filesystems.base import Node
from imgfs.filesystems.ntfs import NtfsFilesystem
from imgfs.io.cache import BlockCache
from imgfs.io.stream import FileStream
from imgfs.layer import OpenContext

if not shutil.which("mkntfs") or not shutil.which("ntfsinfo"):
    pytest.skip("ntfs-3g (mkntfs, ntfsinfo) is not installed", allow_module_level=True)

STANDARD_INFORMATION, DATA, INDEX_ROOT = 0x10, 0x80, 0x90
A_DATA = pseudo_random(10000, 1)


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("ntfs-bad")
    image = mkntfs(base / "bad.img", 16 << 20, 4096)
    with ntfs3g(image, base / "writer") as mnt:
        write(mnt / "a.txt", A_DATA)
        write(mnt / "b.txt", b"b stays readable\n")
        write(mnt / "folder" / "one", b"1\n")
        write(mnt / "folder" / "two", b"2\n")
        for i in range(300):
            write(mnt / "many" / f"entry-{i:04d}.txt", b"x")
        write(mnt / "names" / "original", b"many names\n")
        for i in range(30):
            (mnt / "names" / f"another-rather-long-name-for-the-same-file-{i:03d}").hardlink_to(mnt / "names" /
                                                                                              "original")
        populate_compressed(mnt / "compressed")
    return image


@pytest.fixture
def image(pristine: Path, tmp_path: Path) -> Path:
    return Path(shutil.copy(pristine, tmp_path / "damaged.img"))


def open_fs(image: Path) -> NtfsFilesystem:
    return NtfsFilesystem(FileStream(str(image)), OpenContext(str(image), BlockCache(16 << 20)))


def node(fs: NtfsFilesystem, path: str) -> Node:
    found = fs.root
    for name in path.split("/"):
        found = fs.children(found)[name]
    return found


def read_all(fs: NtfsFilesystem, path: str) -> bytes:
    found = node(fs, path)
    return fs.open(found).pread(0, found.size)


def assert_rest_readable(fs: NtfsFilesystem) -> None:
    assert read_all(fs, "b.txt") == b"b stays readable\n"
    assert read_all(fs, "folder/one") == b"1\n"


def test_pristine(image: Path) -> None:
    fs = open_fs(image)
    assert read_all(fs, "a.txt") == A_DATA and len(fs.children(node(fs, "many"))) == 300
    assert len(fs.children(node(fs, "names"))) == 31 and node(fs, "names/original").nlink == 31
    assert read_all(fs, "compressed/text.txt") == COMPRESSIBLE


def test_fixup_mismatch_is_eio_on_that_file(image: Path, caplog: pytest.LogCaptureFixture) -> None:
    number = record_number(image, "/a.txt")
    offset = record_offset(image, number)
    patch(image, offset + 1022, b"\xde\xad")  # the second sector's check value: a torn write
    fs = open_fs(image)
    with pytest.raises(CorruptImage, match="fixup mismatch in sector 1"):
        read_all(fs, "a.txt")
    with caplog.at_level(logging.WARNING):
        assert node(fs, "a.txt").size == len(A_DATA)  # stat shows the directory's copy, with a warning
    assert "fixup mismatch" in caplog.text
    assert_rest_readable(fs)


def test_data_past_the_valid_length_reads_as_zeros(image: Path) -> None:
    """Not damage: Windows extends files (SetFileValidData, preallocation) without writing them, and keeps
    how much is valid in the attribute's initialized size (byte 56 of a non-resident attribute)."""
    number = record_number(image, "/a.txt")
    buf = read_record(image, number)
    pos = attribute_at(buf, DATA)
    struct.pack_into("<q", buf, pos + 56, 4096)
    write_record(image, number, buf)
    fs = open_fs(image)
    assert read_all(fs, "a.txt") == A_DATA[:4096] + bytes(len(A_DATA) - 4096)


def test_run_list_past_the_volume(image: Path) -> None:
    number = record_number(image, "/a.txt")
    buf = read_record(image, number)
    pos = attribute_at(buf, DATA)
    runs = pos + struct.unpack_from("<H", buf, pos + 32)[0]
    header = buf[runs]
    lcn_end = runs + 1 + (header & 0x0F) + (header >> 4)
    buf[lcn_end - 1] = 0x7F  # the LCN's top byte: far past the 4096 clusters of the volume
    write_record(image, number, buf)
    fs = open_fs(image)
    with pytest.raises(CorruptImage, match="past the volume"):
        read_all(fs, "a.txt")
    assert_rest_readable(fs)


def _attribute_list(image: Path) -> tuple[int, int, bytearray]:
    """names/original's attribute list (ntfs-3g makes it non-resident): its record, offset and bytes."""
    number = record_number(image, "/names/original")
    (_, lcn, _), = runlist(image, "-F", "/names/original", attribute="$ATTRIBUTE_LIST")
    return number, lcn * 4096, bytearray(read(image, lcn * 4096, 4096))


def _list_entries(data: bytes) -> list[int]:
    found, pos = [], 0
    while pos + 26 <= len(data) and struct.unpack_from("<I", data, pos)[0]:
        found.append(pos)
        pos += struct.unpack_from("<H", data, pos + 4)[0]
    return found


def test_attribute_list_naming_a_record_of_another_file(image: Path) -> None:
    number, offset, data = _attribute_list(image)
    other = record_number(image, "/b.txt")
    for pos in _list_entries(data):  # every entry that points elsewhere now points at b.txt's base record
        if struct.unpack_from("<Q", data, pos + 16)[0] & 0xFFFFFFFFFFFF != number:
            struct.pack_into("<Q", data, pos + 16, other)
    patch(image, offset, bytes(data))
    fs = open_fs(image)
    assert "original" in fs.children(node(fs, "names"))  # listed from the folder's index
    with pytest.raises(CorruptImage, match="belongs to record 0"):
        fs.xattrs(node(fs, "names/original"))
    assert_rest_readable(fs)


def test_attribute_list_looping_back_to_its_own_record(image: Path) -> None:
    number, offset, data = _attribute_list(image)
    for pos in _list_entries(data):  # every entry now says the base record holds it
        struct.pack_into("<Q", data, pos + 16, number | struct.unpack_from("<Q", data, pos + 16)[0] >> 48 << 48)
    patch(image, offset, bytes(data))
    fs = open_fs(image)
    with pytest.raises(CorruptImage, match="which does not hold it"):
        read_all(fs, "names/original")
    assert_rest_readable(fs)


def test_index_btree_loop_is_eio_on_that_folder(image: Path) -> None:
    record = read_record(image, record_number(image, "/many"))
    start, _ = resident_value(record, attribute_at(record, INDEX_ROOT))
    (pos, length, _), = node_entries(record, start + 16)  # ntfs-3g's root: one entry, over the top node
    vcn = struct.unpack_from("<Q", record, pos + length - 8)[0]
    top = index_blocks(image, "/many")[vcn]  # 4 KiB blocks in 4 KiB clusters: VCN n is block n
    buf = read_fixed(image, top, 4096)
    entries = node_entries(buf, 24)
    assert len(entries) > 2 and all(flags & 1 for _, _, flags in entries)
    pos, length, _ = entries[1]
    struct.pack_into("<Q", buf, pos + length - 8, vcn)  # a subnode pointing back at this very block
    write_fixed(image, top, buf)
    fs = open_fs(image)
    with pytest.raises(CorruptImage, match="index B-tree loops"):
        fs.children(node(fs, "many"))
    assert_rest_readable(fs)


def _root_entry(image: Path, name: str) -> tuple[int, bytearray, int]:
    """The root folder's index block holding ``name``: its offset, its bytes, the entry's offset in them."""
    for offset in index_blocks(image, "/"):
        buf = read_fixed(image, offset, 4096)
        if buf[:4] != b"INDX":
            continue
        for pos, _, flags in node_entries(buf, 24):
            if not flags & 2 and entry_name(buf, pos) == name:
                return offset, buf, pos
    raise AssertionError(f"{name} not in the root's index blocks")


def test_a_folder_that_claims_to_be_its_own_parent(image: Path, caplog: pytest.LogCaptureFixture) -> None:
    folder = record_number(image, "/folder")
    offset, buf, pos = _root_entry(image, "folder")
    struct.pack_into("<Q", buf, pos + 16, folder)  # its name in the root now says the folder is its parent
    write_fixed(image, offset, buf)
    with caplog.at_level(logging.WARNING):
        fs = open_fs(image)
    assert "folder" not in fs.children(fs.root) and "b.txt" in fs.children(fs.root)
    assert "whose name says its parent is record" in caplog.text


def test_a_folder_listing_itself(image: Path, caplog: pytest.LogCaptureFixture) -> None:
    offset, buf, pos = _root_entry(image, "b.txt")
    struct.pack_into("<Q", buf, pos, 5 | 5 << 48)  # the root's entry "b.txt" now names the root itself
    write_fixed(image, offset, buf)
    with caplog.at_level(logging.WARNING):
        fs = open_fs(image)
    assert "b.txt" not in fs.children(fs.root) and "a.txt" in fs.children(fs.root)
    assert "lists itself as 'b.txt'" in caplog.text


def test_lznt1_unit_decoding_past_its_size(image: Path) -> None:
    vcn, lcn, count = runlist(image, "-F", "/compressed/text.txt")[0]
    assert vcn == 0 and 0 < count < 16  # the first unit is compressed
    header = struct.unpack_from("<H", read(image, lcn * 4096, 2))[0]
    assert header & 0x8000  # its first 4 KiB chunk too
    # the chunk now starts with a literal and a pair of the longest length its 12 length bits allow (4098):
    # 4099 bytes from a chunk that may make 4096
    patch(image, lcn * 4096 + 2, bytes([0b10, ord("A")]) + struct.pack("<H", 0x0FFF))
    fs = open_fs(image)
    text = fs.open(node(fs, "compressed/text.txt"))
    with pytest.raises(CorruptImage, match="compression unit 0: "):
        text.pread(0, 100)
    assert text.pread(65536, 100) == COMPRESSIBLE[65536:65636]  # the next unit is fine
    assert_rest_readable(fs)


def test_damaged_mft_record_0_is_read_from_the_mirror(image: Path, caplog: pytest.LogCaptureFixture) -> None:
    patch(image, record_offset(image, 0) + 510, b"\x00\x00")
    with caplog.at_level(logging.WARNING):
        fs = open_fs(image)
    assert "using its copy in $MFTMirr" in caplog.text
    assert read_all(fs, "a.txt") == A_DATA


def test_unreadable_root_is_one_line(image: Path) -> None:
    patch(image, record_offset(image, 5) + 510, b"\x00\x00")
    with pytest.raises(CorruptImage) as caught:
        open_fs(image)
    assert "MFT record 5: fixup mismatch" in str(caught.value) and "\n" not in str(caught.value)


def test_dirty_volume_is_read_with_a_warning(image: Path, caplog: pytest.LogCaptureFixture) -> None:
    buf = read_record(image, 3)
    start, _ = resident_value(buf, attribute_at(buf, 0x70))  # $VOLUME_INFORMATION
    struct.pack_into("<H", buf, start + 10, 0x0001)
    write_record(image, 3, buf)
    with caplog.at_level(logging.WARNING):
        fs = open_fs(image)
    assert "not cleanly closed (its dirty flag is set)" in caplog.text and fs.describe()["dirty"]
    assert_rest_readable(fs)


def test_efs_encrypted_file_is_eio_with_a_log_line(image: Path, caplog: pytest.LogCaptureFixture) -> None:
    number = record_number(image, "/a.txt")
    buf = read_record(image, number)
    start, _ = resident_value(buf, attribute_at(buf, STANDARD_INFORMATION))
    struct.pack_into("<I", buf, start + 32, struct.unpack_from("<I", buf, start + 32)[0] | 0x4000)
    write_record(image, number, buf)
    fs = open_fs(image)
    with caplog.at_level(logging.WARNING), pytest.raises(EncryptedImage, match="encrypted"):
        read_all(fs, "a.txt")
    assert "EFS-encrypted" in caplog.text
    assert_rest_readable(fs)


def test_truncated_image(image: Path) -> None:
    lcn = runlist(image, "-F", "/a.txt")[0][1]
    with open(image, "r+b") as f:
        f.truncate(lcn * 4096 + 100)
    try:
        fs = open_fs(image)
    except ImageError as exc:  # the MFT itself may be past the cut
        assert "\n" not in str(exc)
        return
    with pytest.raises(CorruptImage):
        read_all(fs, "a.txt")


# -- through FUSE and the assembler --------------------------------------------------------------------


def test_damaged_file_is_eio_through_the_mount(image: Path, mount: Any) -> None:
    patch(image, record_offset(image, record_number(image, "/a.txt")) + 1022, b"\xde\xad")
    with mount(image) as root:
        assert read_errno(root / "a.txt") == errno.EIO
        assert (root / "b.txt").read_bytes() == b"b stays readable\n"
        assert len(os.listdir(root / "many")) == 300


def test_unreadable_root_refuses_the_mount_in_one_line(image: Path, tmp_path: Path) -> None:
    patch(image, record_offset(image, 5) + 510, b"\x00\x00")
    done = run_imgfs(str(image), str(tmp_path))
    assert done.returncode != 0
    assert done.stderr.strip().count("\n") == 0 and "MFT record 5: fixup mismatch" in done.stderr


def test_bitlocker_is_named_and_refused(image: Path, tmp_path: Path) -> None:
    patch(image, 3, b"-FVE-FS-")  # what BitLocker puts where NTFS has its name
    done = run_imgfs("info", str(image))
    assert done.returncode != 0 and "BitLocker-encrypted volume found: not supported" in done.stderr
    write(tmp_path / "discovery" / "BitLockerToGo.exe", b"the reader Windows puts beside the encrypted part")
    to_go = tmp_path / "to-go.img"
    fat_image(to_go, tmp_path / "discovery", 16, "TOGO")
    patch(to_go, 3, b"MSWIN4.1")
    patch(to_go, 424, bytes.fromhex("3bd66749292ed84a8399f6a339e3d001"))  # BitLocker To Go keeps FAT's sector
    done = run_imgfs("info", str(to_go))
    assert done.returncode != 0 and "BitLocker-encrypted volume found: not supported" in done.stderr
