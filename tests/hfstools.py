"""Classic HFS volumes for the tests, written by hfsutils (hformat, hmkdir, hcopy -r / -m), and what they
must show: a source tree on disk (Linux names) with the Mac metadata each file must carry.

hfsutils keeps its "current volume" in ``$HOME/.hcwd``, so every command runs with HOME in the test's own
folder. Names go to it as MacRoman bytes; on Linux a Mac '/' is shown as ':'.
"""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import pytest
from macwriter import MAC_EPOCH_OFFSET, MacFile, macbinary

XATTR_SIZE_MAX = 65536
HFSUTILS = shutil.which("hformat") is not None
needs_hfsutils = pytest.mark.skipif(not HFSUTILS, reason="hfsutils is not installed (make deps installs it)")


def mac_name(linux_name: str) -> bytes:
    """A name as HFS stores it: MacRoman, with the ':' a Linux user sees back as the Mac's '/'."""
    return linux_name.replace(":", "/").encode("mac_roman")


def mac_path(linux_path: str) -> bytes:
    return b":" + b":".join(mac_name(part) for part in linux_path.split("/"))


def mac_date(unix_seconds: int) -> int:
    """A Mac date for ``unix_seconds`` as a Mac in the UTC zone writes it (the tests mount with TZ=UTC)."""
    return unix_seconds + MAC_EPOCH_OFFSET


@dataclass
class Expected:
    """What a mounted file must show besides its bytes."""

    rsrc: bytes = b""
    finder_info: bytes = b""  # the 32 bytes as com.apple.FinderInfo shows them; empty: no attribute
    mtime: Optional[int] = None  # Unix seconds, when known (hcopy -r stamps the copy time)


class Hfsutils:
    def __init__(self, home: Path) -> None:
        self.env = {**os.environ, "HOME": str(home), "TZ": "UTC"}

    def run(self, *args: object) -> subprocess.CompletedProcess:
        argv = [a if isinstance(a, bytes) else str(a) for a in args]
        return subprocess.run(argv, env=self.env, capture_output=True, check=True, timeout=120)

    def format(self, image: Path, size: int, label: str, partition: Optional[int] = None) -> None:
        if not image.exists():
            with open(image, "wb") as f:
                f.truncate(size)
        extra = [] if partition is None else [partition]
        self.run("hformat", "-l", label.encode("mac_roman"), image, *extra)

    def mkdir(self, path: str) -> None:
        self.run("hmkdir", mac_path(path))

    def copy_raw(self, source: Path, path: str) -> None:
        self.run("hcopy", "-r", source, mac_path(path))

    def copy_macbinary(self, source: Path, folder: str) -> None:
        self.run("hcopy", "-m", source, mac_path(folder) + b":" if folder else b":")

    def unmount(self) -> None:
        self.run("humount")


def write_tree(hfs: Hfsutils, source: Path, work: Path, macfiles: dict[str, MacFile]) -> dict[str, Expected]:
    """Copy the tree under ``source`` into the mounted volume (folders first), and the ``macfiles`` (path ->
    file with forks and Finder info) through MacBinary; write their data forks into ``source`` too."""
    expected: dict[str, Expected] = {}
    for dirpath, dirnames, filenames in os.walk(source):
        rel = Path(dirpath).relative_to(source)
        for name in sorted(dirnames):
            hfs.mkdir(str(rel / name) if str(rel) != "." else name)
        for name in sorted(filenames):
            path = str(rel / name) if str(rel) != "." else name
            hfs.copy_raw(Path(dirpath) / name, path)
            expected[path] = Expected(finder_info=b"????UNIX".ljust(32, b"\0"))
    for path, f in macfiles.items():
        folder = os.path.dirname(path)
        binary = work / "macbinary.bin"
        binary.write_bytes(macbinary(f))
        hfs.copy_macbinary(binary, folder)
        (source / path).write_bytes(f.data)
        mtime = f.modified - MAC_EPOCH_OFFSET
        os.utime(source / path, (mtime, mtime))
        shown_rsrc = f.rsrc if len(f.rsrc) <= XATTR_SIZE_MAX else b""  # Linux's getxattr cannot pass more
        expected[path] = Expected(shown_rsrc, f.finder_info(), mtime)
    return expected


def sample_tree(source: Path) -> dict[str, MacFile]:
    """A tree with MacRoman accents, 31-byte names, a Mac '/', a deep folder chain, a folder of many files (a
    catalog several levels deep), an empty file; and the files that carry resource forks and dates."""
    (source / "Café Crème").mkdir(parents=True)
    (source / "Café Crème" / "Ünïcödé ƒ∂ß ©®™ πΩ.txt").write_text("MacRoman accents\n")
    (source / "A name of exactly 31 bytes.....").write_bytes(b"thirty-one\n")
    (source / "either:or").write_bytes(b"a Mac slash\n")
    (source / "empty").write_bytes(b"")
    deep = source / "one" / "two" / "three" / "four" / "five"
    deep.mkdir(parents=True)
    (deep / "bottom.bin").write_bytes(bytes(range(256)) * 40)
    many = source / "many"
    many.mkdir()
    for i in range(60):
        (many / f"file {i:03d}").write_bytes(f"number {i}\n".encode() * (i + 1))
    return {
        "Café Crème/SimpleText doc": MacFile(b"SimpleText doc", b"Some text\r", b"\0\0\1\0rsrc fork" * 50, b"TEXT",
                                             b"ttxt", 0x4000, mac_date(700_000_000), mac_date(800_000_123)),
        "Application": MacFile(b"Application", b"", bytes(range(256)) * 200, b"APPL", b"WILD", 0x2000,
                               mac_date(600_000_000), mac_date(650_000_000)),
        "many/Big resource fork": MacFile(b"Big resource fork", b"data", b"r" * 70_000, b"rsrc", b"RSED", 0,
                                          mac_date(1), mac_date(2)),
    }


def build_volume(tmp: Path, size: int = 1440 * 1024, label: str = "Test Vol ©"
                 ) -> tuple[Path, Path, dict[str, Expected]]:
    """(image, source tree, expected metadata) of the sample tree written by hfsutils."""
    hfs = Hfsutils(tmp)
    source = tmp / "source"
    source.mkdir()
    macfiles = sample_tree(source)
    image = tmp / "volume.hfs"
    hfs.format(image, size, label)
    expected = write_tree(hfs, source, tmp, macfiles)
    hfs.unmount()
    return image, source, expected


def build_floppy(tmp: Path, size: int = 819200, label: str = "Floppy") -> tuple[Path, Path, dict[str, Expected]]:
    """(image, source tree, expected metadata) of a small volume: a text file, an accented folder, and an
    application with a resource fork and dates; most of it is free (zero) space."""
    hfs = Hfsutils(tmp)
    source = tmp / "floppy source"
    (source / "Dossier été").mkdir(parents=True)
    (source / "Read Me").write_bytes(b"An old Mac floppy\n" * 200)
    (source / "Dossier été" / "notes").write_bytes(bytes(range(256)) * 64)
    macfiles = {"TeachText": MacFile(b"TeachText", b"", b"CODE" * 1000, b"APPL", b"ttxt", 0x2000, mac_date(5 << 24),
                                     mac_date(6 << 24))}
    image = tmp / "floppy.img"
    hfs.format(image, size, label)
    expected = write_tree(hfs, source, tmp, macfiles)
    hfs.unmount()
    return image, source, expected


# -- patching B-trees, for damaged volumes ------------------------------------------------------------

MDB_AT = 1024


def mdb_fields(image: bytes) -> dict[str, int]:
    block_size = struct.unpack_from(">I", image, MDB_AT + 20)[0]
    first = struct.unpack_from(">H", image, MDB_AT + 28)[0] * 512
    xt = struct.unpack_from(">HH", image, MDB_AT + 134)
    ct = struct.unpack_from(">HH", image, MDB_AT + 150)
    return {"block_size": block_size, "first": first, "extents_at": first + xt[0] * block_size,
            "catalog_at": first + ct[0] * block_size}


def node_records(node: bytes) -> list[tuple[int, int]]:
    """(start, end) of each record of a 512-byte node."""
    count = struct.unpack_from(">H", node, 10)[0]
    offsets = [struct.unpack_from(">H", node, 510 - 2 * i)[0] for i in range(count + 1)]
    return list(zip(offsets, offsets[1:]))


def insert_record(image: bytearray, tree_at: int, node_number: int, index: int, record: bytes) -> None:
    """Insert ``record`` as record ``index`` of a leaf node, and count it in the tree's header."""
    at = tree_at + node_number * 512
    node = bytes(image[at : at + 512])
    records = [node[s:e] for s, e in node_records(node)]
    records.insert(index, record)
    body = b"".join(records)
    offsets = [14]
    for r in records:
        offsets.append(offsets[-1] + len(r))
    new = bytearray(node[:14]) + body
    new += bytes(512 - len(new) - 2 * len(offsets))
    new += b"".join(struct.pack(">H", o) for o in reversed(offsets))
    assert len(new) == 512
    struct.pack_into(">H", new, 10, len(records))
    image[at : at + 512] = new
    leaves = struct.unpack_from(">I", image, tree_at + 14 + 6)[0]
    struct.pack_into(">I", image, tree_at + 14 + 6, leaves + 1)


def leaf_nodes(image: bytes, tree_at: int) -> list[int]:
    """The leaf node numbers of a B-tree, in order (first leaf, then forward links)."""
    first = struct.unpack_from(">I", image, tree_at + 14 + 10)[0]
    found, number = [], first
    while number and len(found) < 10_000:
        found.append(number)
        number = struct.unpack_from(">I", image, tree_at + number * 512)[0]
    return found


def add_leaf_record(image: bytearray, tree_at: int, record: bytes) -> None:
    """Put ``record`` first in the tree's first leaf, making node 1 that leaf when the tree is empty."""
    root = struct.unpack_from(">I", image, tree_at + 14 + 2)[0]
    if root:
        insert_record(image, tree_at, leaf_nodes(bytes(image), tree_at)[0], 0, record)
        return
    total_nodes = struct.unpack_from(">I", image, tree_at + 14 + 22)[0]
    assert total_nodes >= 2, "no room for a leaf node"
    node = struct.pack(">IIbbHH", 0, 0, -1, 1, 0, 0).ljust(510, b"\0") + struct.pack(">H", 14)
    image[tree_at + 512 : tree_at + 1024] = node
    struct.pack_into(">HIIII", image, tree_at + 14, 1, 1, 0, 1, 1)  # depth, root, records, first and last leaf
    insert_record(image, tree_at, 1, 0, record)
