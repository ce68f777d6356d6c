"""Partitioned disks (MBR with logical partitions, GPT with 512- and 4096-byte sectors, APM), split raw
images, and the tree of one folder per volume, through real FUSE mounts."""

from __future__ import annotations

import hashlib
import json
import os
import struct
import subprocess
import zlib
from pathlib import Path

import pytest
from conftest import compare_trees, run_imgfs
from disktools import blank, fdisk, partitions, put, sfdisk, write_mbr
from isotools import pseudo_random, write_file, xorriso

MIB = 1 << 20


def small_iso(tmp_path: Path, label: str) -> bytes:
    src = tmp_path / f"src-{label}"
    write_file(src / f"{label}.txt", f"inside {label}\n".encode())
    iso = xorriso(tmp_path / f"{label}.iso", src, "-volid", label)
    return iso.read_bytes()


def json_info(image: Path) -> dict:
    return json.loads(run_imgfs("info", "--json", str(image), check=True).stdout)


@pytest.fixture(scope="module")
def isos(tmp_path_factory) -> dict[str, bytes]:
    base = tmp_path_factory.mktemp("isos")
    return {label: small_iso(base, label) for label in ("ALPHA", "BRAVO", "CHARLIE")}


def test_mbr_with_primary_and_logical_partitions(tmp_path, mount, isos):
    disk = blank(tmp_path / "mbr.img", 40 * MIB)
    layout = sfdisk(disk, "label: dos\n,4M,L\n,4M,L\n,4M,83\n,,E\n,4M,L\n,4M,L\n,4M,L\n")
    starts = {int(p["node"].rsplit("img", 1)[1]): p["start"] * 512 for p in layout}
    assert sorted(starts) == [1, 2, 3, 4, 5, 6, 7]
    put(disk, starts[1], isos["ALPHA"])
    put(disk, starts[5], isos["BRAVO"])
    put(disk, starts[7], isos["CHARLIE"])
    raw = pseudo_random(4 * MIB, 31)
    put(disk, starts[6], raw)
    with mount(disk) as root:
        assert sorted(os.listdir(root)) == ["1 ALPHA", "2.img", "3.img", "5 BRAVO", "6.img", "7 CHARLIE"]
        assert (root / "5 BRAVO" / "BRAVO.txt").read_bytes() == b"inside BRAVO\n"
        assert (root / "7 CHARLIE" / "CHARLIE.txt").read_bytes() == b"inside CHARLIE\n"
        assert (root / "6.img").read_bytes() == raw
        assert os.stat(root / "2.img").st_size == 4 * MIB
        inodes = {os.stat(root / d / f"{d.split()[1]}.txt").st_ino for d in ("1 ALPHA", "5 BRAVO", "7 CHARLIE")}
        assert len(inodes) == 3, "volumes must not share inode numbers"
    table = json_info(disk)["layers"][1]
    assert table["layer"] == "mbr"
    assert [(p["number"], p["type_id"]) for p in table["partitions"]] == [
        (1, "0x83"), (2, "0x83"), (3, "0x83"), (4, "0x05"), (5, "0x83"), (6, "0x83"), (7, "0x83")]


def gpt_disk(path: Path, sector_size: int) -> Path:
    disk = blank(path, 64 * MIB)
    fdisk(disk, "g\nn\n1\n\n+8M\nn\n2\n\n+8M\nx\nn\n1\nfirst-part\nr\nw\n", sector_size)
    return disk


@pytest.mark.parametrize("sector_size", [512, 4096])
def test_gpt_with_512_and_4096_byte_sectors(tmp_path, mount, isos, sector_size):
    disk = gpt_disk(tmp_path / "gpt.img", sector_size)
    table = json_info(disk)["layers"][1]
    assert (table["layer"], table["sector_size"]) == ("gpt", sector_size)
    first, second = table["partitions"]
    assert first["name"] == "first-part" and first["size"] == 8 * MIB and second["size"] == 8 * MIB
    assert second["start"] == first["start"] + 8 * MIB
    put(disk, first["start"], isos["ALPHA"])
    put(disk, second["start"], isos["BRAVO"])
    with mount(disk) as root:
        assert sorted(os.listdir(root)) == ["1 ALPHA", "2 BRAVO"]
        assert (root / "2 BRAVO" / "BRAVO.txt").read_bytes() == b"inside BRAVO\n"


def test_gpt_last_lba_is_inclusive(tmp_path, mount):
    disk = blank(tmp_path / "gpt.img", 8 * MIB)
    subprocess.run(["sgdisk", "-n", "1:2048:4095", str(disk)], check=True, capture_output=True)
    data = pseudo_random(2048 * 512, 32)
    put(disk, 2048 * 512, data)
    with mount(disk) as root:
        assert os.listdir(root) == ["1.img"]
        assert (root / "1.img").read_bytes() == data  # 2048 sectors: 2048..4095 inclusive


def _corrupt(disk: Path, offset: int) -> None:
    with open(disk, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0xFF]))


def test_gpt_with_a_damaged_primary_header_uses_the_backup(tmp_path, mount, isos):
    disk = gpt_disk(tmp_path / "gpt.img", 512)
    start = json_info(disk)["layers"][1]["partitions"][0]["start"]
    put(disk, start, isos["ALPHA"])
    _corrupt(disk, 512 + 40)  # inside the primary header: its CRC no longer matches
    done = run_imgfs("info", str(disk))
    assert "backup header" in done.stdout and "CRC mismatch" in done.stderr
    with mount(disk) as root:
        assert (root / "1 ALPHA" / "ALPHA.txt").read_bytes() == b"inside ALPHA\n"


def test_gpt_with_a_wrong_crc_on_both_copies_is_refused(tmp_path):
    disk = gpt_disk(tmp_path / "gpt.img", 512)
    _corrupt(disk, 512 + 40)
    _corrupt(disk, disk.stat().st_size - 512 + 40)
    done = run_imgfs("ls", str(disk))
    assert done.returncode != 0 and len(done.stderr.strip().splitlines()) == 1
    assert "gpt" in done.stderr and "CRC mismatch" in done.stderr and "Traceback" not in done.stderr


def test_partition_past_the_end_is_clipped(tmp_path, mount):
    disk = blank(tmp_path / "disk.img", 8 * MIB)
    write_mbr(disk, [(0x83, 2048, 30000)])
    data = pseudo_random(8 * MIB - 2048 * 512, 33)
    put(disk, 2048 * 512, data)
    done = run_imgfs("ls", "-l", str(disk))
    assert "clipped" in done.stderr
    with mount(disk) as root:
        assert (root / "1.img").read_bytes() == data


def test_overlapping_partitions_are_both_shown_with_a_warning(tmp_path, mount):
    disk = blank(tmp_path / "disk.img", 8 * MIB)
    write_mbr(disk, [(0x83, 2048, 8192), (0x83, 6144, 8192)])
    content = pseudo_random(8 * MIB, 34)
    put(disk, 2048 * 512, content[2048 * 512 :])
    done = run_imgfs("info", str(disk))
    assert "overlap" in done.stderr
    with mount(disk) as root:
        assert (root / "1.img").read_bytes() == content[2048 * 512 : (2048 + 8192) * 512]
        assert (root / "2.img").read_bytes() == content[6144 * 512 : (6144 + 8192) * 512]


def test_ebr_chain_that_loops(tmp_path, mount):
    disk = blank(tmp_path / "disk.img", 16 * MIB)
    layout = sfdisk(disk, "label: dos\n,2M,83\n,,E\n,2M,83\n,2M,83\n")
    extended = next(p for p in layout if p["type"] == "5")["start"]
    second_ebr = next(p for p in layout if p["node"].endswith("img6"))["start"] - 2048
    # the second EBR's link points back at the first EBR
    put(disk, second_ebr * 512 + 446 + 16 + 8, struct.pack("<I", 0))
    put(disk, second_ebr * 512 + 446 + 16 + 4, b"\x05")
    put(disk, second_ebr * 512 + 446 + 16 + 12, struct.pack("<I", 1))
    assert extended  # the chain: EBR 1 -> EBR 2 -> EBR 1 -> ...
    done = run_imgfs("ls", str(disk))
    assert done.returncode == 0, done.stderr
    assert "loops" in done.stderr and "Traceback" not in done.stderr
    assert done.stdout.split() == ["1.img", "5.img", "6.img"]


def test_split_raw_image(tmp_path, mount, isos):
    disk = blank(tmp_path / "whole.img", 12 * MIB)
    layout = sfdisk(disk, "label: dos\n,8M,83\n")
    put(disk, layout[0]["start"] * 512, isos["CHARLIE"])
    data = disk.read_bytes()
    for index, start in enumerate(range(0, len(data), 5 * MIB), start=1):
        (tmp_path / f"disk.raw.{index:03d}").write_bytes(data[start : start + 5 * MIB])
    info = json_info(tmp_path / "disk.raw.001")
    assert info["layers"][0]["segments"] == 3 and info["layers"][0]["size"] == len(data)
    with mount(tmp_path / "disk.raw.001") as root:
        assert (root / "CHARLIE.txt").read_bytes() == b"inside CHARLIE\n"  # one volume: at the root
    (tmp_path / "disk.raw.002").unlink()
    done = run_imgfs("ls", str(tmp_path / "disk.raw.001"))
    assert done.returncode != 0 and len(done.stderr.strip().splitlines()) == 1
    assert "disk.raw.002" in done.stderr and "missing" in done.stderr


def test_apm_disk(tmp_path, mount, isos):
    disk = bytearray(8 * MIB)
    struct.pack_into(">2sH", disk, 0, b"ER", 512)
    entries = [("Apple", "Apple_partition_map", 1, 63), ("Disk", "Apple_HFS", 64, 4096)]
    for number, (name, kind, start, blocks) in enumerate(entries, start=1):
        struct.pack_into(">2s2xIII32s32s", disk, number * 512, b"PM", len(entries), start, blocks,
                         name.encode(), kind.encode())
    alpha = isos["ALPHA"]
    disk[64 * 512 : 64 * 512 + len(alpha)] = alpha
    (tmp_path / "apm.img").write_bytes(bytes(disk))
    table = json_info(tmp_path / "apm.img")["layers"][1]
    assert table["layer"] == "apm" and [p["type"] for p in table["partitions"]] == ["Apple_partition_map",
                                                                                  "Apple_HFS"]
    with mount(tmp_path / "apm.img") as root:
        assert (root / "ALPHA.txt").read_bytes() == b"inside ALPHA\n"


def test_gpt_entry_crc_is_checked(tmp_path):
    disk = gpt_disk(tmp_path / "gpt.img", 512)
    header = disk.read_bytes()[512:1024]
    assert zlib.crc32(header[:16] + b"\0\0\0\0" + header[20:92]) == struct.unpack_from("<I", header, 16)[0]
    _corrupt(disk, 1024 + 60)  # a byte of the primary entry array
    done = run_imgfs("info", str(disk))
    assert done.returncode == 0 and "entry array CRC mismatch" in done.stderr and "backup" in done.stdout


def test_partitions_listed_by_sfdisk_match(tmp_path):
    disk = blank(tmp_path / "mbr.img", 40 * MIB)
    sfdisk(disk, "label: dos\n,4M,c\n,4M,83\n,,E\n,4M,82\n")
    ours = [(p["number"], p["start"], p["size"]) for p in json_info(disk)["layers"][1]["partitions"]]
    theirs = [(int(p["node"].rsplit("img", 1)[1]), p["start"] * 512, p["size"] * 512) for p in partitions(disk)]
    assert ours == theirs


def test_raw_partition_bytes_are_exact(tmp_path, mount):
    disk = blank(tmp_path / "disk.img", 4 * MIB)
    sfdisk(disk, "label: gpt\n,1M\n,\n")
    parts = partitions(disk)
    blobs = [pseudo_random(p["size"] * 512, 40 + i) for i, p in enumerate(parts)]
    for p, blob in zip(parts, blobs):
        put(disk, p["start"] * 512, blob)
    with mount(disk) as root:
        for i, blob in enumerate(blobs, start=1):
            assert hashlib.sha256((root / f"{i}.img").read_bytes()).digest() == hashlib.sha256(blob).digest()


def make_fat(path: Path, source: Path, size_mib: int, label: str, fat_bits: int = 32) -> bytes:
    """A FAT filesystem made by mkfs.fat and filled by mtools, as bytes."""
    blank(path, size_mib * MIB)
    cluster = ["-s", "1"] if fat_bits == 32 else []  # enough clusters for FAT32 in a small test volume
    subprocess.run(["mkfs.fat", "-F", str(fat_bits), *cluster, "-n", label, str(path)], check=True,
                   capture_output=True)
    env = {**os.environ, "MTOOLS_SKIP_CHECK": "1"}
    items = [str(p) for p in sorted(source.iterdir())]
    subprocess.run(["mcopy", "-s", "-p", "-m", "-i", str(path), *items, "::/"], check=True, capture_output=True,
                   env=env)
    return path.read_bytes()


def make_ext4(path: Path, source: Path, size_mib: int, label: str) -> bytes:
    blank(path, size_mib * MIB)
    subprocess.run(["mkfs.ext4", "-q", "-F", "-L", label, "-d", str(source), str(path)], check=True,
                   capture_output=True)
    return path.read_bytes()


def test_raspberry_pi_style_image(tmp_path, mount):
    """MBR, a FAT32 "boot" partition and an ext4 "rootfs", as Raspberry Pi OS ships it."""
    boot_src, root_src = tmp_path / "boot", tmp_path / "rootfs"
    write_file(boot_src / "config.txt", b"dtparam=audio=on\n")
    write_file(boot_src / "overlays" / "README", b"overlays\n")
    write_file(boot_src / "kernel8.img", pseudo_random(3 * MIB, 50))
    write_file(root_src / "etc" / "hostname", b"raspberrypi\n")
    write_file(root_src / "home" / "pi" / ".bashrc", b"# bashrc\n", 0o644)
    (root_src / "bin").symlink_to("usr/bin")
    write_file(root_src / "usr" / "bin" / "tool", b"#!/bin/sh\n", 0o755)
    disk = blank(tmp_path / "rpi.img", 120 * MIB)
    layout = sfdisk(disk, "label: dos\n8192,81920,c\n90112,,83\n")
    put(disk, layout[0]["start"] * 512, make_fat(tmp_path / "boot.fat", boot_src, 40, "boot"))
    put(disk, layout[1]["start"] * 512, make_ext4(tmp_path / "root.ext4", root_src, 40, "rootfs"))
    with mount(disk) as root:
        assert sorted(os.listdir(root)) == ["1 boot", "2 rootfs"]
        assert (root / "1 boot" / "config.txt").read_bytes() == b"dtparam=audio=on\n"
        assert (root / "1 boot" / "kernel8.img").read_bytes() == pseudo_random(3 * MIB, 50)
        assert (root / "2 rootfs" / "etc" / "hostname").read_bytes() == b"raspberrypi\n"
        assert os.readlink(root / "2 rootfs" / "bin") == "usr/bin"
        assert (root / "2 rootfs" / "bin" / "tool").read_bytes() == b"#!/bin/sh\n"
    layers = json_info(disk)["layers"]
    assert [(layer["layer"], layer.get("label")) for layer in layers[2:]] == [("fat", "boot"), ("ext", "rootfs")]


def test_one_filesystem_on_a_partitioned_disk_is_at_the_root(tmp_path, mount):
    src = tmp_path / "src"
    write_file(src / "only.txt", b"alone\n")
    disk = blank(tmp_path / "disk.img", 48 * MIB)
    layout = sfdisk(disk, "label: gpt\n,40M\n")
    put(disk, layout[0]["start"] * 512, make_fat(tmp_path / "p.fat", src, 40, "SOLO"))
    with mount(disk) as root:
        assert os.listdir(root) == ["only.txt"]


def test_filesystems_in_primary_and_logical_partitions_match_their_sources(tmp_path, mount):
    """FAT16, FAT32 and ext2 in primary partitions, ext4 and an empty exFAT in logical ones, a raw one
    beside them: each folder shows its source tree exactly (names, sizes, bytes, and for ext modes,
    owners, symlinks and hard links)."""
    fat_src, ext_src = tmp_path / "fat-src", tmp_path / "ext-src"
    write_file(fat_src / "A Long Name.txt", b"long\n")
    write_file(fat_src / "docs" / "deeper" / "file.bin", pseudo_random(300_000, 70))
    write_file(ext_src / "etc" / "config", b"x=1\n", 0o600)
    write_file(ext_src / "data" / "blob", pseudo_random(500_000, 71))
    os.link(ext_src / "data" / "blob", ext_src / "blob-link")
    (ext_src / "rel").symlink_to("data/blob")
    os.chown(ext_src / "etc" / "config", 1000, 1000)
    images = {
        1: make_fat(tmp_path / "p1", fat_src, 16, "FATSIXTEEN", fat_bits=16),
        2: make_fat(tmp_path / "p2", fat_src, 40, "FATTHIRTY2", fat_bits=32),
        3: _mkfs_ext(tmp_path / "p3", ext_src, "ext2", "old"),
        5: _mkfs_ext(tmp_path / "p5", ext_src, "ext4", "new"),
        6: _mkfs_exfat(tmp_path / "p6", "EXF"),
    }
    disk = blank(tmp_path / "disk.img", 200 * MIB)
    layout = sfdisk(disk, "label: dos\n,20M,6\n,44M,c\n,20M,83\n,,E\n,20M,83\n,20M,7\n,4M,83\n")
    starts = {int(p["node"].rsplit("img", 1)[1]): p["start"] * 512 for p in layout}
    for number, data in images.items():
        put(disk, starts[number], data)
    raw = pseudo_random(4 * MIB, 72)
    put(disk, starts[7], raw)
    with mount(disk) as root:
        assert sorted(os.listdir(root)) == ["1 FATSIXTEEN", "2 FATTHIRTY2", "3 old", "5 new", "6 EXF", "7.img"]
        for folder in ("1 FATSIXTEEN", "2 FATTHIRTY2"):
            compare_trees(fat_src, root / folder, modes=False, owners=False, nlink=False, mtime=False,
                          hardlinks=False)
        for folder in ("3 old", "5 new"):
            compare_trees(ext_src, root / folder, ignore=frozenset({"lost+found"}))
        assert os.listdir(root / "6 EXF") == []
        assert (root / "7.img").read_bytes() == raw


def _mkfs_ext(path: Path, source: Path, fs: str, label: str) -> bytes:
    blank(path, 20 * MIB)
    subprocess.run([f"mkfs.{fs}", "-q", "-F", "-L", label, "-d", str(source), str(path)], check=True,
                   capture_output=True)
    return path.read_bytes()


def _mkfs_exfat(path: Path, label: str) -> bytes:
    blank(path, 20 * MIB)
    subprocess.run(["mkfs.exfat", "-L", label, str(path)], check=True, capture_output=True)
    return path.read_bytes()
