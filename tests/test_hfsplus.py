"""HFS+ and HFSX through real FUSE mounts.

Volumes come from ``hfswriter`` (a writer of the tests' own, from TN1150: hard links of files and
folders, more extents than a catalog record holds, resource forks, Finder info, attributes inline and in
forks, decmpfs files of every type, devices, HFSX, an HFS wrapper, a journal with pending transactions,
B-trees several levels deep) and from xorriso (an ISO 9660 + APM + HFS+ hybrid). Each mount is compared
with the tree it was made from: names, types, sizes, bytes, modes, owners, times, link counts, inode
numbers, symlink targets, device numbers and extended attributes. Damaged volumes must give EIO for what
the damage touches, or one line at mount, and never a crash. The real-world corpus images that need no
DMG reader must match their oracles.
"""

from __future__ import annotations

import calendar
import errno
import hashlib
import json
import logging
import os
import random
import shutil
import stat
import struct
import subprocess
import time
import unicodedata
import weakref
from pathlib import Path
from typing import Any, Union

import pytest
from conftest import run_imgfs, sha256_of
from corpuslib import CORPUS, CorpusImage, decompressed, expected_entries, load_images, mount_refusal, snapshot
from hfswriter import (
    S_IFDIR,
    S_IFREG,
    T0,
    Dir,
    File,
    Symlink,
    build,
    decmpfs_fork,
    decmpfs_inline,
    encode,
    lzvn_compress,
)

from imgfs.codecs import lzvn
from imgfs.errors import ImageError, UnsupportedFormat
from imgfs.filesystems.hfsplus import HfsPlusFilesystem, probe
from imgfs.filesystems.hfsplus.unicode import folded, shown, unit_string
from imgfs.image import open_image
from imgfs.io.cache import BlockCache
from imgfs.io.stream import BytesStream
from imgfs.layer import OpenContext
from imgfs.registry import detect

FINDER_INFO = "user.com.apple.FinderInfo"
RESOURCE_FORK = "user.com.apple.ResourceFork"
NFD_NAME = "cafe\u0301 au lait"  # stored decomposed, shown as "café au lait"
UNICODE_NAMES = [NFD_NAME, "日本語のファイル.txt", "Ωmega", "naïve\u0308x", "forward/slash"]


def _pseudo_random(size: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(size)


# -- the generated volume ---------------------------------------------------------------------------------

UNCOMPRESSED: weakref.WeakKeyDictionary[File, bytes] = weakref.WeakKeyDictionary()  # decmpfs file -> its bytes


def compressed(kind: int, data: bytes) -> File:
    value, fork = decmpfs_fork(kind, data) if kind in (4, 8, 10, 12) else decmpfs_inline(kind, data)
    f = File(decmpfs=(value, fork), xattrs={"com.example.kept": b"still shown"})
    UNCOMPRESSED[f] = data
    return f


def rich_tree(case_sensitive: bool = False, many: int = 300) -> Dir:
    text = b"".join(b"line %d of a compressible text file\n" % i for i in range(9000))  # 5 chunks of 64 KiB
    shared = File(b"one inode, three names\n", mode=S_IFREG | 0o640, uid=1234, gid=5678, mtime=T0 + 50)
    linked_dir = Dir({"in-linked-dir.txt": File(b"reached twice\n")}, mtime=T0 + 7)
    tree = Dir({
        "README.txt": File(b"hello\n", xattrs={"com.example.note": b"inline value"},
                           fork_xattrs={"com.example.big": _pseudo_random(9000, 1)},
                           finder_info=b"TEXTttxt" + bytes(8) + b"\0\0\0\0\x5f\x5e\x10\x00" + bytes(8)),
        "empty": File(b""),
        "fragmented.bin": File(_pseudo_random(300_000, 2), fragments=21),  # 21 extents: 2 overflow records
        "with-rsrc": File(b"data fork\n", rsrc=b"resource fork bytes\n"),
        "modes": Dir({
            "private": File(b"secret\n", mode=S_IFREG | 0o600),
            "setuid": File(b"x", mode=S_IFREG | 0o4755),
            "unset-mode": File(b"mode 0 means defaults\n", mode=0, uid=0, gid=0),
            "char-device": File(mode=stat.S_IFCHR | 0o620, rdev=(4 << 24) | 65),
            "fifo": File(mode=stat.S_IFIFO | 0o644),
        }, mode=S_IFDIR | 0o750, xattrs={"com.example.on-a-folder": b"yes"},
            finder_info=bytes(8) + b"\x40\x00" + bytes(22)),
        "links": Dir({"one": shared, "sym": Symlink(b"../README.txt"), "abs": Symlink(b"/Volumes/x/y"),
                      "no-mode": Symlink(b"sym", mode=0),
                      "dirlink": linked_dir}),
        "two": shared,
        "three": shared,
        "dirlink-too": linked_dir,
        "compressed": Dir({f"type{kind}": compressed(kind, text if kind % 2 == 0 else text[:3000])
                           for kind in (1, 3, 4, 7, 8, 9, 10, 11, 12)}),
        "unicode": Dir({name: File(name.encode()) for name in UNICODE_NAMES}),
        "many": Dir({f"{'Entry' if i % 2 else 'entry'}-{i:04d}": File(b"%d\n" % i) for i in range(many)}),
    }, mtime=T0 + 1)
    compressed_dir = tree.children["compressed"]
    assert isinstance(compressed_dir, Dir)
    compressed_dir.children["incompressible"] = compressed(8, _pseudo_random(70_000, 3))  # raw chunks
    if case_sensitive:
        tree.children["Case"] = File(b"upper\n")
        tree.children["case"] = File(b"lower\n")
    return tree


VARIANTS = {
    "hfsplus": {},
    "hfsx-case-sensitive": {"hfsx": True, "binary": True},
    "hfsx-case-folding": {"hfsx": True},
    "small-blocks-deep-btree": {"block_size": 512, "catalog_node_size": 512},
    "hfs-wrapper": {"wrap_in_hfs": True},
    "journaled": {"journal_pending": False},
}


@pytest.fixture(scope="module", params=list(VARIANTS))
def generated(request, tmp_path_factory) -> tuple[Path, Dir, str]:
    options = VARIANTS[request.param]
    tree = rich_tree(case_sensitive=bool(options.get("binary")))
    image = tmp_path_factory.mktemp("hfs") / f"{request.param}.img"
    image.write_bytes(build(tree, label="Test Volume", **options).image)
    return image, tree, request.param


def expected(tree: Dir, prefix: str = "") -> dict[str, tuple[Union[File, Dir, Symlink], int]]:
    """Shown path -> (model object, link count) of every entry of the model."""
    counts: dict[int, int] = {}

    def count(d: Dir) -> None:
        for child in d.children.values():
            counts[id(child)] = counts.get(id(child), 0) + 1
            if isinstance(child, Dir) and counts[id(child)] == 1:
                count(child)

    count(tree)
    found: dict[str, tuple[Union[File, Dir, Symlink], int]] = {}

    def visit(d: Dir, path: str) -> None:
        for name, child in d.children.items():
            child_path = f"{path}/{unicodedata.normalize('NFC', name).replace('/', ':')}"
            found[child_path] = (child, counts[id(child)])
            if isinstance(child, Dir):
                visit(child, child_path)

    visit(tree, prefix)
    return found


def _xattrs(path: Path) -> dict[str, bytes]:
    return {name: os.getxattr(path, name, follow_symlinks=False) for name in os.listxattr(path, follow_symlinks=False)}


def _expected_xattrs(obj: Union[File, Dir]) -> dict[str, bytes]:
    want = {f"user.{k}": v for k, v in obj.xattrs.items() if k != "com.apple.decmpfs"}
    if isinstance(obj, File):
        want.update({f"user.{k}": v for k, v in obj.fork_xattrs.items()})
        if obj.rsrc and obj.decmpfs is None:
            want[RESOURCE_FORK] = obj.rsrc
    finder_info = bytearray(obj.finder_info)
    finder_info[16:24] = bytes(8)  # macOS's private fields (document id, date added, write count) read as 0
    finder_info[28:32] = bytes(4)
    if any(finder_info):
        want[FINDER_INFO] = bytes(finder_info)
    return want


def check_entry(path: Path, obj: Union[File, Dir, Symlink], links: int) -> None:
    st = path.lstat()
    assert st.st_mtime == obj.mtime, path
    if isinstance(obj, Symlink):
        assert stat.S_ISLNK(st.st_mode) and os.readlink(path) == obj.target.decode()
        assert st.st_size == len(obj.target)
        return
    if isinstance(obj, Dir):
        assert stat.S_ISDIR(st.st_mode) and stat.S_IMODE(st.st_mode) == stat.S_IMODE(obj.mode), path
        assert (st.st_uid, st.st_gid, st.st_nlink) == (obj.uid, obj.gid, 1), path
        assert _xattrs(path) == _expected_xattrs(obj), path
        return
    if obj.mode == 0:  # never set: the defaults, owned by the mounting user
        assert (stat.S_IFMT(st.st_mode), stat.S_IMODE(st.st_mode)) == (stat.S_IFREG, 0o644)
        assert (st.st_uid, st.st_gid) == (os.getuid(), os.getgid())
    else:
        assert st.st_mode == obj.mode, f"{path}: mode {st.st_mode:o}"
        assert (st.st_uid, st.st_gid) == (obj.uid, obj.gid), path
    assert st.st_nlink == links, path
    if stat.S_ISCHR(obj.mode):
        assert st.st_rdev == os.makedev(obj.rdev >> 24, obj.rdev & 0xFFFFFF)
    if not stat.S_ISREG(st.st_mode):
        return
    data = UNCOMPRESSED.get(obj, obj.data)
    assert st.st_size == len(data), path
    assert path.read_bytes() == data, f"{path}: content differs"
    assert _xattrs(path) == _expected_xattrs(obj), path


def test_generated_volume(generated, mount, tmp_path) -> None:
    image, tree, variant = generated
    with mount(image) as root:
        want = expected(tree)
        got = {"/" + str(p.relative_to(root)) for p in root.rglob("*")}
        assert got == set(want), f"missing {sorted(set(want) - got)[:5]}, extra {sorted(got - set(want))[:5]}"
        for rel, (obj, links) in want.items():
            check_entry(root / rel.lstrip("/"), obj, links)
        _check_links(root)
        _check_names(root, variant)
        assert os.statvfs(root).f_bsize == (512 if variant.startswith("small") else 4096)
    info = json.loads(run_imgfs("info", "--json", str(image), check=True).stdout)["layers"][-1]
    assert (info["filesystem"], info["label"]) == ("hfs+", "Test Volume")
    assert info["case_sensitive"] == (variant == "hfsx-case-sensitive")
    assert ("embedded_at" in info) == (variant == "hfs-wrapper")
    assert info["journaled"] == (variant == "journaled")
    assert "journal" not in run_imgfs("ls", str(image), check=True).stderr  # an empty journal: no warning


def _check_links(root: Path) -> None:
    """Hard links share the indirect node's inode number; so do a folder and its directory hard link."""
    inos = {(root / p).stat().st_ino for p in ("two", "three", "links/one")}
    assert len(inos) == 1
    assert (root / "dirlink-too").stat().st_ino == (root / "links" / "dirlink").stat().st_ino
    assert os.listdir(root / "dirlink-too") == ["in-linked-dir.txt"]
    names = os.listdir(root)
    assert not [n for n in names if "HFS+ Private" in n or n.startswith(".journal")], names


def _check_names(root: Path, variant: str) -> None:
    """Names are shown composed (NFC); the decomposed form of a name finds it too."""
    listed = os.listdir(root / "unicode")
    assert "café au lait" in listed and NFD_NAME not in listed
    assert (root / "unicode" / NFD_NAME).read_bytes() == NFD_NAME.encode()
    assert (root / "unicode" / "forward:slash").read_bytes() == b"forward/slash"
    many = os.listdir(root / "many")
    assert len(many) == 300 and len(set(many)) == 300
    if variant == "hfsx-case-sensitive":
        assert (root / "Case").read_bytes() == b"upper\n" and (root / "case").read_bytes() == b"lower\n"


def test_journal_with_transactions_is_read_with_a_warning(tmp_path, mount) -> None:
    image = tmp_path / "journal.img"
    image.write_bytes(build(Dir({"f": File(b"as it stands\n")}), journal_pending=True).image)
    with mount(image) as root:
        assert (root / "f").read_bytes() == b"as it stands\n"
        assert os.listdir(root) == ["f"]  # .journal and .journal_info_block are hidden
    done = run_imgfs("ls", str(image), check=True)
    assert done.stdout.split() == ["f"] and "journal" in done.stderr and "not replayed" in done.stderr


def test_deep_catalog_keyed_lookups(caplog) -> None:
    """A catalog of 512-byte nodes is many levels deep; every file is found again by its key (opening goes
    through the keyed look-up, never the fallback scan), in case-folding and binary order."""
    for options in ({}, {"hfsx": True, "binary": True}):
        tree = rich_tree(case_sensitive=bool(options), many=1500)
        volume = build(tree, block_size=512, catalog_node_size=512, **options)
        fs = HfsPlusFilesystem(BytesStream(volume.image, "deep"), OpenContext("test", BlockCache(1 << 24)))
        assert fs.catalog.header.depth >= 4
        with caplog.at_level(logging.WARNING):
            kids = fs.children(fs.children(fs.root)["many"])
            assert len(kids) == 1500
            for name in ("entry-0000", "Entry-0777", "entry-1498", "Entry-1499"):
                assert fs.open(kids[name]).pread(0, 10) == b"%d\n" % int(name[-4:])
        assert "out of order" not in caplog.text


# -- xorriso --------------------------------------------------------------------------------------------


def _apm_partition(image: Path, kind: bytes) -> tuple[int, int]:
    """(byte offset, byte length) of the first Apple partition map entry of type ``kind``."""
    with open(image, "rb") as f:
        head = f.read(4)
        block = struct.unpack(">H", head[2:4])[0]
        f.seek(block)
        count = struct.unpack(">I", f.read(8)[4:8])[0]
        for i in range(1, count + 1):
            f.seek(i * block)
            entry = f.read(80)
            start, blocks = struct.unpack(">II", entry[8:16])
            if entry[48:80].split(b"\0")[0] == kind:
                return start * block, blocks * block
    raise AssertionError(f"no {kind!r} partition")


@pytest.mark.skipif(not shutil.which("xorriso"), reason="xorriso is not installed")
def test_xorriso_hybrid(tmp_path, mount) -> None:
    """xorriso -hfsplus: the mount shows the ISO side (Rock Ridge); the HFS+ partition, cut out of the
    Apple partition map, shows the same files, with the creator and type given to one of them."""
    src = tmp_path / "src"
    (src / "dir" / "sub").mkdir(parents=True)
    (src / "dir" / "sub" / "deep.txt").write_bytes(b"deep\n")
    (src / "big.bin").write_bytes(_pseudo_random(1_500_000, 4))
    (src / NFD_NAME).write_bytes(b"combining\n")
    (src / "日本語.txt").write_bytes(b"cjk\n")
    (src / "readme.txt").write_bytes(b"text\n")
    os.symlink("dir/sub/deep.txt", src / "link")
    iso = tmp_path / "hybrid.iso"
    subprocess.run(["xorriso", "-as", "mkisofs", "-hfsplus", "-R", "-hfsplus-file-creator-type", "ttxt", "TEXT",
                    "/readme.txt", "-o", str(iso), str(src)], check=True, capture_output=True)
    info = json.loads(run_imgfs("info", "--json", str(iso), check=True).stdout)["layers"]
    assert info[1]["layer"] == "iso9660"  # the richer namespace wins at the root of a hybrid
    offset, length = _apm_partition(iso, b"Apple_HFS")
    part = tmp_path / "hfs.img"
    with open(iso, "rb") as f:
        f.seek(offset)
        part.write_bytes(f.read(length))
    with mount(iso) as root:  # Rock Ridge shows names as stored; HFS+ composes them
        iso_names = sorted(unicodedata.normalize("NFC", name) for name in os.listdir(root))
    with mount(part) as root:
        assert sorted(os.listdir(root)) == iso_names == sorted(["big.bin", "café au lait", "dir", "link",
                                                                 "readme.txt", "日本語.txt"])
        for rel in ("big.bin", "dir/sub/deep.txt", "readme.txt", "日本語.txt"):
            assert sha256_of(root / rel) == sha256_of(src / rel), rel
        assert (root / NFD_NAME).read_bytes() == b"combining\n"
        assert os.readlink(root / "link") == "dir/sub/deep.txt"
        assert os.getxattr(root / "readme.txt", FINDER_INFO)[:8] == b"TEXTttxt"
    layer = json.loads(run_imgfs("info", "--json", str(part), check=True).stdout)["layers"][-1]
    assert (layer["layer"], layer["label"]) == ("hfs+", "ISOIMAGE")
    with mount(part) as by_part:
        cut_out = snapshot(by_part)
    with mount(iso, "namespace=hfsplus") as root:  # the Apple side of the hybrid, without cutting it out
        assert snapshot(root) == cut_out
        assert os.getxattr(root / "readme.txt", FINDER_INFO)[:8] == b"TEXTttxt"


# -- the real-world corpus -------------------------------------------------------------------------------

CORPUS_IMAGES = {"iso": ["util-linux/hfsplus.img.xz"], "raw": ["dfvfs/hfsplus.raw"],
                 "dmg": ["go-apfs-v2/hfs-apm.img.gz"]}  # the DMG folder's one image that is not a DMG


def _corpus_params() -> list[Any]:
    found = []
    for folder, names in CORPUS_IMAGES.items():
        for image in load_images(folder):
            if image.rel in names:
                found.append(pytest.param(image, id=image.rel))
    return found


@pytest.mark.skipif(not CORPUS.is_dir(), reason="no image corpus (set IMGFS_CORPUS)")
@pytest.mark.parametrize("image", _corpus_params())
def test_corpus_matches_oracle(image: CorpusImage, tmp_path, mount) -> None:
    """Every entry but the private and system ones (hidden), with the oracle's types, sizes, bytes, targets,
    modes, link counts, mtimes, attributes and resource forks; names compared composed (NFC)."""
    path = decompressed(image, tmp_path)
    volume = image.oracle["volumes"][0]
    entries = [e for e in volume["entries"] if not e.get("system")]
    fields = ("type", "size", "sha256", "target", "mode", "nlink", "mtime")
    want = {unicodedata.normalize("NFC", p): e for p, e in expected_entries({"entries": entries}, fields).items()}
    with mount(path) as root:
        got = {unicodedata.normalize("NFC", p): e for p, e in snapshot(root).items()}
        assert sorted(got) == sorted(want)
        for p, fields_wanted in want.items():
            assert {k: got[p].get(k) for k in fields_wanted} == fields_wanted, p
        for entry in entries:
            where = root / unicodedata.normalize("NFC", entry["path"]).lstrip("/")
            attrs = _xattrs(where) if not entry["type"] == "symlink" else {}
            wanted = {f"user.{k}": (v["size"], v["sha256"]) for k, v in entry.get("xattrs", {}).items()}
            if "resource_fork" in entry:
                wanted[RESOURCE_FORK] = (entry["resource_fork"]["size"], entry["resource_fork"]["sha256"])
            shown_attrs = {k: (len(v), hashlib.sha256(v).hexdigest()) for k, v in attrs.items() if k != FINDER_INFO}
            if entry["type"] != "symlink":
                assert shown_attrs == wanted, entry["path"]
    info = json.loads(run_imgfs("info", "--json", str(path), check=True).stdout)["layers"][-1]
    assert (info["filesystem"], info["label"]) == ("hfs+", volume["label"])


# -- damaged volumes -------------------------------------------------------------------------------------


def _victim() -> Dir:
    return Dir({
        "good.txt": File(b"still readable\n"),
        "victim.bin": File(_pseudo_random(100_000, 5)),
        "loopdir": Dir({"f": File(b"f")}),
        "gooddir": Dir({f"f{i:02d}": File(b"%d" % i) for i in range(20)}),
        "many": Dir({f"m{i:03d}": File(b"%d" % i) for i in range(60)}),
        "zipped": compressed(4, b"compressible " * 20000),
    })


def _write(tmp_path: Path, image: bytes, name: str = "victim.img") -> Path:
    path = tmp_path / name
    path.write_bytes(image)
    return path


def _patch(path: Path, offset: int, data: bytes) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(data)


def _leaves(image: bytes, volume) -> list[tuple[int, int, list[int]]]:  # noqa: ANN001
    """(node number, forward link, parent CNIDs of its records) of every catalog leaf, in chain order."""
    size, base = volume.catalog_node_size, volume.catalog_offset
    first = struct.unpack_from(">I", image, base + 14 + 10)[0]
    found, number = [], first
    while number:
        node = image[base + number * size : base + (number + 1) * size]
        flink, count = struct.unpack_from(">I", node)[0], struct.unpack_from(">H", node, 10)[0]
        offsets = [struct.unpack_from(">H", node, size - 2 * (i + 1))[0] for i in range(count)]
        found.append((number, flink, [struct.unpack_from(">I", node, o + 2)[0] for o in offsets]))
        number = flink
    return found


def assert_eio(action) -> None:  # noqa: ANN001
    with pytest.raises(OSError) as caught:
        action()
    assert caught.value.errno == errno.EIO


def assert_rest_reads(root: Path) -> None:
    assert (root / "good.txt").read_bytes() == b"still readable\n"
    assert sorted(os.listdir(root / "gooddir")) == [f"f{i:02d}" for i in range(20)]


def test_leaf_loop_gives_eio(tmp_path, mount) -> None:
    volume = build(_victim(), catalog_node_size=512, block_size=512)
    many = volume.cnids["/many"]
    chain = [number for number, _, parents in _leaves(volume.image, volume) if many in parents]
    assert len(chain) >= 3
    image = _write(tmp_path, volume.image)
    # the second leaf of the folder's records links back to the first: a loop
    _patch(image, volume.catalog_offset + chain[1] * volume.catalog_node_size, struct.pack(">I", chain[0]))
    with mount(image) as root:
        assert_eio(lambda: os.listdir(root / "many"))
        assert_rest_reads(root)


def test_thread_pointing_to_itself(tmp_path, mount) -> None:
    volume = build(_victim())
    cnid = volume.cnids["/loopdir"]
    thread_key = struct.pack(">HIH", 6, cnid, 0) + b"\x00\x03"  # key (cnid, ""), then a folder thread record
    at = volume.image.index(thread_key, volume.catalog_offset)
    image = _write(tmp_path, volume.image)
    _patch(image, at + 8 + 4, struct.pack(">I", cnid))  # its parent: itself
    with mount(image) as root:
        assert "loopdir" in os.listdir(root)
        assert_eio(lambda: os.listdir(root / "loopdir"))
        assert_rest_reads(root)
    root_thread = volume.image.index(struct.pack(">HIH", 6, 2, 0) + b"\x00\x03", volume.catalog_offset)
    _patch(image, root_thread + 8 + 4, struct.pack(">I", 2))
    line = mount_refusal(image, tmp_path / "mnt-refused")
    assert line.startswith("imgfs: hfs+:") and "root folder" in line


def _file_record(volume, parent: int, name: str) -> int:  # noqa: ANN001
    raw = encode(name)
    key = struct.pack(">HIH", 6 + len(raw), parent, len(raw) // 2) + raw
    return volume.image.index(key, volume.catalog_offset) + len(key)


def test_extent_past_the_volume_gives_eio(tmp_path, mount) -> None:
    volume = build(_victim())
    record = _file_record(volume, 2, "victim.bin")
    image = _write(tmp_path, volume.image)
    _patch(image, record + 88 + 16, struct.pack(">I", 0x7FFFFFF0))  # the data fork's first extent
    with mount(image) as root:
        assert (root / "victim.bin").stat().st_size == 100_000
        assert_eio(lambda: (root / "victim.bin").read_bytes())
        assert_rest_reads(root)


def test_damaged_compressed_chunk_gives_eio(tmp_path, mount) -> None:
    volume = build(_victim())
    record = _file_record(volume, 2, "zipped")
    block = struct.unpack_from(">I", volume.image, record + 168 + 16)[0]  # the resource fork's first extent
    image = _write(tmp_path, volume.image)
    _patch(image, block * volume.block_size + 0x100 + 4 + 4 + 8 + 8, b"\x00" * 64)  # inside the first chunk
    with mount(image) as root:
        assert (root / "zipped").stat().st_size == 13 * 20000
        assert_eio(lambda: (root / "zipped").read_bytes())
        assert_rest_reads(root)


@pytest.mark.parametrize(("where", "value", "words"), [
    (32, b"\x00\x07", "node size"),  # the catalog's header record: node size 7
    (36, b"\xff\xff\xff\xff", "node count"),
    (14, b"\x00\x40", "header"),  # depth 64
])
def test_broken_catalog_header_refused(tmp_path, where, value, words) -> None:
    volume = build(_victim())
    image = _write(tmp_path, volume.image)
    _patch(image, volume.catalog_offset + where, value)
    line = mount_refusal(image, tmp_path / "mnt")
    assert line.startswith("imgfs: hfs+: catalog B-tree") and words in line and "byte offset" in line


def test_truncated_volume(tmp_path, mount) -> None:
    volume = build(_victim())
    image = _write(tmp_path, volume.image)
    os.truncate(image, 3000)
    line = mount_refusal(image, tmp_path / "mnt")
    assert "hfs+" in line


def test_random_damage_never_crashes(tmp_path) -> None:
    """Bytes changed in the B-trees and the volume header: every failure is an ImageError (or a path
    error), never a crash, a hang or a runaway allocation."""
    volume = build(_victim(), catalog_node_size=512, block_size=512)
    pristine = volume.image
    rng = random.Random(7)
    start = min(volume.catalog_offset, volume.extents_offset)
    for _ in range(80):
        damaged = bytearray(pristine)
        for _ in range(rng.choice((1, 4, 30))):
            damaged[rng.randrange(start, len(pristine)) if rng.random() < 0.9 else rng.randrange(1024, 1536)] = \
                rng.randrange(256)
        _walk_everything(bytes(damaged))


def _walk_everything(image: bytes) -> None:
    try:
        fs = HfsPlusFilesystem(BytesStream(image, "damaged"), OpenContext("test", BlockCache(1 << 22)))
    except ImageError:
        return
    pending = [fs.root]
    while pending:
        node = pending.pop()
        try:
            kids = fs.children(node)
        except (ImageError, OSError):
            continue
        for child in kids.values():
            _try(lambda child=child: fs.xattrs(child))
            if child.is_dir:
                pending.append(child)
            elif child.is_file:
                _try(lambda child=child: fs.open(child).pread(0, 1 << 18))


def _try(action) -> None:  # noqa: ANN001
    try:
        action()
    except (ImageError, OSError):
        pass


# -- pieces, in memory -----------------------------------------------------------------------------------


def test_detection() -> None:
    plain = build(Dir({"f": File(b"x")})).image
    assert probe(BytesStream(plain)) and detect(BytesStream(plain)).name == "hfs+"
    hfsx = build(Dir(), hfsx=True).image
    assert hfsx[1024:1028] == b"HX\x00\x05" and detect(BytesStream(hfsx)).name == "hfs+"
    wrapped = build(Dir({"f": File(b"x")}), wrap_in_hfs=True).image
    assert wrapped[1024:1026] == b"BD" and detect(BytesStream(wrapped)).name == "hfs+"
    plain_hfs = bytearray(wrapped)
    plain_hfs[1024 + 124 : 1024 + 126] = b"\0\0"  # no embedded volume: classic HFS, which imgfs does not read
    assert not probe(BytesStream(bytes(plain_hfs)))
    with pytest.raises(UnsupportedFormat):
        detect(BytesStream(bytes(plain_hfs)))


def test_case_folding_order() -> None:
    """TN1150's FastUnicodeCompare: case folded, ignorable units dropped, NUL after everything."""
    def key(name: str) -> str:
        return folded(unit_string(encode(name)))

    assert key("README") == key("readme") and key("ΩMEGA") == key("ωmega") and key("Æ") == key("æ")
    assert key("a\u200cb") == key("ab")  # a zero-width non-joiner is ignored
    assert key("\0\0\0\0HFS+ Private Data") > key("\uffef zzz")
    assert key("ab") < key("abc") < key("abd")
    # one character per UTF-16 unit: a surrogate pair (U+1F600) sorts below U+E000, as its units do
    assert unit_string("\U0001f600".encode("utf-16-be")) < unit_string("\ue000".encode("utf-16-be"))
    assert shown(encode("a/b")) == "a:b" and shown(encode(NFD_NAME)) == "café au lait"


def test_lzvn_decoders() -> None:
    """Both decoders agree with Apple's encoder (lzfse writes LZVN blocks for small inputs) and with the
    tests' own encoder; damaged streams are refused, not mis-decoded."""
    import lzfse

    rng = random.Random(9)
    words = [bytes(rng.choice(b"abcdefgh") for _ in range(rng.randint(2, 8))) for _ in range(100)]
    checked = 0
    for n in (60, 100, 300, 1000, 2000, 4000):
        data = b" ".join(rng.choice(words) for _ in range(n))[:n]
        block = lzfse.compress(data)
        if block[:4] != b"bvxn":
            continue
        payload = block[12 : 12 + struct.unpack_from("<I", block, 8)[0]]
        assert lzvn.decode_python(payload, len(data)) == data == lzvn.decode_lzfse(payload, len(data))
        checked += 1
    assert checked >= 3
    chunk = b"".join(b"record %d; " % i for i in range(6000))[:65536] + _pseudo_random(2000, 6)
    stream = lzvn_compress(chunk)
    assert lzvn.decode_python(stream, len(chunk)) == chunk == lzvn.decode_lzfse(stream, len(chunk))
    for bad in (b"\x70" + stream[1:], stream[:50], b"\x00\x09" + stream[2:]):  # undefined op, cut, bad distance
        with pytest.raises(lzvn.LzvnError):
            lzvn.decode_python(bad, len(chunk))
        with pytest.raises(lzvn.LzvnError):
            lzvn.decode_lzfse(bad, len(chunk))


def test_volume_opens_fast_and_lazily() -> None:
    """Mounting reads the header, the B-tree headers and the root: not the big folder below it."""
    volume = build(rich_tree(many=2000))
    cache = BlockCache(1 << 24)
    started = time.perf_counter()
    fs = HfsPlusFilesystem(BytesStream(volume.image, "lazy"), OpenContext("test", cache))
    assert time.perf_counter() - started < 0.5
    assert fs.children(fs.root)["many"].children is None
    loaded = cache.stats()["entries"]
    fs.children(fs.children(fs.root)["many"])
    assert cache.stats()["entries"] > loaded + 10


def test_times() -> None:
    image = build(Dir({"f": File(b"x", mtime=T0 + 3)})).image
    fs = HfsPlusFilesystem(BytesStream(image), OpenContext("test", BlockCache(1 << 20)))
    node = fs.children(fs.root)["f"]
    assert node.mtime_ns == (T0 + 3) * 10**9 == node.ctime_ns == node.atime_ns
    assert calendar.timegm(time.gmtime(node.mtime_ns // 10**9)) == T0 + 3


def test_open_image_on_a_partitioned_disk(tmp_path) -> None:
    """An HFS+ volume inside a GPT or APM disk is found like any other partition's filesystem."""
    src = tmp_path / "xorriso"
    (src / "d").mkdir(parents=True)
    (src / "d" / "f").write_bytes(b"x\n")
    if not shutil.which("xorriso"):
        pytest.skip("xorriso is not installed")
    iso = tmp_path / "h.iso"
    subprocess.run(["xorriso", "-as", "mkisofs", "-hfsplus", "-o", str(iso), str(src)], check=True,
                   capture_output=True)
    disk = bytearray(iso.read_bytes())
    disk[32768:32774] = bytes(6)  # no ISO 9660 any more: the Apple partition map is what is left
    (tmp_path / "apm.img").write_bytes(bytes(disk))
    opened = open_image(str(tmp_path / "apm.img"))
    try:
        assert [layer["layer"] for layer in opened.layers][:2] == ["file", "apm"]
        folder = next(layer["shown_as"] for layer in opened.layers if layer["layer"] == "hfs+")
        assert folder.endswith(" ISOIMAGE")
        assert opened.tree.open(f"/{folder}/d/f").pread(0, 10) == b"x\n"
    finally:
        opened.close()


def test_unknown_compression_type_gives_an_error_on_read() -> None:
    """decmpfs type 5 (dataless) and unknown types: listed at their size, reading them is an ImageError (EIO)."""
    header = struct.pack("<4sIQ", b"fpmc", 5, 1234)
    volume = build(Dir({"dataless": File(decmpfs=(header + bytes(12), b"")), "ok": File(b"fine")}))
    fs = HfsPlusFilesystem(BytesStream(volume.image), OpenContext("test", BlockCache(1 << 20)))
    kids = fs.children(fs.root)
    assert kids["dataless"].size == 1234 and fs.xattrs(kids["dataless"]) == {}
    with pytest.raises(UnsupportedFormat, match="type 5"):
        fs.open(kids["dataless"])
    assert fs.open(kids["ok"]).pread(0, 10) == b"fine"
