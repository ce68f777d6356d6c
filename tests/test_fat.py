"""FAT12/16/32 images made by mkfs.fat and filled by mtools, mounted through FUSE and compared with the tree
they were made from; damaged chains and directories; strict detection; the real-world corpus.

The patching helpers read the boot sector and directories themselves, independently of imgfs, so that a
fixture never depends on the code it tests.
"""

from __future__ import annotations

import bz2
import errno
import hashlib
import itertools
import json
import os
import plistlib
import struct
import subprocess
import time
import zlib
from pathlib import Path
from typing import Optional

import pytest
from conftest import compare_trees, read_errno, run_imgfs, sha256_of, tree_entries
from corpuslib import corpus_dir
from isotools import pseudo_random, write_file

from imgfs.errors import CorruptImage, ImageError
from imgfs.filesystems.fat import FatFilesystem, dostime, probe
from imgfs.filesystems.fat.directory import lfn_checksum
from imgfs.filesystems.fat.table import FatTable
from imgfs.io.cache import BlockCache
from imgfs.io.stream import BytesStream, FileStream, SliceStream, Stream
from imgfs.layer import OpenContext
from imgfs.tree import Tree

MTIME = 1_600_000_000  # even: FAT keeps times to 2 seconds
MTOOLS_ENV = {**os.environ, "MTOOLS_SKIP_CHECK": "1", "LC_ALL": "C.UTF-8"}  # mtools reads names in the locale
CORPUS = corpus_dir()
VARIANTS = {  # name: (FAT bits, extra mkfs.fat arguments, size in KiB)
    "fat12": (12, ["-s", "8"], 15 * 1024),  # 4 KiB clusters, 3,840 of them
    "fat16": (16, [], 64 * 1024),
    "fat32": (32, ["-s", "1"], 64 * 1024),  # 512-byte clusters: a 3 MiB file is a 6,000-cluster chain
    "fat16-4k-sectors": (16, ["-S", "4096"], 64 * 1024),
}


# -- building images ------------------------------------------------------------------------------------


def build_tree(root: Path, *, odd_seconds: bool = False, emoji: bool = False) -> Path:
    """Names that exercise 8.3 case flags, long names and Unicode; a deep tree, a big directory, a big file.
    ``odd_seconds``: timestamps one second apart (for exFAT), else two (FAT's resolution)."""
    stamps = itertools.count(MTIME, 1 if odd_seconds else 2)

    def put(rel: str, data: bytes) -> None:
        write_file(root / rel, data, mtime=next(stamps))

    put("readme.txt", b"lower-case 8.3 name: no long name needed\n")
    put("lower.TXT", b"lower-case base\n")
    put("UPPER.txt", b"lower-case extension\n")
    put("UP.TXT", b"plain 8.3\n")
    put("Mixed.Case.txt", b"mixed case needs a long name\n")
    put("noext", b"no extension\n")
    put(".hidden", b"dot file\n")
    put("a file name much longer than thirteen characters.text", b"long name\n")
    put("naïve café.txt", b"latin\n")
    put("日本語のファイル名.txt", b"cjk\n")
    put("Grüße ☃ — dash.txt", b"symbols\n")
    put("L" * 255, b"the longest name\n")
    put("empty", b"")
    put("big/three-mib.bin", pseudo_random((3 << 20) + 12345, 1))
    put("sub dir/inner.txt", b"inner\n")
    put("/".join(f"level{i:02d}" for i in range(30)) + "/leaf.txt", b"deep\n")
    for i in range(1100):  # lower-case 8.3 names: mtools adds them fast
        put(f"many/f{i:04d}.dat", f"file {i}\n".encode())
    for i in range(200):  # long names whose 8.3 forms never collide
        put(f"long/{i:04d} with a long file name.txt", f"long {i}\n".encode())
    if emoji:  # mtools cuts characters outside the BMP to 16 bits, so only for exFAT
        put("emoji 🎉 party.txt", b"surrogate pair\n")
    return root


def mkfs_fat(image: Path, bits: int, size_kib: int, *args: str) -> Path:
    image.unlink(missing_ok=True)
    subprocess.run(["mkfs.fat", "-F", str(bits), *args, "-C", str(image), str(size_kib)], check=True,
                   capture_output=True)
    return image


def mcopy(image: Path, *sources: Path, target: str = "::/") -> None:
    subprocess.run(["mcopy", "-s", "-m", "-i", str(image), *map(str, sources), target], env=MTOOLS_ENV, check=True,
                   capture_output=True)


def mtools(command: str, image: Path, *args: str) -> None:
    subprocess.run([command, "-i", str(image), *args], env=MTOOLS_ENV, check=True, capture_output=True)


def fill(image: Path, source: Path) -> Path:
    mcopy(image, *sorted(source.iterdir()))
    return image


@pytest.fixture(scope="module")
def source_tree(tmp_path_factory) -> Path:
    return build_tree(tmp_path_factory.mktemp("fat-src") / "src")


@pytest.fixture(scope="module", params=list(VARIANTS))
def fat_image(request, tmp_path_factory, source_tree) -> tuple[str, Path]:
    bits, args, size = VARIANTS[request.param]
    image = tmp_path_factory.mktemp(request.param) / f"{request.param}.img"
    mkfs_fat(image, bits, size, "-n", "TESTVOL", "-i", "1234ABCD", *args)
    return request.param, fill(image, source_tree)


def open_fat(image: Path) -> FatFilesystem:
    return FatFilesystem(FileStream(str(image)), OpenContext(str(image), BlockCache(8 << 20)))


# -- an independent reader of the structures the tests patch ---------------------------------------------


class Layout:
    """Just enough of a FAT volume to find entries and clusters and to patch the tables."""

    def __init__(self, image: bytes) -> None:
        bps, spc, reserved, fats, root_entries, total16, _, fat16 = struct.unpack_from("<HBHBHHBH", image, 11)
        total = total16 or struct.unpack_from("<I", image, 32)[0]
        fat_sectors = fat16 or struct.unpack_from("<I", image, 36)[0]
        root_sectors = (root_entries * 32 + bps - 1) // bps
        self.bps, self.cluster, self.fats, self.fat_bytes = bps, bps * spc, fats, fat_sectors * bps
        self.fat_offset = reserved * bps
        self.root_offset = (reserved + fats * fat_sectors) * bps
        self.data_offset = self.root_offset + root_sectors * bps
        self.count = (total - reserved - fats * fat_sectors - root_sectors) // spc
        self.bits = 32 if fat16 == 0 else (12 if self.count < 4085 else 16)
        if self.bits == 32:
            self.root_offset = self.cluster_offset(struct.unpack_from("<I", image, 44)[0])
        self.root_size = root_entries * 32 or self.cluster

    def cluster_offset(self, cluster: int) -> int:
        return self.data_offset + (cluster - 2) * self.cluster

    def find(self, image: bytes, short: bytes, directory: Optional[int] = None) -> int:
        """Byte offset of the 8.3 entry named ``short`` (11 bytes) in the root or the directory at an offset."""
        start = self.root_offset if directory is None else directory
        for pos in range(start, start + self.root_size, 32):
            if image[pos : pos + 11] == short and image[pos + 11] != 0x0F:
                return pos
        raise KeyError(short)

    def first_cluster(self, image: bytes, entry: int) -> int:
        high = struct.unpack_from("<H", image, entry + 20)[0] if self.bits == 32 else 0
        return high << 16 | struct.unpack_from("<H", image, entry + 26)[0]

    def set_link(self, image: bytearray, cluster: int, value: int) -> None:
        """Make ``cluster`` point to ``value`` in every copy of the FAT."""
        for copy in range(self.fats):
            base = self.fat_offset + copy * self.fat_bytes
            if self.bits == 12:
                pos = base + cluster * 3 // 2
                pair = struct.unpack_from("<H", image, pos)[0]
                pair = (pair & 0x000F) | value << 4 if cluster & 1 else (pair & 0xF000) | value
                struct.pack_into("<H", image, pos, pair)
            elif self.bits == 16:
                struct.pack_into("<H", image, base + cluster * 2, value)
            else:
                struct.pack_into("<I", image, base + cluster * 4, value)

    @property
    def end_of_chain(self) -> int:
        return {12: 0xFFF, 16: 0xFFFF, 32: 0x0FFFFFFF}[self.bits]


def short83(name: str) -> bytes:
    base, _, ext = name.upper().partition(".")
    return (base.ljust(8) + ext.ljust(3)).encode()


def patch(image: Path, change) -> None:
    data = bytearray(image.read_bytes())
    change(data, Layout(bytes(data)))
    image.write_bytes(bytes(data))


# -- generated images through FUSE ----------------------------------------------------------------------


def test_every_name_size_byte_and_mtime(fat_image, source_tree, mount):
    _, image = fat_image
    with mount(image) as root:
        count = compare_trees(source_tree, root, modes=False, owners=False, nlink=False)
        assert count > 1300
        for path, st in tree_entries(root).items():
            assert oct(st.st_mode & 0o7777) == ("0o555" if os.path.isdir(root / path) else "0o444"), path


def test_info_names_the_type_label_and_serial(fat_image):
    name, image = fat_image
    layer = json.loads(run_imgfs("info", "--json", str(image), check=True).stdout)["layers"][-1]
    bits, args, size = VARIANTS[name]
    assert layer["type"] == f"FAT{bits}"
    assert (layer["label"], layer["serial"]) == ("TESTVOL", "1234-ABCD")
    assert layer["volume_size"] == size * 1024


def test_inode_numbers_are_stable_and_unique(fat_image):
    _, image = fat_image
    first = {path: node.ino for path, node in Tree(open_fat(image)).walk()}
    tree, fs = Tree(), open_fat(image)  # the volume mounted in a folder: the tree gives it its own range
    tree.mount(tree.root, "volume", fs)
    second = {path.removeprefix("/volume"): tree.attributes(node, fs).ino for path, node in tree.walk("/volume")}
    assert len(set(first.values())) == len(first) and 0 not in first.values()
    assert all(second[path] == ino + (1 << 48) for path, ino in first.items())


def test_lower_case_short_names_use_the_nt_flags(tmp_path):
    """mtools stores ``readme.txt`` as 8.3 ``README  TXT`` with flag 0x18 and no long name, as Windows does;
    ``lower.TXT`` gets 0x08 and ``UPPER.txt`` 0x10. Shown as written, like Windows and Linux show them."""
    src = tmp_path / "src"
    for name in ("readme.txt", "lower.TXT", "UPPER.txt", "UP.TXT", "lower"):
        write_file(src / name, name.encode())
    image = fill(mkfs_fat(tmp_path / "case.img", 16, 32 * 1024), src)
    data = image.read_bytes()
    layout = Layout(data)
    for short, flags in ((b"README  TXT", 0x18), (b"LOWER   TXT", 0x08), (b"UPPER   TXT", 0x10),
                         (b"UP      TXT", 0x00), (b"LOWER      ", 0x08)):
        pos = layout.find(data, short)
        assert data[pos + 12] == flags and data[pos - 32 + 11] != 0x0F, short
    fs = open_fat(image)
    assert sorted(fs.children(fs.root)) == sorted(os.listdir(src))


def test_long_name_with_a_wrong_checksum_falls_back_to_the_short_name(tmp_path, mount):
    src = tmp_path / "src"
    write_file(src / "a file with a long name.txt", b"orphaned long name\n")
    write_file(src / "another long name.txt", b"intact\n")
    image = fill(mkfs_fat(tmp_path / "lfn.img", 12, 1440), src)
    data = image.read_bytes()
    layout = Layout(data)
    short = next(data[pos : pos + 11] for pos in range(layout.root_offset, layout.root_offset + 512, 32)
                 if data[pos : pos + 2] == b"AF" and data[pos + 11] != 0x0F)
    assert lfn_checksum(short) == data[layout.find(data, short) - 32 + 13]  # mtools wrote a valid run

    def break_checksums(image: bytearray, layout: Layout) -> None:
        pos = layout.find(bytes(image), short) - 32
        while image[pos + 11] == 0x0F:
            image[pos + 13] ^= 0x55  # consistent among the long entries, wrong for the 8.3 entry
            pos -= 32

    patch(image, break_checksums)
    shown = short[:8].rstrip().decode() + "." + short[8:].rstrip().decode()
    with mount(image) as root:
        assert sorted(os.listdir(root)) == sorted([shown, "another long name.txt"])
        assert (root / shown).read_bytes() == b"orphaned long name\n"


def test_fragmented_file_reads_back(tmp_path, mount):
    src = tmp_path / "src"
    for i in range(40):
        write_file(src / f"f{i:02d}.bin", pseudo_random(6000, i))
    image = fill(mkfs_fat(tmp_path / "frag.img", 16, 32 * 1024, "-s", "4"), src)  # 2 KiB clusters
    mtools("mdel", image, *[f"::/f{i:02d}.bin" for i in range(0, 40, 2)])
    big = pseudo_random(150_000, 99)
    write_file(tmp_path / "later" / "big.bin", big)
    mcopy(image, tmp_path / "later" / "big.bin")
    fs = open_fat(image)
    node = fs.children(fs.root)["big.bin"]
    runs, _ = fs.table.walk(node.handle.cluster, 10**6, "big.bin")
    assert len(runs) > 10, "mtools did not fragment the file: the test proves nothing"
    assert fs.open(node) is fs.open(node)  # the extent list is built once
    with mount(image) as root:
        assert (root / "big.bin").read_bytes() == big
        assert (root / "f01.bin").read_bytes() == pseudo_random(6000, 1)


def test_label_comes_from_the_root_entry_before_the_boot_sector(tmp_path):
    image = mkfs_fat(tmp_path / "label.img", 16, 32 * 1024, "-n", "ROOTLABEL")
    with open(image, "r+b") as f:
        f.seek(43)
        f.write(b"BPB LABEL  ")
    assert open_fat(image).label == "ROOTLABEL"
    plain = mkfs_fat(tmp_path / "plain.img", 32, 64 * 1024, "-s", "1")
    assert open_fat(plain).label == ""  # "NO NAME" in the boot sector means none
    with open(plain, "r+b") as f:
        f.seek(71)
        f.write(b"BPB LABEL  ")
    assert open_fat(plain).label == "BPB LABEL"


def test_times_are_local_time(tmp_path, monkeypatch):
    """FAT stores local time: the same image shows other instants in other time zones, and the instant
    mtools was given in the zone it ran in."""
    src = tmp_path / "src"
    write_file(src / "f.txt", b"x", mtime=MTIME)
    image = tmp_path / "tz.img"
    mkfs_fat(image, 12, 1440)
    mtimes = {}
    try:
        for zone in ("UTC0", "JST-9"):
            monkeypatch.setenv("TZ", zone)
            time.tzset()
            dostime.local_ns.cache_clear()
            if zone == "UTC0":
                subprocess.run(["mcopy", "-m", "-i", str(image), str(src / "f.txt"), "::/"],
                               env={**MTOOLS_ENV, "TZ": zone}, check=True)
            fs = open_fat(image)
            mtimes[zone] = fs.children(fs.root)["f.txt"].mtime_ns
    finally:
        monkeypatch.undo()
        time.tzset()
        dostime.local_ns.cache_clear()
    assert mtimes["UTC0"] == MTIME * 10**9
    assert mtimes["UTC0"] - mtimes["JST-9"] == 9 * 3600 * 10**9


# -- damage ------------------------------------------------------------------------------------------------


@pytest.fixture
def victims(tmp_path) -> tuple[Path, dict[str, bytes]]:
    """A FAT16 volume with 2 KiB clusters: six 5-cluster files at the root, a directory, a good file."""
    src = tmp_path / "src"
    files = {f"{name}.bin": pseudo_random(5 * 2048 - 100, i) for i, name in
             enumerate(("loop", "past", "free", "bad", "short", "good"))}
    for name, data in files.items():
        write_file(src / name, data)
    write_file(src / "subdir" / "inner.txt", b"inner\n")
    write_file(src / "other" / "fine.txt", b"fine\n")
    return fill(mkfs_fat(tmp_path / "victims.img", 16, 32 * 1024, "-s", "4"), src), files


def test_damaged_chains_give_eio_on_those_files_only(victims, tmp_path, mount):
    image, files = victims

    def damage(data: bytearray, layout: Layout) -> None:
        first = {name: layout.first_cluster(bytes(data), layout.find(bytes(data), short83(name))) for name in files}
        layout.set_link(data, first["loop.bin"] + 2, first["loop.bin"])  # back to its own start
        layout.set_link(data, first["past.bin"], layout.count + 50)
        layout.set_link(data, first["free.bin"] + 1, 0)
        layout.set_link(data, first["bad.bin"] + 1, layout.end_of_chain - 8)
        layout.set_link(data, first["short.bin"] + 1, layout.end_of_chain)
        subdir = layout.first_cluster(bytes(data), layout.find(bytes(data), b"SUBDIR     "))
        layout.set_link(data, subdir, subdir)  # a directory whose chain is a loop of one

    patch(image, damage)
    log = tmp_path / "imgfs.log"
    with mount(image, f"logfile={log}") as root:
        assert sorted(os.listdir(root)) == sorted([*files, "subdir", "other"])
        for name in ("loop.bin", "past.bin", "free.bin", "bad.bin", "short.bin"):
            assert os.stat(root / name).st_size == len(files[name])
            assert read_errno(root / name) == errno.EIO, name
        with pytest.raises(OSError) as caught:
            os.listdir(root / "subdir")
        assert caught.value.errno == errno.EIO
        assert (root / "good.bin").read_bytes() == files["good.bin"]
        assert (root / "other" / "fine.txt").read_bytes() == b"fine\n"
    text = log.read_text()
    for fragment in ("loops", "past the end", "free cluster", "bad cluster", "ends after 2 clusters"):
        assert fragment in text, fragment
    assert "Traceback" not in text


@pytest.mark.parametrize("bits,args,size", [(12, [], 1440), (16, [], 32 * 1024), (32, ["-s", "8"], 300_000)])
def test_cluster_loop_in_each_fat_width(tmp_path, mount, bits, args, size):
    src = tmp_path / "src"
    data = pseudo_random(40_000, 5)
    write_file(src / "victim.bin", data)
    write_file(src / "fine.txt", b"fine\n")
    image = fill(mkfs_fat(tmp_path / "loop.img", bits, size, *args), src)

    def loop(image: bytearray, layout: Layout) -> None:
        first = layout.first_cluster(bytes(image), layout.find(bytes(image), b"VICTIM  BIN"))
        assert layout.bits == bits
        layout.set_link(image, first + 3, first + 1)

    patch(image, loop)
    with mount(image) as root:
        assert read_errno(root / "victim.bin") == errno.EIO
        assert (root / "fine.txt").read_bytes() == b"fine\n"


def test_directory_pointing_at_its_parent_is_not_an_endless_tree(tmp_path, mount):
    src = tmp_path / "src"
    write_file(src / "a" / "b" / "c.txt", b"c\n")
    write_file(src / "a" / "fine.txt", b"fine\n")
    image = fill(mkfs_fat(tmp_path / "cycle.img", 32, 300_000, "-s", "8"), src)

    def cycle(image: bytearray, layout: Layout) -> None:
        data = bytes(image)
        a = layout.first_cluster(data, layout.find(data, b"A          "))
        b = layout.find(data, b"B          ", layout.cluster_offset(a))
        struct.pack_into("<HH", image, b + 20, a >> 16, 0)
        struct.pack_into("<H", image, b + 26, a & 0xFFFF)

    patch(image, cycle)
    with mount(image) as root:  # a directory shown a second time lists as empty, as on every filesystem
        assert sorted(os.listdir(root / "a")) == ["b", "fine.txt"]
        assert os.listdir(root / "a" / "b") == []
        assert (root / "a" / "fine.txt").read_bytes() == b"fine\n"
        done = subprocess.run(["find", str(root)], capture_output=True, text=True, timeout=60)
        assert done.stdout.count("\n") == 4  # root, a, a/b, a/fine.txt
    done = run_imgfs("ls", "-R", str(image), check=True)
    assert done.stdout.split() == ["/a", "/a/b", "/a/fine.txt"]
    assert "directory 'b' is shown elsewhere already" in done.stderr and len(done.stderr.splitlines()) == 1


def test_truncated_image(tmp_path, mount):
    src = tmp_path / "src"
    write_file(src / "early.txt", b"early\n")
    big = pseudo_random(3 << 20, 8)
    write_file(src / "late.bin", big)
    image = tmp_path / "cut.img"
    mkfs_fat(image, 16, 32 * 1024)
    mcopy(image, src / "early.txt")
    mcopy(image, src / "late.bin")
    data = image.read_bytes()
    layout = Layout(data)
    start = layout.cluster_offset(layout.first_cluster(data, layout.find(data, b"LATE    BIN")))
    with open(image, "r+b") as f:
        f.truncate(start + len(big) // 2)
    with mount(image) as root:
        assert (root / "early.txt").read_bytes() == b"early\n"
        with open(root / "late.bin", "rb") as f:
            assert f.read(1 << 20) == big[: 1 << 20]
            with pytest.raises(OSError) as caught:
                f.read()
            assert caught.value.errno == errno.EIO
    with open(image, "r+b") as f:
        f.truncate(layout.root_offset + 16)  # the root directory is cut: nothing to mount
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    done = run_imgfs(str(image), str(mnt))
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and "fat: the root directory" in done.stderr


# -- the table and the boot sector, in memory -----------------------------------------------------------------


def fat16_table(links: dict[int, int], count: int = 100) -> FatTable:
    entries = [0xFFF8, 0xFFFF] + [0] * count
    for cluster, value in links.items():
        entries[cluster] = value
    stream = BytesStream(struct.pack(f"<{len(entries)}H", *entries))
    return FatTable(stream, 0, 16, count, BlockCache(1 << 20), "fat")


def test_chain_runs_are_merged_and_bounded():
    table = fat16_table({2: 3, 3: 4, 4: 10, 10: 11, 11: 0xFFFF, 20: 21, 21: 22, 22: 23, 23: 0xFFFF})
    assert table.walk(2, 100, "f") == ([(2, 3), (10, 2)], True)
    assert table.walk(20, 2, "f") == ([(20, 2)], False)  # the limit stops the walk, the caller decides
    for links, fragment in (({2: 3, 3: 2}, "loops"), ({2: 0}, "free cluster"), ({2: 0xFFF7}, "bad cluster"),
                            ({2: 500}, "past the end"), ({2: 1}, "reserved"), ({2: 0xFFF0}, "reserved")):
        with pytest.raises(CorruptImage, match=fragment):
            fat16_table(links).walk(2, 100, "f")
    with pytest.raises(CorruptImage, match="first cluster"):
        fat16_table({}).walk(0, 10, "f")


def test_a_long_loop_is_found_within_the_limit():
    links = {c: c + 1 for c in range(2, 60)}
    links[60] = 2
    with pytest.raises(CorruptImage, match="loops"):
        fat16_table(links).walk(2, 100, "f")


def boot_sector(tmp_path: Path) -> bytes:
    return mkfs_fat(tmp_path / "bs.img", 16, 32 * 1024).read_bytes()[:512]


@pytest.mark.parametrize("offset,value", [(0, b"\x00"), (11, b"\x58\x02"), (13, b"\x03"), (14, b"\x00\x00"),
                                          (16, b"\x00"), (16, b"\x05"), (21, b"\x12"), (19, b"\x00\x00"),
                                          (22, b"\x01\x00"), (510, b"\x55\x00")])
def test_probe_rejects_each_implausible_field(tmp_path, offset, value):
    raw = bytearray(boot_sector(tmp_path))
    assert probe(BytesStream(bytes(raw)))
    raw[offset : offset + len(value)] = value
    if offset == 19:  # no 16-bit total and no 32-bit one
        raw[32:36] = bytes(4)
    assert not probe(BytesStream(bytes(raw)))


def test_probe_rejects_master_boot_records():
    grub_like = bytearray(512)
    grub_like[0:3] = b"\xeb\x63\x90"  # GRUB's boot.img starts with a short jump too
    grub_like[446:462] = bytes([0x80, 0, 0, 0, 0x83, 0, 0, 0]) + (2048).to_bytes(4, "little") + (10**6).to_bytes(
        4, "little")
    grub_like[510:512] = b"\x55\xaa"
    assert not probe(BytesStream(bytes(grub_like)))
    assert not probe(BytesStream(bytes(510) + b"\x55\xaa"))
    assert not probe(BytesStream(b"\xeb\x3c\x90"))
    mbrs = sorted((CORPUS / "raw").glob("*/*.bin")) + sorted((CORPUS / "raw").glob("*/*.img"))
    for path in mbrs:
        raw = path.read_bytes()[:512]
        if raw[510:512] == b"\x55\xaa" and path.name != "fs.hexpat.img":
            assert not probe(BytesStream(raw)), path


# -- the real-world corpus --------------------------------------------------------------------------------------


def corpus_file(rel: str) -> Path:
    path = CORPUS / rel
    if not path.is_file():
        pytest.skip(f"{path} is not in the corpus")
    return path


def test_corpus_virtualbox_floppy(mount):
    image = corpus_file("raw/imhex/fs.hexpat.img")
    volume = json.loads(image.with_name(image.name + ".json").read_text())["volumes"][0]
    layer = json.loads(run_imgfs("info", "--json", str(image), check=True).stdout)["layers"][-1]
    serial = int(volume["volume_serial"])
    assert layer["type"] == "FAT12" and layer["label"] == volume["label"]
    assert layer["serial"] == f"{serial >> 16:04X}-{serial & 0xFFFF:04X}"
    with mount(image) as root:
        assert os.listdir(root) == [e["path"] for e in volume["entries"]] == []


def udif_disk(path: Path) -> bytes:
    """The disk inside a UDIF .dmg (raw, zero, zlib and bzip2 chunks), decoded by the test itself."""
    data = path.read_bytes()
    koly = data[-512:]
    assert koly[:4] == b"koly"
    xml_offset, xml_length = struct.unpack_from(">QQ", koly, 0xD8)
    plist = plistlib.loads(data[xml_offset : xml_offset + xml_length])
    disk = bytearray()
    for block in plist["resource-fork"]["blkx"]:
        mish = block["Data"]
        first_sector, _, data_offset = struct.unpack_from(">QQQ", mish, 8)
        for at in range(204, len(mish), 40):
            kind, _, sector, sectors, offset, length = struct.unpack_from(">IIQQQQ", mish, at)
            if kind in (0x7FFFFFFE, 0xFFFFFFFF):  # a comment, the end
                continue
            start, chunk = (first_sector + sector) * 512, data[data_offset + offset : data_offset + offset + length]
            if kind == 1:
                decoded = chunk
            elif kind == 0x80000005:
                decoded = zlib.decompress(chunk)
            elif kind == 0x80000006:
                decoded = bz2.decompress(chunk)
            else:  # 0 and 2: zeros
                decoded = bytes(sectors * 512)
            disk[len(disk) :] = bytes(max(0, start + sectors * 512 - len(disk)))
            disk[start : start + len(decoded)] = decoded
    return bytes(disk)


def oracle_view(fs: FatFilesystem) -> list[dict]:
    """The mount as the corpus oracle describes it: FAT times are local, written without a zone."""
    found = []
    tree = Tree(fs)
    for path, node in tree.walk():
        entry = {"path": path, "type": "dir" if node.is_dir else "file",
                 "mtime": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(node.mtime_ns // 10**9))}
        if not node.is_dir:
            data = fs.open(node).pread(0, node.size)
            entry.update(size=node.size, sha256=hashlib.sha256(data).hexdigest())
        found.append(entry)
    return sorted(found, key=lambda e: e["path"])


@pytest.mark.parametrize("dmg", ["compression-zlib.dmg", "compression-bz2.dmg", "compression-raw.dmg"])
def test_corpus_windows_fat12_partitions(dmg, tmp_path, mount):
    """Two FAT12 volumes formatted by Windows (long names, hidden system folders) inside an MBR disk."""
    image = corpus_file(f"dmg/node-udif/{dmg}")
    oracle = json.loads(image.with_name(image.name + ".json").read_text())
    disk = udif_disk(image)
    parts = [struct.unpack_from("<II", disk, 446 + 16 * i + 8) for i in range(4)]
    parts = [(first * 512, count * 512) for first, count in parts if count]
    assert len(parts) == len(oracle["volumes"]) == 2
    for (offset, size), volume in zip(parts, oracle["volumes"]):
        stream: Stream = SliceStream(BytesStream(disk), offset, size)
        fs = FatFilesystem(stream, OpenContext("test", BlockCache(1 << 20)))
        assert (fs.fat_type, fs.label) == ("FAT12", volume["label"])
        serial = int(volume["volume_serial"])
        assert fs.describe()["serial"] == f"{serial >> 16:04X}-{serial & 0xFFFF:04X}"
        keys = ("path", "type", "size", "sha256", "mtime")
        assert oracle_view(fs) == sorted(({k: e[k] for k in keys if k in e} for e in volume["entries"]),
                                         key=lambda e: e["path"])
    first = tmp_path / "partition1.img"
    first.write_bytes(disk[parts[0][0] : parts[0][0] + parts[0][1]])
    with mount(first) as root:
        readme = root / "README.txt"
        assert sha256_of(readme) == next(e["sha256"] for e in oracle["volumes"][0]["entries"]
                                         if e["path"] == "/README.txt")
        assert sorted(os.listdir(root)) == ["$RECYCLE.BIN", "README.txt", "System Volume Information"]


def test_corpus_partition_dumps_are_not_fat():
    for path in sorted((CORPUS / "raw").glob("node-*/*.bin")):
        with pytest.raises(ImageError):
            FatFilesystem(BytesStream(path.read_bytes()), OpenContext("test", BlockCache(1 << 20)))


# -- speed ----------------------------------------------------------------------------------------------------


def test_listing_20000_files_is_fast(tmp_path):
    src = tmp_path / "src"
    for d in range(20):
        for i in range(1000):  # long names with unique 8.3 forms (mtools is quadratic on ~N collisions)
            path = src / f"dir{d:02d}" / f"{d:02d}{i:04d} file with a long name.txt"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(b"x")
    image = fill(mkfs_fat(tmp_path / "speed.img", 32, 200 * 1024), src)
    fs = open_fat(image)
    dirs = list(fs.children(fs.root).values())
    start = time.perf_counter()
    total = sum(len(fs.children(node)) for node in dirs)
    elapsed = time.perf_counter() - start
    assert total == 20_000
    print(f"FAT32: {total} entries listed in {elapsed:.3f} s ({total / elapsed:,.0f} entries/s)")
    assert elapsed < 1.0  # about 0.15 s on the development machine
