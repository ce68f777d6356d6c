"""NTFS structures built in memory: the boot sector's size encodings, run lists, fixups, reparse buffers and
their translation to Linux targets, Interix and WSL special files, FILETIMEs, the $LogFile restart area."""

from __future__ import annotations

import os
import stat
import struct
from typing import Optional

import pytest
from ntfstools import junction_reparse, symlink_reparse

from imgfs.errors import CorruptImage, UnsupportedFormat
from imgfs.filesystems.ntfs import journal
from imgfs.filesystems.ntfs.boot import BootSector
from imgfs.filesystems.ntfs.record import Attribute, apply_fixups
from imgfs.filesystems.ntfs.reparse import (
    Translator,
    interix,
    reparse_tag,
    windows_link,
    wsl_device,
)
from imgfs.filesystems.ntfs.runs import Run, chain_runs, decode_runs
from imgfs.filesystems.ntfs.values import filetime_ns
from imgfs.io.stream import BytesStream


def boot_sector(sector_size: int = 512, per_cluster: int = 8, per_record: int = 0xF6, per_index: int = 1,
                total: int = 100_000, mft: int = 4, mirror: int = 2000) -> bytes:
    head = struct.pack("<3s8sHB", b"\xebR\x90", b"NTFS    ", sector_size, per_cluster).ljust(40, b"\0")
    tail = struct.pack("<QQQb3xb3xQ", total, mft, mirror, per_record - 256 if per_record > 127 else per_record,
                       per_index - 256 if per_index > 127 else per_index, 0x1234)
    return (head + tail).ljust(510, b"\0") + b"\x55\xaa"


def test_boot_sector_sizes() -> None:
    boot = BootSector.parse(boot_sector())
    assert (boot.cluster_size, boot.record_size, boot.index_size) == (4096, 1024, 4096)
    assert boot.total_clusters == 100_000 * 512 // 4096
    big = BootSector.parse(boot_sector(per_cluster=0xF4, per_record=0xF6, per_index=0xF4, mft=1, mirror=2))
    assert (big.cluster_size, big.record_size, big.index_size) == (2 << 20, 1024, 4096)  # 2**(256-244) sectors
    small = BootSector.parse(boot_sector(sector_size=4096, per_cluster=1, per_record=0xF4, per_index=1))
    assert (small.cluster_size, small.record_size, small.index_size) == (4096, 4096, 4096)


@pytest.mark.parametrize("fields, message", [
    ({"sector_size": 300}, "bytes per sector"),
    ({"per_cluster": 3}, "sectors per cluster"),
    ({"per_cluster": 200}, "sectors per cluster"),
    ({"per_record": 0xE0}, "MFT record size"),  # 2**32 bytes
    ({"per_record": 0}, "MFT record size"),
    ({"per_index": 0x7F}, "index block size"),  # 127 clusters: not a power of two
    ({"mft": 0}, "MFT"),
    ({"mirror": 10**9}, "MFT"),
])
def test_boot_sector_refused(fields: dict[str, int], message: str) -> None:
    with pytest.raises(CorruptImage, match=message):
        BootSector.parse(boot_sector(**fields))


def test_not_ntfs() -> None:
    with pytest.raises(UnsupportedFormat):
        BootSector.parse(boot_sector().replace(b"NTFS    ", b"MSDOS5.0"))


def attribute(runs: bytes, last_vcn: int, first_vcn: int = 0) -> Attribute:
    attr = Attribute(0x80, "", 0, 0, 64, 4096)
    attr.runs, attr.first_vcn, attr.last_vcn = runs, first_vcn, last_vcn
    return attr


def test_run_lists() -> None:
    # 0x30 clusters at 0x1000; 0x10 sparse; 8 clusters 0x100 back (a negative delta); end
    raw = bytes([0x21, 0x30, 0x00, 0x10, 0x01, 0x10, 0x21, 0x08, 0x00, 0xFF, 0x00])
    assert decode_runs(attribute(raw, 0x47), 10_000) == [Run(0, 0x1000, 0x30), Run(0x30, None, 0x10),
                                                         Run(0x40, 0x0F00, 8)]
    with pytest.raises(CorruptImage, match="past the volume"):
        decode_runs(attribute(raw, 0x47), 0x1000)
    with pytest.raises(CorruptImage, match="header byte"):
        decode_runs(attribute(bytes([0x21, 0x30]), 0x2F), 10_000)  # cut short
    with pytest.raises(CorruptImage, match="0 clusters"):
        decode_runs(attribute(bytes([0x11, 0x00, 0x05, 0x00]), 0), 10_000)
    with pytest.raises(CorruptImage, match="its header says"):
        decode_runs(attribute(bytes([0x11, 0x04, 0x05, 0x00]), 9), 10_000)


def test_run_list_segments_in_order() -> None:
    second = attribute(bytes([0x11, 0x04, 0x20, 0x00]), 7, first_vcn=4)
    first = attribute(bytes([0x11, 0x04, 0x10, 0x00]), 3)
    assert chain_runs([second, first], 100) == [Run(0, 0x10, 4), Run(4, 0x20, 4)]
    with pytest.raises(CorruptImage, match="expected 0"):
        chain_runs([second], 100)


def fixed_up(payload: bytes, magic: bytes = b"FILE", size: int = 1024, check: bytes = b"\x07\x00") -> bytearray:
    buf = bytearray(payload.ljust(size, b"\0"))
    buf[0:8] = magic + struct.pack("<HH", 48, size // 512 + 1)
    buf[48:50] = check
    for i in range(1, size // 512 + 1):
        buf[48 + 2 * i : 50 + 2 * i] = buf[i * 512 - 2 : i * 512]
        buf[i * 512 - 2 : i * 512] = check
    return buf


def test_fixups() -> None:
    original = bytearray(1024)
    original[510:512], original[1022:1024] = b"ab", b"cd"
    buf = fixed_up(bytes(original))
    apply_fixups(buf, b"FILE", "record", 0)
    assert buf[510:512] == b"ab" and buf[1022:1024] == b"cd"
    torn = fixed_up(bytes(original))
    torn[1022:1024] = b"zz"
    with pytest.raises(CorruptImage, match="fixup mismatch in sector 1") as caught:
        apply_fixups(torn, b"FILE", "record", 4096)
    assert caught.value.offset == 4096 + 1022
    with pytest.raises(CorruptImage, match="signature"):
        apply_fixups(fixed_up(bytes(1024), b"BAAD"), b"FILE", "record", 0)


def fake_lookup(tree: dict[int, dict[str, int]]):
    def lookup(folder: int, name: str) -> Optional[tuple[str, int]]:
        for stored, record in tree.get(folder, {}).items():
            if stored == name or stored.upper() == name.upper():
                return stored, record
        return None
    return lookup


# root 5: Dir (20) holding File (21) and Sub (22); the link sits in Sub
TREE = {5: {"Dir": 20}, 20: {"File": 21, "Sub": 22}, 22: {}}


@pytest.mark.parametrize("buffer, target", [
    (symlink_reparse("..\\FILE", True), b"../File"),
    (symlink_reparse("..\\..\\dir\\sub", True), b"../../Dir/Sub"),
    (symlink_reparse("..\\missing\\x", True), b"../missing/x"),  # kept as written
    (symlink_reparse("..\\..\\..\\above", True), b"../../../above"),  # above the root: as written
    (symlink_reparse("\\DIR\\file", True), b"../../Dir/File"),
    (symlink_reparse("\\??\\C:\\dir\\FILE", False), b"../../Dir/File"),
    (symlink_reparse("\\??\\e:\\dir\\none", False), b"../../.NTFS-3G/E:/dir/none"),
    (symlink_reparse("\\??\\C:\\", False), b"../.."),
    (junction_reparse("\\??\\C:\\Dir\\"), b"../../Dir"),
    (junction_reparse("\\??\\C:\\Program Files\\"), b"../../.NTFS-3G/C:/Program Files/"),
    (junction_reparse("\\??\\Volume{abc}\\"), b"../../.NTFS-3G/Volume{abc}"),
    (symlink_reparse("\\??\\UNC\\srv\\share\\f", False), b"//srv/share/f"),
])
def test_windows_link_targets(buffer: bytes, target: bytes) -> None:
    tag, payload = reparse_tag(buffer)
    link = windows_link(tag, payload)
    assert link is not None
    assert Translator(fake_lookup(TREE), 5).target(link, (5, 20, 22)) == target


def test_broken_reparse_buffers() -> None:
    assert reparse_tag(b"\x0c\x00") == (0, b"")
    tag, payload = reparse_tag(symlink_reparse("x", True))
    assert windows_link(tag, payload[:10]) is None
    assert windows_link(tag, payload[:-1]) is None  # the name runs past the buffer


def test_interix_and_wsl_specials() -> None:
    link = interix(b"IntxLNK\x01" + "../x/ü".encode("utf-16-le"))
    assert link is not None and link.kind == stat.S_IFLNK and link.target == "../x/ü".encode()
    device = interix(b"IntxBLK\x00" + struct.pack("<QQ", 259, 70000))
    assert device is not None and device.kind == stat.S_IFBLK and device.rdev == os.makedev(259, 70000)
    assert interix(b"IntxLNK\x01") is None and interix(b"plain data") is None
    assert wsl_device({b"$LXDEV": struct.pack("<II", 4, 66)}) == os.makedev(4, 66)
    assert wsl_device({}) == 0


def test_filetimes() -> None:
    assert filetime_ns(116_444_736_000_000_000) == 0
    assert filetime_ns(116_444_736_000_000_001) == 100
    assert filetime_ns(0) == -11_644_473_600 * 10**9  # 1601-01-01


def restart_page(in_use: int, flags: int, signature: bytes = b"RSTR") -> bytes:
    page = bytearray(4096)
    page[0:30] = struct.pack("<4sHHQIIHHH", signature, 30, 9, 0, 4096, 4096, 64, 1, 1)
    page[64:80] = struct.pack("<QHHHH", 0x1000, 1, 0xFFFF, in_use, flags)
    check = b"\x01\x00"
    page[30:32] = check
    for i in range(1, 9):
        page[30 + 2 * i : 32 + 2 * i] = page[i * 512 - 2 : i * 512]
        page[i * 512 - 2 : i * 512] = check
    return bytes(page)


def test_logfile_states() -> None:
    assert journal.unclean_reason(0, BytesStream(b"\xff" * 8192)) == ""
    assert journal.unclean_reason(0, BytesStream(restart_page(0xFFFF, 0))) == ""
    assert journal.unclean_reason(0, BytesStream(restart_page(0, 2))) == ""
    assert "never replayed" in journal.unclean_reason(0, BytesStream(restart_page(0, 0)))
    assert "chkdsk" in journal.unclean_reason(0, BytesStream(restart_page(0, 0, b"CHKD")))
    assert "dirty" in journal.unclean_reason(journal.VOLUME_IS_DIRTY, None)
