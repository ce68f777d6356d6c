"""Hostile trees: directories that loop, names no filesystem may show, directories that cannot be listed.

Every filesystem's listing passes through ``Filesystem.children``, which escapes unsafe names and shows a
directory met a second time as empty; ``Tree.walk`` is the one walker and always ends. Checked here on a
made-up filesystem (every case, exactly), then on real images damaged the way an attacker would: an ISO
directory record pointing back at the root, Rock Ridge names "..", "a/b" and one with a NUL, an ext entry
listed as a directory whose inode is none.
"""

from __future__ import annotations

import itertools
import logging
import os
import re
import shutil
import stat
import struct
from pathlib import Path

import pytest
from conftest import run_imgfs
from isotools import find_record, patch_record, record_fields, susp_entries, write_file, xorriso

from imgfs.errors import CorruptImage
from imgfs.filesystems import base
from imgfs.filesystems.base import DEFAULT_DIR_MODE, DEFAULT_FILE_MODE, Filesystem, Node
from imgfs.filesystems.names import NAME_MAX, NameMap, escape, is_safe, sanitize
from imgfs.io.stream import BytesStream, Stream
from imgfs.tree import Tree

# -- the escape ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("name, shown", [
    ("", "%"), (".", "%2E"), ("..", "%2E%2E"), ("a/b", "a%2Fb"), ("nul\0here", "nul%00here"),
    ("/", "%2F"), ("\ud800lone", "%ED%A0%80lone"), ("...", "..."), ("%2F", "%2F"), ("ok.txt", "ok.txt"),
    ("raw\udcff", "raw\udcff"),  # a surrogate escape is a raw byte: safe
])
def test_escape(name, shown):
    assert escape(name) == shown
    assert is_safe(shown) and is_safe(name) == (name == shown)


def test_long_names_are_cut_with_a_checksum():
    for name in ("a" * 300, "é" * 200, "\U0001f600" * 70):
        shown = escape(name)
        assert len(shown.encode()) <= NAME_MAX and re.fullmatch(r".+~[0-9a-f]{8}", shown)
        assert name.startswith(shown[:-9]) and escape(name + "x") != shown
    assert escape("b" * NAME_MAX) == "b" * NAME_MAX


def test_sanitize_keeps_order_type_and_every_entry():
    class Mapping(dict):
        pass

    entries = Mapping({"a/b": 1, "a%2Fb": 2, ".": 3, "%2E": 4, "": 5, "z": 6})
    changed = sanitize(entries)
    assert type(entries) is Mapping
    assert list(entries.items()) == [("a%2Fb~2", 1), ("a%2Fb", 2), ("%2E~2", 3), ("%2E", 4), ("%", 5), ("z", 6)]
    assert changed == [("a/b", "a%2Fb~2"), (".", "%2E~2"), ("", "%")]
    assert sanitize(entries) == []


def test_apple_names_are_found_by_either_normalization_form():
    nfc, nfd = "caf\u00e9", "cafe\u0301"
    stored_nfc, stored_nfd = NameMap({nfc: 1}), NameMap({nfd: 2})
    assert stored_nfc.get(nfd) == 1 and stored_nfc[nfc] == 1 and stored_nfd.get(nfc) == 2 and stored_nfd[nfd] == 2
    assert stored_nfc.get("tea") is None and stored_nfc.get(7, "none") == "none"
    with pytest.raises(KeyError):
        stored_nfc["tea"]
    assert list(stored_nfd) == [nfd]  # listed as stored


# -- a made-up filesystem -----------------------------------------------------------------------------


class MadeUp(Filesystem):
    """Directories by inode number: ``layout[ino]`` is {name: ino}; an ino not in ``layout`` is a file, one in
    ``broken`` cannot be listed."""

    kind = "madeup"

    def __init__(self, layout: dict[int, dict[str, int]], broken: frozenset[int] = frozenset()) -> None:
        super().__init__()
        self.layout, self.broken, self.loads = layout, broken, 0
        self.root = self._node("", 1)

    def _node(self, name: str, ino: int) -> Node:
        mode = DEFAULT_DIR_MODE if ino in self.layout or ino in self.broken else DEFAULT_FILE_MODE
        return Node(name, mode, 0, ino)

    def _load_children(self, node: Node) -> dict[str, Node]:
        self.loads += 1
        if node.ino in self.broken:
            raise CorruptImage(f"directory {node.name!r} is damaged", layer="madeup", offset=node.ino * 512)
        return {name: self._node(name, ino) for name, ino in self.layout[node.ino].items()}

    def open(self, node: Node) -> Stream:
        return BytesStream(b"")


def test_a_directory_that_is_its_own_ancestor_lists_as_empty(caplog):
    fs = MadeUp({1: {"a": 2, "f": 9}, 2: {"b": 3}, 3: {"up": 2, "top": 1, "g": 8}})
    with caplog.at_level(logging.WARNING):
        walked = [path for path, _ in Tree(fs).walk()]
    assert walked == ["/a", "/a/b", "/a/b/up", "/a/b/top", "/a/b/g", "/f"]
    assert Tree(fs).children("/a/b/up") == {} and Tree(fs).children("/a/b/top") == {}
    assert Tree(fs).lookup("/a/b/up").is_dir
    lines = [r.getMessage() for r in caplog.records if "shown elsewhere" in r.getMessage()]
    assert len(lines) == 2 and "'up'" in lines[0] and "'top'" in lines[1] and "directory 'b'" in lines[0]


def test_a_directory_reached_twice_lists_once():
    fs = MadeUp({1: {"x": 2, "y": 3}, 2: {"link": 4}, 3: {"link": 4}, 4: {"f": 10}})
    tree = Tree(fs)
    assert [path for path, _ in tree.walk()] == ["/x", "/x/link", "/x/link/f", "/y", "/y/link"]
    assert tree.stat_path("/y/link").ino == tree.stat_path("/x/link").ino


def test_an_exponential_tree_of_links_is_walked_in_linear_time():
    depth = 40  # each level links the next twice: 2**40 paths without the check
    layout = {level: {"left": level + 1, "right": level + 1} for level in range(1, depth)}
    layout[depth] = {"f": 10_000}
    fs = MadeUp(layout)
    walked = list(Tree(fs).walk())
    assert len(walked) == 2 * (depth - 1) + 1 and fs.loads <= depth + 1


def test_walk_reports_a_damaged_directory_and_goes_on():
    fs = MadeUp({1: {"a": 2, "bad": 3, "c": 4}, 2: {"f": 10}, 4: {"g": 11}}, broken=frozenset({3}))
    errors: list[tuple[str, str]] = []
    walked = [path for path, _ in Tree(fs).walk(on_error=lambda path, exc: errors.append((path, str(exc))))]
    assert walked == ["/a", "/a/f", "/bad", "/c", "/c/g"]
    assert errors == [("/bad", "madeup: directory 'bad' is damaged (at byte offset 1536)")]


def test_walk_breadth_first_and_from_a_subdirectory():
    fs = MadeUp({1: {"a": 2, "b": 3}, 2: {"a1": 4, "f": 10}, 3: {"b1": 11}, 4: {"deep": 12}})
    tree = Tree(fs)
    assert [p for p, _ in tree.walk(breadth_first=True)] == ["/a", "/b", "/a/a1", "/a/f", "/b/b1", "/a/a1/deep"]
    assert [p for p, _ in tree.walk("/a/")] == ["/a/a1", "/a/a1/deep", "/a/f"]
    with pytest.raises(NotADirectoryError):
        list(tree.walk("/a/f"))


def test_a_breadth_first_walk_lists_a_directory_only_when_it_gets_there():
    """The prefetch walks breadth first and stops after so many entries: the folders it has only seen are not
    listed (a thousand folders of a thousand files would otherwise be parsed whole before the first entry)."""
    layout = {1: {f"d{n}": 100 + n for n in range(100)}}
    layout.update({100 + n: {f"f{k}": 10_000 + 100 * n + k for k in range(10)} for n in range(100)})
    fs = MadeUp(layout)
    walked = [path for path, _ in itertools.islice(Tree(fs).walk(breadth_first=True), 105)]
    assert walked[99:] == ["/d99", "/d0/f0", "/d0/f1", "/d0/f2", "/d0/f3", "/d0/f4"]
    assert fs.loads == 2  # the root and d0


def test_listings_beyond_the_resident_bound_are_dropped_and_parsed_again_alike(monkeypatch, caplog):
    """A huge tree is not held whole: past RESIDENT_ENTRIES the oldest listings go, and a directory listed
    again is parsed again, with the same entries in the same order, and is not taken for a loop."""
    monkeypatch.setattr(base, "RESIDENT_ENTRIES", 45)
    layout = {1: {f"d{n}": 100 + n for n in range(50)}}
    layout.update({100 + n: {f"f{k}": 10_000 + 100 * n + k for k in range(20)} | {"sub": 200 + n} for n in range(50)})
    layout.update({200 + n: {"leaf": 20_000 + n} for n in range(50)})
    fs = MadeUp(layout)
    tree = Tree(fs)
    with caplog.at_level(logging.WARNING):
        first = [(path, tree.attributes(node, fs)) for path, node in tree.walk()]
        loads = fs.loads
        second = [(path, tree.attributes(node, fs)) for path, node in tree.walk()]
    assert len(first) == 50 + 50 * 22 and first == second
    assert loads == 101 and fs.loads == 201  # every directory parsed again, but the root
    dirs = [node for _, node in tree.walk() if node.is_dir]
    held = [node for node in dirs if node.children is not None]
    assert 2 <= len(held) <= 5 and sum(len(node.children or {}) for node in held) <= 45  # of 100 listings
    assert not caplog.records
    assert list(tree.children("/d7/sub")) == ["leaf"] and tree.lookup("/d7/sub/leaf").ino == 20_007


def test_a_loop_is_still_refused_when_its_listings_are_parsed_again(monkeypatch, caplog):
    monkeypatch.setattr(base, "RESIDENT_ENTRIES", 1)
    fs = MadeUp({1: {"a": 2, "f": 9}, 2: {"b": 3, "b2": 3}, 3: {"up": 2, "top": 1, "g": 8}})
    tree = Tree(fs)
    with caplog.at_level(logging.WARNING):
        for _ in range(3):
            assert [path for path, _ in tree.walk()] == ["/a", "/a/b", "/a/b/up", "/a/b/top", "/a/b/g", "/a/b2", "/f"]
            assert tree.children("/a/b2") == {} and tree.children("/a/b/up") == {}
    assert fs.loads > 6  # parsed again each time
    assert all("shown elsewhere" in record.getMessage() for record in caplog.records)


def test_unsafe_names_of_any_filesystem_are_escaped(caplog):
    fs = MadeUp({1: {"": 10, ".": 11, "..": 12, "a/b": 13, "a%2Fb": 14, "x\0y": 15, "n" * 300: 16}})
    with caplog.at_level(logging.WARNING):
        names = list(Tree(fs).children("/"))
    assert names[:6] == ["%", "%2E", "%2E%2E", "a%2Fb~2", "a%2Fb", "x%00y"]
    assert len(names) == 7 and all(is_safe(n) for n in names)
    lines = [r.getMessage() for r in caplog.records if "escaped" in r.getMessage()]
    assert len(lines) == 1 and "'' as '%', '.' as '%2E', '..' as '%2E%2E' and 3 more" in lines[0]


# -- real images, damaged ------------------------------------------------------------------------------


@pytest.fixture
def iso_source(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    for i in range(6):
        write_file(src / f"dir{i}" / "inner" / "file.txt", f"{i}\n".encode())
    for name in ("ab", "cd", "ef", "gh"):
        write_file(src / name, name.encode())
    return src


def test_iso_directory_pointing_at_the_root_ends_every_walk(iso_source, tmp_path, mount):
    iso = xorriso(tmp_path / "loop.iso", iso_source)
    image = iso.read_bytes()
    root_extent, root_size = record_fields(image, 16 * 2048 + 156)
    for joliet in (False, True):  # the primary tree and the Joliet one
        names = (b"DIR3", b"INNER") if not joliet else ("dir3".encode("utf-16-be"), "inner".encode("utf-16-be"))
        if joliet:
            image = iso.read_bytes()
            sector = next(s for s in range(17, 32) if image[s * 2048] == 2 and image[s * 2048 + 1 : s * 2048 + 6]
                          == b"CD001")
            root = image[sector * 2048 + 156 : sector * 2048 + 190]
            root_extent, root_size = struct.unpack_from("<I", root, 2)[0], struct.unpack_from("<I", root, 10)[0]
            pos = _find_from(image, root_extent, root_size, names)
        else:
            pos = find_record(image, *names)
        patch_record(iso, pos, extent=root_extent, size=root_size)
    done = run_imgfs("ls", "-R", str(iso))
    assert done.returncode == 0, done.stderr
    listed = done.stdout.split()
    assert "/dir3/inner" in listed and not [p for p in listed if p.startswith("/dir3/inner/")]
    assert "/dir4/inner/file.txt" in listed and len(listed) == 6 * 3 - 1 + 4
    warnings = done.stderr.strip().splitlines()
    assert len(warnings) == 1 and "'inner'" in warnings[0] and "shown elsewhere" in warnings[0]
    with mount(iso) as root:
        assert os.listdir(root / "dir3" / "inner") == []
        found = sum(len(dirs) + len(files) for _, dirs, files in os.walk(root))
        assert found == len(listed)
    for namespace in ("joliet", "iso9660"):
        assert run_imgfs("ls", "-R", str(iso), "-o", f"namespace={namespace}").returncode == 0


def _find_from(image: bytes, extent: int, size: int, names: tuple[bytes, ...]) -> int:
    pos = -1
    for name in names:
        offset, end = extent * 2048, extent * 2048 + size
        while offset < end:
            length = image[offset]
            if length == 0:
                offset = (offset // 2048 + 1) * 2048
                continue
            if image[offset + 33 : offset + 33 + image[offset + 32]] == name:
                pos = offset
                extent, size = record_fields(image, offset)
                break
            offset += length
        else:
            raise KeyError(name)
    return pos


def _set_rock_ridge_name(iso: Path, iso_name: bytes, new: bytes) -> None:
    image = iso.read_bytes()
    pos = find_record(image, iso_name)
    at, _, entry = next(e for e in susp_entries(image, pos) if e[1] == b"NM")
    assert len(entry) == 5 + len(new), "the new name must have the old one's length"
    with open(iso, "r+b") as f:
        f.seek(at + 5)
        f.write(new)


def test_rock_ridge_names_that_no_filesystem_may_show(iso_source, tmp_path, mount):
    iso = xorriso(tmp_path / "names.iso", iso_source, joliet=False)
    for iso_name, new in ((b"AB.;1", b".."), (b"CD.;1", b"a/"), (b"EF.;1", b"\0x"), (b"GH.;1", b"ab")):
        _set_rock_ridge_name(iso, iso_name, new)
    shown = {"%2E%2E": b"ab", "a%2F": b"cd", "%00x": b"ef", "ab": b"gh"}
    with mount(iso) as root:
        names = set(os.listdir(root))
        assert names == {f"dir{i}" for i in range(6)} | set(shown)
        for name, data in shown.items():
            assert (root / name).read_bytes() == data
    done = run_imgfs("ls", str(iso), check=True)
    assert set(done.stdout.split()) == names


def test_ext_entry_listed_as_a_directory_fails_alone(tmp_path):
    if not shutil.which("mkfs.ext4") or not shutil.which("debugfs"):
        pytest.skip("e2fsprogs is not installed")
    src = tmp_path / "src"
    for name in ("a", "b", "d"):
        write_file(src / name / "inside.txt", name.encode())
    write_file(src / "c", b"a file")
    image = tmp_path / "ext.img"
    os.system(f"mkfs.ext4 -q -F -O ^has_journal -d {src} {image} 4M >/dev/null 2>&1")
    ino = int(re.search(r"Inode: (\d+)", os.popen(f"debugfs -R 'stat /c' {image} 2>/dev/null").read()).group(1))
    os.system(f"debugfs -w -R 'sif /c mode 0170644' {image} >/dev/null 2>&1")  # the inode's type is garbage...
    data = bytearray(image.read_bytes())
    entry = re.search(re.escape(struct.pack("<I", ino)) + b"..\x01\x01c", data, re.S)
    assert entry, "the directory entry of /c was not found"
    data[entry.start() + 7] = 2  # ...and its directory entry says: a directory
    image.write_bytes(bytes(data))
    done = run_imgfs("ls", "-R", str(image))
    assert done.returncode == 1
    listed = done.stdout.split()
    assert {"/a/inside.txt", "/b/inside.txt", "/c", "/d/inside.txt"} <= set(listed)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("imgfs: /c: ext: 'c' is listed as a directory"), lines
    st = Tree(_ext(image)).stat_path("/c")
    assert stat.S_ISDIR(st.mode)


def _ext(image: Path) -> Filesystem:
    from imgfs.filesystems.ext import ExtFilesystem
    from imgfs.io.cache import BlockCache
    from imgfs.layer import OpenContext

    return ExtFilesystem(BytesStream(image.read_bytes()), OpenContext(str(image), BlockCache(1 << 20)))


def test_directory_links_of_a_format_that_has_them_show_everywhere_and_walk_once():
    """HFS+ directory hard links (Time Machine) stay readable at every place; the walk still enters each
    directory once, so 2**40 paths cost 40 listings."""
    depth = 40
    layout = {level: {"left": level + 1, "right": level + 1} for level in range(1, depth)}
    layout[depth] = {"f": 10_000}
    fs = MadeUp(layout)
    fs.directory_links = True
    tree = Tree(fs)
    walked = [path for path, _ in tree.walk()]
    assert len(walked) == 2 * (depth - 1) + 1 and fs.loads <= depth + 1
    assert list(tree.children("/right/left/right")) == ["left", "right"]


def test_xattr_names_linux_cannot_show_are_left_out(caplog):
    class WithXattrs(MadeUp):
        def xattrs(self, node: Node) -> dict[str, bytes]:
            return {"user.good": b"1", "user.nul\0inside": b"2", "user." + "x" * 300: b"3", "user.\ud800": b"4",
                    "trusted.outside": b"5"}  # not among its xattr_prefixes: getxattr would say "not supported"

    fs = WithXattrs({1: {"f": 10}})
    tree = Tree(fs)
    with caplog.at_level(logging.WARNING):
        assert tree.xattrs("/f") == {"user.good": b"1"}
        node, _ = tree.resolve("/f")
        assert Tree.shown_xattrs(node, fs, lambda: "/f") == {"user.good": b"1"}  # what the mount and extract use
    assert "left out" in caplog.text and "nul" in caplog.text and "trusted.outside" in caplog.text
