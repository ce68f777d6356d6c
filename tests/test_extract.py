"""``imgfs extract IMAGE [PATH] DEST``: the extracted tree compared with the tree the image was made from
(names, types, modes, owners, times, symlink targets, hard links, device numbers, extended attributes,
bytes, holes); one path; names that would leave DEST; what is in DEST already; a damaged file."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from conftest import IMGFS, compare_trees, run_imgfs, sha256_of
from isotools import find_record, patch_record, pseudo_random, write_file, xorriso
from test_ext import build_tree, compare_xattrs, mkfs

from imgfs.cli.extract import Extraction
from imgfs.image import OpenedImage
from imgfs.io.stream import BytesStream
from imgfs.tree import Tree, VirtualFilesystem


@pytest.fixture(scope="module")
def ext_image(tmp_path_factory) -> tuple[Path, Path]:
    """An ext4 image of everything mkfs -d copies: modes (set-id, sticky, 0000), owners, symlinks, hard links
    across folders, sparse files, devices, a FIFO, a socket, xattrs in inodes and blocks, deep and long names."""
    work = tmp_path_factory.mktemp("ext")
    source = build_tree(work / "src", many=50)
    return source, mkfs(work / "ext4.img", source, "ext4", "-b", "4096")


def test_the_whole_image_is_its_source_tree(ext_image, tmp_path):
    source, image = ext_image
    dest = tmp_path / "out"
    done = run_imgfs("extract", str(image), str(dest))
    assert done.returncode == 0 and done.stderr == "", done.stderr
    assert compare_trees(source, dest) > 100  # modes, owners, mtimes, targets, bytes, hard-link groups
    assert compare_xattrs(source, dest) >= 7  # user., trusted. and security. attributes, on files and folders
    for rel in ("modes", "modes/sticky", "deep/level00", "many"):  # folders keep their times and modes too
        want, got = (source / rel).stat(), (dest / rel).stat()  # (mkfs -d keeps whole seconds of folders)
        assert got.st_mode == want.st_mode and abs(got.st_mtime - want.st_mtime) < 1, rel
    sparse = (dest / "sparse.bin").stat()
    assert sparse.st_size == 100 << 20 and sparse.st_blocks * 512 < 20 << 20  # holes stay holes
    assert os.stat(dest / "null-device").st_rdev == os.makedev(1, 3)


def test_one_file_and_one_folder_go_into_dest_under_their_own_name(ext_image, tmp_path):
    source, image = ext_image
    run_imgfs("extract", str(image), "/hard/one", str(tmp_path / "a"), check=True)
    assert (tmp_path / "a" / "one").read_bytes() == (source / "hard" / "one").read_bytes()
    run_imgfs("extract", str(image), "/links", str(tmp_path / "b"), check=True)
    assert compare_trees(source / "links", tmp_path / "b" / "links") == 7
    missing = run_imgfs("extract", str(image), "/nope", str(tmp_path / "c"))
    assert missing.returncode == 1
    assert missing.stderr == "imgfs: /nope: no such file or folder in the image\n"


@pytest.fixture(scope="module")
def iso(tmp_path_factory) -> tuple[Path, Path]:
    work = tmp_path_factory.mktemp("iso")
    src = work / "src"
    write_file(src / "readme.txt", b"readable\n", 0o640)
    write_file(src / "victim.bin", pseudo_random(100_000, 7))
    write_file(src / "large.bin", pseudo_random(8 << 20, 8) + bytes(12 << 20) + b"end")  # pieces, a hole
    write_file(src / "dir" / "script.sh", b"#!/bin/sh\n", 0o755)
    os.symlink("../readme.txt", src / "dir" / "link")
    os.link(src / "readme.txt", src / "dir" / "hardlink")
    return src, xorriso(work / "image.iso", src)


def test_an_iso_with_a_large_file_and_links(iso, tmp_path):
    source, image = iso
    done = run_imgfs("extract", str(image), str(tmp_path / "out"))
    assert done.returncode == 0, done.stderr
    assert compare_trees(source, tmp_path / "out") == 7
    assert (tmp_path / "out" / "large.bin").stat().st_blocks * 512 < 10 << 20


def test_what_is_in_dest_already(iso, tmp_path):
    source, image = iso
    dest = tmp_path / "out"
    outside = tmp_path / "outside"
    outside.mkdir()
    dest.mkdir()
    (dest / "readme.txt").write_bytes(b"mine\n")
    os.symlink(outside, dest / "dir")  # a link where the image has a folder: never followed
    done = run_imgfs("extract", str(image), str(dest))
    assert done.returncode == 1
    assert sorted(done.stderr.splitlines()) == [
        f"imgfs: /dir: {dest / 'dir'} exists and is not a folder",
        "imgfs: /readme.txt: exists already (-f replaces it)"]
    assert (dest / "readme.txt").read_bytes() == b"mine\n" and not list(outside.iterdir())
    assert sha256_of(dest / "victim.bin") == sha256_of(source / "victim.bin")  # the rest was extracted
    (dest / "dir").unlink()
    done = run_imgfs("extract", "-f", str(image), str(dest))
    assert done.returncode == 0, done.stderr
    assert compare_trees(source, dest) == 7


def test_a_damaged_file_fails_alone(iso, tmp_path):
    source, image = iso
    damaged = tmp_path / "damaged.iso"
    shutil.copy(image, damaged)
    data = damaged.read_bytes()
    patch_record(damaged, find_record(data, b"VICTIM.BIN;1"), extent=len(data) // 2048 - 10)
    done = run_imgfs("extract", str(damaged), str(tmp_path / "out"))
    assert done.returncode == 1
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("imgfs: /victim.bin: ") and "past the end" in lines[0]
    assert not (tmp_path / "out" / "victim.bin").exists()
    assert (tmp_path / "out" / "dir" / "script.sh").read_bytes() == b"#!/bin/sh\n"


def test_names_that_would_leave_dest_are_refused(tmp_path, capsys):
    """Whatever a reader lets through, extract makes nothing outside DEST: an entry named "..", or with a
    slash, is refused by name, and the others are made."""
    files = VirtualFilesystem()
    for name in ("..", "a/../../escape", "fine.txt"):
        files.add_file(files.root, name, BytesStream(b"data\n", name))
    inner = files.add_dir(files.root, "inner")
    files.add_file(inner, "..", BytesStream(b"up\n", "up"))
    image = OpenedImage("virtual", BytesStream(b"", "virtual"), Tree(files), [])
    dest = tmp_path / "deep" / "dest"
    assert Extraction(image, str(dest)).run("/") == 1
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["deep", "dest", "fine.txt", "inner"]
    errors = capsys.readouterr().err.splitlines()
    assert sorted(errors) == [
        "imgfs: /..: refused: the name '..' would lead out of the destination folder",
        "imgfs: /a/../../escape: refused: the name 'a/../../escape' would lead out of the destination folder",
        "imgfs: /inner/..: refused: the name '..' would lead out of the destination folder"]


def test_as_a_user_without_privileges(ext_image):
    """Device files and trusted./security. attributes are root's to make: left out, each kind counted in one
    warning; everything else is made, owned by the user."""
    source, image = ext_image
    if subprocess.run(["runuser", "-u", "nobody", "--", IMGFS, "--version"], capture_output=True).returncode:
        pytest.skip(f"{IMGFS} cannot be run by other users (a venv of root's own Python)")
    public = Path(tempfile.mkdtemp(prefix="imgfs-extract-", dir="/tmp"))
    try:
        public.chmod(0o755)
        shutil.copy(image, public / "ext4.img")
        (public / "ext4.img").chmod(0o644)
        dest = public / "out"
        dest.mkdir()
        os.chown(dest, 65534, 65534)
        done = subprocess.run(["runuser", "-u", "nobody", "--", IMGFS, "extract", str(public / "ext4.img"),
                               str(dest)], capture_output=True, text=True, cwd="/")
        assert done.returncode == 0, done.stderr
        assert sorted(done.stderr.splitlines()) == [
            "imgfs: warning: 3 device files left out (only root may make them)",
            "imgfs: warning: 3 extended attributes left out: Operation not permitted"]  # trusted., security.
        assert compare_trees(source, dest, owners=False,
                             ignore=frozenset({"null-device", "block-device", "wide-device"})) > 100
        assert {p.stat().st_uid for p in dest.rglob("*") if not p.is_symlink()} == {65534}
    finally:
        shutil.rmtree(public)


def test_extract_needs_a_destination(iso):
    _, image = iso
    done = run_imgfs("extract", str(image))
    assert done.returncode == 2 and "DEST" in done.stderr


def test_modes_are_the_images_whatever_the_umask(iso, tmp_path):
    _, image = iso
    done = subprocess.run(["sh", "-c", f'umask 077 && exec "$0" extract {image} {tmp_path / "out"}',
                           IMGFS], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert stat.S_IMODE((tmp_path / "out" / "readme.txt").stat().st_mode) == 0o640
    assert stat.S_IMODE((tmp_path / "out" / "dir" / "script.sh").stat().st_mode) == 0o755


SHARED = """
import sys
from imgfs.cli.extract import Extraction
from imgfs.cli.helper import Helper
from imgfs.image import open_image
started = []
original = Helper.start
Helper.start = lambda work: started.append(original(work)) or started[-1]
image = open_image(sys.argv[1])
code = Extraction(image, sys.argv[2]).run("/")
print(code, [helper is not None for helper in started])
"""


def test_many_small_files_are_shared_with_a_second_process(tmp_path):
    """Past SHARE_FILES small files, a forked helper writes half of them; the tree is the same, hard links
    included (they stay with the first process), and a failure in the helper's half is counted. (In a process
    of its own: a helper is forked only where no other thread runs.)"""
    from imgfs.cli.extract import SHARE_FILES

    src = tmp_path / "src"
    for i in range(SHARE_FILES + 100):
        write_file(src / f"d{i // 100:02d}" / f"f{i:05d}.txt", f"{i}\n".encode() * (i % 7), 0o640 + i % 2)
    os.link(src / "d00" / "f00001.txt", src / "d20" / "linked.txt")
    image = xorriso(tmp_path / "many.iso", src)
    (tmp_path / "out" / "d20").mkdir(parents=True)
    (tmp_path / "out" / "d20" / "f02099.txt").write_bytes(b"in the way\n")  # in the helper's half
    done = subprocess.run([sys.executable, "-c", SHARED, str(image), str(tmp_path / "out")], capture_output=True,
                          text=True, timeout=120)
    assert done.stdout == "1 [True]\n", done.stderr  # one helper, and a failure it reported
    assert done.stderr == "imgfs: /d20/f02099.txt: exists already (-f replaces it)\n"
    (tmp_path / "out" / "d20" / "f02099.txt").unlink()
    (src / "d20" / "f02099.txt").unlink()
    assert compare_trees(src, tmp_path / "out") == SHARE_FILES + 100 + 21
