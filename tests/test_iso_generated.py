"""ISOs made by xorriso, genisoimage and pycdlib's writer, mounted through FUSE and compared with the
tree they were made from: every name, type, size, mode, owner, symlink target, hard link and byte."""

from __future__ import annotations

import errno
import os
import random
import stat
import threading
from pathlib import Path

import pytest
from conftest import compare_trees, run_imgfs, sha256_of, tree_entries
from isotools import genisoimage, pseudo_random, pycdlib_iso, split_into_extents, write_file, xorriso

from imgfs.image import open_image
from imgfs.options import MountOptions

MTIME = 1_600_000_000
ODD_SYMLINKS = {
    "relative": "../README.txt",
    "absolute": "/etc/passwd",
    "dot": "./README.txt",
    "dotdot": "..",
    "double-slash": "a//b",
    # no "dir/": xorriso itself records it as "dir"
    "root": "/",
    "abs-double": "//server/share/./x/../y",
    "dangling": "does/not/exist",
    "long-target": "/".join(f"component{i:03d}" for i in range(60)),
}


def build_rich_tree(root: Path) -> Path:
    write_file(root / "README.txt", b"hello\n")
    write_file(root / "empty", b"")
    write_file(root / "big.bin", pseudo_random(3 << 20, 1))
    write_file(root / "Grüße — 日本語 ☃.txt", b"unicode\n")
    write_file(root / ("L" * 200 + ".txt"), b"long name\n")
    write_file(root / "compressible.txt", b"".join(b"line %06d\n" % i for i in range(40000)))
    write_file(root / "modes" / "private", b"secret\n", 0o600)
    write_file(root / "modes" / "tool.sh", b"#!/bin/sh\necho hi\n", 0o755)
    write_file(root / "modes" / "setuid", b"x", 0o4755)
    write_file(root / "modes" / "owned", b"owned\n")
    os.chown(root / "modes" / "owned", 1234, 5678)
    os.chmod(root / "modes", 0o750)
    (root / "links").mkdir()
    for name, target in ODD_SYMLINKS.items():
        os.symlink(target, root / "links" / name)
        os.utime(root / "links" / name, (MTIME, MTIME), follow_symlinks=False)
    write_file(root / "hard" / "one", pseudo_random(10000, 2))
    os.link(root / "hard" / "one", root / "hard" / "two")
    os.link(root / "hard" / "one", root / "three-elsewhere")
    for i in range(5000):
        write_file(root / "many" / f"entry-{i:05d}.txt", f"file number {i}\n".encode())
    os.mkfifo(root / "fifo")
    os.mknod(root / "null-device", stat.S_IFCHR | 0o666, os.makedev(1, 3))
    os.mknod(root / "block-device", stat.S_IFBLK | 0o660, os.makedev(7, 0))
    for path in (root / "fifo", root / "null-device", root / "block-device"):
        os.utime(path, (MTIME, MTIME))
    return root


@pytest.fixture(scope="session")
def rich(tmp_path_factory) -> tuple[Path, Path]:
    """(source tree, Rock Ridge + Joliet ISO by xorriso with a zisofs file)."""
    base = tmp_path_factory.mktemp("rich")
    src = build_rich_tree(base / "src")
    iso = xorriso(base / "rich.iso", src, "-zisofs", "block_size=32k",
                  "-set_filter_r", "--zisofs", "/compressible.txt", "--")
    return src, iso


def test_rock_ridge_shows_the_source_tree(rich, mount):
    src, iso = rich
    with mount(iso) as root:
        count = compare_trees(src, root)
    assert count > 5000


def test_rock_ridge_odd_symlink_targets_are_byte_exact(rich, mount):
    _, iso = rich
    with mount(iso) as root:
        for name, target in ODD_SYMLINKS.items():
            assert os.readlink(root / "links" / name) == target


def test_hard_links_share_one_inode_and_count(rich, mount):
    _, iso = rich
    with mount(iso) as root:
        one, two, three = (os.stat(root / p) for p in ("hard/one", "hard/two", "three-elsewhere"))
        assert one.st_ino == two.st_ino == three.st_ino
        assert one.st_nlink == 3
        assert os.stat(root / "README.txt").st_ino != one.st_ino


def test_zisofs_file_reads_decompressed_and_raw_namespace_shows_it_compressed(rich, mount):
    src, iso = rich
    original = (src / "compressible.txt").read_bytes()
    with mount(iso) as root:
        assert os.stat(root / "compressible.txt").st_size == len(original)
        assert (root / "compressible.txt").read_bytes() == original
        with open(root / "compressible.txt", "rb") as f:  # a read in the middle of a block
            f.seek(100_001)
            assert f.read(70_000) == original[100_001:170_001]
    with mount(iso, "namespace=iso9660") as root:
        raw = (root / "COMPRESSIBLE.TXT").read_bytes()
        assert raw[:8] == b"\x37\xe4\x53\x96\xc9\xdb\xd6\x07" and len(raw) < len(original) // 4


def test_devices_and_fifo_are_shown_as_what_they_are(rich, mount):
    _, iso = rich
    with mount(iso) as root:
        assert stat.S_ISFIFO(os.lstat(root / "fifo").st_mode)
        null = os.lstat(root / "null-device")
        assert stat.S_ISCHR(null.st_mode) and null.st_rdev == os.makedev(1, 3)
        block = os.lstat(root / "block-device")
        assert stat.S_ISBLK(block.st_mode) and block.st_rdev == os.makedev(7, 0)


def test_joliet_namespace_of_the_same_image(rich, mount):
    src, iso = rich
    with mount(iso, "namespace=joliet") as root:
        assert (root / "README.txt").read_bytes() == b"hello\n"
        assert (root / "Grüße — 日本語 ☃.txt").read_bytes() == b"unicode\n"
        assert sha256_of(root / "big.bin") == sha256_of(src / "big.bin")
        assert len(os.listdir(root / "many")) == 5000
        st = os.stat(root / "README.txt")
        assert stat.S_IMODE(st.st_mode) == 0o444 and st.st_uid == os.getuid()
        assert stat.S_IMODE(os.stat(root / "many").st_mode) == 0o555


def test_directory_of_5000_entries_lists_in_order(rich, mount):
    _, iso = rich
    with mount(iso) as root:
        names = os.listdir(root / "many")
    assert sorted(names) == [f"entry-{i:05d}.txt" for i in range(5000)]


def test_joliet_only_image_from_genisoimage(tmp_path, mount):
    src = tmp_path / "src"
    write_file(src / "Mixed Case Name.txt", b"joliet\n")
    write_file(src / "Ünïcødé – names" / "inner file.dat", pseudo_random(5000, 3))
    write_file(src / "sub" / "deeper" / ("n" * 60 + ".txt"), b"sixty\n")
    write_file(src / "hard-a", b"shared content\n")
    os.link(src / "hard-a", src / "hard-b")
    iso = genisoimage(tmp_path / "joliet.iso", src, "-J", "-joliet-long")
    with mount(iso) as root:
        compare_trees(src, root, modes=False, owners=False, nlink=False)
        assert stat.S_IMODE(os.stat(root / "hard-a").st_mode) == 0o444


def test_plain_level_1_image_from_pycdlib(tmp_path, mount):
    files = {"/README.TXT;1": b"plain\n", "/DIR1/FILE1.DAT;1": pseudo_random(70000, 4),
             "/DIR1/SUB/DEEP.BIN;1": b"deep\n", "/NOEXT.;1": b"no extension\n"}
    iso = pycdlib_iso(tmp_path / "plain.iso", files, rock_ridge=False, joliet=False)
    with mount(iso) as root:
        got = {p: (root / p).read_bytes() for p, st in tree_entries(root).items() if stat.S_ISREG(st.st_mode)}
    assert got == {"README.TXT": b"plain\n", "DIR1/FILE1.DAT": files["/DIR1/FILE1.DAT;1"],
                   "DIR1/SUB/DEEP.BIN": b"deep\n", "NOEXT": b"no extension\n"}


def test_rock_ridge_and_joliet_image_from_pycdlib(tmp_path, mount):
    files = {"/README.TXT;1": b"readme\n", "/DOCS/GUIDE.TXT;1": b"guide\n", "/DATA.BIN;1": pseudo_random(9000, 5)}
    iso = pycdlib_iso(tmp_path / "rrj.iso", files, rock_ridge=True, joliet=True,
                      symlinks={"/LINK.;1": "docs/guide.txt"}, hardlinks={"/COPY.BIN;1": "/DATA.BIN;1"})
    expected_files = {"readme.txt": b"readme\n", "docs/guide.txt": b"guide\n", "data.bin": files["/DATA.BIN;1"],
                      "copy.bin": files["/DATA.BIN;1"]}
    with mount(iso) as root:
        entries = tree_entries(root)
        assert sorted(entries) == sorted([*expected_files, "docs", "link"])
        for path, data in expected_files.items():
            assert (root / path).read_bytes() == data
        assert os.readlink(root / "link") == "docs/guide.txt"
        assert entries["copy.bin"].st_ino == entries["data.bin"].st_ino
    with mount(iso, "namespace=joliet") as root:
        assert (root / "docs" / "guide.txt").read_bytes() == b"guide\n"
    with mount(iso, "namespace=iso9660") as root:
        assert (root / "DOCS" / "GUIDE.TXT").read_bytes() == b"guide\n"


def test_iso9660_1999_names_from_genisoimage_level_4(tmp_path, mount):
    src = tmp_path / "src"
    write_file(src / "Long Mixed-Case Name With Spaces.text", b"1999\n")
    write_file(src / "dir.with.dots" / "inner", b"inner\n")
    iso = genisoimage(tmp_path / "iso1999.iso", src, "-iso-level", "4")
    assert "iso1999" in run_imgfs("info", str(iso), check=True).stdout
    with mount(iso) as root:
        compare_trees(src, root, modes=False, owners=False, nlink=False)


@pytest.mark.parametrize("writer", ["xorriso-rr_moved", "xorriso-root", "genisoimage"])
def test_300_level_deep_tree_is_put_back_from_relocation(tmp_path, mount, writer):
    src = tmp_path / "src"
    deep = src.joinpath(*(f"level{i:03d}" for i in range(300)))
    write_file(deep / "bottom.txt", b"the bottom\n")
    write_file(src / "level000" / "level001" / "side.txt", b"side\n")
    iso = tmp_path / "deep.iso"
    if writer == "genisoimage":
        genisoimage(iso, src, "-R")
    else:  # relocate into /rr_moved, or (xorriso's default) into the root itself
        reloc = ["-rr_reloc_dir", "rr_moved"] if writer == "xorriso-rr_moved" else []
        xorriso(iso, src, "-compliance", "deep_paths_off", *reloc, joliet=False)
    with mount(iso) as root:
        compare_trees(src, root)
        assert os.listdir(root) == ["level000"], "relocated directories must be hidden"
    with mount(iso, "namespace=iso9660") as root:
        assert len(os.listdir(root)) > 1, "nothing was relocated: the test proves nothing"


def test_multi_extent_file_reads_completely(tmp_path, mount):
    src = tmp_path / "src"
    data = pseudo_random(54_321, 6)
    write_file(src / "split" / "payload.bin", data)
    write_file(src / "split" / "after.txt", b"after\n")
    iso = xorriso(tmp_path / "multi.iso", src, joliet=False)
    pieces = split_into_extents(iso, (b"SPLIT", b"PAYLOAD.BIN;1"), 8192)
    assert pieces == 7
    for namespace in ("rockridge", "iso9660"):
        with mount(iso, f"namespace={namespace}") as root:
            name = "payload.bin" if namespace == "rockridge" else "PAYLOAD.BIN"
            directory = root / ("split" if namespace == "rockridge" else "SPLIT")
            assert os.stat(directory / name).st_size == len(data)
            assert (directory / name).read_bytes() == data
            assert len(os.listdir(directory)) == 2


def test_concurrent_readers_get_the_right_bytes(rich, mount):
    src, iso = rich
    expected = (src / "big.bin").read_bytes()
    errors: list[str] = []
    with mount(iso) as root:
        def reader(seed: int) -> None:
            rng = random.Random(seed)
            fd = os.open(root / "big.bin", os.O_RDONLY)
            try:
                for _ in range(300):
                    offset, length = rng.randrange(len(expected)), rng.randrange(1, 300_000)
                    if os.pread(fd, length, offset) != expected[offset : offset + length]:
                        errors.append(f"wrong bytes at {offset}+{length}")
            finally:
                os.close(fd)

        threads = [threading.Thread(target=reader, args=(seed,)) for seed in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert errors == []


def test_inode_numbers_are_stable_across_remounts(rich, mount):
    _, iso = rich
    with mount(iso) as root:
        first = {p: st.st_ino for p, st in tree_entries(root / "hard").items()}
        first_root = os.stat(root / "README.txt").st_ino
    with mount(iso) as root:
        assert {p: st.st_ino for p, st in tree_entries(root / "hard").items()} == first
        assert os.stat(root / "README.txt").st_ino == first_root


def test_owner_and_umask_options(rich, mount):
    _, iso = rich
    with mount(iso, "uid=4321", "gid=8765", "umask=027") as root:
        st = os.stat(root / "modes" / "tool.sh")
        assert (st.st_uid, st.st_gid) == (4321, 8765)
        assert stat.S_IMODE(st.st_mode) == 0o750
        assert stat.S_IMODE(os.stat(root / "README.txt").st_mode) == 0o640


def test_statfs_reports_the_image_size_and_no_free_space(rich, mount):
    _, iso = rich
    with mount(iso) as root:
        vfs = os.statvfs(root)
    assert vfs.f_bfree == 0 and vfs.f_bavail == 0
    assert vfs.f_blocks * vfs.f_frsize == -(-iso.stat().st_size // vfs.f_frsize) * vfs.f_frsize
    assert vfs.f_namemax == 255


def test_every_write_gets_erofs(rich, mount):
    _, iso = rich
    with mount(iso) as root:
        attempts = [
            lambda: open(root / "README.txt", "r+b"),
            lambda: open(root / "new-file", "wb"),
            lambda: os.mkdir(root / "newdir"),
            lambda: os.unlink(root / "README.txt"),
            lambda: os.rename(root / "README.txt", root / "x"),
            lambda: os.chmod(root / "README.txt", 0o777),
            lambda: os.symlink("x", root / "newlink"),
            lambda: os.truncate(root / "README.txt", 0),
            lambda: os.setxattr(root / "README.txt", "user.x", b"1"),
        ]
        for attempt in attempts:
            with pytest.raises(OSError) as caught:
                attempt()
            assert caught.value.errno == errno.EROFS
        assert (root / "README.txt").read_bytes() == b"hello\n"
        with pytest.raises(OSError) as caught:  # ISO 9660 has no xattrs: not supported, not empty
            os.listxattr(root / "README.txt")
        assert caught.value.errno == errno.EOPNOTSUPP


def test_st_blocks_is_set(rich, mount):
    _, iso = rich
    with mount(iso) as root:
        st = os.stat(root / "big.bin")
    assert st.st_blocks == (3 << 20) // 512


def _nodes_both_ways(image: Path, namespace: str) -> tuple[list[tuple], list[tuple], int]:
    """Every directory's entries as the reader makes them (ordinary records in one pass), as the general path
    alone makes them, and how many entries took the one-pass path."""
    fields = ("name", "mode", "size", "ino", "nlink", "uid", "gid", "mtime_ns", "atime_ns", "ctime_ns", "rdev",
              "target", "handle")
    opened = open_image(str(image), MountOptions(namespace=namespace))
    fs = opened.tree.fs
    ordinary = fs._ordinary_node
    taken = 0

    def counted(*args):
        nonlocal taken
        node = ordinary(*args)
        taken += node is not None
        return node

    def listing(directory_node, general: bool) -> list[tuple]:
        fs._ordinary_node = (lambda *args: None) if general else counted
        kids, _ = fs._parse_directory(directory_node.handle)
        return [tuple(getattr(kid, f) for f in fields) for kid in kids.values()]

    fast, slow, pending = [], [], [fs.root]
    while pending:
        directory = pending.pop()
        fast += listing(directory, general=False)
        slow += listing(directory, general=True)
        fs._ordinary_node = ordinary
        pending += [kid for kid in fs.children(directory).values() if kid.is_dir]
    opened.close()
    return fast, slow, taken


@pytest.fixture(scope="session")
def rich_genisoimage(rich, tmp_path_factory) -> Path:
    """The same tree written by genisoimage (RRIP 1.09 PX, RR entries, CE areas for long names)."""
    src, _ = rich
    return genisoimage(tmp_path_factory.mktemp("rich-genisoimage") / "rich.iso", src, "-R", "-J",
                       "-joliet-long")


@pytest.mark.parametrize("writer", ["xorriso", "genisoimage"])
@pytest.mark.parametrize("namespace", ["rockridge", "joliet", "iso9660"])
def test_ordinary_records_make_the_nodes_the_general_path_makes(rich, rich_genisoimage, writer, namespace):
    """Most records are read in one pass (``_ordinary_node``); every node it makes must be the one ``_add``
    makes of the same record: name, mode, size, inode, links, owners, times, target and handle."""
    iso = rich[1] if writer == "xorriso" else rich_genisoimage
    fast, slow, taken = _nodes_both_ways(iso, namespace)
    assert fast == slow
    assert taken > 5000  # the 5,000-entry folder at least: the one-pass path was really taken
    if namespace == "rockridge":
        assert len(fast) - taken >= len(ODD_SYMLINKS) + 3  # symlinks, devices, the fifo: the general way
