"""Classic HFS (Mac OS Standard): volumes written by hfsutils and by machfs, read back and compared with
the trees they were made from, cross-checked with machfs as a second reader; damaged catalogs.

hfsutils writes the sample tree (MacRoman accents, 31-byte names, a Mac '/', a deep chain of folders, a
folder of 60 files for a three-level catalog, files with resource forks, Finder info and dates through
``hcopy -m``) and a fragmented file whose extents continue in the extents overflow B-tree.
"""

from __future__ import annotations

import hashlib
import os
import stat
import struct
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hfstools import (
    Expected,
    Hfsutils,
    add_leaf_record,
    build_volume,
    leaf_nodes,
    mac_date,
    mdb_fields,
    needs_hfsutils,
    node_records,
)
from macwriter import MAC_EPOCH_OFFSET

from imgfs.errors import CorruptImage, ImageError
from imgfs.filesystems.base import Node
from imgfs.filesystems.hfs import HfsFilesystem, probe
from imgfs.filesystems.hfsplus import probe as hfsplus_probe
from imgfs.io.cache import BlockCache
from imgfs.io.stream import BytesStream, FileStream, Stream
from imgfs.layer import OpenContext

machfs = pytest.importorskip("machfs")


@pytest.fixture(autouse=True)
def utc(monkeypatch) -> Iterator[None]:
    """HFS dates are local time: the tests read them in UTC unless they say otherwise."""
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def open_hfs(image: Path | bytes) -> HfsFilesystem:
    stream: Stream = BytesStream(image) if isinstance(image, (bytes, bytearray)) else FileStream(str(image))
    return HfsFilesystem(stream, OpenContext(str(image)[:40], BlockCache(16 << 20)))


def walk(fs: HfsFilesystem, node: Node | None = None, prefix: str = "") -> dict[str, Node]:
    found: dict[str, Node] = {}
    for name, kid in fs.children(node or fs.root).items():
        path = f"{prefix}{name}"
        found[path] = kid
        if kid.is_dir:
            found.update(walk(fs, kid, path + "/"))
    return found


def read(fs: HfsFilesystem, node: Node) -> bytes:
    return fs.open(node).pread(0, node.size)


@pytest.fixture(scope="module")
def volume(tmp_path_factory) -> tuple[Path, Path, dict[str, Expected]]:
    return build_volume(tmp_path_factory.mktemp("hfs"))


def assert_matches_source(fs: HfsFilesystem, source: Path, expected: dict[str, Expected]) -> int:
    nodes = walk(fs)
    want = {str(p.relative_to(source)): p for p in source.rglob("*")}
    assert sorted(nodes) == sorted(want)
    for path, src in want.items():
        node = nodes[path]
        if src.is_dir():
            assert node.is_dir and stat.S_IMODE(node.mode) == 0o755, path
            continue
        assert node.is_file and node.size == src.stat().st_size, path
        assert hashlib.sha256(read(fs, node)).digest() == hashlib.sha256(src.read_bytes()).digest(), path
        meta = expected[path]
        xattrs = fs.xattrs(node)
        assert xattrs.get("user.com.apple.ResourceFork", b"") == meta.rsrc, path
        assert xattrs.get("user.com.apple.FinderInfo", b"") == meta.finder_info, path
        if meta.mtime is not None:
            assert node.mtime_ns == meta.mtime * 10**9, path
        assert node.uid is None and node.gid is None
    return len(want)


@needs_hfsutils
def test_hfsutils_volume_reads_like_its_source(volume) -> None:
    image, source, expected = volume
    fs = open_hfs(image)
    assert fs.label == "Test Vol ©"
    assert assert_matches_source(fs, source, expected) > 70
    assert fs.catalog.header.depth >= 2, "the folder of many files should need index nodes"
    info = fs.describe()
    assert info["filesystem"] == "hfs" and info["label"] == "Test Vol ©" and info["bad_blocks"] == 0
    assert info["files"] == sum(1 for p in source.rglob("*") if p.is_file())


@needs_hfsutils
def test_machfs_reads_the_same(volume) -> None:
    """machfs, a second reader, sees the same names, forks, types and creators."""
    image, _source, _expected = volume
    fs = open_hfs(image)
    nodes = walk(fs)
    other = machfs.Volume()
    other.read(image.read_bytes())
    seen = 0
    for path_tuple, f in other.iter_paths():
        shown = "/".join(part.replace("/", ":") for part in path_tuple)
        node = nodes[shown]
        if isinstance(f, machfs.Folder):
            assert node.is_dir, shown
            continue
        assert read(fs, node) == f.data, shown
        xattrs = fs.xattrs(node)
        assert xattrs.get("user.com.apple.ResourceFork", f.rsrc if len(f.rsrc) > 65536 else b"") == f.rsrc
        assert xattrs["user.com.apple.FinderInfo"][:8] == f.type + f.creator
        assert node.mtime_ns == (f.mddate - MAC_EPOCH_OFFSET) * 10**9
        seen += 1
    assert seen == sum(1 for n in nodes.values() if n.is_file)


def machfs_volume(tmp_path: Path) -> tuple[bytes, dict[str, bytes]]:
    """A volume written by machfs: names at the 31-byte limit, accents, dates, a large resource fork."""
    vol = machfs.Volume()
    vol.name = "machfs Vol"
    folder = machfs.Folder()
    vol["Dossier été"] = folder
    contents = {}
    for i in range(40):
        f = machfs.File()
        f.data = os.urandom(100 + 977 * i)
        f.rsrc = b"R" * (i * 10)
        f.type, f.creator = b"BINA", b"mchf"
        f.crdate, f.mddate = mac_date(1_000_000_000 + i), mac_date(1_100_000_000 + i)
        name = f"Fichier {i:02d} àéîõü ‰ 31 bytes"[:31]
        folder[name] = f
        contents[f"Dossier été/{name}"] = f.data
    return vol.write(size=4 << 20, align=512, desktopdb=False, bootable=False), contents


def test_machfs_written_volume(tmp_path: Path) -> None:
    image, contents = machfs_volume(tmp_path)
    fs = open_hfs(image)
    assert fs.label == "machfs Vol"
    nodes = walk(fs)
    for path, data in contents.items():
        node = nodes[path]
        assert len(path.split("/")[1].encode("mac_roman")) <= 31
        assert read(fs, node) == data
        i = int(path.split()[2])
        assert node.mtime_ns == (1_100_000_000 + i) * 10**9
        assert fs.xattrs(node).get("user.com.apple.ResourceFork", b"") == b"R" * (i * 10)
        assert fs.xattrs(node)["user.com.apple.FinderInfo"][:8] == b"BINAmchf"


def test_dates_are_read_in_local_time(tmp_path: Path, monkeypatch) -> None:
    image, contents = machfs_volume(tmp_path)
    monkeypatch.setenv("TZ", "Asia/Tokyo")  # UTC+9, no daylight saving time
    time.tzset()
    node = walk(open_hfs(image))[next(iter(contents))]
    assert node.mtime_ns == (1_100_000_000 - 9 * 3600) * 10**9


@needs_hfsutils
def test_fragmented_file_continues_in_the_extents_overflow_file(tmp_path: Path) -> None:
    hfs = Hfsutils(tmp_path)
    image = tmp_path / "frag.hfs"
    hfs.format(image, 800 * 1024, "Frag")
    small = tmp_path / "small"
    small.write_bytes(os.urandom(4096))
    for i in range(150):
        hfs.copy_raw(small, f"s{i}")
    for i in range(0, 150, 2):
        hfs.run("hdel", f":s{i}")
    big = tmp_path / "big"
    big.write_bytes(os.urandom(200_000))
    hfs.copy_raw(big, "big")
    hfs.unmount()
    fs = open_hfs(image)
    node = fs.children(fs.root)["big"]
    assert len(node.handle.entry.data_fork.extents) == 3
    assert fs.extents.header.leaf_records > 0, "the fork should continue in the overflow file"
    assert read(fs, node) == big.read_bytes()
    assert len(fs.children(fs.root)) == 76


# -- the registry's rule: an HFS wrapper is HFS+'s, a plain HFS volume is ours ------------------------

def test_probe_leaves_an_hfs_wrapper_to_hfsplus(tmp_path: Path) -> None:
    from hfswriter import Dir, build, wrap

    wrapped = bytearray(wrap(build(Dir())).image)
    struct.pack_into(">I", wrapped, 1024 + 146, 512)  # give the wrapper a catalog, as real wrappers have
    struct.pack_into(">HH", wrapped, 1024 + 150, 1, 1)
    struct.pack_into(">H", wrapped, 1024 + 18, 100)  # and a block count
    assert hfsplus_probe(BytesStream(bytes(wrapped))) and not probe(BytesStream(bytes(wrapped)))
    wrapped[1024 + 124 : 1024 + 126] = b"\0\0"  # no embedded volume: a plain HFS volume
    assert probe(BytesStream(bytes(wrapped))) and not hfsplus_probe(BytesStream(bytes(wrapped)))
    image, _ = machfs_volume(tmp_path)
    assert probe(BytesStream(image)) and not hfsplus_probe(BytesStream(image))


# -- damaged catalogs ---------------------------------------------------------------------------------

def _catalog_leaf_record(image: bytes, parent: int, name: bytes) -> int:
    """The byte offset in ``image`` of the data of the catalog leaf record keyed (parent, name)."""
    fields = mdb_fields(image)
    for number in leaf_nodes(image, fields["catalog_at"]):
        at = fields["catalog_at"] + number * 512
        for start, _end in node_records(image[at : at + 512]):
            key_length = image[at + start]
            key_parent = struct.unpack_from(">I", image, at + start + 2)[0]
            key_name = image[at + start + 7 : at + start + 7 + image[at + start + 6]]
            if (key_parent, key_name) == (parent, name):
                return at + start + 1 + key_length + ((1 + key_length) & 1)
    raise AssertionError(f"no record ({parent}, {name!r})")


def test_a_folder_inside_itself_is_skipped(tmp_path: Path, caplog) -> None:
    vol = machfs.Volume()
    outer = machfs.Folder()
    inner = machfs.Folder()
    note = machfs.File()
    note.data = b"still here\n"
    vol["outer"] = outer
    outer["inner"] = inner
    outer["note"] = note
    image = bytearray(vol.write(size=800 * 1024, desktopdb=False, bootable=False))
    fs = open_hfs(bytes(image))
    outer_cnid = fs.children(fs.root)["outer"].ino
    at = _catalog_leaf_record(bytes(image), outer_cnid, b"inner")
    struct.pack_into(">I", image, at + 6, outer_cnid)  # dirDirID: the inner folder is now the outer one
    fs = open_hfs(bytes(image))
    kids = fs.children(fs.children(fs.root)["outer"])
    assert sorted(kids) == ["note"] and read(fs, kids["note"]) == b"still here\n"
    assert "a loop in the catalog" in caplog.text


def test_a_leaf_chain_loop_is_an_error_not_a_hang(tmp_path: Path) -> None:
    image, _contents = machfs_volume(tmp_path)
    image = bytearray(image)
    fields = mdb_fields(bytes(image))
    leaves = leaf_nodes(bytes(image), fields["catalog_at"])
    assert len(leaves) >= 3
    struct.pack_into(">I", image, fields["catalog_at"] + leaves[2] * 512, leaves[1])  # forward link backwards
    with pytest.raises(CorruptImage, match="makes a loop"):
        fs = open_hfs(bytes(image))
        walk(fs)


def test_an_index_node_pointing_at_itself_is_an_error(tmp_path: Path) -> None:
    image, _contents = machfs_volume(tmp_path)
    image = bytearray(image)
    fields = mdb_fields(bytes(image))
    root = struct.unpack_from(">I", image, fields["catalog_at"] + 14 + 2)[0]
    at = fields["catalog_at"] + root * 512
    assert image[at + 8] == 0, "the catalog's root should be an index node"
    start, end = node_records(bytes(image[at : at + 512]))[0]
    struct.pack_into(">I", image, at + end - 4, root)  # its first child is itself
    with pytest.raises(ImageError):
        walk(open_hfs(bytes(image)))


@needs_hfsutils
def test_blocks_of_the_bad_block_file_make_a_file_unreadable(tmp_path: Path) -> None:
    """A file whose extents claim blocks that the bad-block file (CNID 5) lists reads as an error; the others
    read, and ``describe`` counts the bad blocks."""
    hfs = Hfsutils(tmp_path)
    hfs.format(tmp_path / "bad.hfs", 800 * 1024, "Bad")
    for name in ("victim", "bystander"):
        (tmp_path / name).write_bytes(name.encode() * 3000)
        hfs.copy_raw(tmp_path / name, name)
    hfs.unmount()
    image = bytearray((tmp_path / "bad.hfs").read_bytes())
    fs = open_hfs(bytes(image))
    victim = fs.children(fs.root)["victim"].handle.entry.data_fork.extents[0]
    fields = mdb_fields(bytes(image))
    key = struct.pack(">BBIH", 7, 0, 5, 0)  # key length, data fork, CNID 5, first block 0
    record = key + struct.pack(">HHHHHH", victim[0] + 1, 2, 0, 0, 0, 0)
    add_leaf_record(image, fields["extents_at"], record)
    fs = open_hfs(bytes(image))
    kids = fs.children(fs.root)
    assert fs.describe()["bad_blocks"] == 2
    with pytest.raises(CorruptImage, match="bad-block file"):
        read(fs, kids["victim"])
    assert read(fs, kids["bystander"]) == b"bystander" * 3000


@needs_hfsutils
def test_a_truncated_volume_mounts_and_its_lost_files_fail(volume) -> None:
    image = volume[0].read_bytes()
    fs = open_hfs(image)
    files = {path: node for path, node in walk(fs).items() if node.is_file and node.size}
    last = max(files, key=lambda p: files[p].handle.entry.data_fork.extents[0][0])
    first_block = files[last].handle.entry.data_fork.extents[0][0]
    assert first_block * fs.block_size > mdb_fields(image)["catalog_at"], "hfsutils puts the catalog first"
    short = open_hfs(image[: mdb_fields(image)["first"] + first_block * fs.block_size])
    with pytest.raises(CorruptImage):
        read(short, walk(short)[last])
    others = [p for p in files if p != last]
    assert read(short, walk(short)[others[0]]) == read(fs, files[others[0]])


def test_bytes_that_are_not_hfs_are_refused_in_one_line() -> None:
    image = bytearray(64 * 1024)
    image[1024:1026] = b"BD"
    struct.pack_into(">HI", image, 1024 + 18, 100, 512)
    assert probe(BytesStream(bytes(image)))  # an MDB: the reader says what is wrong with it
    with pytest.raises(CorruptImage, match="catalog file has no extents"):
        open_hfs(bytes(image))
