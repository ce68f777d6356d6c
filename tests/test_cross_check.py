"""imgfs's ISO reader against pycdlib's, an independent reader, on the same images.

pycdlib reads through imgfs's ``StreamIO`` adapter over a ``SliceStream``: the image is embedded at an
offset inside a larger file, so that the adapter and the stream layer are exercised as pycdlib uses
them (seek, read, tell) while the two readers must agree on every path, size and byte.
"""

from __future__ import annotations

import stat
from pathlib import Path

import pycdlib
import pytest
from isotools import pseudo_random, write_file, xorriso
from streamio import StreamIO

from imgfs.filesystems.iso9660 import IsoFilesystem
from imgfs.io import BlockCache, FileStream, SliceStream
from imgfs.layer import OpenContext
from imgfs.tree import Tree

PADDING = 12345  # bytes of other data before the ISO inside the carrier file


def pycdlib_view(iso: pycdlib.PyCdlib, namespace: str) -> dict[str, tuple[str, int, bytes]]:
    """path -> (type, size, first bytes) as pycdlib sees one namespace."""
    facade = iso.get_rock_ridge_facade() if namespace == "rockridge" else iso.get_joliet_facade()
    seen = {}
    for parent, dirs, files in facade.walk("/"):
        for name in dirs:
            seen[f"{parent.rstrip('/')}/{name}"] = ("dir", 0, b"")
        for name in files:
            path = f"{parent.rstrip('/')}/{name}"
            record = facade.get_record(path)
            if namespace == "rockridge" and record.rock_ridge is not None and record.rock_ridge.is_symlink():
                target = record.rock_ridge.symlink_path()
                seen[path] = ("symlink", len(target), target[:64])
                continue
            with facade.open_file_from_iso(path) as f:
                head = f.read(64)
            seen[path] = ("file", record.get_data_length(), head)
    return seen


def imgfs_view(tree: Tree) -> dict[str, tuple[str, int, bytes]]:
    seen = {}
    for path, node in tree.walk():
        if node.is_dir:
            seen[path] = ("dir", 0, b"")
        elif node.is_symlink:
            seen[path] = ("symlink", node.size, (node.target or b"")[:64])
        elif stat.S_ISREG(node.mode):
            seen[path] = ("file", node.size, tree.open(path).pread(0, 64))
    return seen


@pytest.fixture(scope="module")
def carrier(tmp_path_factory) -> tuple[Path, int]:
    """An xorriso ISO (Rock Ridge + Joliet) embedded at an odd offset inside a bigger file."""
    base = tmp_path_factory.mktemp("cross")
    src = base / "src"
    write_file(src / "a.txt", b"alpha\n")
    write_file(src / "docs" / "Long File Name For Joliet.txt", pseudo_random(5000, 21))
    write_file(src / "docs" / "deeper" / "b.bin", pseudo_random(70000, 22))
    (src / "docs" / "link").symlink_to("../a.txt")
    iso = xorriso(base / "x.iso", src)
    data = iso.read_bytes()
    path = base / "carrier.bin"
    path.write_bytes(pseudo_random(PADDING, 23) + data + pseudo_random(999, 24))
    return path, len(data)


@pytest.mark.parametrize("namespace", ["rockridge", "joliet"])
def test_both_readers_agree(carrier, namespace):
    path, size = carrier
    image = SliceStream(FileStream(str(path)), PADDING, size, name="embedded.iso")
    iso = pycdlib.PyCdlib()
    iso.open_fp(StreamIO(image))
    try:
        expected = pycdlib_view(iso, namespace)
    finally:
        iso.close()
    ours = imgfs_view(Tree(IsoFilesystem(image, OpenContext("test", BlockCache(1 << 20), namespace=namespace))))
    assert ours == expected
    assert len(ours) == (6 if namespace == "rockridge" else 5)  # Joliet cannot hold the symlink
