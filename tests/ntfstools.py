"""Building NTFS volumes with the real tools (mkntfs, the ntfs-3g FUSE driver) and reading them back.

ntfs-3g is both the writer (a source tree is copied into a fresh mkntfs volume through an ntfs-3g mount) and
the second reader (the finished volume mounted read-only). ``snapshot`` gives what a user sees of a tree, so
that the source, ntfs-3g's mount and imgfs can be compared entry by entry.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import random
import shutil
import socket
import stat
import struct
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

MTIME = 1_600_000_000
HARD_LINKS = 30  # names of one file: more $FILE_NAMEs than one MFT record holds, so an attribute list
MANY = 3200  # entries of the large folder: an index B-tree of two levels
TIMES = {  # (atime, mtime) in ns: NTFS keeps 100 ns ticks from 1601
    "precise": (1_500_000_000_987_654_321, 1_600_000_000_123_456_789),
    "before-1970": (-631_152_000_000_000_000, -315_619_200_000_000_100),
    "after-2038": (4_102_444_800_000_000_000, 4_000_000_000_999_999_999),
}


def pseudo_random(size: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(size)


def write(path: Path, data: bytes, mtime: float = MTIME) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    os.utime(path, (mtime, mtime))


# -- the source tree -----------------------------------------------------------------------------------


def build_tree(root: Path, many: int = MANY) -> Path:
    """Every trap the issue names: hard links, symlinks, Unicode names, a large folder, deep paths, sparse
    and fragmented files (those two are written on the volume itself, see ``populate``), resident and empty
    files, named streams, special files."""
    write(root / "README.txt", b"hello\n")
    write(root / "empty", b"")
    write(root / "tiny", b"x")
    write(root / "resident-600", pseudo_random(600, 1))  # fits in its MFT record
    write(root / "nonresident-5000", pseudo_random(5000, 2))
    write(root / "big.bin", pseudo_random(3 << 20, 3))
    write(root / "Grüße — 日本語 ☃.txt", b"unicode\n")
    write(root / "emoji 😀 astral.txt", b"a surrogate pair in UTF-16\n")
    write(root / "cafe\u0301 decomposed", b"NFD, kept as stored\n")
    write(root / "Case", b"upper\n")
    write(root / "case", b"lower\n")  # differs only in case: POSIX names, both kept
    write(root / ("n" * 251 + ".txt"), b"a 255-character name\n")
    write(root / "colon:in name", b"a colon, which only the POSIX namespace allows\n")
    write(root / "Long File Name.txt", b"with a DOS 8.3 alias (see add_dos_names)\n")
    write(root / "Program Files" / "inside", b"in a folder with a DOS 8.3 alias\n")
    for name, (atime_ns, mtime_ns) in TIMES.items():
        write(root / "times" / name, name.encode())
        os.utime(root / "times" / name, ns=(atime_ns, mtime_ns))
    deep = root / "deep"
    for level in range(40):
        deep = deep / f"level{level:02d}"
    write(deep / "bottom.txt", b"deep\n")
    _links(root)
    _streams(root)
    _specials(root)
    for i in range(many):
        write(root / "many" / f"entry-{i:05d}.txt", f"file number {i}\n".encode())
    return root


def _links(root: Path) -> None:
    links = root / "links"
    links.mkdir()
    for name, target in {"relative": "../README.txt", "absolute": "/etc/passwd", "dangling": "does/not/exist",
                         "to-dir": "../deep", "dot": "./x", "unicode": "../Grüße — 日本語 ☃.txt"}.items():
        os.symlink(target, links / name)
    write(root / "hard" / "one", pseudo_random(10000, 4))
    os.link(root / "hard" / "one", root / "hard" / "two")
    os.link(root / "hard" / "one", root / "three-elsewhere")
    write(root / "names" / "original", b"a file with many names\n")
    for i in range(HARD_LINKS - 1):
        os.link(root / "names" / "original", root / "names" / f"another-rather-long-name-for-the-same-file-{i:03d}")


def _streams(root: Path) -> None:
    os.setxattr(root / "README.txt", b"user.comment", b"a small stream")
    os.setxattr(root / "README.txt", b"user.empty", b"")
    os.setxattr(root / "README.txt", b"user.Zone.Identifier", b"[ZoneTransfer]\r\nZoneId=3\r\n")
    os.setxattr(root / "big.bin", b"user.large", pseudo_random(3000, 5))  # non-resident (ext4 takes 4 KiB at most)
    (root / "streams-dir").mkdir()
    os.setxattr(root / "streams-dir", b"user.on-a-directory", b"folder stream")


def _specials(root: Path) -> None:
    os.mkfifo(root / "fifo")
    os.mknod(root / "null-device", stat.S_IFCHR | 0o666, os.makedev(1, 3))
    os.mknod(root / "block-device", stat.S_IFBLK | 0o660, os.makedev(7, 0))
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(root / "socket"))


# -- the volume -----------------------------------------------------------------------------------------


def mkntfs(image: Path, size: int, cluster: int, label: str = "imgfs-ntfs") -> Path:
    with open(image, "wb") as f:
        f.truncate(size)
    subprocess.run(["mkntfs", "-F", "-Q", "-q", "-c", str(cluster), "-L", label, str(image)], check=True,
                   capture_output=True)
    return image


def _stop(mountpoint: Path) -> None:
    for _ in range(100):
        done = subprocess.run(["umount", str(mountpoint)], capture_output=True)
        if done.returncode == 0:
            break
        time.sleep(0.1)
    # ntfs-3g writes the volume out before it exits: wait for it, or a second mount finds the volume busy
    for _ in range(100):
        if not subprocess.run(["pgrep", "-f", f"ntfs-3g .* {mountpoint}$"], capture_output=True).stdout:
            return
        time.sleep(0.1)


@contextlib.contextmanager
def ntfs3g(image: Path, mountpoint: Path, *options: str) -> Iterator[Path]:
    mountpoint.mkdir(parents=True, exist_ok=True)
    args = ["ntfs-3g", *(["-o", ",".join(options)] if options else []), str(image), str(mountpoint)]
    subprocess.run(args, check=True, capture_output=True)
    try:
        yield mountpoint
    finally:
        _stop(mountpoint)


def copy_tree(source: Path, target: Path) -> None:
    """Copy what ``build_tree`` made through an ntfs-3g mount: hard links, symlinks, streams, specials."""
    inodes: dict[int, Path] = {}
    for dirpath, dirnames, filenames in os.walk(source):
        here = Path(dirpath)
        there = target / here.relative_to(source)
        for name in dirnames:
            if (here / name).is_symlink():
                filenames.append(name)  # a link to a folder: os.walk does not follow it
                continue
            (there / name).mkdir()
            _copy_xattrs(here / name, there / name)
        for name in sorted(filenames):
            _copy_entry(here / name, there / name, inodes)
    for dirpath, dirnames, _ in os.walk(source, topdown=False):
        for name in (d for d in dirnames if not (Path(dirpath) / d).is_symlink()):
            st = (Path(dirpath) / name).lstat()
            os.utime(target / Path(dirpath).relative_to(source) / name, ns=(st.st_atime_ns, st.st_mtime_ns))


def _copy_entry(src: Path, dst: Path, inodes: dict[int, Path]) -> None:
    st = src.lstat()
    if stat.S_ISREG(st.st_mode) and st.st_nlink > 1 and st.st_ino in inodes:
        os.link(inodes[st.st_ino], dst)
        return
    if stat.S_ISLNK(st.st_mode):
        os.symlink(os.readlink(src), dst)
    elif stat.S_ISREG(st.st_mode):
        dst.write_bytes(src.read_bytes())
        _copy_xattrs(src, dst)
        inodes[st.st_ino] = dst
    elif stat.S_ISFIFO(st.st_mode) or stat.S_ISSOCK(st.st_mode):
        os.mknod(dst, stat.S_IFMT(st.st_mode) | 0o644)
    else:
        os.mknod(dst, stat.S_IFMT(st.st_mode) | 0o644, st.st_rdev)
    os.utime(dst, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)


def _copy_xattrs(src: Path, dst: Path) -> None:
    for name in os.listxattr(src):
        os.setxattr(dst, name, os.getxattr(src, name))


def add_dos_names(volume: Path) -> None:
    """Windows gives long names an 8.3 alias (a second $FILE_NAME in the DOS namespace); ntfs-3g can add one."""
    os.setxattr(volume / "Long File Name.txt", "system.ntfs_dos_name", b"LONGFI~1.TXT")
    os.setxattr(volume / "Program Files", "system.ntfs_dos_name", b"PROGRA~1")


def write_sparse(path: Path, size: int, pieces: list[tuple[int, bytes]]) -> None:
    with open(path, "wb") as f:
        f.truncate(size)
        for offset, data in pieces:
            f.seek(offset)
            f.write(data)
    os.utime(path, (MTIME, MTIME))


def write_fragmented(volume: Path, copies: list[Path], cluster: int) -> int:
    """A file that has to take what free space is left in pieces: the volume is filled with files of two
    clusters, every other one is deleted, and the file is written into the holes (ntfs-3g finds no larger
    free area, so its run list gets long enough to need an attribute list). Returns its size."""
    filler = volume / "filler"
    filler.mkdir()
    count = 0
    try:
        while True:
            (filler / f"{count:06d}").write_bytes(b"f" * 2 * cluster)
            count += 1
    except OSError as exc:
        if exc.errno != errno.ENOSPC:
            raise
    for i in range(0, count, 2):
        (filler / f"{i:06d}").unlink()
    st = os.statvfs(volume)
    size = st.f_bavail * st.f_frsize - 64 * cluster  # room for the run list's records
    data = pseudo_random(size, 8)
    for copy in (volume, *copies):
        write(copy / "fragmented.bin", data)
    shutil.rmtree(filler)
    return size


COMPRESSIBLE = b"".join(f"line {i:06d} of a compressible text file\n".encode() for i in range(20000))


def populate_compressed(folder: Path) -> dict[str, bytes]:
    """A folder marked compressed (FILE_ATTRIBUTE_COMPRESSED), so that ntfs-3g writes LZNT1 units in it."""
    folder.mkdir()
    os.setxattr(folder, "system.ntfs_attrib", (0x800).to_bytes(4, "little"))
    contents = {
        "text.txt": COMPRESSIBLE,  # every unit compresses
        "random.bin": pseudo_random(200000, 6),  # no unit compresses: stored as it is
        "zeros.bin": bytes(300000),  # units of zeros: sparse
        "mixed.bin": COMPRESSIBLE[:70000] + pseudo_random(70000, 7) + bytes(70000) + COMPRESSIBLE[:12345],
        "small.txt": b"short, resident even when compressed\n",
        "one-unit.txt": COMPRESSIBLE[: 65536 - 100],
    }
    for name, data in contents.items():
        write(folder / name, data)
    return contents


# -- what a user sees ------------------------------------------------------------------------------------


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def user_xattrs(path: Path) -> dict[str, bytes]:
    if path.is_symlink():
        return {}
    return {name: os.getxattr(path, name) for name in os.listxattr(path) if name.startswith("user.")}


def snapshot(root: Path, ignore: frozenset[str] = frozenset()) -> dict[str, dict[str, Any]]:
    """path -> {type, size, target, sha256, nlink, xattrs, ino, rdev} for every entry below ``root``."""
    found: dict[str, dict[str, Any]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        if Path(dirpath) == root:
            dirnames[:] = [d for d in dirnames if d not in ignore]
            filenames = [f for f in filenames if f not in ignore]
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            st = path.lstat()
            kind = stat.S_IFMT(st.st_mode)
            entry: dict[str, Any] = {"type": kind, "ino": st.st_ino, "xattrs": user_xattrs(path)}
            if kind == stat.S_IFREG:
                entry.update(size=st.st_size, sha256=sha256(path), nlink=st.st_nlink)
            elif kind == stat.S_IFLNK:
                entry.update(target=os.readlink(bytes(path)))
            elif kind in (stat.S_IFCHR, stat.S_IFBLK):
                entry.update(rdev=st.st_rdev)
            found[str(path.relative_to(root))] = entry
    return found


def inode_groups(snap: dict[str, dict[str, Any]]) -> set[frozenset[str]]:
    groups: dict[int, set[str]] = {}
    for path, entry in snap.items():
        if entry["type"] == stat.S_IFREG:
            groups.setdefault(entry["ino"], set()).add(path)
    return {frozenset(g) for g in groups.values() if len(g) > 1}


def comparable(snap: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The snapshot without inode numbers, which differ between readers (hard links are compared apart)."""
    return {path: {k: v for k, v in entry.items() if k != "ino"} for path, entry in snap.items()}


def differences(want: dict[str, dict[str, Any]], got: dict[str, dict[str, Any]], limit: int = 5) -> list[str]:
    out = [f"missing {p}" for p in sorted(set(want) - set(got))[:limit]]
    out += [f"extra {p}" for p in sorted(set(got) - set(want))[:limit]]
    for path in sorted(set(want) & set(got)):
        if want[path] != got[path] and len(out) < 2 * limit:
            keys = {k for k in want[path].keys() | got[path].keys() if want[path].get(k) != got[path].get(k)}
            out.append(f"{path}: " + ", ".join(f"{k} {want[path].get(k)!r:.60} != {got[path].get(k)!r:.60}"
                                               for k in sorted(keys)))
    return out


# -- what ntfs-3g does not write by itself: Windows links, WSL special files, WOF files --------------------

TAG_SYMLINK, TAG_MOUNT_POINT = 0xA000000C, 0xA0000003


def symlink_reparse(substitute: str, relative: bool, print_name: str = "") -> bytes:
    """A Windows symbolic link's reparse buffer (MS-FSCC 2.1.2.4): names in UTF-16, flag 1 when relative."""
    sub, shown = substitute.encode("utf-16-le"), (print_name or substitute).encode("utf-16-le")
    body = struct.pack("<HHHHI", len(shown), len(sub), 0, len(shown), int(relative)) + shown + sub
    return struct.pack("<IHH", TAG_SYMLINK, len(body), 0) + body


def junction_reparse(substitute: str, print_name: str = "") -> bytes:
    """A junction's (mount point's) reparse buffer (MS-FSCC 2.1.2.5): each name followed by a NUL."""
    sub, shown = substitute.encode("utf-16-le"), print_name.encode("utf-16-le")
    body = struct.pack("<HHHH", 0, len(sub), len(sub) + 2, len(shown)) + sub + b"\0\0" + shown + b"\0\0"
    return struct.pack("<IHH", TAG_MOUNT_POINT, len(body), 0) + body


# name -> (a folder?, reparse buffer); the targets are resolved on the volume built by build_tree
WINDOWS_LINKS: dict[str, tuple[bool, bytes]] = {
    "relative": (False, symlink_reparse("..\\README.TXT", True)),  # found without regard to case
    "relative-missing": (False, symlink_reparse("..\\no\\such", True)),
    "rooted": (False, symlink_reparse("\\DEEP\\level00", True)),
    "absolute-here": (False, symlink_reparse("\\??\\C:\\hard\\ONE", False, "C:\\hard\\ONE")),
    "absolute-elsewhere": (False, symlink_reparse("\\??\\D:\\Windows\\System32", False, "D:\\Windows\\System32")),
    "absolute-folder": (True, symlink_reparse("\\??\\C:\\deep", False, "C:\\deep")),
    "junction": (True, junction_reparse("\\??\\C:\\Deep\\Level00", "C:\\Deep\\Level00")),
    "junction-elsewhere": (True, junction_reparse("\\??\\C:\\Users\\Public", "C:\\Users\\Public")),
    "volume-junction": (True, junction_reparse("\\??\\Volume{01234567-89ab-cdef-0123-456789abcdef}\\")),
    "unc": (False, symlink_reparse("\\??\\UNC\\server\\share\\file", False, "\\\\server\\share\\file")),
}


def make_windows_links(folder: Path) -> None:
    folder.mkdir()
    for name, (is_dir, data) in WINDOWS_LINKS.items():
        path = folder / name
        if is_dir:
            path.mkdir()
        else:
            path.touch()
        os.setxattr(path, "system.ntfs_reparse_data", data)


def make_wsl_specials(folder: Path) -> None:
    """Through a mount with ``special_files=wsl``: WSL symlinks (0xA000001D), FIFOs, sockets and devices."""
    folder.mkdir()
    os.symlink("../README.txt", folder / "link")
    os.symlink("/usr/bin/env", folder / "absolute")
    os.mkfifo(folder / "fifo")
    os.mknod(folder / "chr", stat.S_IFCHR | 0o644, os.makedev(4, 66))
    os.mknod(folder / "blk", stat.S_IFBLK | 0o644, os.makedev(259, 70000))
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(folder / "socket"))
    for entry in folder.iterdir():
        os.utime(entry, (MTIME, MTIME), follow_symlinks=False)


def make_wof_file(path: Path, content: bytes, algorithm: int, engine: str) -> None:
    """A WOF-compressed file, as ``wofwriter`` says to make one through ``streams_interface=windows``."""
    from wofwriter import reparse_point, wof_stream

    path.touch()
    Path(f"{path}:WofCompressedData").write_bytes(wof_stream(content, algorithm, engine=engine))
    os.truncate(path, len(content))
    os.utime(path, (MTIME, MTIME))  # not after: ntfs-3g cannot open a WOF file to change its times
    os.setxattr(path, "system.ntfs_reparse_data", reparse_point(algorithm))
