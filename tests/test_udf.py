"""UDF through real FUSE mounts, compared with the trees the images were made from.

* mkudffs (udftools) formats images at UDF 1.02, 1.50 and 2.01 with 512- and 2048-byte blocks, and
  udfclient writes a tree into them; mkudffs alone makes what udfclient cannot fill: write-once
  discs with a VAT (UDF 1.50 and 2.00 formats, at 2.50 and 2.60 too), 4096-byte blocks, sparable
  partitions and strategy 4096.
* genisoimage -udf and pycdlib make ISO 9660 + UDF bridge discs: the default mount shows UDF unless
  there is Rock Ridge, ``-o namespace=`` picks either side, and a disc whose UDF side is broken still
  mounts its ISO side.
* tests/udfbuild.py writes what no installed tool does (metadata partitions and their mirror, VATs with
  files, sparing tables with a moved packet, every kind of allocation descriptor, continuation
  extents, holes, a file over 4 GiB, strategy 4096, devices, hidden and deleted entries, odd names),
  and damages images on purpose: each damage gives one line at mount or EIO for what it damages.

Built once per session in a temporary folder; the slow tool (udfclient, ~3 s a run, mostly waiting)
runs for all images at once.
"""

from __future__ import annotations

import contextlib
import errno
import io
import json
import os
import shutil
import stat
import struct
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import udfbuild
from conftest import compare_trees, run_imgfs, tree_entries, unmount
from isotools import pseudo_random, write_file
from udfbuild import AD_EXT, AD_INLINE, AD_LONG, Damage, UdfBuilder, from_tree

from imgfs.errors import CorruptImage, ImageError
from imgfs.filesystems.names import escape
from imgfs.filesystems.udf import UdfFilesystem
from imgfs.filesystems.udf.descriptors import Address, decode_cs0, dstring, read_tag, timestamp_ns
from imgfs.filesystems.udf.directory import file_name, iter_fids, symlink_target
from imgfs.filesystems.udf.icb import IcbReader, parse_entry
from imgfs.filesystems.udf.partitions import PartitionView
from imgfs.io.cache import BlockCache
from imgfs.io.stream import BytesStream, FileStream, SessionView, Stream
from imgfs.layer import OpenContext

MTIME = 1_600_000_000
TOOLS = ("mkudffs", "udfclient", "genisoimage")
UDFCLIENT_TREE = {"a.txt": b"hello\n", "empty": b"", "dir/big.bin": pseudo_random(3 << 20, 1),
                  "dir/sub/deep.txt": b"deep\n", "dir/note.txt": b"note\n"}


def session(disc: Stream, start_sector: int) -> Stream:
    """The session of ``disc`` that starts at ``start_sector``, as the assembler gives it to a filesystem."""
    return SessionView(disc, start_sector * 2048) if start_sector else disc


def _missing_tools() -> list[str]:
    return [tool for tool in TOOLS if shutil.which(tool) is None]


pytestmark = pytest.mark.skipif(bool(_missing_tools()), reason=f"needs {', '.join(TOOLS)}")


# -- source trees ------------------------------------------------------------------------------------------


def full_tree(root: Path) -> Path:
    """Everything UDF can hold that a source tree can: links of both kinds, odd modes, names, sizes."""
    write_file(root / "a.txt", b"hello\n", mtime=MTIME + 1)
    write_file(root / "empty", b"", mtime=MTIME + 2)
    write_file(root / "exec.sh", b"#!/bin/sh\necho hi\n", 0o755, MTIME + 3)
    write_file(root / "setuid", b"s", 0o4750, MTIME + 4)
    write_file(root / "dir" / "big.bin", pseudo_random(3 << 20 | 4321, 2), 0o640, MTIME + 5)
    write_file(root / "dir" / "sub" / "deep.txt", b"deep\n", mtime=MTIME + 6)
    write_file(root / "ünï cødé" / "файл.txt", "данные\n".encode(), mtime=MTIME + 7)
    for i in range(150):  # a directory of many blocks, with descriptors across block boundaries
        write_file(root / "many" / f"file-{i:03d}-{'x' * (i % 37)}.txt", f"{i}\n".encode(), mtime=MTIME + i)
    (root / "emptydir").mkdir()
    (root / "sticky").mkdir(mode=0o1777)
    os.chmod(root / "sticky", 0o1777)
    os.symlink("../a.txt", root / "dir" / "link")
    os.symlink("/etc/passwd", root / "abs")
    os.symlink("./dir/sub", root / "dot")
    os.link(root / "a.txt", root / "dir" / "hard")
    os.mkfifo(root / "fifo", 0o640)
    return root


def portable_tree(root: Path) -> Path:
    """What the bridge-disc writers keep: no FIFO, no odd modes."""
    write_file(root / "a.txt", b"hello\n", mtime=MTIME + 1)
    write_file(root / "empty", b"", mtime=MTIME + 2)
    write_file(root / "dir" / "big.bin", pseudo_random(2 << 20 | 99, 3), mtime=MTIME + 3)
    write_file(root / "dir" / "sub" / "deep.txt", b"deep\n", mtime=MTIME + 4)
    write_file(root / "ünï cødé" / "файл.txt", "данные\n".encode(), mtime=MTIME + 5)
    for i in range(40):
        write_file(root / "many" / f"f{i:02d}.txt", f"{i}\n".encode(), mtime=MTIME + i)
    (root / "emptydir").mkdir()
    return root


def without_links(source: Path, target: Path) -> Path:
    """A copy of ``source`` without symlinks, hard links as separate files (genisoimage's UDF side)."""
    shutil.copytree(source, target, symlinks=True, copy_function=shutil.copy2)
    for path, st in tree_entries(target).items():
        if stat.S_ISLNK(st.st_mode):
            (target / path).unlink()
    return target


# -- images --------------------------------------------------------------------------------------------------


def mkudffs(path: Path, *args: str, size: int = 30 << 20) -> Path:
    if "--new-file" not in args:
        with open(path, "wb") as f:
            f.truncate(size)
    subprocess.run(["mkudffs", "--label=VOL", "--fullvsid=0123456789abcdefVS", "--fsid=FS", *args, str(path)],
                   check=True, capture_output=True)
    return path


def udfclient_commands(source: Path) -> str:
    """udfclient's commands to copy ``source`` in: it has no recursive copy that keeps the layout."""
    commands = ["cd 0123456789abcdefVS:VOL:VOL:FS"]

    def walk(folder: Path) -> None:
        for entry in sorted(folder.iterdir()):
            if entry.is_dir():
                commands.extend([f'mkdir "{entry.name}"', f'cd "{entry.name}"'])
                walk(entry)
                commands.append("cd ..")
            else:
                commands.extend([f'lcd "{folder}"', f'put "{entry.name}"'])

    walk(source)
    return "\n".join(commands + ["quit", ""])


@pytest.fixture(scope="session")
def images(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Every image of this module, keyed by name, with the trees they were made from."""
    base = tmp_path_factory.mktemp("udf")
    made: dict[str, Any] = {"full": full_tree(base / "full"), "portable": portable_tree(base / "portable")}
    small = base / "small"  # udfclient cannot grow a directory past its entry: a few names per directory
    for name, data in UDFCLIENT_TREE.items():
        write_file(small / name, data)
    (small / "emptydir").mkdir()
    made["small"] = small
    # udfclient waits seconds before it exits: run them all at once
    running = []
    for revision in ("1.02", "1.50", "2.01"):
        for block_size in (512, 2048):
            image = mkudffs(base / f"udfclient-{revision}-{block_size}.img", "--media-type=hd",
                            f"--udfrev={revision}", f"--blocksize={block_size}")
            running.append((image, block_size))
    running.append((mkudffs(base / "udfclient-sparable.img", "--media-type=cdrw", "--udfrev=2.01"), 2048))
    procs = [(image, subprocess.Popen(["udfclient", "-W", "-b", str(bs), str(image)], stdin=subprocess.PIPE,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
             for image, bs in running]
    for image, proc in procs:
        out, _ = proc.communicate(udfclient_commands(small), timeout=120)
        assert proc.returncode == 0 and "rror" not in out and "No space" not in out, f"udfclient {image}: {out}"
        made[image.stem] = image
    return made


@pytest.fixture(scope="session")
def built(images: dict[str, Any], tmp_path_factory: pytest.TempPathFactory):
    """``built(name, **builder options)``: the full tree written by udfbuild, once per name."""
    base = tmp_path_factory.mktemp("udfbuild")
    cache: dict[str, Path] = {}

    def make(name: str, **options: Any) -> Path:
        if name not in cache:
            cache[name] = base / f"{name}.img"
            from_tree(UdfBuilder(**options), str(images["full"])).write(str(cache[name]))
        return cache[name]

    return make


def info(image: Path, *options: str) -> dict[str, Any]:
    done = run_imgfs("info", str(image), "--json", *(("-o", ",".join(options)) if options else ()), check=True)
    return next(layer for layer in json.loads(done.stdout)["layers"] if "namespaces" in layer)


def refusal(image: Path, mountpoint: Path, *options: str) -> str:
    """The one line with which imgfs refuses to mount ``image`` (no traceback, no mount left behind)."""
    mountpoint.mkdir(exist_ok=True)
    done = run_imgfs(str(image), str(mountpoint), *(("-o", ",".join(options)) if options else ()))
    assert done.returncode != 0, "imgfs mounted an image it must refuse"
    assert "Traceback" not in done.stderr, done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got {lines}"
    assert not os.path.ismount(mountpoint)
    return lines[0]


@contextlib.contextmanager
def mounted_noting(image: Path, mountpoint: Path, *options: str) -> Iterator[tuple[Path, str]]:
    """Mount ``image``; yields the mount point and what imgfs said on stderr while mounting (its warnings)."""
    mountpoint.mkdir(exist_ok=True)
    done = run_imgfs(str(image), str(mountpoint), *(("-o", ",".join(options)) if options else ()))
    assert done.returncode == 0, done.stderr
    try:
        yield mountpoint, done.stderr
    finally:
        unmount(mountpoint)


def put(image: Path, offset: int, data: bytes) -> None:
    with open(image, "r+b") as f:
        f.seek(offset)
        f.write(data)


def listing_errno(path: Path) -> int:
    with pytest.raises(OSError) as caught:
        os.listdir(path)
    return caught.value.errno


def read_errno(path: Path) -> int:
    with pytest.raises(OSError) as caught:
        path.read_bytes()
    return caught.value.errno


# -- images from the real tools ------------------------------------------------------------------------------


@pytest.mark.parametrize("block_size", [512, 2048])
@pytest.mark.parametrize("revision", ["1.02", "1.50", "2.01"])
def test_mkudffs_udfclient_images(images, mount, revision: str, block_size: int) -> None:
    """udfclient's files, through FUSE: names, types, modes, sizes, bytes (it keeps no mtimes)."""
    image = images[f"udfclient-{revision}-{block_size}"]
    with mount(image) as root:
        compare_trees(images["small"], root, owners=False, mtime=False)
        described = info(image)
    assert (described["revision"], described["block_size"], described["label"]) == (revision, block_size, "VOL")
    assert [m["type"] for m in described["partition_maps"]] == ["physical"]


def test_sparable_partition_from_mkudffs(images, mount) -> None:
    """A CD-RW layout: a sparable partition map with its sparing tables (nothing moved yet)."""
    image = images["udfclient-sparable"]
    with mount(image) as root:
        compare_trees(images["small"], root, owners=False, mtime=False)
    assert [m["type"] for m in info(image)["partition_maps"]] == ["sparable"]


EMPTY = {  # name: (mkudffs options, revision, block size, partition map types)
    "cdr-1.50": (("--media-type=cdr", "--udfrev=1.50"), "1.50", 2048, ["physical", "virtual"]),
    "cdr-2.01": (("--media-type=cdr", "--udfrev=2.01"), "2.01", 2048, ["physical", "virtual"]),
    "dvdr-2.50": (("--media-type=dvdr", "--udfrev=2.50"), "2.50", 2048, ["physical", "virtual"]),
    "bdr-2.60": (("--media-type=bdr", "--udfrev=2.60"), "2.60", 2048, ["physical", "virtual"]),
    "hd-4096": (("--media-type=hd", "--blocksize=4096"), "2.01", 4096, ["physical"]),
    "hd-strategy-4096": (("--media-type=hd", "--strategy=4096", "--udfrev=1.02", "--blocksize=2048"), "1.02", 2048,
                         ["physical"]),
    "dvdrw-2.01": (("--media-type=dvdrw",), "2.01", 2048, ["sparable"]),
}


@pytest.mark.parametrize("name", sorted(EMPTY))
def test_mkudffs_layouts(name: str, tmp_path: Path) -> None:
    """What mkudffs makes and udfclient cannot fill (VATs at every revision, 4096-byte blocks, strategy 4096)."""
    args, revision, block_size, maps = EMPTY[name]
    image = tmp_path / f"{name}.img"
    if maps[-1] == "virtual":  # a write-once disc ends where it was last written: at the VAT
        subprocess.run(["mkudffs", "--new-file", "--label=VOL", *args, str(image), "20000"], check=True,
                       capture_output=True)
    else:
        mkudffs(image, *args)
    described = info(image)
    assert (described["revision"], described["block_size"]) == (revision, block_size)
    assert [m["type"] for m in described["partition_maps"]] == maps
    listed = run_imgfs("ls", str(image), "-R", check=True)
    assert listed.stdout == "" and listed.stderr == ""


def test_write_once_disc_through_fuse(tmp_path: Path, mount) -> None:
    image = tmp_path / "bdr.img"
    subprocess.run(["mkudffs", "--new-file", "--media-type=bdr", "--udfrev=2.60", "--label=Blu", str(image), "9000"],
                   check=True, capture_output=True)
    with mount(image) as root:
        assert os.listdir(root) == []
        assert stat.S_IMODE(root.stat().st_mode) == 0o755
    described = info(image)
    assert described["label"] == "Blu" and described["partition_maps"][1]["vat"] == "2.00"


# -- bridge discs ---------------------------------------------------------------------------------------------


def test_genisoimage_udf_is_the_default(images, tmp_path: Path, mount) -> None:
    """genisoimage -udf (no Rock Ridge): the default mount shows the UDF side, with its mtimes."""
    source = without_links(images["portable"], tmp_path / "src")
    image = tmp_path / "udf.iso"
    subprocess.run(["genisoimage", "-quiet", "-udf", "-J", "-o", str(image), str(source)], check=True)
    with mount(image) as root:
        compare_trees(source, root, modes=False, owners=False, nlink=False, hardlinks=False)
    assert info(image)["namespace"] == "udf" and info(image)["namespaces"] == ["udf", "joliet", "iso9660"]


def test_rock_ridge_wins_and_namespace_udf_picks_udf(images, tmp_path: Path, mount) -> None:
    source = without_links(images["portable"], tmp_path / "src")
    image = tmp_path / "rr-udf.iso"
    subprocess.run(["genisoimage", "-quiet", "-udf", "-R", "-J", "-o", str(image), str(source)], check=True)
    assert info(image)["namespace"] == "rockridge"
    assert info(image, "namespace=udf")["namespace"] == "udf"
    with mount(image, "namespace=udf") as root:
        compare_trees(source, root, modes=False, owners=False, nlink=False, hardlinks=False)
    with mount(image, "namespace=joliet") as root:
        assert sorted(os.listdir(root)) == sorted(os.listdir(source))


def test_pycdlib_udf_260_bridge(images, tmp_path: Path, mount) -> None:
    """pycdlib's UDF 2.60 writer: symlinks (path components), hard links (one ICB), 16-bit names."""
    pycdlib = pytest.importorskip("pycdlib")
    source = images["portable"]
    iso = pycdlib.PyCdlib()
    iso.new(udf="2.60", interchange_level=4, vol_ident="PYCD")
    seen: dict[int, str] = {}
    counter = iter(range(1, 10**6))
    for path, st in sorted(tree_entries(source).items()):
        udf_path = "/" + path
        if stat.S_ISDIR(st.st_mode):
            iso.add_directory(iso_path=f"/D{next(counter):06d}", udf_path=udf_path)
        elif st.st_ino in seen:
            iso.add_hard_link(udf_old_path=seen[st.st_ino], udf_new_path=udf_path)
        else:
            data = (source / path).read_bytes()
            iso.add_fp(io.BytesIO(data), len(data), iso_path=f"/F{next(counter):06d};1", udf_path=udf_path)
            seen[st.st_ino] = udf_path
    iso.add_hard_link(udf_old_path="/a.txt", udf_new_path="/dir/hard")
    iso.add_symlink(udf_symlink_path="/dir/link", udf_target="../a.txt")
    iso.add_symlink(udf_symlink_path="/abs", udf_target="/etc/passwd")
    iso.write(str(tmp_path / "pycdlib.iso"))
    expected = tmp_path / "expected"
    shutil.copytree(source, expected, symlinks=True)
    os.link(expected / "a.txt", expected / "dir" / "hard")
    os.symlink("../a.txt", expected / "dir" / "link")
    os.symlink("/etc/passwd", expected / "abs")
    with mount(tmp_path / "pycdlib.iso") as root:
        # pycdlib leaves the link count at 1 and stamps every entry with the time of writing
        compare_trees(expected, root, modes=False, owners=False, nlink=False, mtime=False)
        assert (root / "a.txt").stat().st_ino == (root / "dir" / "hard").stat().st_ino


def test_broken_udf_side_falls_back_to_iso(images, tmp_path: Path, mount) -> None:
    """A bridge disc whose UDF file set descriptor is garbage still mounts (its Joliet side), with a warning;
    asked for explicitly, UDF is refused in one line."""
    source = without_links(images["portable"], tmp_path / "src")
    image = tmp_path / "broken.iso"
    subprocess.run(["genisoimage", "-quiet", "-udf", "-J", "-o", str(image), str(source)], check=True)
    data = image.read_bytes()
    fsd = next(pos for pos in range(0, len(data), 2048) if data[pos : pos + 2] == b"\x00\x01" and
               (sum(data[pos : pos + 4]) + sum(data[pos + 5 : pos + 16])) & 0xFF == data[pos + 4])
    put(image, fsd, bytes(range(256)) * 8)
    with mounted_noting(image, tmp_path / "fallback") as (root, said):
        assert sorted(os.listdir(root)) == sorted(os.listdir(source))
    assert "the UDF side of this disc cannot be read" in said and "showing its joliet namespace" in said
    assert info(image)["namespace"] == "joliet"
    line = refusal(image, tmp_path / "mnt", "namespace=udf")
    assert "udf" in line and "byte offset" in line


def test_namespace_udf_on_a_plain_iso_is_refused(images, tmp_path: Path) -> None:
    image = tmp_path / "plain.iso"
    subprocess.run(["genisoimage", "-quiet", "-J", "-o", str(image), str(images["small"])], check=True)
    line = refusal(image, tmp_path / "mnt", "namespace=udf")
    assert "udf" in line and "recognition sequence" in line


# -- what udfbuild writes --------------------------------------------------------------------------------------

BUILT = {
    "physical-2048-short-efe": dict(revision=0x0201),
    "physical-512-long-fe-continued": dict(block_size=512, ad=AD_LONG, revision=0x0102, max_ads=2),
    "physical-4096-extended-ads": dict(block_size=4096, ad=AD_EXT, revision=0x0260),
    "embedded-data-1.50": dict(ad=AD_INLINE, revision=0x0150),
    "vat-2.00": dict(partition="virtual", revision=0x0201),
    "vat-1.50": dict(partition="virtual", revision=0x0150, vat_version="1.50"),
    "sparable": dict(partition="sparable", revision=0x0201),
    "metadata-2.50": dict(partition="metadata", revision=0x0250),
    "metadata-2.60-4096-strategy-4096": dict(partition="metadata", revision=0x0260, block_size=4096, strategy=4096,
                                             max_ads=3),
}


@pytest.mark.parametrize("name", list(BUILT))
def test_built_images_match_their_tree(name: str, images, built, mount) -> None:
    """Every name, type, mode (setuid, sticky), owner, mtime, symlink target, hard link and byte."""
    image = built(name, **BUILT[name])
    with mount(image) as root:
        compare_trees(images["full"], root)
    kinds = {"virtual": ["physical", "virtual"], "metadata": ["physical", "metadata"], "sparable": ["sparable"]}
    assert [m["type"] for m in info(image)["partition_maps"]] == \
        kinds.get(BUILT[name].get("partition", ""), ["physical"])


def test_odd_entries(tmp_path: Path, mount) -> None:
    """Devices, sockets, hidden and deleted entries, names UDF allows and POSIX does not, 16-bit names,
    unspecified owners, a newer entry behind strategy 4096, times with a time zone and microseconds."""
    b = UdfBuilder(revision=0x0250, partition="metadata")
    b.add_device("/null", "chardev", 1, 3)
    b.add_device("/sda1", "blockdev", 8, 1, mode=0o660)
    b.add_device("/huge", "chardev", 0x80000001, 0xFFFFFF02)  # over what os.makedev takes: a damaged entry
    b.add_special("/sock", "socket", 0o755)
    b.add_file("/.hidden-by-flag", b"shown anyway\n", hidden=True)
    b.add_deleted("/", "deleted.txt")
    b.root.children["a/b"] = (udfbuild.Node("file", data=b"slash\n"), 0)  # names no path can spell
    b.root.children["nul\0byte"] = (udfbuild.Node("file", data=b"nul\n"), 0)
    b.add_file("/nobody", b"x", uid=0xFFFFFFFF, gid=0xFFFFFFFF)
    b.add_file("/owned", b"y", uid=4242, gid=4343)
    b.add_file("/micro", b"t", mtime=1_500_000_000.123456)
    b.add_file("/updated", b"old contents\n", newer=b"new contents, longer\n")
    wide = b.add_dir("/wide")
    wide.wide = True
    b.add_file("/wide/ascii.txt", b"16-bit name\n")
    b.add_file("/wide/日本語.txt", b"kanji\n")
    b.write(str(tmp_path / "odd.img"))
    with mount(tmp_path / "odd.img") as root:
        names = sorted(os.listdir(root))
        assert names == [".hidden-by-flag", "a%2Fb", "huge", "micro", "nobody", "nul%00byte", "null", "owned", "sda1",
                         "sock", "updated", "wide"]
        # the kernel keeps 32 bits of a FUSE device number: 12 of the major, 20 of the minor
        assert (root / "huge").lstat().st_rdev == os.makedev(0x001, 0xFFF02) and \
            stat.S_ISCHR((root / "huge").lstat().st_mode)
        assert (root / "null").lstat().st_rdev == os.makedev(1, 3) and stat.S_ISCHR((root / "null").lstat().st_mode)
        assert (root / "sda1").lstat().st_rdev == os.makedev(8, 1) and stat.S_ISBLK((root / "sda1").lstat().st_mode)
        assert stat.S_ISSOCK((root / "sock").lstat().st_mode)
        assert (root / ".hidden-by-flag").read_bytes() == b"shown anyway\n"
        assert (root / "a%2Fb").read_bytes() == b"slash\n" and (root / "nul%00byte").read_bytes() == b"nul\n"
        nobody = (root / "nobody").stat()
        assert (nobody.st_uid, nobody.st_gid) == (os.getuid(), os.getgid())
        assert ((root / "owned").stat().st_uid, (root / "owned").stat().st_gid) == (4242, 4343)
        assert (root / "micro").stat().st_mtime_ns == 1_500_000_000_123_456_000
        assert (root / "updated").read_bytes() == b"new contents, longer\n"
        assert sorted(os.listdir(root / "wide")) == ["ascii.txt", "日本語.txt"]
        assert (root / "wide" / "日本語.txt").read_bytes() == b"kanji\n"


@pytest.mark.parametrize("partition", ["physical", "virtual", "metadata"])
def test_file_over_4_gib(tmp_path: Path, mount, partition: str) -> None:
    """A 5 GiB file that is mostly a hole (allocated-but-unrecorded and unallocated extents of up to 1 GiB
    each, zeros) takes a few KiB of image; reads at offsets past 4 GiB find its recorded bytes."""
    head, tail = b"head" * 1024, b"tail!" * 1000
    b = UdfBuilder(partition=partition, revision=0x0250 if partition == "metadata" else 0x0201)
    b.add_sparse("/huge.bin", [head, 5 << 30, tail])
    b.write(str(tmp_path / "huge.img"))
    assert (tmp_path / "huge.img").stat().st_size < 1 << 20
    with mount(tmp_path / "huge.img") as root:
        size = len(head) + (5 << 30) + len(tail)
        assert (root / "huge.bin").stat().st_size == size
        fd = os.open(root / "huge.bin", os.O_RDONLY)
        try:
            assert os.pread(fd, 8, 0) == b"headhead"
            assert os.pread(fd, 16, 4 << 30) == bytes(16)
            assert os.pread(fd, 12, len(head) + (5 << 30) - 4) == bytes(4) + b"tail!tai"
            assert os.pread(fd, 100, size - 10) == b"tail!" * 2
        finally:
            os.close(fd)


# -- damaged images -------------------------------------------------------------------------------------------


def _small_builder(**options: Any) -> UdfBuilder:
    b = UdfBuilder(**options)
    b.add_dir("/dir")
    b.add_file("/a.txt", b"hello\n")
    b.add_file("/dir/b.txt", b"b\n")
    return b


@pytest.mark.parametrize(("damage", "options", "words"), [
    (Damage(anchor_garbage=True), {}, "anchor at sector 256"),
    (Damage(metadata_loop=True), {"partition": "metadata", "revision": 0x0250}, "metadata file"),
    (Damage(vat_loop=True), {"partition": "virtual"}, "VAT"),
], ids=["anchor-to-garbage", "metadata-loop", "vat-loop"])
def test_mount_time_damage_is_one_line(damage: Damage, options: dict[str, Any], words: str, tmp_path: Path) -> None:
    image = tmp_path / "bad.img"
    _small_builder(damage=damage, **options).write(str(image))
    line = refusal(image, tmp_path / "mnt")
    assert line.startswith("imgfs: udf: ") and words in line and "(at byte offset " in line, line


@pytest.mark.parametrize(("damage", "options", "words"), [
    (Damage(main_vds_garbage=True), {}, "reading the reserve copy"),
    (Damage(metadata_main_bad=True), {"partition": "metadata", "revision": 0x0250}, "metadata mirror file"),
    (Damage(metadata_fsd_bad=True), {"partition": "metadata", "revision": 0x0260}, "using its mirror"),
], ids=["reserve-descriptors", "metadata-mirror", "file-set-through-the-mirror"])
def test_second_copies_are_used(damage: Damage, options: dict[str, Any], words: str, tmp_path: Path,
                                mount) -> None:
    image = tmp_path / "second.img"
    _small_builder(damage=damage, **options).write(str(image))
    with mounted_noting(image, tmp_path / "mnt") as (root, said):
        assert (root / "a.txt").read_bytes() == b"hello\n" and (root / "dir" / "b.txt").read_bytes() == b"b\n"
    assert words in said and len(said.splitlines()) == 1, said


def test_damaged_entries_give_eio_only_for_themselves(tmp_path: Path, mount) -> None:
    """A continuation-extent loop (a file, a directory), a descriptor running past its directory, a loop of
    indirect entries: EIO for what they damage, a line in the log, and everything else reads."""
    b = _small_builder()
    b.add_file("/loop.bin", b"z" * 10000, fragment=1, damage="ad_loop")
    b.add_dir("/loopdir", damage="ad_loop")
    b.add_file("/loopdir/f", b"1")
    b.add_dir("/overrun", damage="fid_overrun")
    b.add_file("/overrun/f1", b"1")
    b.add_file("/overrun/f2", b"2")
    b.add_file("/ie-loop", b"ie", damage="ie_loop")
    b.write(str(tmp_path / "damaged.img"))
    log = tmp_path / "log"
    with mounted_noting(tmp_path / "damaged.img", tmp_path / "mnt", f"logfile={log}") as (root, said):
        assert sorted(os.listdir(root)) == ["a.txt", "dir", "ie-loop", "loop.bin", "loopdir", "overrun"]
        assert (root / "loop.bin").stat().st_size == 10000
        assert read_errno(root / "loop.bin") == errno.EIO
        assert listing_errno(root / "loopdir") == errno.EIO
        assert listing_errno(root / "overrun") == errno.EIO
        assert read_errno(root / "ie-loop") == errno.EIO
        assert (root / "a.txt").read_bytes() == b"hello\n" and (root / "dir" / "b.txt").read_bytes() == b"b\n"
    text = said + log.read_text()
    for words in ("allocation extent descriptors form a loop", "runs past the end of its directory",
                  "indirect entries form a loop"):
        assert words in text, f"no log line about {words!r}"
    assert "Traceback" not in text


def test_directory_loop_is_cut(tmp_path: Path, mount) -> None:
    """A directory entry naming an ancestor directory is left out (with a warning), so a walk ends."""
    b = _small_builder()
    b.add_link("/dir/up", "/dir")
    b.write(str(tmp_path / "loop.img"))
    with mount(tmp_path / "loop.img") as root:
        assert sorted(os.listdir(root / "dir")) == ["b.txt"]


def test_corpus_sessions_by_start_sector() -> None:
    """Sector numbers in UDF are absolute: a later session's volume is found at its start + 256."""
    from corpuslib import CORPUS

    image = CORPUS / "iso" / "util-linux" / "udf-multi-0-417-834-genisoimage.img.xz"
    if not image.is_file():
        pytest.skip("corpus image absent")
    data = subprocess.run(["xz", "-dc", str(image)], check=True, capture_output=True).stdout
    labels = [UdfFilesystem(session(BytesStream(data), start), OpenContext("test", BlockCache(1 << 20))).label
              for start in (0, 417, 834)]
    assert labels == ["first session", "second session", "third session"]


def test_built_second_session(tmp_path: Path) -> None:
    first = _small_builder(label="ONE").build()
    second = UdfBuilder(label="TWO", start_sector=1000)
    second.add_file("/two.txt", b"2")
    data = bytearray(second.build())
    data[: len(first)] = first
    for start, label, names in ((0, "ONE", ["a.txt", "dir"]), (1000, "TWO", ["two.txt"])):
        fs = UdfFilesystem(session(BytesStream(bytes(data)), start), OpenContext("test", BlockCache(1 << 20)))
        assert fs.label == label and sorted(fs.children(fs.root)) == names


# -- units --------------------------------------------------------------------------------------------------


def test_cs0_names() -> None:
    assert decode_cs0(b"\x08caf\xe9") == "café"
    assert decode_cs0(b"\x10\x00c\x00a\x00f\x00\xe9\x65\xe5") == "café日"
    assert decode_cs0(b"\xfeold") == "old" and decode_cs0(b"\xff\x00o") == "o"  # UDF 2.60: deleted names
    assert decode_cs0(b"\x10\x00a\x00") == "a"  # an odd byte at the end is dropped
    with pytest.raises(ValueError):
        decode_cs0(b"\x07abc")
    assert file_name(b"\x08a/b\x00c") == "a/b\x00c"  # as stored: Filesystem.children escapes it (a%2Fb%00c)
    assert escape(file_name(b"\x08a/b\x00c")) == "a%2Fb%00c"
    assert dstring(b"\x08LABEL" + bytes(26) + b"\x06") == "LABEL"


def test_timestamps() -> None:
    def stamp(type_tz: int, *fields: int) -> bytes:
        return struct.pack("<HhBBBBBBBB", type_tz, *fields)

    utc = stamp(0x1000, 2020, 1, 2, 3, 4, 5, 12, 34, 56)
    assert timestamp_ns(utc, 0) == (1_577_934_245 * 1_000_000_000) + 123_456_000
    east = stamp(0x1000 | 120, 2020, 1, 2, 5, 4, 5, 0, 0, 0)  # 05:04:05 at UTC+2
    assert timestamp_ns(east, 0) == 1_577_934_245 * 1_000_000_000
    west = stamp(0x1000 | (-300 & 0xFFF), 2020, 1, 1, 22, 4, 5, 0, 0, 0)  # 22:04:05 at UTC-5
    assert timestamp_ns(west, 0) == 1_577_934_245 * 1_000_000_000
    unspecified = stamp(0x1000 | (-2047 & 0xFFF), 2020, 1, 2, 3, 4, 5, 0, 0, 0)
    assert timestamp_ns(unspecified, 0) == 1_577_934_245 * 1_000_000_000
    assert timestamp_ns(stamp(0x1000, 2020, 13, 1, 0, 0, 0, 0, 0, 0), 0) == 0  # month 13: no date


def test_symlink_components() -> None:
    def comp(kind: int, name: bytes = b"") -> bytes:
        return bytes([kind, len(name), 0, 0]) + name

    assert symlink_target(comp(2) + comp(5, b"\x08etc") + comp(5, b"\x08passwd")) == b"/etc/passwd"
    assert symlink_target(comp(3) + comp(3) + comp(5, b"\x08a")) == b"../../a"
    assert symlink_target(comp(4) + comp(5, b"\x10\x65\xe5")) == "./日".encode()
    assert symlink_target(comp(1, b"\x08agreed") + comp(5, b"\x08x")) == b"/x"
    with pytest.raises(CorruptImage):
        symlink_target(comp(5, b"\x08abc")[:-1])
    with pytest.raises(CorruptImage):
        symlink_target(comp(9))


def test_tags_are_checked() -> None:
    good = udfbuild.tagged(2, bytes(496), 256)
    assert read_tag(good, 0, expect=(2,)).location == 256
    bad_checksum = bytearray(good)
    bad_checksum[4] ^= 1
    with pytest.raises(CorruptImage, match="checksum"):
        read_tag(bytes(bad_checksum), 0)
    bad_crc = bytearray(good)
    bad_crc[100] = 1
    with pytest.raises(CorruptImage, match="CRC"):
        read_tag(bytes(bad_crc), 0)
    with pytest.raises(CorruptImage, match="expected file entry"):
        read_tag(good, 0, expect=(261,))


def test_extents_past_4_gib_and_holes() -> None:
    """The extent arithmetic: 5 recorded and hole extents of up to 1 GiB, the file's size past 4 GiB."""
    bs = 2048
    partition = BytesStream(bytes(range(256)) * 64)  # 8 blocks
    view = PartitionView("physical", 0, partition, lambda offset: offset)
    reader = IcbReader([view], bs)
    gib = (1 << 30) - bs
    ads = b"".join(struct.pack("<II", kind << 30 | length, block)
                   for kind, length, block in ((0, 3000, 1), (1, gib, 0), (2, gib, 0), (2, gib, 0), (1, gib, 0),
                                               (2, gib, 0), (0, 100, 4)))
    fe = bytearray(udfbuild.tagged(261, bytes(152) + struct.pack("<II", 0, len(ads)) + ads, 5))
    size = 3000 + 5 * gib + 100
    struct.pack_into("<Q", fe, 56, size)
    udfbuild.retag(fe, 0)
    entry = parse_entry(bytes(fe), Address(0, 5), 0, 261)
    data = reader.stream(entry, "huge")
    assert data.size == size > 1 << 32
    assert data.pread(0, 4) == (bytes(range(256)) * 64)[bs : bs + 4]
    assert data.pread(3000 + 4 * gib, 8) == bytes(8)
    assert data.pread(size - 100, 200) == (bytes(range(256)) * 64)[4 * bs : 4 * bs + 100]


def test_fid_past_the_directory_end() -> None:
    fid = bytearray(udfbuild.tagged(257, bytes(22) + b"\x08name", 0))
    fid[16 + 3] = 40  # the name's length, past the data
    udfbuild.retag(fid, 0)
    with pytest.raises(CorruptImage, match="runs past the end of its directory"):
        list(iter_fids(bytes(fid), lambda pos: 1000 + pos))


def test_garbage_is_an_image_error(tmp_path: Path) -> None:
    """A VRS with nothing behind it, a truncated image: ImageError with the layer, never anything else."""
    data = bytearray(1 << 20)
    data[32768:32775] = b"\0BEA01\1"
    data[34816:34823] = b"\0NSR02\1"
    for size in (len(data), 600_000, 40_000):
        with pytest.raises(ImageError) as caught:
            UdfFilesystem(BytesStream(bytes(data[:size])), OpenContext("test", BlockCache(1 << 20)))
        assert caught.value.layer == "udf"


def test_real_file_stream_matches_mount(images, built) -> None:
    """The reader without FUSE agrees with the tree byte for byte (what imgfs cat and ls use)."""
    image = built("physical-2048-short-efe", **BUILT["physical-2048-short-efe"])
    fs = UdfFilesystem(FileStream(str(image)), OpenContext("test", BlockCache(1 << 20)))
    big = fs.children(fs.children(fs.root)["dir"])["big.bin"]
    assert fs.open(big).pread(0, big.size) == (images["full"] / "dir" / "big.bin").read_bytes()
