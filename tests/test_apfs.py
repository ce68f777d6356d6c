"""APFS: images written by fs-explorer from trap-filled trees, read by imgfs and by fs-explorer.

fs-explorer 0.5.0 (BSD-3) is the independent writer: UDRO, UDZO and ULFO DMGs, GPT and bare layouts,
case-insensitive and case-sensitive volumes, encrypted DMGs. Each image is read through imgfs's own
layers and compared with the source tree (names, types, sizes, bytes, modes, owners, times, inode
sharing, link counts, device numbers, symlink targets, xattrs) and with what fs-explorer reads back.
decmpfs files of every type are written by fs-explorer with payloads from the tests' own encoders
(LZBITMAP: ``lzbitmap_writer``, checked against dissect.util's decoder when it is installed).
"""

from __future__ import annotations

import errno
import os
import random
import stat
import unicodedata
from pathlib import Path
from typing import Any

import pytest
from apfslib import (
    DECMPFS_TYPES,
    apfs_filesystems,
    fsx_create,
    fsx_create_compressed,
    fsx_listing,
    imgfs_listing,
    sha256,
    trap_tree,
)
from conftest import compare_trees
from corpuslib import info_layers

from imgfs.codecs import lzbitmap

LAYOUTS = [("UDRO", "GPT"), ("UDZO", "NONE"), ("ULFO", "GPT")]
TYPES = {stat.S_IFREG: "file", stat.S_IFDIR: "dir", stat.S_IFLNK: "symlink", stat.S_IFCHR: "char",
         stat.S_IFBLK: "block", stat.S_IFIFO: "fifo", stat.S_IFSOCK: "socket"}


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return trap_tree(tmp_path_factory.mktemp("apfs-src") / "tree")


@pytest.fixture(scope="module")
def images(source: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, str], Path]:
    out = tmp_path_factory.mktemp("apfs-img")
    return {(fmt, layout): fsx_create(out / f"traps-{fmt}-{layout}.dmg", source, fmt, layout)
            for fmt, layout in LAYOUTS}


def source_listing(root: Path) -> dict[str, dict[str, Any]]:
    """The source tree in the shape of ``imgfs_listing``."""
    found: dict[str, dict[str, Any]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            full = Path(dirpath, name)
            st = full.lstat()
            kind = TYPES[stat.S_IFMT(st.st_mode)]
            item: dict[str, Any] = {"type": kind, "mode": stat.S_IMODE(st.st_mode), "ino": st.st_ino,
                                    "nlink": st.st_nlink if kind == "file" else None, "rdev": st.st_rdev,
                                    "mtime_ns": st.st_mtime_ns}
            if kind == "file":
                item.update(size=st.st_size, sha256=sha256(full.read_bytes()))
            elif kind == "symlink":
                item["target"] = os.readlink(full)
            found["/" + full.relative_to(root).as_posix()] = item
    return found


def assert_same_as_source(mine: dict[str, dict[str, Any]], want: dict[str, dict[str, Any]]) -> None:
    missing, extra = sorted(set(want) - set(mine)), sorted(set(mine) - set(want))
    assert not missing and not extra, f"missing {missing[:5]}, extra {extra[:5]}"
    problems = []
    for path, expected in want.items():
        got = mine[path]
        for field in ("type", "mode", "size", "sha256", "target", "rdev", "mtime_ns"):
            if field in expected and field in got and got[field] != expected[field]:
                if field == "mode" and expected["type"] == "symlink":
                    continue  # Linux symlinks are 0777; APFS keeps what the writer stored
                problems.append(f"{path}: {field}: {got[field]!r} != {expected[field]!r}")
        if expected["type"] == "file" and got["nlink"] != expected["nlink"]:
            problems.append(f"{path}: nlink {got['nlink']} != {expected['nlink']}")
    assert not problems, "\n".join(problems[:20])
    _same_groups(mine, want)


def _same_groups(mine: dict[str, dict[str, Any]], want: dict[str, dict[str, Any]]) -> None:
    """Names that share an inode in the source share one in the image, and no others do."""
    def groups(entries: dict[str, dict[str, Any]]) -> set[frozenset[str]]:
        by_ino: dict[int, set[str]] = {}
        for path, item in entries.items():
            if item["type"] == "file":
                by_ino.setdefault(item["ino"], set()).add(path)
        return {frozenset(paths) for paths in by_ino.values()}

    assert groups(mine) == groups(want)


@pytest.mark.parametrize(("fmt", "layout"), LAYOUTS)
def test_imgfs_reads_the_source_tree(images: dict[tuple[str, str], Path], source: Path, fmt: str, layout: str) -> None:
    (fs,) = apfs_filesystems(images[(fmt, layout)])
    assert fs.label == "Traps"
    assert_same_as_source(imgfs_listing(fs), source_listing(source))


@pytest.mark.parametrize(("fmt", "layout"), LAYOUTS)
def test_fs_explorer_and_imgfs_agree(images: dict[tuple[str, str], Path], fmt: str, layout: str) -> None:
    (fs,) = apfs_filesystems(images[(fmt, layout)])
    mine, theirs = imgfs_listing(fs), fsx_listing(images[(fmt, layout)])
    assert sorted(mine) == sorted(theirs)
    problems = [f"{path}: {field}: imgfs {mine[path].get(field)!r}, fs-explorer {value!r}"
                for path, item in theirs.items() for field, value in item.items() if mine[path].get(field) != value]
    assert not problems, "\n".join(problems[:20])


def test_xattrs_inline_and_in_a_stream(images: dict[tuple[str, str], Path]) -> None:
    (fs,) = apfs_filesystems(images[("UDRO", "GPT")])
    root = fs.children(fs.root)
    assert fs.xattrs(root["hello.txt"]) == {"user.greeting": b"hi there"}
    assert fs.xattrs(root["dir"]) == {"user.on-a-folder": b"folder attribute"}
    assert fs.xattrs(root["pair-a"]) == {"user.big": bytes(range(256)) * 15 + b"end"}  # over 3804: a stream
    assert fs.xattrs(root["link-rel"]) == {}  # com.apple.fs.symlink is the filesystem's own


def test_names_are_shown_as_stored_and_found_in_either_form(images: dict[tuple[str, str], Path]) -> None:
    (fs,) = apfs_filesystems(images[("UDRO", "GPT")])
    root = fs.children(fs.root)
    nfc, nfd = unicodedata.normalize("NFC", "café.txt"), unicodedata.normalize("NFD", "naïve.txt")
    assert nfc in list(root) and nfd in list(root)
    assert root[unicodedata.normalize("NFD", nfc)] is root[nfc]  # the volume is normalization-insensitive
    assert root[unicodedata.normalize("NFC", nfd)] is root[nfd]


def test_a_case_sensitive_volume_keeps_names_that_differ_in_case(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    for name in ("Readme", "README", "readme"):
        (src / name).write_bytes(name.encode())
    image = fsx_create(tmp_path / "cs.dmg", src, "UDZO", "GPT", case_sensitive=True)
    (fs,) = apfs_filesystems(image)
    listing = imgfs_listing(fs)
    assert {p: e["sha256"] for p, e in listing.items()} == {f"/{n}": sha256(n.encode()) for n in
                                                            ("Readme", "README", "readme")}
    assert fs.describe()["case_sensitive"] is True


def test_an_encrypted_dmg_of_apfs(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "inside.txt").write_bytes(b"behind AES\n")
    image = fsx_create(tmp_path / "enc.dmg", src, "UDZO", "GPT",
                       extra=("--encryption", "AES-256", "--password", "sesame", "--kdf-iterations", "1000"))
    (fs,) = apfs_filesystems(image, passphrase="sesame")
    assert imgfs_listing(fs)["/inside.txt"]["sha256"] == sha256(b"behind AES\n")


# -- decmpfs ---------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def compressed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, tuple[int, bytes]]]:
    """One file per decmpfs type: inline types small, resource-fork types over two 64 KiB chunks."""
    base = tmp_path_factory.mktemp("apfs-decmpfs")
    rng = random.Random(7)
    words = [bytes(rng.choice(b"abcdefghij") for _ in range(rng.randint(2, 9))) for _ in range(400)]
    text = b" ".join(rng.choice(words) for _ in range(60000))
    files = {f"type{kind:02d}.bin": (kind, text[: (150001 if kind % 2 == 0 else 3001) + kind])
             for kind in DECMPFS_TYPES}
    src = base / "src"
    src.mkdir()
    for name in files:
        (src / name).write_bytes(b"")
    (src / "plain.txt").write_bytes(b"not compressed\n")
    return fsx_create_compressed(base / "packed.dmg", src, files), files


def test_every_decmpfs_type_reads_back(compressed: tuple[Path, dict[str, tuple[int, bytes]]]) -> None:
    image, files = compressed
    (fs,) = apfs_filesystems(image)
    listing = imgfs_listing(fs)
    for name, (kind, data) in files.items():
        assert (listing[f"/{name}"]["size"], listing[f"/{name}"]["sha256"]) == (len(data), sha256(data)), kind
        assert fs.xattrs(fs.children(fs.root)[name]) == {}  # decmpfs and its resource fork are hidden
    node = fs.children(fs.root)["type14.bin"]
    assert fs.open(node).pread(70000, 100) == files["type14.bin"][1][70000:70100]  # a chunk in the middle


def test_fs_explorer_agrees_on_the_types_it_decodes(compressed: tuple[Path, dict[str, tuple[int, bytes]]]) -> None:
    """fs-explorer decodes zlib, LZVN and LZFSE like imgfs; it has no LZBITMAP, and it keeps the marker byte
    of the copy types 9 and 10, which imgfs (like the HFS+ reader) strips."""
    image, files = compressed
    theirs = fsx_listing(image)
    for name, (kind, data) in files.items():
        if kind not in (9, 10, 13, 14):
            assert theirs[f"/{name}"]["sha256"] == sha256(data), name


# -- LZBITMAP --------------------------------------------------------------------------------------------------


LZBITMAP_SAMPLES = {"empty": b"", "one byte": b"x", "runs": b"abc" * 5000 + bytes(9000),
                    "random": random.Random(1).randbytes(70000), "bytes": bytes(range(256)) * 300}


@pytest.mark.parametrize("name", LZBITMAP_SAMPLES)
@pytest.mark.parametrize("stored_every", [0, 2])
def test_lzbitmap_round_trip(name: str, stored_every: int) -> None:
    from lzbitmap_writer import compress

    data = LZBITMAP_SAMPLES[name]
    packed = compress(data, stored_every)
    assert lzbitmap.decode(packed, len(data)) == data


@pytest.mark.parametrize("name", LZBITMAP_SAMPLES)
def test_lzbitmap_second_decoder_agrees(name: str) -> None:
    """dissect.util's decoder (AGPL, a test oracle only, never imported by imgfs) reads the writer's streams."""
    ref = pytest.importorskip("dissect.util.compression.lzbitmap")
    from lzbitmap_writer import compress

    data = LZBITMAP_SAMPLES[name]
    assert ref.decompress(compress(data)) == data


@pytest.mark.parametrize("damage", ["magic", "truncated", "overlong", "period"])
def test_lzbitmap_damage_is_a_value_error(damage: str) -> None:
    from lzbitmap_writer import compress

    data = b"abcdefgh" * 3000
    packed = bytearray(compress(data))
    if damage == "magic":
        packed[0] = 0
    elif damage == "truncated":
        del packed[len(packed) // 2 :]
    elif damage == "overlong":
        data = data[:-1]
    else:
        packed[4 + 6 : 4 + 9] = (len(packed) - 4).to_bytes(3, "little")  # the periods area past the chunk
    with pytest.raises(ValueError):
        lzbitmap.decode(bytes(packed), len(data))


# -- through FUSE ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("fmt", "layout"), LAYOUTS)
def test_mount_shows_the_source_tree(images: dict[tuple[str, str], Path], source: Path, mount, fmt: str,
                                     layout: str) -> None:
    with mount(images[(fmt, layout)]) as root:
        assert compare_trees(source, root) > 5000
        assert os.getxattr(root / "hello.txt", "user.greeting") == b"hi there"
        assert os.getxattr(root / "pair-a", "user.big") == bytes(range(256)) * 15 + b"end"


def test_attribute_names_are_all_user_names(tmp_path: Path, mount) -> None:
    """macOS attribute names have no namespace: a stored "trusted.note" (fs-explorer keeps the names Linux
    gives it) is shown as user.trusted.note; SELinux labels and ACLs are not supported, which ls learns once."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_bytes(b"hi\n")
    os.setxattr(src / "f", "user.greeting", b"hi")
    os.setxattr(src / "f", "trusted.note", b"t")  # root may: the suite runs as root
    with mount(fsx_create(tmp_path / "names.dmg", src, layout="NONE")) as root:
        assert sorted(os.listxattr(root / "f")) == ["user.greeting", "user.trusted.note"]
        assert os.getxattr(root / "f", "user.trusted.note") == b"t"
        for name, code in (("user.absent", errno.ENODATA), ("trusted.note", errno.EOPNOTSUPP),
                           ("security.selinux", errno.EOPNOTSUPP), ("system.posix_acl_access", errno.EOPNOTSUPP)):
            with pytest.raises(OSError) as refused:
                os.getxattr(root / "f", name)
            assert refused.value.errno == code, name


def test_mount_of_an_asif_image(source: Path, tmp_path: Path, mount) -> None:
    image = fsx_create(tmp_path / "traps.asif", source, "ASIF", "GPT")
    with mount(image) as root:
        compare_trees(source, root)


def test_mount_of_compressed_files(compressed: tuple[Path, dict[str, tuple[int, bytes]]], mount) -> None:
    image, files = compressed
    with mount(image) as root:
        for name, (_kind, data) in files.items():
            assert (root / name).stat().st_size == len(data)
            assert sha256((root / name).read_bytes()) == sha256(data), name
            assert os.listxattr(root / name) == []


def test_info_shows_the_container_and_the_volume(images: dict[tuple[str, str], Path]) -> None:
    layers = info_layers(images[("UDRO", "GPT")])
    container = next(layer for layer in layers if layer["layer"] == "apfs container")
    volume = next(layer for layer in layers if layer.get("filesystem") == "apfs")
    assert container["volumes"] == 1 and container["block_size"] == 4096
    assert volume["label"] == "Traps" and volume["roles"] == [] and volume["case_sensitive"] is False
