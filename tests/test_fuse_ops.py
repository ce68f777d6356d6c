"""The FUSE adapter served in-process on a real mount: the spliced and the buffered read paths give the same
bytes, several readers at once get theirs, a slow read holds up no other request, X_OK follows the mode bits,
errors map to errno, and a damaged region's log line names the path."""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import random
import stat
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import is_mounted
from isotools import pseudo_random, write_file, xorriso

from imgfs.filesystems import base
from imgfs.fuse import ImgfsOperations, fuse_options, inodes, kernel
from imgfs.fuse.mount import mount
from imgfs.fuse.session import Session
from imgfs.image import open_image
from imgfs.io.stream import BytesStream
from imgfs.options import MountOptions
from imgfs.tree import Tree, VirtualFilesystem

BIG = pseudo_random(3_000_000, 60)
TEXT = b"compressible line of text\n" * 20_000
SMALL_FILES = 30


def small(n: int) -> bytes:
    return pseudo_random(100 + 977 * n, n)


@pytest.fixture(scope="module")
def iso(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("ops")
    write_file(base / "src" / "data.bin", BIG)
    write_file(base / "src" / "text.txt", TEXT)
    write_file(base / "src" / "run.sh", b"#!/bin/sh\necho hi\n", 0o755)
    write_file(base / "src" / "own.sh", b"#!/bin/sh\n", 0o700)
    write_file(base / "src" / "dir" / "inner.txt", b"inner\n", 0o640)
    for n in range(SMALL_FILES):
        write_file(base / "src" / "small" / f"f{n:02d}", small(n))
    (base / "src" / "link").symlink_to("dir/inner.txt")
    return xorriso(base / "ops.iso", base / "src", "-zisofs", "block_size=32k",
                   "-set_filter_r", "--zisofs", "/text.txt", "--")


@contextlib.contextmanager
def served(image_path: Path, mountpoint: Path, threads: int = 2, splice: bool = True) -> Iterator[Session]:
    """Mount ``image_path`` and serve it from threads of this process; unmount on the way out."""
    mountpoint.mkdir(exist_ok=True)
    options = MountOptions()
    image = open_image(str(image_path), options)
    mounted = mount(str(mountpoint), fuse_options(image, options))
    session = Session(mounted, ImgfsOperations(image, options, str(mountpoint)), threads=threads)
    session.splice = session.splice and splice
    session.operations.notifier = session.store
    thread = threading.Thread(target=session.run, daemon=True)
    thread.start()
    try:
        assert session.ready.wait(10)
        yield session
    finally:
        mounted.unmount()
        thread.join(10)
        mounted.close()
        image.close()
        assert not is_mounted(mountpoint)


def read_in_blocks(path: Path, block: int) -> bytes:
    with open(path, "rb", buffering=0) as f:
        return b"".join(iter(lambda: f.read(block), b""))


@pytest.mark.parametrize("splice", [True, False], ids=["spliced", "buffered"])
def test_both_read_paths_give_the_files_bytes(iso, tmp_path, splice):
    with served(iso, tmp_path / "mnt", splice=splice) as session:
        assert read_in_blocks(tmp_path / "mnt" / "data.bin", 1 << 20) == BIG
        assert read_in_blocks(tmp_path / "mnt" / "text.txt", 1 << 20) == TEXT  # zisofs: decoded, never spliced
        with open(tmp_path / "mnt" / "data.bin", "rb", buffering=0) as f:
            assert os.pread(f.fileno(), 5000, 2_999_000) == BIG[2_999_000:]
        assert (session.spliced > 0) == splice


def test_small_siblings_are_pushed_into_the_page_cache_with_their_bytes(iso, tmp_path):
    with served(iso, tmp_path / "mnt") as session:
        folder = tmp_path / "mnt" / "small"
        names = sorted(os.listdir(folder))  # READDIRPLUS: the kernel now holds an inode for each
        assert (folder / names[0]).read_bytes() == small(0)  # reading one pushes the others
        for _ in range(200):
            if session.operations.pusher.stored >= SMALL_FILES - 1:
                break
            time.sleep(0.01)
        assert session.operations.pusher.stored == SMALL_FILES - 1
        assert [(folder / name).read_bytes() for name in names] == [small(n) for n in range(SMALL_FILES)]


def test_files_cost_the_daemon_nothing_and_read_right_after_their_listings_are_gone(iso, tmp_path, monkeypatch):
    """Only directories are held per node id: a file's says where it is listed, so a walk of a million files
    holds no object per file, and it reads right even when every listing was dropped and parsed anew."""
    monkeypatch.setattr(base, "RESIDENT_ENTRIES", 1)
    monkeypatch.setattr(inodes, "LISTED_ENTRIES", 1)
    monkeypatch.setattr(inodes, "OPEN_STREAMS", 1)
    with served(iso, tmp_path / "mnt") as session:
        root = tmp_path / "mnt"
        listed = {path.relative_to(root): path.lstat() for path in root.rglob("*")}  # READDIRPLUS, every entry
        assert len(listed) == 7 + 1 + SMALL_FILES
        held = session.operations.inodes.table
        assert sorted(inode.path() for inode in held.values()) == ["/", "/dir", "/small"]
        assert len(session.operations.inodes._listings) == 2  # the last two listings only
        for n in range(SMALL_FILES - 1, -1, -1):
            assert (root / "small" / f"f{n:02d}").read_bytes() == small(n)
        assert read_in_blocks(root / "data.bin", 1 << 20) == BIG and (root / "text.txt").read_bytes() == TEXT
        assert (root / "dir" / "inner.txt").read_bytes() == b"inner\n" and os.readlink(root / "link") == "dir/inner.txt"
        assert stat.S_IMODE(listed[Path("run.sh")].st_mode) == 0o755 and listed[Path("dir/inner.txt")].st_size == 6
        assert os.stat(root / "small" / "f03").st_ino == listed[Path("small/f03")].st_ino
        assert listed[Path("small/f03")].st_ino != listed[Path("small/f04")].st_ino
        assert sorted(inode.path() for inode in held.values()) == ["/", "/dir", "/small"]


def test_a_folder_too_big_for_the_listing_bound_stays_while_its_subfolders_are_listed(monkeypatch):
    """``cp -r`` of a folder of many files and some subfolders: each subfolder's listing comes between reads of
    the big folder's files, whose node ids need the big listing. It is listed once, not once per subfolder."""
    monkeypatch.setattr(inodes, "LISTED_ENTRIES", 10)
    volumes = VirtualFilesystem()
    big = volumes.add_dir(volumes.root, "big")
    for n in range(40):
        volumes.add_file(big, f"f{n:02d}", BytesStream(b"%d" % n))
        if n % 10 == 0:
            volumes.add_file(volumes.add_dir(big, f"sub{n}"), "leaf", BytesStream(b"leaf"))
    tree = Tree(volumes)
    listed: list[str] = []
    plain_listing = tree.listing
    monkeypatch.setattr(tree, "listing", lambda node, fs: listed.append(node.name) or plain_listing(node, fs))
    table = inodes.Inodes(tree)

    def inode_of(parent, name):
        index = table.index(parent, name)
        _, node, fs = table.listing(parent)[index]
        return table.get(table.child(parent, name, index, node, fs, tree.shown_ino(node, fs)))

    folder = inode_of(table.root, "big")
    copied = {}
    for name, node, _ in list(table.listing(folder))[2:]:
        entry = inode_of(folder, name)
        if node.is_dir:
            leaf = inode_of(entry, "leaf")
            copied[f"{name}/leaf"] = table.stream(leaf.nodeid).pread(0, 10)
        else:
            copied[name] = table.stream(entry.nodeid).pread(0, 10)
    leaves = {f"sub{n}/leaf": b"leaf" for n in range(0, 40, 10)}
    assert copied == {**{f"f{n:02d}": b"%d" % n for n in range(40)}, **leaves}
    assert listed.count("big") == 1 and listed.count("sub10") == 1
    assert len(table._listings) == 2


def test_concurrent_readers_get_their_bytes(iso, tmp_path):
    rng = random.Random(3)
    jobs = [(name, rng.randrange(len(data)), rng.choice((4096, 65536, 300_000)))
            for name, data in (("data.bin", BIG), ("text.txt", TEXT)) for _ in range(150)]
    wrong: list[tuple] = []
    with served(iso, tmp_path / "mnt", threads=4):
        def reader(part: list) -> None:
            for name, offset, size in part:
                data = BIG if name == "data.bin" else TEXT
                # O_DIRECT: every read goes to the daemon, never to the page cache
                fd = os.open(tmp_path / "mnt" / name, os.O_RDONLY | os.O_DIRECT)
                try:
                    buf = bytearray(size)
                    got = os.preadv(fd, [memoryview(buf)], offset - offset % 4096)
                finally:
                    os.close(fd)
                start = offset - offset % 4096
                if bytes(buf[:got]) != data[start : start + size]:
                    wrong.append((name, offset, size))
        threads = [threading.Thread(target=reader, args=(jobs[i::6],)) for i in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert not wrong


def test_a_slow_read_holds_up_only_its_own_thread(iso, tmp_path):
    """Every thread reads requests: while one is stuck in a long decode, the others list, stat and read."""
    with served(iso, tmp_path / "mnt", threads=4) as session:
        root = tmp_path / "mnt"
        os.stat(root / "text.txt")
        inodes = session.operations.inodes
        slow_node = inodes.entry_id(inodes.root, inodes.index(inodes.root, "text.txt"))  # the one the kernel holds
        handlers = session.operations.handlers
        plain_read = handlers[kernel.READ]
        stuck, release = threading.Event(), threading.Event()

        def read(worker, unique, nodeid, request, size):
            if nodeid == slow_node and not stuck.is_set():  # the first read of it only: one thread held
                stuck.set()
                release.wait(20)  # a decode that takes a long time
            plain_read(worker, unique, nodeid, request, size)

        handlers[kernel.READ] = read  # the session looks handlers up in this dict for each request
        slow: dict[str, bytes] = {}
        slow_reader = threading.Thread(target=lambda: slow.update(text=(root / "text.txt").read_bytes()))
        slow_reader.start()
        try:
            assert stuck.wait(10)
            meanwhile: dict[str, object] = {}

            def other_work() -> None:
                meanwhile["names"] = sorted(os.listdir(root / "small"))
                meanwhile["size"] = os.stat(root / "dir" / "inner.txt").st_size
                meanwhile["data"] = read_in_blocks(root / "data.bin", 1 << 20)

            other = threading.Thread(target=other_work)
            other.start()
            other.join(10)
            assert not other.is_alive(), "the other requests waited for the slow read"
            assert meanwhile == {"names": [f"f{n:02d}" for n in range(SMALL_FILES)], "size": 6, "data": BIG}
            assert not slow  # still stuck, and yet the others were answered
        finally:
            release.set()
            slow_reader.join(10)
        assert slow == {"text": TEXT}


def test_x_ok_follows_the_mode_bits(iso, tmp_path):
    with served(iso, tmp_path / "mnt") as _:
        root = tmp_path / "mnt"
        assert os.access(root / "run.sh", os.X_OK) and os.access(root / "own.sh", os.X_OK)
        assert not os.access(root / "data.bin", os.X_OK) and not os.access(root / "dir" / "inner.txt", os.X_OK)
        assert os.access(root / "dir", os.X_OK) and os.access(root / "data.bin", os.R_OK)
        assert not os.access(root / "data.bin", os.W_OK)
        found = subprocess.run(["find", str(root), "-type", "f", "-executable"], capture_output=True, text=True,
                               check=True).stdout.split()
        assert sorted(found) == [str(root / "own.sh"), str(root / "run.sh")]


def test_attributes_links_and_errors(iso, tmp_path):
    with served(iso, tmp_path / "mnt") as _:
        root = tmp_path / "mnt"
        assert sorted(os.listdir(root)) == ["data.bin", "dir", "link", "own.sh", "run.sh", "small", "text.txt"]
        st = os.stat(root / "dir" / "inner.txt")
        assert stat.S_IMODE(st.st_mode) == 0o640 and st.st_size == 6 and st.st_mtime == 1_600_000_000
        assert os.readlink(root / "link") == "dir/inner.txt" and (root / "link").read_bytes() == b"inner\n"
        assert os.stat(root / "data.bin").st_blocks == (len(BIG) + 511) // 512
        assert {".", ".."} <= set(subprocess.run(["ls", "-a", str(root)], capture_output=True, text=True,
                                                 check=True).stdout.split())
        cases = {root / "nope": errno.ENOENT, root / "data.bin" / "x": errno.ENOTDIR}
        for path, code in cases.items():
            with pytest.raises(OSError) as caught:
                os.stat(path)
            assert caught.value.errno == code
        with pytest.raises(OSError) as caught:
            os.open(root / "data.bin", os.O_WRONLY)
        assert caught.value.errno == errno.EROFS
        assert os.statvfs(root).f_blocks > 0


def test_a_damaged_region_is_eio_with_a_log_line_naming_the_path(iso, tmp_path, caplog):
    cut = tmp_path / "cut.iso"
    data = iso.read_bytes()
    at = data.index(BIG[:64])
    cut.write_bytes(data[: at + 1_000_000])  # data.bin's extent now runs past the end of the image
    with served(cut, tmp_path / "mnt"), caplog.at_level(logging.ERROR, logger="imgfs.fuse"):
        with pytest.raises(OSError) as caught:
            read_in_blocks(tmp_path / "mnt" / "data.bin", 1 << 20)
        assert caught.value.errno == errno.EIO
        assert "run.sh" in os.listdir(tmp_path / "mnt")  # the rest of the mount still works
    lines = [r.getMessage() for r in caplog.records]
    assert any(line.startswith("read /data.bin: ") for line in lines), lines
