"""The generic assembler: how layers are put together, whatever their format.

Through the mount: the raw views of a container, a partition map and the sessions of a disc; inode numbers
that never collide between volumes; ``namespace=`` on an image without that side. In-process: a format
that exists only in this test (a registry entry and a module's worth of code, nothing else) shows as the
layer contract says, which is what "Adding a format" in the README promises.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import cdwriter as cw
import pytest
from conftest import compare_trees, run_imgfs, sha256_of
from disktools import blank, ext4_image, fat_image, put, sfdisk
from isotools import pseudo_random, write_file, xorriso
from udifwriter import write_udif

from imgfs import registry
from imgfs.errors import UnsupportedFormat
from imgfs.filesystems.base import DEFAULT_DIR_MODE, DEFAULT_FILE_MODE, Filesystem, Node
from imgfs.image import open_image
from imgfs.io.stream import BytesStream, SliceStream, Stream
from imgfs.layer import OpenContext, View, Volume, VolumeSet
from imgfs.options import MountOptions

MIB = 1 << 20


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("tree")
    write_file(root / "readme.txt", b"assembled\n")
    write_file(root / "data" / "random.bin", pseudo_random(300_000, 5))
    return root


@pytest.fixture(scope="module")
def partitioned_dmg(tree, tmp_path_factory) -> tuple[Path, Path, list[dict]]:
    """An MBR disk with a FAT and an ext4 partition, inside a zlib DMG."""
    work = tmp_path_factory.mktemp("dmg")
    disk = blank(work / "disk.img", 28 * MIB)
    layout = sfdisk(disk, "label: dos\n2048,32768,6\n34816,,83\n")
    put(disk, layout[0]["start"] * 512, fat_image(work / "p1.img", tree, 16, "FATPART"))
    put(disk, layout[1]["start"] * 512, ext4_image(work / "p2.img", tree, 8, "extpart"))
    return write_udif(work / "disk.dmg", disk.read_bytes(), codec="zlib").path, disk, layout


def test_raw_views_of_a_container_and_a_partition_map(partitioned_dmg, tree, mount):
    dmg, disk, layout = partitioned_dmg
    with mount(dmg, "rawviews") as root:
        views = root / ".imgfs"
        assert sorted(os.listdir(views)) == ["info.json", "partitions", "udif.img"]
        assert sha256_of(views / "udif.img") == sha256_of(disk)
        assert sorted(os.listdir(views / "partitions")) == ["1.img", "2.img"]
        whole = disk.read_bytes()
        for number, part in enumerate(layout, start=1):
            data = (views / "partitions" / f"{number}.img").read_bytes()
            assert data == whole[part["start"] * 512 : (part["start"] + part["size"]) * 512]
        layers = json.loads((views / "info.json").read_text())["layers"]
        assert [layer["layer"] for layer in layers] == ["file", "udif", "mbr", "fat", "ext"]
        assert [layer.get("shown_as") for layer in layers[3:]] == ["1 FATPART", "2 extpart"]
        compare_trees(tree, root / "2 extpart", ignore=frozenset({"lost+found"}), owners=False, mtime=False)
    with mount(dmg) as root:
        assert sorted(os.listdir(root)) == ["1 FATPART", "2 extpart"]  # no raw views unless asked for


def test_every_volume_has_its_own_inode_numbers(partitioned_dmg, mount):
    dmg, _, _ = partitioned_dmg
    with mount(dmg) as root:
        inodes = {}
        for folder in ("1 FATPART", "2 extpart"):
            for path in [root / folder, *(root / folder).rglob("*")]:
                inodes.setdefault(path.lstat().st_ino, []).append(path)
        inodes.setdefault(root.stat().st_ino, []).append(root)
        shared = {ino: paths for ino, paths in inodes.items() if len(paths) > 1}
        assert not shared, f"volumes share inode numbers: {list(shared.values())[:3]}"


@pytest.fixture(scope="module")
def two_sessions(tmp_path_factory) -> tuple[Path, list[Path]]:
    work = tmp_path_factory.mktemp("sessions")
    roots = [work / "one", work / "two"]
    write_file(roots[0] / "first.txt", b"written in session 1\n" * 300)
    write_file(roots[1] / "second.txt", b"written in session 2\n")
    images = cw.multisession_isos(roots, work / "iso")
    disc = cw.Disc([[cw.Track(cw.MODE1, data)] for _, data in images])
    return cw.write_cue(disc, work, "disc"), roots


def test_raw_views_of_a_disc_show_its_earlier_sessions(two_sessions, mount):
    sheet, roots = two_sessions
    with mount(sheet, "rawviews") as root:
        assert sorted(os.listdir(root)) == [".imgfs", "first.txt", "second.txt"]  # the last session's tree
        views = root / ".imgfs"
        assert sorted(os.listdir(views)) == ["disc.iso", "info.json", "sessions", "tracks"]
        assert os.listdir(views / "sessions") == ["Session 1"]
        compare_trees(roots[0], views / "sessions" / "Session 1", owners=False)
        assert sorted(os.listdir(views / "tracks")) == ["Track 01.bin", "Track 01.iso", "Track 02.bin",
                                                        "Track 02.iso"]
        layers = json.loads((views / "info.json").read_text())["layers"]
        assert [(layer["layer"], layer.get("session")) for layer in layers] == [
            ("file", None), ("cue", None), ("iso9660", 2), ("iso9660", 1)]


def test_a_namespace_the_image_does_not_have_is_one_line(tree, tmp_path):
    iso = xorriso(tmp_path / "plain.iso", tree)
    done = run_imgfs("ls", "-o", "namespace=hfsplus", str(iso))
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "has no hfsplus side" in lines[0] and "ISO 9660" in lines[0], done.stderr


# -- a format that exists only here ------------------------------------------------------------------------
# "Shelf" images: b"SHELF" + a count byte, then 512-byte "boxes". A box holds b"BOX", a label of 12 bytes,
# and one file's bytes. A shelf is a volume set of its boxes; a box is a filesystem with one file.

class BoxFilesystem(Filesystem):
    kind = "box"

    def __init__(self, stream: Stream, ctx: OpenContext) -> None:
        super().__init__()
        head = stream.pread(0, 16)
        self.label = head[3:15].rstrip(b"\0").decode()
        self.root = Node("", DEFAULT_DIR_MODE, 0, 1)
        self._data = SliceStream(stream, 16, head[15])

    def _load_children(self, node: Node) -> dict[str, Node]:
        return {"contents": Node("contents", DEFAULT_FILE_MODE, self._data.size, 2, handle=self._data)}

    def open(self, node: Node) -> Stream:
        return node.handle


class Shelf(VolumeSet):
    def __init__(self, stream: Stream, choose_one: bool) -> None:
        self.stream = stream
        self.choose_one = choose_one
        self.others = "other boxes"

    def volumes(self) -> Sequence[Volume]:
        count = self.stream.pread(5, 1)[0]
        return [Volume(f"box{i}", SliceStream(self.stream, 512 * (i + 1), 512), raw=f"box{i}.raw",
                       details={"box": i}) for i in range(count)]

    def extras(self) -> Sequence[tuple[str, Stream]]:
        return [("shelf.txt", BytesStream(b"a shelf\n"))] if self.stream.pread(5, 1)[0] else []

    def empty_reason(self) -> str:
        return "shelf: an empty shelf"

    def views(self) -> Sequence[View]:
        return [View("shelf/head.bin", SliceStream(self.stream, 0, 6))]


def box(label: bytes, data: bytes) -> bytes:
    return (b"BOX" + label.ljust(12, b"\0") + bytes([len(data)]) + data).ljust(512, b"\0")


CHOOSE_ONE = {"shelf": False}  # what the next shelf opened is: folders, or alternatives


def open_shelf(stream: Stream, ctx: OpenContext) -> Shelf:
    """The shelf format's opener, as its registry entry names it."""
    return Shelf(stream, CHOOSE_ONE["shelf"])


@pytest.fixture
def shelf_format(monkeypatch):
    monkeypatch.setattr("imgfs.registry.FORMATS", (
        registry.Format("shelf", "a shelf of boxes", "container", (registry.Magic(0, b"SHELF"),),
                        opener=f"{__name__}:open_shelf"),
        registry.Format("box", "a box", "filesystem", (registry.Magic(0, b"BOX"),),
                        opener=f"{__name__}:BoxFilesystem"),
        *registry.FORMATS))
    monkeypatch.setitem(CHOOSE_ONE, "shelf", False)
    return CHOOSE_ONE


def shelf_image(tmp_path: Path, boxes: list[bytes]) -> Path:
    path = tmp_path / "shelf.img"
    path.write_bytes(b"SHELF" + bytes([len(boxes)]) + bytes(506) + b"".join(boxes))
    return path


def listing(image, path: str = "/") -> dict[str, str]:
    return {name: ("dir" if node.is_dir else node.size) for name, node in image.tree.children(path).items()}


def test_a_new_format_needs_only_a_registry_entry(shelf_format, tmp_path):
    path = shelf_image(tmp_path, [box(b"apples", b"red"), b"not a box".ljust(512, b"\0"), box(b"pears", b"green")])
    image = open_image(str(path), MountOptions(raw_views=True))
    try:
        assert listing(image) == {"shelf.txt": 8, "box0 apples": "dir", "box1.raw": 512, "box2 pears": "dir",
                                  ".imgfs": "dir"}
        assert image.tree.open("/box2 pears/contents").pread(0, 10) == b"green"
        assert image.tree.open("/.imgfs/shelf/head.bin").pread(0, 10) == b"SHELF\x03"
        assert [(layer["layer"], layer.get("box"), layer.get("shown_as")) for layer in image.layers] == [
            ("file", None, None), ("shelf", None, None), ("box", 0, "box0 apples"), ("raw", 1, "box1.raw"),
            ("box", 2, "box2 pears")]
    finally:
        image.close()


def test_a_set_of_one_volume_shows_it_at_the_root(shelf_format, tmp_path):
    image = open_image(str(shelf_image(tmp_path, [box(b"plums", b"blue")])))
    assert listing(image) == {"contents": 4, "shelf.txt": 8}


def test_alternatives_show_the_first_that_opens(shelf_format, tmp_path):
    shelf_format["shelf"] = True
    path = shelf_image(tmp_path, [b"nothing".ljust(512, b"\0"), box(b"figs", b"purple"), box(b"kiwis", b"x")])
    image = open_image(str(path), MountOptions(raw_views=True))
    assert listing(image) == {"contents": 6, "shelf.txt": 8, ".imgfs": "dir"}
    assert image.tree.open("/contents").pread(0, 10) == b"purple"
    assert listing(image, "/.imgfs/other boxes") == {"box2": "dir"}
    assert image.tree.open("/.imgfs/other boxes/box2/contents").pread(0, 10) == b"x"


def test_nothing_to_show_is_one_line(shelf_format, tmp_path):
    image = open_image(str(shelf_image(tmp_path, [])))
    assert listing(image) == {}
    with pytest.raises(UnsupportedFormat, match="^shelf: an empty shelf$"):
        image.require_content()
    done = run_imgfs("ls", str(shelf_image(tmp_path, [box(b"x", b"")])))  # the real registry: no such format
    assert done.returncode == 1 and "no known image format" in done.stderr
