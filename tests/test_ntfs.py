"""NTFS volumes written by mkntfs and the ntfs-3g driver, read by imgfs and compared with the tree they were
made from and with what ntfs-3g itself reads back: every name, type, size, link target, hard link, named
stream and byte. Volumes with 4 KiB and 64 KiB clusters; LZNT1-compressed files on the 4 KiB one.
"""

from __future__ import annotations

import shutil
import stat
from pathlib import Path
from typing import Any

import pytest
from ntfstools import (
    HARD_LINKS,
    build_tree,
    comparable,
    copy_tree,
    differences,
    inode_groups,
    mkntfs,
    ntfs3g,
    populate_compressed,
    snapshot,
    write_fragmented,
    write_sparse,
)

from imgfs.filesystems.base import Filesystem, Node
from imgfs.filesystems.ntfs import NtfsFilesystem
from imgfs.io.cache import BlockCache
from imgfs.io.stream import FileStream
from imgfs.layer import OpenContext

if not shutil.which("mkntfs") or not shutil.which("ntfs-3g"):
    pytest.skip("ntfs-3g (mkntfs, ntfs-3g) is not installed", allow_module_level=True)

SPARSE_SIZE = 40 << 20
SPARSE_PIECES = [(0, b"start"), (20 << 20, b"middle"), (SPARSE_SIZE - 5, b"end!\n")]


class Volume:
    def __init__(self, image: Path, source: Path, oracle: dict[str, dict[str, Any]]) -> None:
        self.image = image
        self.source = source
        self.oracle = oracle  # what ntfs-3g reads back

    def open(self) -> NtfsFilesystem:
        stream = FileStream(str(self.image))
        return NtfsFilesystem(stream, OpenContext(str(self.image), BlockCache(64 << 20)))


def make_volume(base: Path, cluster: int, size: int, compressed: bool) -> Volume:
    source = build_tree(base / "source")
    image = mkntfs(base / f"ntfs-{cluster}.img", size, cluster)
    with ntfs3g(image, base / "writer") as mnt:
        copy_tree(source, mnt)
        for root in (source, mnt):
            write_sparse(root / "sparse.bin", SPARSE_SIZE, SPARSE_PIECES)
        if compressed:
            contents = populate_compressed(mnt / "compressed")
            (source / "compressed").mkdir()
            for name, data in contents.items():
                (source / "compressed" / name).write_bytes(data)
        write_fragmented(mnt, [source], cluster)
    with ntfs3g(image, base / "reader", "ro") as mnt:
        oracle = snapshot(mnt)
    return Volume(image, source, oracle)


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
    source = snapshot(volume.source)
    assert not differences(comparable(source), comparable(ours)), differences(comparable(source), comparable(ours))
    assert not differences(comparable(volume.oracle), comparable(ours))
    assert inode_groups(ours) == inode_groups(source) == inode_groups(volume.oracle)
    assert max(len(g) for g in inode_groups(ours)) == HARD_LINKS
