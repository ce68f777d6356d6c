"""NTFS volumes written by mkntfs and the ntfs-3g driver, read by imgfs and compared with the tree they were
made from and with what ntfs-3g itself reads back: every name, type, size, link target, hard link, named
stream and byte. Volumes with 4 KiB and 64 KiB clusters; LZNT1-compressed files on the 4 KiB one.
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
import stat
import subprocess
from pathlib import Path
from typing import Any

import pytest
from conftest import compare_trees
from disktools import blank, fat_image, put, sfdisk
from ntfspatch import cluster_size, ntfsinfo, runlist
from ntfstools import (
    COMPRESSIBLE,
    HARD_LINKS,
    MTIME,
    TIMES,
    WINDOWS_LINKS,
    add_dos_names,
    build_tree,
    comparable,
    copy_tree,
    differences,
    inode_groups,
    make_windows_links,
    make_wof_file,
    make_wsl_specials,
    mkntfs,
    ntfs3g,
    populate_compressed,
    pseudo_random,
    snapshot,
    write,
    write_fragmented,
    write_sparse,
)

from imgfs.codecs.wof import LZX, XPRESS4K, XPRESS8K, XPRESS16K
from imgfs.filesystems.base import Filesystem, Node
from imgfs.filesystems.ntfs import NtfsFilesystem
from imgfs.filesystems.ntfs.nodes import WINDOW
from imgfs.io.cache import BlockCache
from imgfs.io.stream import FileStream
from imgfs.layer import OpenContext

if not shutil.which("mkntfs") or not shutil.which("ntfs-3g"):
    pytest.skip("ntfs-3g (mkntfs, ntfs-3g) is not installed", allow_module_level=True)

SVI = "System Volume Information"
SPARSE_SIZE = 40 << 20
SPARSE_PIECES = [(0, b"start"), (20 << 20, b"middle"), (SPARSE_SIZE - 5, b"end!\n")]


ATTRIB_SAMPLE = ("README.txt", "deep", "sparse.bin", "compressed", "compressed/text.txt", "links/relative", "fifo",
                 "windows-links/junction", "wof/lzx.txt")


class Volume:
    def __init__(self, image: Path, source: Path, oracle: dict[str, dict[str, Any]], mountpoint: Path,
                 attribs: dict[str, bytes]) -> None:
        self.image = image
        self.source = source
        self.oracle = oracle  # what ntfs-3g reads back
        self.mountpoint = mountpoint  # where ntfs-3g was mounted for it (its absolute targets start there)
        self.attribs = attribs  # system.ntfs_attrib of ATTRIB_SAMPLE, as ntfs-3g gives it

    def open(self) -> NtfsFilesystem:
        stream = FileStream(str(self.image))
        return NtfsFilesystem(stream, OpenContext(str(self.image), BlockCache(64 << 20)))


def make_volume(base: Path, cluster: int, size: int, compressed: bool) -> Volume:
    source = build_tree(base / "source")
    image = mkntfs(base / f"ntfs-{cluster}.img", size, cluster)
    with ntfs3g(image, base / "writer") as mnt:
        copy_tree(source, mnt)
        add_dos_names(mnt)
        write(mnt / SVI / "tracking.log", b"hidden from the tree, shown under .imgfs\n")
        (source / SVI).mkdir()
        for root in (source, mnt):
            write_sparse(root / "sparse.bin", SPARSE_SIZE, SPARSE_PIECES)
        if compressed:
            contents = populate_compressed(mnt / "compressed")
            (source / "compressed").mkdir()
            for name, data in contents.items():
                write(source / "compressed" / name, data)
        write_fragmented(mnt, [source], cluster)
    if compressed:  # the 4 KiB volume: what ntfs-3g does not write unasked
        _add_wsl_wof_and_windows_links(image, base, source)
    with ntfs3g(image, base / "reader", "ro", "posix_nlink") as mnt:  # link counts without DOS aliases
        # ntfs-3g without its plugin cannot read WOF; it shows System Volume Information as it is
        oracle = snapshot(mnt, ignore=frozenset({"wof", SVI, "big-streams"}))  # ntfs-3g: E2BIG for "large"
        attribs = {path: os.getxattr(mnt / path, "system.ntfs_attrib", follow_symlinks=False)
                   for path in ATTRIB_SAMPLE if os.path.lexists(mnt / path)}
    return Volume(image, source, oracle, base / "reader", attribs)


WOF_CONTENT = COMPRESSIBLE[:60000] + pseudo_random(30000, 9) + bytes(20000) + b"tail"
WOF_FILES = {"xpress4k-wimlib.txt": (XPRESS4K, "wimlib"), "lzx-wimlib.txt": (LZX, "wimlib"),
             "xpress8k.txt": (XPRESS8K, "test"), "xpress16k.txt": (XPRESS16K, "test"), "lzx.txt": (LZX, "test")}


def _add_wsl_wof_and_windows_links(image: Path, base: Path, source: Path) -> None:
    with ntfs3g(image, base / "wsl", "special_files=wsl") as mnt:
        make_wsl_specials(mnt / "wsl")
    make_wsl_specials(source / "wsl")
    with ntfs3g(image, base / "windows", "streams_interface=windows") as mnt:
        (mnt / "wof").mkdir()
        for name, (algorithm, engine) in WOF_FILES.items():
            make_wof_file(mnt / "wof" / name, WOF_CONTENT, algorithm, engine)
        make_windows_links(mnt / "windows-links")
        write(mnt / "big-streams" / "file", b"a stream too large for an xattr\n")
        Path(f"{mnt}/big-streams/file:large").write_bytes(pseudo_random(100_000, 10))
        Path(f"{mnt}/big-streams/file:small").write_bytes(b"shown")
        os.utime(mnt / "big-streams" / "file", (MTIME, MTIME))
    for name in WOF_FILES:
        write(source / "wof" / name, WOF_CONTENT)
    write(source / "big-streams" / "file", b"a stream too large for an xattr\n")
    os.setxattr(source / "big-streams" / "file", "user.small", b"shown")


@pytest.fixture(scope="module")
def volume4k(tmp_path_factory: pytest.TempPathFactory) -> Volume:
    return make_volume(tmp_path_factory.mktemp("ntfs4k"), 4096, 48 << 20, compressed=True)


@pytest.fixture(scope="module")
def volume64k(tmp_path_factory: pytest.TempPathFactory) -> Volume:
    return make_volume(tmp_path_factory.mktemp("ntfs64k"), 65536, 96 << 20, compressed=False)


# -- a library-level walk, shown the way snapshot() shows a mounted tree -------------------------------


def library_snapshot(fs: Filesystem) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}

    def walk(node: Node, prefix: str) -> None:
        for name, kid in fs.children(node).items():
            path = f"{prefix}{name}"
            kind = stat.S_IFMT(kid.mode)
            xattrs = {k: v for k, v in fs.xattrs(kid).items() if k.startswith("user.")}
            entry: dict[str, Any] = {"type": kind, "ino": kid.ino, "xattrs": xattrs}
            if kind == stat.S_IFREG:
                data = fs.open(kid).pread(0, kid.size)
                entry.update(size=kid.size, sha256=__import__("hashlib").sha256(data).hexdigest(), nlink=kid.nlink)
            elif kind == stat.S_IFLNK:
                entry.update(target=kid.target)
            elif kind in (stat.S_IFCHR, stat.S_IFBLK):
                entry.update(rdev=kid.rdev)
            found[path] = entry
            if kid.is_dir:
                walk(kid, path + "/")

    walk(fs.root, "")
    return found


@pytest.mark.parametrize("which", ["volume4k", "volume64k"])
def test_library_matches_source_and_ntfs3g(which: str, request: pytest.FixtureRequest) -> None:
    volume: Volume = request.getfixturevalue(which)
    ours = library_snapshot(volume.open())
    links = {p: e for p, e in ours.items() if p.split("/")[0] == "windows-links"}  # compared below
    ours = {p: e for p, e in ours.items() if p not in links}
    source = snapshot(volume.source)
    assert not differences(comparable(source), comparable(ours)), differences(comparable(source), comparable(ours))
    oracle = {p: e for p, e in volume.oracle.items() if p.split("/")[0] != "windows-links"}
    ours = {p: e for p, e in ours.items() if p.split("/")[0] not in ("wof", SVI, "big-streams")}
    assert not differences(comparable(oracle), comparable(ours)), differences(comparable(oracle), comparable(ours))
    assert inode_groups(ours) == inode_groups(source) == inode_groups(volume.oracle)
    assert max(len(g) for g in inode_groups(ours)) == HARD_LINKS


# -- what the comparison with the source cannot show ---------------------------------------------------


@pytest.mark.parametrize("which", ["volume4k", "volume64k"])
def test_the_traps_are_in_the_volumes(which: str, request: pytest.FixtureRequest) -> None:
    """What the comparisons above rely on, seen by ntfsinfo (not by imgfs)."""
    image = request.getfixturevalue(which).image
    assert cluster_size(image) == (4096 if which == "volume4k" else 65536)
    assert len(runlist(image, "-i", "0")) > 1  # the MFT itself is fragmented
    for path in ("/names/original", "/fragmented.bin"):  # attributes in extension records
        assert "Dumping attribute $ATTRIBUTE_LIST" in ntfsinfo(image, path), path
    assert len(runlist(image, "-F", "/fragmented.bin")) > 100
    assert any(lcn < 0 for _, lcn, _ in runlist(image, "-F", "/sparse.bin"))  # holes
    assert "Dumping attribute $INDEX_ALLOCATION" in ntfsinfo(image, "/many")
    assert "Resident: \t\t Yes" in ntfsinfo(image, "/resident-600").split("Dumping attribute $DATA")[1]
    if which == "volume4k":
        assert "Compression unit:\t 4" in ntfsinfo(image, "/compressed/text.txt")
        assert "Namespace:\t\t DOS" in ntfsinfo(image, "/Long File Name.txt")



def node_at(fs: Filesystem, path: str) -> Node:
    node = fs.root
    for name in path.split("/"):
        node = fs.children(node)[name]
    return node


# what imgfs gives where ntfs-3g gives "unsupported reparse tag" (see README: link targets)
OWN_TARGETS = {"relative-missing": b"../no/such", "rooted": b"../deep/level00", "unc": b"//server/share/file"}


def test_windows_links_point_where_ntfs3g_points(volume4k: Volume) -> None:
    fs = volume4k.open()
    folder = volume4k.mountpoint / "windows-links"
    for name in WINDOWS_LINKS:
        node = node_at(fs, f"windows-links/{name}")
        assert node.is_symlink and node.size == len(node.target or b"")
        theirs = volume4k.oracle[f"windows-links/{name}"]["target"]
        if theirs.startswith(b"unsupported reparse tag"):
            assert node.target == OWN_TARGETS[name], name
        elif theirs.startswith(bytes(volume4k.mountpoint) + b"/"):  # ntfs-3g: the mount point, then the path
            assert node.target == os.path.relpath(theirs, bytes(folder)), name
        else:
            assert node.target == theirs, name
    assert set(OWN_TARGETS) < set(WINDOWS_LINKS)


@pytest.mark.parametrize("which", ["volume4k", "volume64k"])
def test_times_modes_and_attributes(which: str, request: pytest.FixtureRequest) -> None:
    volume: Volume = request.getfixturevalue(which)
    fs = volume.open()
    for name, (atime_ns, mtime_ns) in TIMES.items():
        node = node_at(fs, f"times/{name}")
        assert (node.mtime_ns, node.atime_ns) == (mtime_ns // 100 * 100, atime_ns // 100 * 100), name
    for path in ("README.txt", "big.bin", "deep/level00", "many/entry-00007.txt", "hard/two", "sparse.bin"):
        node, st = node_at(fs, path), (volume.source / path).lstat()
        assert node.mtime_ns == st.st_mtime_ns // 100 * 100, path
        assert stat.S_IMODE(node.mode) == (0o755 if node.is_dir else 0o644) and node.uid is None
    assert stat.S_IMODE(node_at(fs, "links/relative").mode) == 0o777
    assert fs.root.ino == 5 and node_at(fs, "hard/one").ino == node_at(fs, "three-elsewhere").ino
    for path, theirs in volume.attribs.items():
        assert fs.xattrs(node_at(fs, path))["system.ntfs_attrib"] == theirs, path


def test_metafiles_hidden_and_shown_as_raw_views(volume4k: Volume) -> None:
    fs = volume4k.open()
    names = set(fs.children(fs.root))
    assert not {n for n in names if n.startswith("$")} and "." not in names
    views = {view.path: view.target for view in fs.views()}
    for name in ("$MFT", "$MFTMirr", "$LogFile", "$Bitmap", "$Boot", "$UpCase", "$AttrDef", "$Secure:$SDS",
                 "$BadClus:$Bad"):
        assert f"metafiles/{name}" in views, name
    mft = views["metafiles/$MFT"]
    assert mft.size == fs.mft.record_count * 1024 and mft.pread(0, 4) == b"FILE"
    assert views["metafiles/$Boot"].pread(3, 8) == b"NTFS    "
    assert views["metafiles/$BadClus:$Bad"].size == fs.total_size - fs.total_size % 4096


def test_a_large_folder_lists_from_its_index_alone(volume4k: Volume) -> None:
    fs = volume4k.open()
    read: list[int] = []
    record, records = fs.mft.record, fs.mft.records
    fs.mft.record = lambda n: read.append(n) or record(n)  # type: ignore[method-assign]
    fs.mft.records = lambda ns: read.extend(ns) or records(ns)  # type: ignore[method-assign]
    many = node_at(fs, "many")
    kids = fs.children(many)
    assert len(kids) == 3200 and read == [many.ino]  # the folder's own record, none of its files'
    assert all(kid.is_file for kid in kids.values())
    assert kids["entry-01234.txt"].size == len(b"file number 1234\n")  # stat reads a window of records
    assert 1 < len(read) - 1 <= WINDOW + 1 and kids["entry-01234.txt"].ino in read
    assert all(kid.nlink == 1 for kid in kids.values())  # and then the rest, a window at a time
    assert sorted(read[1:]) == sorted(kid.ino for kid in kids.values())  # each record once


def test_compression_units_decode_lazily(volume4k: Volume) -> None:
    fs = volume4k.open()
    node = node_at(fs, "compressed/text.txt")
    stream = fs.open(node)
    before = fs.cache.misses
    assert stream.pread(200_000, 100) == COMPRESSIBLE[200_000:200_100]
    assert fs.cache.misses - before == 1  # one 64 KiB unit, however long the file
    assert stream.pread(0, 10) == COMPRESSIBLE[:10]


# -- through FUSE: the volume in MBR and GPT disks beside a FAT partition ---------------------------------

FAT_LABEL = "BESIDE"


@pytest.fixture(scope="module", params=["mbr", "gpt"])
def disk(request: pytest.FixtureRequest, volume4k: Volume, tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp(f"disk-{request.param}")
    write(base / "fat-src" / "hello.txt", b"the FAT side\n")
    fat = fat_image(base / "fat.img", base / "fat-src", 16, FAT_LABEL)
    ntfs = volume4k.image.read_bytes()
    image = blank(base / "disk.img", (2 << 20) + len(fat) + len(ntfs))
    sectors = len(ntfs) // 512
    if request.param == "mbr":
        sfdisk(image, f"label: dos\nstart=2048, size=32768, type=c\nstart=34816, size={sectors}, type=7\n")
    else:
        subprocess.run(["sgdisk", "-n", "1:2048:+16M", "-t", "1:0700", "-n", f"2:34816:+{sectors}", "-t", "2:0700",
                        str(image)], check=True, capture_output=True)
    put(image, 2048 * 512, fat)
    put(image, 34816 * 512, ntfs)
    return image


def test_mounted_disks_match_the_source_and_ntfs3g(disk: Path, volume4k: Volume, mount: Any) -> None:
    with mount(disk) as root:
        assert sorted(os.listdir(root)) == [f"1 {FAT_LABEL}", "2 imgfs-ntfs"]
        assert (root / f"1 {FAT_LABEL}" / "hello.txt").read_bytes() == b"the FAT side\n"
        ntfs = root / "2 imgfs-ntfs"
        compare_trees(volume4k.source, ntfs, modes=False, owners=False, ignore=frozenset({"windows-links"}))
        ours = snapshot(ntfs, ignore=frozenset({"windows-links"}))
        assert not differences(comparable(snapshot(volume4k.source)), comparable(ours))
        oracle = {p: e for p, e in volume4k.oracle.items() if p.split("/")[0] != "windows-links"}
        seen = {p: e for p, e in ours.items() if p.split("/")[0] not in ("wof", SVI, "big-streams")}
        assert not differences(comparable(oracle), comparable(seen))
        assert inode_groups(ours) == inode_groups(volume4k.oracle)
        assert os.readlink(ntfs / "windows-links" / "junction") == "../deep/level00"
        assert os.getxattr(ntfs / "compressed", "system.ntfs_attrib") == volume4k.attribs["compressed"]
        for name, code in (("user.no-such-stream", errno.ENODATA), ("security.selinux", errno.EOPNOTSUPP),
                           ("system.posix_acl_access", errno.EOPNOTSUPP)):
            with pytest.raises(OSError) as refused:
                os.getxattr(ntfs / "compressed", name)
            assert refused.value.errno == code, name


def test_mount_options_and_raw_views(volume4k: Volume, mount: Any) -> None:
    with mount(volume4k.image, "uid=1234", "gid=5678", "umask=027", "rawviews") as root:
        st, folder = (root / "README.txt").stat(), (root / "deep").stat()
        assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (1234, 5678, 0o640)
        assert stat.S_IMODE(folder.st_mode) == 0o750
        assert os.listdir(root / SVI) == []  # its contents are hidden...
        views = root / ".imgfs"
        assert (views / SVI / "tracking.log").read_bytes() == b"hidden from the tree, shown under .imgfs\n"
        mft = (views / "metafiles" / "$MFT").read_bytes()  # ...and so are the metafiles
        assert mft[:4] == b"FILE" and len(mft) % 1024 == 0
        assert (views / "metafiles" / "$Boot").read_bytes()[3:11] == b"NTFS    "
        assert not [name for name in os.listdir(root) if name.startswith("$")]


def test_streams_too_large_for_an_xattr(volume4k: Volume, caplog: pytest.LogCaptureFixture) -> None:
    fs = volume4k.open()
    node = node_at(fs, "big-streams/file")
    with caplog.at_level(logging.WARNING):
        for _ in range(3):
            shown = fs.xattrs(node)
            assert {k: v for k, v in shown.items() if k.startswith("user.")} == {"user.small": b"shown"}
    assert caplog.text.count("too large for an xattr") == 1  # once, however often it is asked
