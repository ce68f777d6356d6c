"""APFS test helpers: trap trees, fs-explorer as the independent writer and second reader, and reading
an APFS image through imgfs's own layers without a mount.

fs-explorer 0.5.0 (PyPI, BSD-3, standard library only) writes APFS DMGs (``fs-explorer create dmg --fs
apfs``) and reads them back; the tests build images from ``trap_tree`` with it, read them with imgfs,
and check that both readers see the same names, types, sizes, link targets and bytes.
"""

from __future__ import annotations

import hashlib
import os
import random
import shutil
import stat
import subprocess
import sys
import unicodedata
from pathlib import Path
from typing import Any, Optional

FSX = shutil.which("fs-explorer") or str(Path(sys.executable).with_name("fs-explorer"))
MANY = 5000  # entries of the big folder
DEEP = 40  # levels of the deep path
MTIME_NS = 1_000_000_000 * 1_234_567_890 + 123_456_789


def trap_tree(root: Path, big_size: int = 3 << 20) -> Path:
    """A source tree full of the traps a reader can fall into; returns ``root``."""
    rng = random.Random(1234)
    root.mkdir(parents=True)
    (root / "hello.txt").write_bytes(b"hello, apfs\n")
    (root / "empty").write_bytes(b"")
    (root / "big.bin").write_bytes(rng.randbytes(big_size))
    with open(root / "sparse.bin", "wb") as f:  # holes at the start, in the middle and at the end
        f.seek(5 << 20)
        f.write(b"middle" * 1000)
        f.seek(9 << 20)
        f.write(rng.randbytes(70000))
        f.truncate(16 << 20)
    _links(root)
    _names(root)
    _modes_and_times(root)
    many = root / "many"
    many.mkdir()
    for i in range(MANY):
        (many / f"f{i:05d}").write_bytes(b"x" * (i % 7))
    deep = root
    for i in range(DEEP):
        deep = deep / f"level{i:02d}"
    deep.mkdir(parents=True)
    (deep / "bottom.txt").write_bytes(b"deep down\n")
    _xattrs(root)
    _specials(root)
    return root


def _links(root: Path) -> None:
    (root / "dir" / "sub").mkdir(parents=True)
    os.link(root / "hello.txt", root / "dir" / "hard.txt")
    os.link(root / "hello.txt", root / "dir" / "sub" / "hard2.txt")
    (root / "pair-a").write_bytes(b"two names\n")
    os.link(root / "pair-a", root / "dir" / "pair-b")
    os.symlink("hello.txt", root / "link-rel")
    os.symlink("../../hello.txt", root / "dir" / "sub" / "link-up")
    os.symlink("/etc/hostname", root / "link-abs")
    os.symlink("does/not/exist", root / "link-dangling")
    os.symlink("dir", root / "link-dir")
    os.symlink("t" * 1000, root / "link-long")


def _names(root: Path) -> None:
    for name in (unicodedata.normalize("NFC", "café.txt"), unicodedata.normalize("NFD", "naïve.txt"),
                 "日本語のファイル.txt", "emoji-\U0001f600.txt", "with space & ; colon: and \\ backslash",
                 "UPPER.TXT", "n" * 255, ".hidden"):
        (root / name).write_bytes(name.encode("utf-8", "surrogateescape"))


def _modes_and_times(root: Path) -> None:
    script = root / "script.sh"
    script.write_bytes(b"#!/bin/sh\necho hi\n")
    script.chmod(0o755)
    private = root / "private.txt"
    private.write_bytes(b"secret\n")
    private.chmod(0o600)
    (root / "locked").mkdir()
    (root / "locked" / "inside").write_bytes(b"in a 0700 folder\n")
    (root / "locked").chmod(0o700)
    os.utime(root / "hello.txt", ns=(MTIME_NS, MTIME_NS))
    os.utime(private, ns=(MTIME_NS + 7, MTIME_NS + 7))


def _xattrs(root: Path) -> None:
    os.setxattr(root / "hello.txt", "user.greeting", b"hi there")
    os.setxattr(root / "dir", "user.on-a-folder", b"folder attribute")
    # over the 3804 bytes APFS keeps inline: a data stream of its own (ext4 holds about 4 KiB of xattrs)
    os.setxattr(root / "pair-a", "user.big", bytes(range(256)) * 15 + b"end")


def _specials(root: Path) -> None:
    os.mkfifo(root / "fifo")
    if os.geteuid() == 0:
        os.mknod(root / "null-device", stat.S_IFCHR | 0o644, os.makedev(1, 3))
        os.mknod(root / "block-device", stat.S_IFBLK | 0o640, os.makedev(7, 12))


def fsx_create(out: Path, src: Path, fmt: str = "UDRO", layout: str = "GPT", case_sensitive: bool = False,
               extra: tuple[str, ...] = ()) -> Path:
    """An APFS DMG of ``src`` written by fs-explorer."""
    args = [FSX, "create", "dmg", "--fs", "apfs", "--format", fmt, "--layout", layout, "-f", "--volname", "Traps"]
    if case_sensitive:
        args.append("--case-sensitive")
    done = subprocess.run([*args, *extra, str(out), str(src)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"fs-explorer create failed: {done.stderr[-2000:]}"
    return out


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def fsx_listing(image: Path, password: Optional[str] = None) -> dict[str, dict[str, Any]]:
    """What fs-explorer sees in an APFS image: path (inside the volume) -> type, size, target, sha256."""
    import fs_explorer

    found: dict[str, dict[str, Any]] = {}
    common: dict[str, Any] = {"password": password} if password else {}
    with fs_explorer.open_source(str(image), **common) as source:
        entries = list(source.entries("/", recursive=-1))
        prefix = _volume_prefix(entries)
        for entry in entries:
            if entry.type.value == "volume" or not entry.path.startswith(prefix):
                continue
            path = "/" + entry.path[len(prefix):].lstrip("/")
            item: dict[str, Any] = {"type": entry.type.value}
            if entry.type.value in ("file", "hardlink"):
                item["type"] = "file"
                item["size"] = entry.size
                if "\\" not in entry.path:  # fs-explorer splits paths at backslashes: it cannot open this one
                    try:
                        item["sha256"] = sha256(source.read_file(entry.path, follow_symlinks=False))
                    except fs_explorer.MissingCodecError:  # LZBITMAP: fs-explorer has no decoder
                        item["sha256"] = None
            elif entry.type.value == "symlink":
                item["target"] = entry.link_target
            found[path] = item
    return found


def _volume_prefix(entries: list[Any]) -> str:
    """fs-explorer lists a GPT disk's partitions and a container's volumes as folders: the one APFS
    volume's path prefix ("" when the volume is at the root)."""
    volumes = [e.path for e in entries if e.type.value == "volume"]
    return max(volumes, key=len) if volumes else ""


# -- imgfs's own layers, without a mount -----------------------------------------------------------------

def apfs_filesystems(image: Path, passphrase: Optional[str] = None) -> list[Any]:
    """Every APFS volume imgfs opens in ``image`` (through the generic assembler, without a mount)."""
    from imgfs.filesystems.apfs.reader import ApfsFilesystem
    from imgfs.image import open_image

    opened = open_image(str(image), passphrase=lambda: passphrase)
    return [layer for layer, _name in opened.opened if isinstance(layer, ApfsFilesystem)]


def imgfs_listing(fs: Any) -> dict[str, dict[str, Any]]:
    """What imgfs's filesystem shows, in the shape of ``fsx_listing``, plus modes, inodes and nlink."""
    found: dict[str, dict[str, Any]] = {}

    def walk(node: Any, path: str) -> None:
        for name, kid in fs.children(node).items():
            child = f"{path}/{name}"
            kind = {stat.S_IFREG: "file", stat.S_IFDIR: "dir", stat.S_IFLNK: "symlink", stat.S_IFCHR: "char",
                    stat.S_IFBLK: "block", stat.S_IFIFO: "fifo", stat.S_IFSOCK: "socket"}[stat.S_IFMT(kid.mode)]
            item: dict[str, Any] = {"type": kind, "mode": stat.S_IMODE(kid.mode), "ino": kid.ino, "nlink": kid.nlink,
                                    "rdev": kid.rdev, "mtime_ns": kid.mtime_ns}
            if kind == "file":
                item.update(size=kid.size, sha256=sha256(fs.open(kid).pread(0, kid.size)))
            elif kind == "symlink":
                item["target"] = os.fsdecode(kid.target)
            found[child] = item
            if kind == "dir":
                walk(kid, child)

    walk(fs.root, "")
    return found


# -- decmpfs files: fs-explorer writes the volume, the tests the compressed payloads -------------------------

UF_COMPRESSED = 0x20
DECMPFS_TYPES = (1, 3, 4, 7, 8, 9, 10, 11, 12, 13, 14)


def decmpfs_payload(kind: int, data: bytes) -> tuple[bytes, bytes]:
    """(com.apple.decmpfs, resource fork) of ``data`` compressed with decmpfs type ``kind``."""
    import struct

    from hfswriter import CHUNK, decmpfs_fork, decmpfs_header, decmpfs_inline
    from lzbitmap_writer import compress as lzbitmap

    if kind == 13:
        return decmpfs_header(kind, len(data)) + lzbitmap(data), b""
    if kind == 14:
        chunks = [lzbitmap(data[i : i + CHUNK], stored_every=3) for i in range(0, len(data), CHUNK)]
        if len(chunks) > 1:
            chunks[1] = b"\xff" + data[CHUNK : 2 * CHUNK]  # a chunk stored raw behind its marker
        offsets, pos = [], 4 * (len(chunks) + 1)
        for chunk in chunks:
            offsets.append(pos)
            pos += len(chunk)
        offsets.append(pos)
        return decmpfs_header(kind, len(data)), struct.pack(f"<{len(offsets)}I", *offsets) + b"".join(chunks)
    return decmpfs_inline(kind, data) if kind % 2 or kind == 1 else decmpfs_fork(kind, data)


def fsx_create_compressed(out: Path, src: Path, compressed: dict[str, tuple[int, bytes]], fmt: str = "UDRO") -> Path:
    """An APFS DMG of ``src`` by fs-explorer, in which the files named in ``compressed`` (top-level
    names: (decmpfs type, contents)) are stored compressed: flagged UF_COMPRESSED, empty, with their
    com.apple.decmpfs attribute and resource fork. fs-explorer drops both by default; the tests lift that."""
    import importlib
    import io

    fsx_fs = importlib.import_module("fs_explorer.create.apfs.fs")
    fsx_dmg = importlib.import_module("fs_explorer.create.dmg")  # the package's `dmg` names a function

    real_scan = fsx_dmg.scan

    def scan(*args: Any, **kwargs: Any) -> Any:
        root = real_scan(*args, **kwargs)
        for child in root.children or []:
            if child.name in compressed:
                kind, data = compressed[child.name]
                value, fork = decmpfs_payload(kind, data)
                child.xattrs = {"com.apple.decmpfs": value, **({"com.apple.ResourceFork": fork} if fork else {})}
                child.flags |= UF_COMPRESSED
                child.size = 0
                child.opener = lambda: io.BytesIO(b"")
        return root

    saved = fsx_dmg.scan, fsx_fs._DROP_BSD_FLAGS, fsx_fs.XATTR_DECMPFS
    fsx_dmg.scan, fsx_fs._DROP_BSD_FLAGS, fsx_fs.XATTR_DECMPFS = scan, 0, b"\0 (kept)"
    try:
        fsx_dmg.create(out, [src], fs="apfs", format=fmt, layout="GPT", volname="Packed", overwrite=True)
    finally:
        fsx_dmg.scan, fsx_fs._DROP_BSD_FLAGS, fsx_fs.XATTR_DECMPFS = saved
    return out
