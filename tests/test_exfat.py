"""exFAT images made by mkfs.exfat (exfatprogs) and filled through exfat-fuse, mounted through imgfs and
compared with the tree they were made from; damaged entry sets, chains and boot regions; checksums.

exfatprogs cannot fill an image, and the kernel's exfat driver needs a block device (a loop device, which
the tests do not use). exfat-fuse can write an image file, but it always asks libfuse for a ``fuseblk``
mount, which the kernel refuses on a regular file; a ten-line ``LD_PRELOAD`` shim, compiled here, turns
that one ``mount(2)`` call into a plain ``fuse`` mount. The tests need ``exfatprogs``, ``exfat-fuse`` and a
C compiler, and skip with a message naming what is missing.

The patching helpers read the exFAT structures themselves, independently of imgfs.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import struct
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import compare_trees, is_mounted, read_errno, run_imgfs, tree_entries, unmount
from corpuslib import corpus_dir
from isotools import pseudo_random, write_file
from test_fat import MTIME, build_tree

from imgfs.errors import ImageError
from imgfs.filesystems.exfat import ExfatFilesystem, probe
from imgfs.filesystems.exfat.directory import set_checksums
from imgfs.filesystems.fat import dostime
from imgfs.io.cache import BlockCache
from imgfs.io.stream import BytesStream, FileStream, SliceStream
from imgfs.layer import OpenContext
from imgfs.tree import Tree

MISSING = [tool for tool in ("mkfs.exfat", "mount.exfat-fuse", "cc") if shutil.which(tool) is None]

SHIM = r"""
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>
#include <string.h>
/* exfat-fuse always mounts "fuseblk" (with blksize=), which needs a block device: mount plain "fuse". */
int mount(const char *source, const char *target, const char *type, unsigned long flags, const void *data)
{
    int (*real)(const char *, const char *, const char *, unsigned long, const void *) =
        (int (*)(const char *, const char *, const char *, unsigned long, const void *))dlsym(RTLD_NEXT, "mount");
    char copy[4096], options[4096] = "", *save = NULL, *option;
    if (type == NULL || strcmp(type, "fuseblk") != 0 || data == NULL || strlen(data) >= sizeof(copy))
        return real(source, target, type, flags, data);
    strcpy(copy, data);
    for (option = strtok_r(copy, ",", &save); option; option = strtok_r(NULL, ",", &save))
        if (strncmp(option, "blksize=", 8) != 0)
            snprintf(options + strlen(options), sizeof(options) - strlen(options), "%s%s",
                     options[0] ? "," : "", option);
    return real(source, target, "fuse", flags, options);
}
"""


@pytest.fixture(scope="session")
def shim(tmp_path_factory) -> Path:
    if MISSING:
        pytest.skip(f"needs {', '.join(MISSING)} (Debian packages exfatprogs, exfat-fuse, gcc)")
    folder = tmp_path_factory.mktemp("shim")
    (folder / "shim.c").write_text(SHIM)
    subprocess.run(["cc", "-shared", "-fPIC", "-O2", "-o", str(folder / "shim.so"), str(folder / "shim.c"), "-ldl"],
                   check=True, capture_output=True)
    return folder / "shim.so"


@contextlib.contextmanager
def exfat_fuse(image: Path, mountpoint: Path, shim: Path) -> Iterator[Path]:
    """The image mounted read-write by exfat-fuse (in the foreground, so that its exit can be awaited:
    it writes its last metadata when it unmounts)."""
    mountpoint.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(["mount.exfat-fuse", "-d", str(image), str(mountpoint)],
                            env={**os.environ, "LD_PRELOAD": str(shim)}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while not is_mounted(mountpoint):
            assert proc.poll() is None and time.monotonic() < deadline, "exfat-fuse did not mount"
            time.sleep(0.05)
        yield mountpoint
    finally:
        unmount(mountpoint)
        proc.wait(timeout=60)


def mkfs_exfat(image: Path, size: int, *args: str) -> Path:
    image.unlink(missing_ok=True)
    with open(image, "wb") as f:
        f.truncate(size)
    subprocess.run(["mkfs.exfat", *args, str(image)], check=True, capture_output=True)
    return image


def populate(image: Path, source: Path, shim: Path) -> Path:
    with exfat_fuse(image, image.parent / f"{image.stem}-rw", shim) as target:
        shutil.copytree(source, target, dirs_exist_ok=True)  # copy2: contents and mtimes
    return image


def open_exfat(image: Path) -> ExfatFilesystem:
    return ExfatFilesystem(FileStream(str(image)), OpenContext("test", BlockCache(8 << 20)))


@pytest.fixture(scope="module")
def tree_and_image(tmp_path_factory, shim) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("exfat")
    source = build_tree(base / "src", odd_seconds=True, emoji=True)
    image = mkfs_exfat(base / "tree.img", 64 << 20, "-L", "Test Vol", "-c", "4K")
    return source, populate(image, source, shim)


# -- an independent reader of the structures the tests patch ---------------------------------------------


def serial_checksum(data: bytes) -> int:
    """The entry-set checksum the specification gives, byte by byte (bytes 2 and 3 left out)."""
    total = 0
    for index, byte in enumerate(data):
        if index not in (2, 3):
            total = ((0x8000 if total & 1 else 0) + (total >> 1) + byte) & 0xFFFF
    return total


class Layout:
    def __init__(self, image: bytes) -> None:
        self.sector = 1 << image[108]
        self.cluster = self.sector << image[109]
        fat, _, heap, self.count, self.root = struct.unpack_from("<IIIII", image, 80)
        self.fat, self.heap = fat * self.sector, heap * self.sector

    def cluster_offset(self, cluster: int) -> int:
        return self.heap + (cluster - 2) * self.cluster

    def find(self, image: bytes, name: str, directory: int = 0) -> int:
        """Offset of the File entry of ``name`` in the first cluster of a directory (default: the root)."""
        start = self.cluster_offset(directory or self.root)
        for pos in range(start, start + self.cluster, 32):
            if image[pos] == 0x85:
                length = image[pos + 32 + 3]
                units = b"".join(image[p + 2 : p + 32] for p in range(pos + 64, pos + 64 + 32 * 18, 32))
                if units[: length * 2].decode("utf-16-le", "replace") == name:
                    return pos
        raise KeyError(name)

    def stream(self, image: bytes, pos: int) -> tuple[int, int, int, int]:
        """Flags, valid data length, first cluster and data length of the set at ``pos``."""
        flags, = struct.unpack_from("<B", image, pos + 33)
        valid, first, size = struct.unpack_from("<Q4xIQ", image, pos + 40)
        return flags, valid, first, size

    def chain(self, image: bytes, first: int) -> list[int]:
        clusters = [first]
        while len(clusters) < 10_000:
            nxt = struct.unpack_from("<I", image, self.fat + 4 * clusters[-1])[0]
            if nxt >= 0xFFFFFFF7:
                return clusters
            clusters.append(nxt)
        raise AssertionError("chain too long")


def fix_checksum(image: bytearray, pos: int) -> None:
    count = image[pos + 1] + 1
    struct.pack_into("<H", image, pos + 2, serial_checksum(bytes(image[pos : pos + 32 * count])))


def patch(image: Path, change) -> None:
    data = bytearray(image.read_bytes())
    change(data, Layout(bytes(data)))
    image.write_bytes(bytes(data))


# -- generated images through FUSE ----------------------------------------------------------------------


def test_every_name_size_byte_and_mtime(tree_and_image, mount):
    source, image = tree_and_image
    with mount(image) as root:
        assert compare_trees(source, root, modes=False, owners=False, nlink=False) > 1300
        for path, st in tree_entries(root).items():
            if not os.path.isdir(root / path):
                assert st.st_mtime_ns == os.stat(source / path).st_mtime_ns, path  # whole seconds: exact
                assert st.st_mode & 0o7777 == 0o444


def test_info_names_the_type_label_serial_and_use(tree_and_image):
    _, image = tree_and_image
    layer = json.loads(run_imgfs("info", "--json", str(image), check=True).stdout)["layers"][-1]
    serial = struct.unpack_from("<I", image.read_bytes(), 100)[0]
    assert (layer["type"], layer["label"]) == ("exFAT", "Test Vol")
    assert layer["serial"] == f"{serial >> 16:04X}-{serial & 0xFFFF:04X}"
    assert (layer["cluster_size"], layer["volume_size"]) == (4096, 64 << 20)
    assert 4 << 20 < layer["used_bytes"] < 16 << 20


def test_contiguous_files_skip_the_fat_and_fragmented_ones_follow_it(tmp_path, shim, mount):
    src = tmp_path / "src"
    for i in range(40):
        write_file(src / f"f{i:02d}", pseudo_random(6000, i))
    image = populate(mkfs_exfat(tmp_path / "frag.img", 32 << 20, "-c", "4K"), src, shim)
    big = pseudo_random(150_000, 99)
    with exfat_fuse(image, tmp_path / "rw", shim) as target:
        for i in range(0, 40, 2):
            os.unlink(target / f"f{i:02d}")
        (target / "big").write_bytes(big)
    fs = open_exfat(image)
    kids = fs.children(fs.root)
    assert kids["f01"].handle.contiguous and not kids["big"].handle.contiguous
    assert len(fs._file_runs("big", kids["big"].handle, len(big))) > 5
    with mount(image) as root:
        assert (root / "big").read_bytes() == big
        assert (root / "f01").read_bytes() == pseudo_random(6000, 1)


def test_bytes_past_the_valid_data_length_read_as_zeros(tmp_path, shim, mount):
    src = tmp_path / "src"
    data = pseudo_random(100_000, 3)
    write_file(src / "preallocated.bin", data)
    image = populate(mkfs_exfat(tmp_path / "vdl.img", 16 << 20), src, shim)

    def shorten(image: bytearray, layout: Layout) -> None:
        pos = layout.find(bytes(image), "preallocated.bin")
        struct.pack_into("<Q", image, pos + 40, 5000)
        fix_checksum(image, pos)

    patch(image, shorten)
    with mount(image) as root:
        assert os.stat(root / "preallocated.bin").st_size == 100_000
        assert (root / "preallocated.bin").read_bytes() == data[:5000] + bytes(95_000)


def test_times_honour_the_recorded_utc_offset(tmp_path, shim, monkeypatch):
    src = tmp_path / "src"
    for name in ("utc", "plus9", "local"):
        write_file(src / name, b"x", mtime=MTIME + 1)
    image = populate(mkfs_exfat(tmp_path / "tz.img", 16 << 20), src, shim)

    def offsets(image: bytearray, layout: Layout) -> None:
        assert image[layout.find(bytes(image), "utc") + 23] == 0x80  # exfat-fuse writes UTC, and says so
        for name, offset in (("plus9", 0x80 | 36), ("local", 0x00)):
            pos = layout.find(bytes(image), name)
            image[pos + 23] = offset
            fix_checksum(image, pos)

    patch(image, offsets)
    seen = {}
    try:
        for zone in ("UTC0", "JST-9"):
            monkeypatch.setenv("TZ", zone)
            time.tzset()
            dostime.local_ns.cache_clear()
            dostime.exfat_ns.cache_clear()
            fs = open_exfat(image)
            seen[zone] = {name: node.mtime_ns // 10**9 for name, node in fs.children(fs.root).items()}
    finally:
        monkeypatch.undo()
        time.tzset()
        dostime.local_ns.cache_clear()
        dostime.exfat_ns.cache_clear()
    for zone in ("UTC0", "JST-9"):
        assert seen[zone]["utc"] == MTIME + 1
        assert seen[zone]["plus9"] == MTIME + 1 - 9 * 3600  # the same wall clock, nine hours east of UTC
    assert seen["UTC0"]["local"] - seen["JST-9"]["local"] == 9 * 3600


# -- damage ------------------------------------------------------------------------------------------------


@pytest.fixture
def victims(tmp_path, shim) -> tuple[Path, dict[str, bytes]]:
    src = tmp_path / "src"
    files = {name: pseudo_random(5 * 4096 - 100, i) for i, name in enumerate(("contiguous.bin", "good.bin"))}
    for name, data in files.items():
        write_file(src / name, data)
    write_file(src / "dir" / "inner.txt", b"inner\n")
    write_file(src / "other" / "fine.txt", b"fine\n")
    write_file(src / "other" / "checksum.bin", b"its entry set is damaged\n")  # listed after the mount: logged
    for i in range(20):
        write_file(src / "gaps" / f"g{i:02d}", pseudo_random(5000, i))
    image = populate(mkfs_exfat(tmp_path / "victims.img", 16 << 20, "-c", "4K"), src, shim)
    files["chained.bin"] = pseudo_random(60_000, 50)
    with exfat_fuse(image, tmp_path / "rw", shim) as target:
        for i in range(0, 20, 2):
            os.unlink(target / "gaps" / f"g{i:02d}")
        (target / "chained.bin").write_bytes(files["chained.bin"])
    return image, files


def test_damage_gives_eio_on_that_file_or_directory_only(victims, tmp_path, mount):
    image, files = victims

    def damage(image: bytearray, layout: Layout) -> None:
        data = bytes(image)
        chained = layout.find(data, "chained.bin")
        flags, _, first, _ = layout.stream(data, chained)
        clusters = layout.chain(data, first)
        assert not flags & 2 and len(clusters) > 5
        struct.pack_into("<I", image, layout.fat + 4 * clusters[4], clusters[1])  # a loop
        contiguous = layout.find(data, "contiguous.bin")
        assert layout.stream(data, contiguous)[0] & 2
        struct.pack_into("<I", image, contiguous + 52, layout.count - 1)  # five clusters from the last but two
        fix_checksum(image, contiguous)
        other = layout.stream(data, layout.find(data, "other"))[2]
        image[layout.find(data, "checksum.bin", other) + 2] ^= 0xFF
        directory = layout.find(data, "dir")
        struct.pack_into("<I", image, directory + 52, layout.count + 100)
        fix_checksum(image, directory)

    patch(image, damage)
    log = tmp_path / "imgfs.log"
    with mount(image, f"logfile={log}") as root:
        assert sorted(os.listdir(root)) == sorted(["contiguous.bin", "good.bin", "chained.bin", "dir", "other",
                                                   "gaps"])
        for name in ("chained.bin", "contiguous.bin"):
            assert read_errno(root / name) == errno.EIO, name
        with pytest.raises(OSError) as caught:
            os.listdir(root / "dir")
        assert caught.value.errno == errno.EIO
        assert (root / "good.bin").read_bytes() == files["good.bin"]
        assert os.listdir(root / "other") == ["fine.txt"]
        assert (root / "other" / "fine.txt").read_bytes() == b"fine\n"
    text = log.read_text()
    for fragment in ("loops", "past the last cluster", "set checksum", "first cluster"):
        assert fragment in text, fragment
    assert "Traceback" not in text


def test_a_damaged_main_boot_region_falls_back_to_the_backup(tree_and_image, tmp_path, mount):
    _, original = tree_and_image
    image = tmp_path / "boot.img"
    shutil.copy(original, image)
    with open(image, "r+b") as f:
        f.seek(300)  # boot code: only the checksum notices
        f.write(b"damage")
    layer = json.loads(run_imgfs("info", "--json", str(image), check=True).stdout)["layers"][-1]
    assert layer["boot_region"] == "backup"
    with mount(image) as root:
        assert (root / "readme.txt").read_bytes().startswith(b"lower-case")
    with open(image, "r+b") as f:
        f.seek(512 * 12 + 300)
        f.write(b"damage")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    done = run_imgfs(str(image), str(mnt))
    assert done.returncode != 0 and len(done.stderr.strip().splitlines()) == 1
    assert "exfat: boot region checksum" in done.stderr and "backup" in done.stderr


def test_truncated_image(tmp_path, shim, mount):
    src = tmp_path / "src"
    write_file(src / "early.txt", b"early\n")
    image = populate(mkfs_exfat(tmp_path / "cut.img", 16 << 20, "-c", "4K"), src, shim)
    big = pseudo_random(3 << 20, 8)
    write_file(tmp_path / "later" / "late.bin", big)
    populate(image, tmp_path / "later", shim)
    data = image.read_bytes()
    layout = Layout(data)
    start = layout.cluster_offset(layout.stream(data, layout.find(data, "late.bin"))[2])
    with open(image, "r+b") as f:
        f.truncate(start + len(big) // 2)
    with mount(image) as root:
        assert (root / "early.txt").read_bytes() == b"early\n"
        with open(root / "late.bin", "rb") as f:
            assert f.read(1 << 20) == big[: 1 << 20]
            with pytest.raises(OSError) as caught:
                f.read()
            assert caught.value.errno == errno.EIO


# -- in memory ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("length", [96, 160, 608])
def test_side_by_side_checksums_match_the_specification(length):
    blob = pseudo_random(length * 257, length)
    assert set_checksums(blob, length) == [serial_checksum(blob[i : i + length]) for i in range(0, len(blob), length)]


def test_probe(tree_and_image):
    _, image = tree_and_image
    assert probe(FileStream(str(image)))
    head = bytearray(image.read_bytes()[: 24 * 4096])
    head[3:11] = b"NTFS    "
    assert not probe(BytesStream(bytes(head)))
    assert not probe(BytesStream(b"\xebv\x90EXFAT   " + bytes(500)))


def test_corpus_gpt_dumps_hold_no_exfat_data():
    """The corpus's exFAT disks are partition-table dumps: the partition lies past the end of the file.
    Opening it must fail cleanly, not crash."""
    corpus = corpus_dir() / "raw" / "node-gpt" / "gpt-primary-exfat.bin"
    if not corpus.is_file():
        pytest.skip("corpus absent")
    oracle = json.loads(corpus.with_name(corpus.name + ".json").read_text())
    offset, size = oracle["partition_tables"][0]["crosscheck"]["own"][1]
    disk = FileStream(str(corpus))
    with pytest.raises(ImageError):
        ExfatFilesystem(SliceStream(disk, offset, size), OpenContext("test", BlockCache(1 << 20)))


# -- speed ----------------------------------------------------------------------------------------------------


def test_listing_many_files_is_fast(tmp_path, shim):
    src = tmp_path / "src"
    for d in range(5):
        for i in range(1000):
            path = src / f"dir{d}" / f"{d}{i:04d} file with a long name.txt"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(b"x")
    image = populate(mkfs_exfat(tmp_path / "speed.img", 64 << 20, "-c", "4K"), src, shim)
    fs = open_exfat(image)
    dirs = list(fs.children(fs.root).values())
    start = time.perf_counter()
    total = sum(len(fs.children(node)) for node in dirs)
    elapsed = time.perf_counter() - start
    assert total == 5000
    print(f"exFAT: {total} entries listed in {elapsed:.3f} s ({total / elapsed:,.0f} entries/s)")
    assert elapsed < 0.25  # 20,000 in about 0.2 s on the development machine
    assert len(list(Tree(fs).walk())) == 5005
