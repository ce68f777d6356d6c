"""ext2/3/4 images made by mkfs.ext2/3/4 -d, mounted through FUSE and compared with the tree they were
made from: every name, type, size, mode, owner, mtime, symlink target, hard link, device number, extended
attribute and byte. Then what mkfs -d cannot make (nanosecond and post-2038 times, attribute values in
their own inode, a journal that needs recovery) is set with debugfs; damaged images must give EIO for
what they damage and nothing else; and the real-world corpus image must match its oracle.

Fixtures are located with debugfs and dumpe2fs, never with the code under test.
"""

from __future__ import annotations

import calendar
import errno
import hashlib
import json
import logging
import os
import random
import re
import shutil
import socket
import stat
import struct
import subprocess
import time
from pathlib import Path

import pytest
from conftest import compare_trees, run_imgfs, sha256_of, tree_entries
from corpuslib import CORPUS
from isotools import pseudo_random, write_file

from imgfs.errors import CorruptImage, ImageError
from imgfs.filesystems.ext import probe
from imgfs.filesystems.ext.directory import parse_block, parse_inline
from imgfs.filesystems.ext.extents import BlockSource, block_map_runs, byte_runs, extent_runs
from imgfs.filesystems.ext.inode import _time_ns, device_number
from imgfs.image import open_image
from imgfs.io.stream import BytesStream

if not shutil.which("mkfs.ext4") or not shutil.which("debugfs"):
    pytest.skip("e2fsprogs (mkfs.ext4, debugfs) is not installed", allow_module_level=True)

MTIME = 1_600_000_000
LABEL = "imgfs-test"
SHOWN_XATTRS = ("user.", "trusted.", "security.")
ODD_SYMLINKS = {
    "relative": "../x",
    "absolute": "/abs//y",
    "dot": "./README.txt",
    "dangling": "does/not/exist",
    "fast-59": "f" * 59,  # the longest target that fits in i_block
    "slow-60": "s" * 60,  # the shortest that needs a block
    "slow-300": "/".join(f"part{i:03d}" for i in range(38))[:300],
}


# -- building images ---------------------------------------------------------------------------------


def build_tree(root: Path, many: int = 5000) -> Path:
    """Everything mkfs -d can copy, with the owners, modes, times and attributes it keeps."""
    (root / "lost+found").mkdir(parents=True)  # mkfs makes one; the source has it so that names match
    os.chmod(root / "lost+found", 0o700)
    write_file(root / "README.txt", b"hello\n")
    write_file(root / "empty", b"")
    write_file(root / "tiny", b"x")
    write_file(root / "inline-59", b"i" * 59)  # in i_block with inline_data
    write_file(root / "inline-100", b"j" * 100)  # i_block plus the system.data attribute
    write_file(root / "big.bin", pseudo_random(3 << 20, 1))
    write_file(root / "Grüße — 日本語 ☃.txt", b"unicode\n")
    write_file(root / ("n" * 251 + ".txt"), b"a 255-byte name\n")
    write_file(root / ("é" * 127 + "x"), b"a 255-byte UTF-8 name\n")
    deep = root / "deep"
    for level in range(30):
        deep = deep / f"level{level:02d}"
    write_file(deep / "bottom.txt", b"deep\n")
    _modes_and_owners(root)
    _links(root)
    _sparse(root / "sparse.bin", 100 << 20, [(50 << 20, b"middle"), ((100 << 20) - 5, b"end!\n")])
    # more pieces than the inode's four extent slots: an extent tree with an index level; data in the last
    # block too, since mke2fs 1.47 -d with inline_data drops a trailing hole from the size it records
    _sparse(root / "fragmented.bin", 40 << 20,
            [(i << 20, pseudo_random(4096, i)) for i in range(0, 40, 2)] + [((40 << 20) - 4096, b"last block")])
    _special_files(root)
    _xattrs(root)
    for i in range(many):
        write_file(root / "many" / f"entry-{i:05d}.txt", f"file number {i}\n".encode())
    return root


def _modes_and_owners(root: Path) -> None:
    write_file(root / "modes" / "private", b"secret\n", 0o600)
    write_file(root / "modes" / "tool.sh", b"#!/bin/sh\necho hi\n", 0o755)
    write_file(root / "modes" / "setuid", b"x", 0o4755)
    write_file(root / "modes" / "setgid", b"x", 0o2711)
    write_file(root / "modes" / "nothing", b"x", 0o000)
    write_file(root / "modes" / "owned", b"owned\n")
    os.chown(root / "modes" / "owned", 1234, 5678)
    write_file(root / "modes" / "big-ids", b"ids past 16 bits\n")
    os.chown(root / "modes" / "big-ids", 70000, 4_000_000_000)
    (root / "modes" / "sticky").mkdir()
    os.chmod(root / "modes" / "sticky", 0o1777)
    os.chmod(root / "modes", 0o750)


def _links(root: Path) -> None:
    (root / "links").mkdir()
    for name, target in ODD_SYMLINKS.items():
        os.symlink(target, root / "links" / name)
        os.utime(root / "links" / name, (MTIME, MTIME), follow_symlinks=False)
    write_file(root / "hard" / "one", pseudo_random(10000, 2))
    os.link(root / "hard" / "one", root / "hard" / "two")
    os.link(root / "hard" / "one", root / "three-elsewhere")
    (root / "other").mkdir()
    os.link(root / "hard" / "one", root / "other" / "four")


def _sparse(path: Path, size: int, pieces: list[tuple[int, bytes]]) -> None:
    with open(path, "wb") as f:
        f.truncate(size)
        for offset, data in pieces:
            f.seek(offset)
            f.write(data)
    os.utime(path, (MTIME, MTIME))


def _special_files(root: Path) -> None:
    os.mkfifo(root / "fifo")
    os.mknod(root / "null-device", stat.S_IFCHR | 0o666, os.makedev(1, 3))
    os.mknod(root / "block-device", stat.S_IFBLK | 0o660, os.makedev(7, 0))
    os.mknod(root / "wide-device", stat.S_IFCHR | 0o600, os.makedev(300, 70000))  # the new 12:20 encoding
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(root / "socket"))
    for name in ("fifo", "null-device", "block-device", "wide-device", "socket"):
        os.utime(root / name, (MTIME, MTIME))


def _xattrs(root: Path) -> None:
    os.setxattr(root / "README.txt", b"user.comment", b"a small value, in the inode")
    os.setxattr(root / "README.txt", b"user.empty", b"")
    os.setxattr(root / "big.bin", b"user.large", pseudo_random(700, 3))  # too big for the inode: a block
    os.setxattr(root / "modes", b"user.on-a-directory", b"yes")
    os.setxattr(root / "modes" / "owned", b"trusted.t", b"trusted value")
    os.setxattr(root / "modes" / "owned", b"security.s", b"security value")
    os.setxattr(root / "links" / "relative", b"trusted.on-a-symlink", b"lv", follow_symlinks=False)


def mkfs(out: Path, source: Path, fs: str = "ext4", *options: str, size: str = "160M", index: bool = True) -> Path:
    """mkfs.FS -d SOURCE, then e2fsck -D, which builds the htree indexes that mkfs -d does not."""
    subprocess.run([f"mkfs.{fs}", "-q", "-F", "-L", LABEL, "-d", str(source), *options, str(out), size],
                   check=True, capture_output=True)
    if index:
        done = subprocess.run(["e2fsck", "-fyD", str(out)], capture_output=True, text=True)
        assert done.returncode in (0, 1), done.stdout + done.stderr  # 1: directories were optimised
    return out


def debugfs(image: Path, command: str, write: bool = False) -> str:
    args = ["debugfs", *(["-w"] if write else []), "-R", command, str(image)]
    return subprocess.run(args, check=True, capture_output=True, text=True).stdout


def inode_offset(image: Path, path: str) -> int:
    """Byte offset of ``path``'s inode, as debugfs locates it."""
    found = re.search(r"located at block (\d+), offset 0x([0-9a-f]+)", debugfs(image, f"imap {path}"))
    assert found, f"debugfs cannot locate {path}"
    return int(found.group(1)) * block_size(image) + int(found.group(2), 16)


def block_size(image: Path) -> int:
    out = subprocess.run(["dumpe2fs", "-h", str(image)], check=True, capture_output=True, text=True).stdout
    found = re.search(r"^Block size:\s+(\d+)", out, re.M)
    assert found
    return int(found.group(1))


def data_blocks(image: Path, path: str) -> list[int]:
    return [int(b) for b in debugfs(image, f"blocks {path}").split()]


def patch(image: Path, offset: int, data: bytes) -> None:
    with open(image, "r+b") as f:
        f.seek(offset)
        f.write(data)


# -- comparing ---------------------------------------------------------------------------------------


def shown_xattrs(path: Path) -> dict[str, bytes]:
    names = os.listxattr(path, follow_symlinks=False)
    return {n: os.getxattr(path, n, follow_symlinks=False) for n in names if n.startswith(SHOWN_XATTRS)}


def compare_xattrs(source: Path, mounted: Path) -> int:
    count = 0
    for rel in tree_entries(source):
        want = shown_xattrs(source / rel)
        assert shown_xattrs(mounted / rel) == want, f"{rel}: extended attributes differ"
        count += len(want)
    return count


@pytest.fixture(scope="module")
def rich_tree(tmp_path_factory) -> Path:
    return build_tree(tmp_path_factory.mktemp("rich") / "src")


@pytest.fixture(scope="module")
def small_tree(tmp_path_factory) -> Path:
    return build_tree(tmp_path_factory.mktemp("small") / "src", many=50)


# mke2fs picks 1 KiB blocks for filesystems this small unless told otherwise; both sizes are covered.
CONFIGS = {
    "ext4": ("ext4", ("-b", "4096")),  # extents, flex_bg, 64bit, metadata_csum, 256-byte inodes
    "ext4-1k-inode128": ("ext4", ("-b", "1024", "-I", "128")),  # no extra fields: whole seconds, xattrs in blocks
    "ext4-inline": ("ext4", ("-b", "4096", "-O", "inline_data")),
    "ext4-blockmap": ("ext4", ("-b", "1024", "-O", "^extent,^64bit")),  # triple indirect for sparse.bin's end
    "ext4-32bit": ("ext4", ("-b", "4096", "-O", "^64bit")),
    "ext4-meta_bg": ("ext4", ("-b", "4096", "-O", "meta_bg,^resize_inode")),
    "ext3": ("ext3", ("-b", "4096")),
    "ext2-1k": ("ext2", ("-b", "1024", "-I", "128")),
    "ext2-inode256": ("ext2", ("-b", "2048", "-I", "256")),
}
SMALL_CONFIGS = {
    "ext4-64k-blocks": ("ext4", ("-b", "65536"), "256M"),
    "ext4-bigalloc": ("ext4", ("-O", "bigalloc", "-C", "16384"), "128M"),
    "ext4-no-htree": ("ext4", (), "64M"),
    "ext4-inode1024": ("ext4", ("-b", "4096", "-I", "1024"), "64M"),
}


@pytest.mark.parametrize("config", sorted(CONFIGS))
def test_generated_image(config, rich_tree, tmp_path, mount):
    fs, options = CONFIGS[config]
    image = mkfs(tmp_path / f"{config}.img", rich_tree, fs, *options)
    with mount(image) as root:
        assert compare_trees(rich_tree, root) > 5000
        assert compare_xattrs(rich_tree, root) >= 7
        assert os.readlink(root / "links" / "slow-300") == ODD_SYMLINKS["slow-300"]
        assert (root / "sparse.bin").read_bytes()[50 << 20 : (50 << 20) + 6] == b"middle"
    info = json.loads(run_imgfs("info", "--json", str(image), check=True).stdout)["layers"][-1]
    assert (info["filesystem"], info["label"]) == (fs, LABEL)
    assert info["block_size"] == block_size(image)


@pytest.mark.parametrize("config", sorted(SMALL_CONFIGS))
def test_small_image(config, small_tree, tmp_path, mount):
    fs, options, size = SMALL_CONFIGS[config]
    image = mkfs(tmp_path / f"{config}.img", small_tree, fs, *options, size=size, index=config != "ext4-no-htree")
    with mount(image) as root:
        assert compare_trees(small_tree, root) > 50
        compare_xattrs(small_tree, root)


def test_meta_bg_with_many_groups(tmp_path, mount):
    """Descriptors in several meta groups: inodes spread over more groups than one descriptor block holds."""
    src = tmp_path / "src"
    (src / "lost+found").mkdir(parents=True)
    os.chmod(src / "lost+found", 0o700)
    for d in range(40):
        for i in range(12):
            write_file(src / f"d{d:02d}" / f"f{i}", f"{d}/{i}\n".encode())
    image = mkfs(tmp_path / "meta.img", src, "ext4", "-b", "1024", "-O", "meta_bg,^resize_inode,^64bit,^flex_bg",
                 "-N", "1100", size="600M")
    highest = max(int(n) for n in re.findall(r"^\s*(\d+)\s", debugfs(image, "ls -l /d39"), re.M))
    out = subprocess.run(["dumpe2fs", "-h", str(image)], check=True, capture_output=True, text=True).stdout
    per_group = int(re.search(r"^Inodes per group:\s+(\d+)", out, re.M).group(1))
    assert highest > 32 * per_group, "the test needs inodes past the first meta group (32 groups)"
    with mount(image) as root:
        compare_trees(src, root)


# -- what mkfs -d cannot make --------------------------------------------------------------------------


def test_huge_sparse_files(tmp_path, mount):
    """Over 4 GiB (i_size_high), through extents and through a triple-indirect block map."""
    src = tmp_path / "src"
    (src / "lost+found").mkdir(parents=True)
    os.chmod(src / "lost+found", 0o700)
    size = (5 << 30) + 123
    pieces = [(1 << 20, b"first"), ((9 << 29) + 7, b"past four GiB"), (size - 4, b"end!")]
    _sparse(src / "huge.bin", size, pieces)
    for fs, options in (("ext4", ()), ("ext2", ("-b", "4096"))):
        image = mkfs(tmp_path / f"{fs}.img", src, fs, *options, size="64M")
        assert image.stat().st_blocks * 512 < 64 << 20  # the image itself stays small
        with mount(image) as root, open(root / "huge.bin", "rb") as f:
            assert os.fstat(f.fileno()).st_size == size
            for offset, data in pieces:
                after = min(4, size - offset - len(data))
                assert os.pread(f.fileno(), len(data) + 8, offset - 4) == bytes(4) + data + bytes(after)
            assert os.pread(f.fileno(), 1 << 20, 3 << 30) == bytes(1 << 20)


def test_nanoseconds_and_epoch_bits(tmp_path, mount):
    src = tmp_path / "src"
    write_file(src / "a", b"a")
    write_file(src / "b", b"b")
    image = mkfs(tmp_path / "t.img", src, "ext4", size="16M", index=False)
    debugfs(image, f"sif /a mtime_extra {123456789 << 2}", write=True)
    debugfs(image, f"sif /a atime_extra {(5 << 2) | 1}", write=True)  # epoch bit: 2^32 seconds later
    with mount(image) as root:
        st = os.lstat(root / "a")
        assert st.st_mtime_ns == MTIME * 1_000_000_000 + 123456789
        assert st.st_atime_ns == (MTIME + (1 << 32)) * 1_000_000_000 + 5
        assert os.lstat(root / "b").st_mtime_ns == MTIME * 1_000_000_000


def test_attribute_value_in_its_own_inode(tmp_path, mount):
    src = tmp_path / "src"
    write_file(src / "f", b"data\n")
    image = mkfs(tmp_path / "ea.img", src, "ext4", "-b", "4096", "-O", "ea_inode", size="32M", index=False)
    value = pseudo_random(4096, 9)
    (tmp_path / "value").write_bytes(value)
    debugfs(image, f"ea_set -f {tmp_path / 'value'} /f user.huge", write=True)
    assert "File ACL: 0" in debugfs(image, "stat /f")  # not in a block: in an inode of its own
    with mount(image) as root:
        assert os.getxattr(root / "f", "user.huge") == value
        assert (root / "f").read_bytes() == b"data\n"
        with pytest.raises(OSError) as absent:
            os.getxattr(root / "f", "security.selinux")  # ext can hold labels: this file has none
        assert absent.value.errno == errno.ENODATA
        with pytest.raises(OSError) as unsupported:
            os.getxattr(root / "f", "system.posix_acl_access")  # imgfs shows no ACLs: ls -l stops asking
        assert unsupported.value.errno == errno.EOPNOTSUPP


def test_system_attributes_hidden(tmp_path):
    """system.data (inline data) and ACLs are not listed; user, trusted and security are."""
    src = tmp_path / "src"
    write_file(src / "f", b"x" * 100)
    os.setxattr(src / "f", b"user.u", b"1")
    image = mkfs(tmp_path / "s.img", src, "ext4", "-O", "inline_data", size="16M", index=False)
    # the xattr form of an ACL: version 2, then (tag, permissions, id) for owner, group and other
    entries = ((1, 6), (4, 4), (32, 4))
    acl = struct.pack("<I", 2) + b"".join(struct.pack("<HHI", tag, perm, 0xFFFFFFFF) for tag, perm in entries)
    (tmp_path / "acl").write_bytes(acl)
    debugfs(image, f"ea_set -f {tmp_path / 'acl'} /f system.posix_acl_access", write=True)
    assert "system.data" in debugfs(image, "ea_list /f")
    opened = open_image(str(image))
    try:
        assert opened.tree.xattrs("/f") == {"user.u": b"1"}
        assert opened.tree.open("/f").pread(0, 200) == b"x" * 100
    finally:
        opened.close()


def test_journal_recovery_warned_once(tmp_path, caplog):
    src = tmp_path / "src"
    write_file(src / "f", b"x")
    image = mkfs(tmp_path / "j.img", src, "ext4", size="16M", index=False)
    debugfs(image, "feature needs_recovery", write=True)
    with caplog.at_level(logging.WARNING):
        opened = open_image(str(image))
    try:
        warnings = [r for r in caplog.records if "recovery" in r.getMessage()]
        assert len(warnings) == 1
        assert opened.fs.describe()["needs_recovery"] is True
        assert opened.tree.open("/f").pread(0, 10) == b"x"
    finally:
        opened.close()


def test_probe_and_describe(tmp_path):
    src = tmp_path / "src"
    write_file(src / "f", b"x")
    for fs in ("ext2", "ext3", "ext4"):
        image = mkfs(tmp_path / f"{fs}.img", src, fs, size="16M", index=False)
        opened = open_image(str(image))
        try:
            about = opened.fs.describe()
            assert (about["filesystem"], about["label"], about["needs_recovery"]) == (fs, LABEL, False)
            assert about["uuid"] in subprocess.run(["dumpe2fs", "-h", str(image)], capture_output=True,
                                                   text=True).stdout
        finally:
            opened.close()
    superblock = bytearray((tmp_path / "ext4.img").read_bytes()[:4096])
    assert probe(BytesStream(bytes(superblock)))
    superblock[1024 + 24] = 9  # a 512 KiB block size
    assert not probe(BytesStream(bytes(superblock)))


def test_extent_tree_with_index_and_uninitialized_extent(tmp_path):
    src = tmp_path / "src"
    pieces = [(i << 20, pseudo_random(4096, i)) for i in range(0, 40, 2)]
    src.mkdir()
    _sparse(src / "fragmented.bin", 40 << 20, pieces)
    image = mkfs(tmp_path / "tree.img", src, "ext4", "-b", "4096", size="32M", index=False)
    found = re.search(r"\(ETB0\):(\d+)", debugfs(image, "stat /fragmented.bin"))
    assert found, "the test needs an extent tree with an index level"
    leaf_block = int(found.group(1))
    opened = open_image(str(image))
    try:
        assert opened.tree.open("/fragmented.bin").pread(2 << 20, 4096) == pieces[1][1]
    finally:
        opened.close()
    first_len = leaf_block * 4096 + 12 + 4  # the leaf's first extent: set the "uninitialized" bit of ee_len
    length = int.from_bytes(image.read_bytes()[first_len : first_len + 2], "little")
    patch(image, first_len, (length | 0x8000).to_bytes(2, "little"))
    opened = open_image(str(image))
    try:
        stream = opened.tree.open("/fragmented.bin")
        assert stream.pread(0, 4096) == bytes(4096)  # unwritten: zeros, whatever the blocks hold
        assert stream.pread(2 << 20, 4096) == pieces[1][1]
    finally:
        opened.close()


# -- parsers, on bytes built in memory ---------------------------------------------------------------------


def _extent_node(depth: int, entries: list[bytes], size: int = 60) -> bytes:
    header = struct.pack("<HHHHI", 0xF30A, len(entries), (size - 12) // 12, depth, 0)
    return (header + b"".join(entries)).ljust(size, b"\0")


def _index(first: int, child: int) -> bytes:
    return struct.pack("<IIHH", first, child & 0xFFFFFFFF, child >> 32, 0)


def _extent(first: int, length: int, start: int) -> bytes:
    return struct.pack("<IHHI", first, length, start >> 32, start & 0xFFFFFFFF)


def _source(blocks: dict[int, bytes], count: int = 1000) -> BlockSource:
    return BlockSource(count, 1024, lambda n: blocks.get(n, bytes(1024)))


def test_extent_tree_parser():
    leaf = _extent_node(0, [_extent(0, 2, 100), _extent(2, 3, 102), _extent(10, 32768 + 4, 200)], 1024)
    runs = extent_runs(_extent_node(1, [_index(0, 7)]), 0, _source({7: leaf}), 12)
    assert runs == [(0, 100, 5), (10, None, 4)]  # contiguous extents merged; an unwritten one is zeros
    assert byte_runs(runs, 16 * 1024, 1024, 12, 0) == [(100 * 1024, 5 * 1024), (None, 11 * 1024)]
    with pytest.raises(CorruptImage, match="twice"):  # two index entries naming one block
        extent_runs(_extent_node(1, [_index(0, 7), _index(5, 7)]), 0, _source({7: leaf}), 12)
    loop = _extent_node(1, [_index(0, 7)], 1024)  # a node that names itself, one level down
    with pytest.raises(CorruptImage, match="depth: expected 0"):
        extent_runs(_extent_node(1, [_index(0, 7)]), 0, _source({7: loop}), 12)
    with pytest.raises(CorruptImage, match="twice"):
        extent_runs(_extent_node(2, [_index(0, 7)]), 0, _source({7: loop}), 12)
    with pytest.raises(CorruptImage, match="outside the filesystem"):
        extent_runs(_extent_node(0, [_extent(0, 5, 998)]), 0, _source({}), 12)
    with pytest.raises(CorruptImage, match="expected at most 4"):
        extent_runs(struct.pack("<HHHHI", 0xF30A, 9, 4, 0, 0).ljust(60, b"\0"), 0, _source({}), 12)
    with pytest.raises(CorruptImage, match="overlap"):
        byte_runs(extent_runs(_extent_node(0, [_extent(0, 4, 100), _extent(2, 4, 300)]), 0, _source({}), 12),
                  8192, 1024, 12, 0)


def test_block_map_parser():
    per_block = 256
    single = struct.pack(f"<{per_block}I", *range(500, 500 + per_block))  # contiguous: one run
    double = struct.pack("<2I", 9, 0).ljust(1024, b"\0")
    i_block = struct.pack("<15I", *range(100, 112), 8, 10, 0)
    blocks = {8: single, 10: double, 9: struct.pack("<3I", 0, 777, 778).ljust(1024, b"\0")}
    runs = block_map_runs(i_block, 0, 12 + per_block + 3, _source(blocks), 12)
    assert runs == [(0, 100, 12), (12, 500, per_block), (12 + per_block + 1, 777, 2)]
    looping = {10: struct.pack("<I", 10).ljust(1024, b"\0")}  # a double-indirect block naming itself
    with pytest.raises(CorruptImage):
        block_map_runs(struct.pack("<15I", *([0] * 13), 10, 0), 0, 12 + per_block + per_block**2, _source(looping), 1)


def test_directory_parsers():
    def entry(ino: int, name: bytes, rec_len: int, ftype: int = 1) -> bytes:
        return struct.pack("<IHBB", ino, rec_len, len(name), ftype) + name + bytes(rec_len - 8 - len(name))

    i_block = struct.pack("<I", 2) + entry(12, b"a", 12) + entry(13, b"bb", 44)
    extra = entry(14, b"in-system.data", 24) + entry(0, b"", 8) + entry(15, b"z", 12)
    assert parse_inline(i_block, 0, extra, True) == [(2, b"..", 2), (12, b"a", 1), (13, b"bb", 1),
                                                     (14, b"in-system.data", 1), (15, b"z", 1)]
    head = struct.Struct("<IHBB").pack  # inode, rec_len, name_len, file type
    for rec_len, name_len in ((0, 1), (10, 1), (32, 1), (12, 8)):  # zero, unaligned, past the block, name too long
        block = (entry(12, b"a", 12) + head(13, rec_len, name_len, 1)).ljust(24, b"\0")
        with pytest.raises(CorruptImage, match="length"):
            parse_block(block, 0, 24, 0, True, [])


def test_inode_fields():
    assert _time_ns(0xFFFFFFFF, None) == -1_000_000_000  # signed 32-bit seconds: before 1970
    assert _time_ns(0xFFFFFFFF, 1) == ((1 << 32) - 1) * 1_000_000_000  # epoch bits widen it past 2038
    assert _time_ns(10, 7 << 2 | 2) == (10 + (2 << 32)) * 1_000_000_000 + 7
    assert device_number(struct.pack("<II", 0x0103, 0)) == os.makedev(1, 3)  # the old 8:8 form
    assert device_number(struct.pack("<II", 0, (70000 & 0xFF) | 300 << 8 | (70000 & ~0xFF) << 12)) == \
        os.makedev(300, 70000)


# -- damaged images -------------------------------------------------------------------------------------


@pytest.fixture
def victim_image(tmp_path) -> tuple[Path, Path]:
    src = tmp_path / "src"
    (src / "lost+found").mkdir(parents=True)
    os.chmod(src / "lost+found", 0o700)
    write_file(src / "good.txt", b"still readable\n")
    write_file(src / "victim.bin", pseudo_random(200_000, 4))
    write_file(src / "other.bin", pseudo_random(50_000, 5))
    for i in range(20):
        write_file(src / "baddir" / f"f{i:02d}", b"in the bad directory\n")
        write_file(src / "gooddir" / f"f{i:02d}", b"in a good directory\n")
    return mkfs(tmp_path / "victim.img", src, "ext4", "-b", "4096", size="16M", index=False), src


def assert_eio(action) -> None:
    with pytest.raises(OSError) as caught:
        action()
    assert caught.value.errno == errno.EIO


def assert_rest_reads(root: Path, src: Path) -> None:
    assert (root / "good.txt").read_bytes() == b"still readable\n"
    assert sha256_of(root / "other.bin") == sha256_of(src / "other.bin")
    assert sorted(os.listdir(root / "gooddir")) == [f"f{i:02d}" for i in range(20)]


def test_extent_outside_the_filesystem(victim_image, mount):
    image, src = victim_image
    patch(image, inode_offset(image, "/victim.bin") + 40 + 12 + 6, b"\xff\xff")  # ee_start_hi of the first extent
    with mount(image) as root:
        assert (root / "victim.bin").stat().st_size == 200_000
        assert_eio(lambda: (root / "victim.bin").read_bytes())
        assert_rest_reads(root, src)


def test_bad_extent_magic(victim_image, mount):
    image, src = victim_image
    patch(image, inode_offset(image, "/victim.bin") + 40, b"\x0a\xf4")
    with mount(image) as root:
        assert_eio(lambda: (root / "victim.bin").read_bytes())
        assert_rest_reads(root, src)


@pytest.mark.parametrize("rec_len", [0, 8192, 6])
def test_bad_directory_entry_length(victim_image, mount, rec_len):
    image, src = victim_image
    block = data_blocks(image, "/baddir")[0]
    patch(image, block * 4096 + 12 + 4, rec_len.to_bytes(2, "little"))  # the ".." entry's rec_len
    with mount(image) as root:
        done = subprocess.run(["ls", str(root / "baddir")], capture_output=True, text=True, timeout=60)
        assert done.returncode != 0 and "Input/output error" in done.stderr
        assert_rest_reads(root, src)


def test_directory_loop_is_cut(tmp_path, mount):
    """Entries that make a directory reachable twice (a loop back to an ancestor, or to the root) list as
    empty, as on every filesystem (``Filesystem.children``); ext's own check (a directory is only listed where
    its ".." says it belongs) would give EIO, if ever one got past."""
    src = tmp_path / "src"
    write_file(src / "d" / "sub" / "f", b"x\n")
    image = mkfs(tmp_path / "loop.img", src, "ext4", "-b", "4096", size="16M", index=False)
    debugfs(image, "ln /d /d/sub/loop", write=True)
    debugfs(image, "ln / /d/sub/up", write=True)
    with mount(image) as root:
        assert sorted(os.listdir(root / "d" / "sub")) == ["f", "loop", "up"]
        assert os.listdir(root / "d" / "sub" / "loop") == [] and os.listdir(root / "d" / "sub" / "up") == []
        assert (root / "d" / "sub" / "f").read_bytes() == b"x\n"
    done = run_imgfs("ls", "-R", str(image), check=True)
    assert "/d/sub/loop" in done.stdout and "/d/sub/loop/" not in done.stdout
    assert done.stderr.count("is shown elsewhere already") == 2


def test_truncated_image(victim_image, mount, tmp_path):
    image, src = victim_image
    cut = data_blocks(image, "/victim.bin")[0] * 4096 + 4096
    os.truncate(image, cut)
    with mount(image) as root:
        for rel, st in tree_entries(src).items():
            if not stat.S_ISREG(st.st_mode):
                continue
            try:
                assert sha256_of(root / rel) == sha256_of(src / rel), f"{rel}: wrong data instead of EIO"
            except OSError as exc:
                assert exc.errno == errno.EIO
        assert_eio(lambda: (root / "victim.bin").read_bytes())
    os.truncate(image, 3000)  # the superblock is there, the group descriptors are not
    (tmp_path / "mnt-cut").mkdir()
    done = run_imgfs(str(image), str(tmp_path / "mnt-cut"))
    assert done.returncode != 0 and "truncated" in done.stderr and len(done.stderr.strip().splitlines()) == 1


def test_random_damage_never_crashes(victim_image):
    """Bytes flipped anywhere in the metadata: every failure is an ImageError (or a path error), never a
    crash, a hang or a runaway allocation."""
    image, _ = victim_image
    pristine = image.read_bytes()
    metadata_end = 300 * 4096  # the superblock, descriptors, bitmaps, inode tables and directories
    rng = random.Random(11)
    for _ in range(60):
        damaged = bytearray(pristine)
        for _ in range(40):
            damaged[rng.randrange(1024, metadata_end)] = rng.randrange(256)
        image.write_bytes(bytes(damaged))
        _walk_everything(image)


def _walk_everything(image: Path) -> None:
    try:
        opened = open_image(str(image))
    except ImageError:
        return
    try:
        pending = ["/"]
        while pending:
            path = pending.pop()
            try:
                kids = opened.tree.children(path)
            except (ImageError, OSError):
                continue
            for name, node in kids.items():
                child = path.rstrip("/") + "/" + name
                if node.is_dir:
                    pending.append(child)
                    continue
                _try(lambda path=child: opened.tree.xattrs(path))
                _try(lambda path=child: opened.tree.open(path).pread(0, 1 << 16))
    finally:
        opened.close()


def _try(action) -> None:
    try:
        action()
    except (ImageError, OSError):
        pass


def test_corrupt_root_refused(victim_image, tmp_path):
    image, _ = victim_image
    patch(image, inode_offset(image, "/") + 40, b"\0\0")  # the root's extent magic
    (tmp_path / "mnt-root").mkdir()
    done = run_imgfs(str(image), str(tmp_path / "mnt-root"))
    assert done.returncode != 0 and "magic" in done.stderr and "Traceback" not in done.stderr
    with pytest.raises(CorruptImage):
        open_image(str(image))


# -- the real-world corpus ------------------------------------------------------------------------------


CORPUS_EXT2 = CORPUS / "raw" / "dfvfs" / "ext2.raw"


@pytest.mark.skipif(not CORPUS_EXT2.is_file(), reason="no image corpus (set IMGFS_CORPUS)")
def test_corpus_ext2(mount):
    oracle = json.loads(CORPUS_EXT2.with_name("ext2.raw.json").read_text())
    volume = oracle["volumes"][0]
    info = json.loads(run_imgfs("info", "--json", str(CORPUS_EXT2), check=True).stdout)["layers"][-1]
    assert (info["filesystem"], info["label"]) == (volume["filesystem"], volume["label"])
    kinds = {"file": stat.S_IFREG, "dir": stat.S_IFDIR, "symlink": stat.S_IFLNK}
    with mount(CORPUS_EXT2) as root:
        assert sorted("/" + p for p in tree_entries(root)) == sorted(e["path"] for e in volume["entries"])
        for entry in volume["entries"]:
            path = root / entry["path"].lstrip("/")
            st = path.lstat()
            assert stat.S_IFMT(st.st_mode) == kinds[entry["type"]], entry["path"]
            assert f"{stat.S_IMODE(st.st_mode):04o}" == entry["mode"], entry["path"]
            assert st.st_mtime == calendar.timegm(time.strptime(entry["mtime"], "%Y-%m-%dT%H:%M:%SZ"))
            assert st.st_nlink == entry["nlink"], entry["path"]
            if entry["type"] == "file":
                assert (st.st_size, sha256_of(path)) == (entry["size"], entry["sha256"]), entry["path"]
            if entry["type"] == "symlink":
                assert (os.readlink(path), st.st_size) == (entry["target"], entry["size"])
            got = {n: os.getxattr(path, n, follow_symlinks=False) for n in os.listxattr(path, follow_symlinks=False)}
            want = entry.get("xattrs", {})
            assert sorted(got) == sorted(want), entry["path"]
            for name, value in want.items():
                assert (len(got[name]), hashlib.sha256(got[name]).hexdigest()) == (value["size"], value["sha256"])
