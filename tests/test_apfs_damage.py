"""APFS: snapshots, and damaged containers (fs-explorer's images, edited by ``apfs_editor``).

Snapshots: fs-explorer writes none, so the editor takes one of a fresh volume and then changes the live
tree (an entry removed, a file's block replaced) in the next transaction, as macOS would: the snapshot
shows the old tree, the volume the new one.

Damage: each case must end in one clear ``ImageError`` naming the layer, or in an error for the damaged
directory or file only, and never in a hang: the newest checkpoint broken (an older one is used, with a
warning), a B-tree node pointing back up (a loop), a tree claiming more levels than any can have, a file
extent past the container, a key bag of garbage, a wrong passphrase.
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
import struct
from pathlib import Path

import pytest
from apfs_editor import BLOCK, Container, fletcher64, take_snapshot_and_change
from apfslib import FSX, apfs_filesystems, imgfs_listing, sha256
from conftest import read_errno
from corpuslib import CORPUS, info_layers, mount_refusal

from imgfs.errors import CorruptImage, EncryptedImage, ImageError, UnsupportedFormat
from imgfs.filesystems.apfs import objects

ENCRYPTED = CORPUS / "dmg" / "go-apfs-v2" / "encrypted.img.gz"


def bare_container(tmp_path: Path, files: dict[str, bytes], name: str = "plain.img") -> Path:
    src = tmp_path / f"{name}-src"
    src.mkdir()
    for rel, data in files.items():
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_bytes(data)
    import subprocess

    out = tmp_path / name
    subprocess.run([FSX, "create", "dmg", "--fs", "apfs", "--format", "UDRW", "--layout", "NONE", "-f",
                    "--volname", "Snappy", str(out), str(src)], check=True, capture_output=True)
    return out


@pytest.fixture
def snapshotted(tmp_path: Path) -> Path:
    image = bare_container(tmp_path, {"gone.txt": b"will be deleted\n", "changed.txt": b"version one\n",
                                      "kept.txt": b"keep\n"})
    c = Container(image)
    take_snapshot_and_change(c, "before the change", "gone.txt", "changed.txt", b"version two\n")
    return c.save(tmp_path / "snapshotted.img")


def contents(fs: object) -> dict[str, str]:
    return {path: entry["sha256"] for path, entry in imgfs_listing(fs).items() if entry["type"] == "file"}


def test_a_snapshot_shows_the_tree_as_it_was(snapshotted: Path) -> None:
    (fs,) = apfs_filesystems(snapshotted)
    assert contents(fs) == {"/changed.txt": sha256(b"version two\n"), "/kept.txt": sha256(b"keep\n")}
    (view,) = fs.views()
    assert view.path == "snapshots/Snappy/before the change"
    assert contents(view.target) == {"/gone.txt": sha256(b"will be deleted\n"),
                                     "/changed.txt": sha256(b"version one\n"), "/kept.txt": sha256(b"keep\n")}
    assert view.target.describe()["snapshot"] == "before the change"


@pytest.mark.parametrize("size", [4096, 16384, 65536, 4097, 8, 12])
def test_the_fast_checksum_is_the_references(size: int) -> None:
    """imgfs's Fletcher-64 (two big-integer remainders) against the Reference's loop, on random blocks and
    on the extremes: all zeros, all ones (every word at the modulus), one word set; a good block passes."""
    blocks = [os.urandom(size), bytes(size), b"\xff" * size, bytes(size - 4) + b"\x01\x00\x00\x80"]
    for block in blocks:
        assert objects.fletcher64(block) == fletcher64(block), block[:16].hex()
        sealed = fletcher64(block).to_bytes(8, "little") + block[8:]
        assert objects.checksum_ok(sealed)
        assert not objects.checksum_ok((fletcher64(block) ^ 1).to_bytes(8, "little") + block[8:])


def test_a_damaged_newest_checkpoint_falls_back_to_the_older_one(snapshotted: Path, tmp_path: Path,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    c = Container(snapshotted)
    _, root = c.fs_root(c.volume_block())  # the live tree's new root: written only by the newest checkpoint
    block = c.block(root)
    block[100] ^= 0xFF
    c.put(root, block, checksum=False)
    with caplog.at_level(logging.WARNING):
        (fs,) = apfs_filesystems(c.save(tmp_path / "torn.img"))
    assert "gone.txt" in fs.children(fs.root)  # the tree as of the older checkpoint
    assert any("checkpoint" in r.getMessage() and "older" in r.getMessage() for r in caplog.records)


def test_a_superblock_failing_its_checksum_falls_back(snapshotted: Path, tmp_path: Path,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    c = Container(snapshotted)
    block = c.block(0)
    block[2000] ^= 1
    c.put(0, block, checksum=False)
    with caplog.at_level(logging.WARNING):
        (fs,) = apfs_filesystems(c.save(tmp_path / "bad-sb.img"))
    assert "gone.txt" in fs.children(fs.root)
    assert any("fails its checksum" in r.getMessage() for r in caplog.records)


def test_no_sound_checkpoint_is_one_error(tmp_path: Path) -> None:
    c = Container(bare_container(tmp_path, {"a": b"a"}))
    omap = c.u64(0, 160)
    c.put(omap, bytes(BLOCK), checksum=False)  # the container object map, shared by every checkpoint
    with pytest.raises(CorruptImage, match="object map"):
        apfs_filesystems(c.save(tmp_path / "no-omap.img"))


@pytest.fixture(scope="module")
def many(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A volume whose filesystem tree has index nodes (its object map still one leaf): 1500 entries."""
    files = {f"many/f{i:04d}": b"m" for i in range(1500)}
    files["small/ok.txt"] = b"still readable\n"
    return bare_container(tmp_path_factory.mktemp("many"), files, "many.img")


def _index_root(c: Container) -> tuple[int, int, bytearray]:
    oid, block = c.fs_root(c.volume_block())
    data = c.block(block)
    flags, level = struct.unpack_from("<HH", data, 32)
    assert level >= 1, "the tree was expected to have index nodes"
    return oid, block, data


def test_a_tree_node_pointing_back_up_is_an_error_not_a_hang(many: Path, tmp_path: Path) -> None:
    c = Container(many)
    oid, block, data = _index_root(c)
    toc_off, toc_len = struct.unpack_from("<HH", data, 40)
    first_value = struct.unpack_from("<HHHH", data, 56 + toc_off)[2]
    struct.pack_into("<Q", data, BLOCK - 40 - first_value, oid)  # the first child is the root itself
    c.put(block, data)
    with pytest.raises(CorruptImage, match="level"):
        (fs,) = apfs_filesystems(c.save(tmp_path / "loop.img"))
        imgfs_listing(fs)


def test_a_tree_deeper_than_any_real_one_is_refused(many: Path, tmp_path: Path) -> None:
    c = Container(many)
    _, block, data = _index_root(c)
    struct.pack_into("<H", data, 34, 40)  # level 40
    c.put(block, data)
    with pytest.raises(CorruptImage, match="deeper"):
        apfs_filesystems(c.save(tmp_path / "deep.img"))


def test_an_extent_past_the_container_fails_that_file_only(tmp_path: Path) -> None:
    image = bare_container(tmp_path, {"victim.bin": b"v" * 5000, "fine.txt": b"fine\n"})
    c = Container(image)
    _, root = c.fs_root(c.volume_block())
    leaf = c.leaf(root)
    entries = []
    for key, value in leaf.entries:
        is_extent = int.from_bytes(key[:8], "little") >> 60 == 8
        if is_extent and struct.unpack_from("<Q", value)[0] & ((1 << 56) - 1) == 8192:  # victim.bin's 2 blocks
            value = value[:8] + struct.pack("<Q", c.block_count + 100) + value[16:]
        entries.append((key, value))
    leaf.entries = entries
    c.put_leaf(root, leaf, *struct.unpack_from("<QQ", leaf.block, 8))
    (fs,) = apfs_filesystems(c.save(tmp_path / "past.img"))
    root_dir = fs.children(fs.root)
    assert fs.open(root_dir["fine.txt"]).pread(0, 5) == b"fine\n"
    with pytest.raises(CorruptImage, match="outside the container"):
        fs.open(root_dir["victim.bin"])


@pytest.fixture(scope="module")
def encrypted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not ENCRYPTED.is_file() or shutil.which("gzip") is None:
        pytest.skip("the corpus's encrypted APFS image is not here")
    out = tmp_path_factory.mktemp("enc") / "encrypted.img"
    os.system(f"gzip -dc '{ENCRYPTED}' > '{out}'")
    return out


def test_the_right_passphrase_unlocks(encrypted: Path) -> None:
    (fs,) = apfs_filesystems(encrypted, passphrase="hunter2hunter2")
    assert contents(fs)["/secret.txt"] == sha256(b"secret content for the encrypted volume\n")


@pytest.mark.parametrize(("passphrase", "error", "words"), [
    ("wrong", EncryptedImage, "wrong passphrase"),
    (None, EncryptedImage, "give its passphrase"),
])
def test_a_wrong_or_missing_passphrase_is_one_line(encrypted: Path, passphrase: str, error: type, words: str) -> None:
    with pytest.raises(error, match=words) as caught:
        apfs_filesystems(encrypted, passphrase=passphrase)
    assert "\n" not in str(caught.value)


def test_a_key_bag_of_garbage_is_one_line(encrypted: Path, tmp_path: Path) -> None:
    c = Container(encrypted)
    start = c.u64(0, 1296)
    c.put(start, os.urandom(BLOCK), checksum=False)
    with pytest.raises(ImageError, match="key bag") as caught:
        apfs_filesystems(c.save(tmp_path / "garbage-bag.img"), passphrase="hunter2hunter2")
    assert isinstance(caught.value, (UnsupportedFormat, CorruptImage))


def test_absurd_iterations_are_refused_in_one_line() -> None:
    from imgfs.filesystems.apfs.keybag import MAX_ITERATIONS, WrappedKey, derive

    with pytest.raises(EncryptedImage, match="iterations"):
        derive(b"pw", WrappedKey(bytes(40), 0, MAX_ITERATIONS + 1, b"salt"), lambda *a: None, "test")


# -- through FUSE ---------------------------------------------------------------------------------------------


def test_snapshots_are_raw_views_of_the_mount(snapshotted: Path, mount) -> None:
    with mount(snapshotted, "rawviews") as root:
        assert sorted(os.listdir(root)) == [".imgfs", "changed.txt", "kept.txt"]
        snap = root / ".imgfs" / "snapshots" / "Snappy" / "before the change"
        assert sorted(os.listdir(snap)) == ["changed.txt", "gone.txt", "kept.txt"]
        assert (snap / "changed.txt").read_bytes() == b"version one\n"
        assert (root / "changed.txt").read_bytes() == b"version two\n"
    with mount(snapshotted) as root:
        assert ".imgfs" not in os.listdir(root)


def test_an_extent_past_the_end_is_eio_for_that_file_only(tmp_path: Path, mount) -> None:
    image = bare_container(tmp_path, {"victim.bin": b"v" * 5000, "fine.txt": b"fine\n"})
    c = Container(image)
    _, root_block = c.fs_root(c.volume_block())
    leaf = c.leaf(root_block)
    leaf.entries = [(k, v[:8] + struct.pack("<Q", c.block_count + 100) + v[16:])
                    if int.from_bytes(k[:8], "little") >> 60 == 8 and struct.unpack_from("<Q", v)[0] & 0xFFFF == 8192
                    else (k, v) for k, v in leaf.entries]
    c.put_leaf(root_block, leaf, *struct.unpack_from("<QQ", leaf.block, 8))
    with mount(c.save(tmp_path / "past.img")) as root:
        assert (root / "fine.txt").read_bytes() == b"fine\n"
        assert read_errno(root / "victim.bin") == errno.EIO


@pytest.mark.parametrize("damage", ["deep", "passphrase"])
def test_mount_refusals_are_one_line(damage: str, many: Path, encrypted: Path, tmp_path: Path) -> None:
    if damage == "deep":
        c = Container(many)
        _, block, data = _index_root(c)
        struct.pack_into("<H", data, 34, 40)
        c.put(block, data)
        image, env, words = c.save(tmp_path / "deep.img"), None, "deeper"
    else:
        image, env, words = encrypted, {**os.environ, "IMGFS_PASSPHRASE": "nope"}, "wrong passphrase"
    line = mount_refusal(image, tmp_path / "mnt", env=env)
    assert words in line, line


def test_two_volumes_are_two_folders_with_their_roles(tmp_path: Path, mount) -> None:
    from apfs_editor import add_volume

    c = Container(bare_container(tmp_path, {"a.txt": b"a\n"}))
    add_volume(c, "Data", 1 << 6)  # APFS_VOL_ROLE_DATA
    image = c.save(tmp_path / "two.img")
    with mount(image) as root:
        assert sorted(os.listdir(root)) == ["1 Snappy", "2 Data"]
        assert (root / "2 Data" / "a.txt").read_bytes() == b"a\n"
    layers = info_layers(image)
    roles = {layer["label"]: layer["roles"] for layer in layers if layer.get("filesystem") == "apfs"}
    assert roles == {"Snappy": [], "Data": ["Data"]}


@pytest.mark.parametrize("kind", ["sparseimage", "sparsebundle"])
def test_apfs_inside_apple_sparse_images(kind: str, tmp_path: Path, mount) -> None:
    from applewriter import write_sparsebundle, write_sparseimage

    src = tmp_path / "src"
    src.mkdir()
    (src / "inside.txt").write_bytes(b"in a sparse image\n")
    disk = tmp_path / "disk.dmg"
    import subprocess

    subprocess.run([FSX, "create", "dmg", "--fs", "apfs", "--format", "UDRW", "--layout", "GPT", "-f", str(disk),
                    str(src)], check=True, capture_output=True)  # UDRW: a raw GPT disk
    image = tmp_path / f"disk.{kind}"
    (write_sparseimage if kind == "sparseimage" else write_sparsebundle)(image, disk.read_bytes())
    with mount(image) as root:
        assert (root / "inside.txt").read_bytes() == b"in a sparse image\n"


def test_a_sealed_volume_reads_its_extents_from_their_own_tree(tmp_path: Path) -> None:
    from apfs_editor import seal

    files = {"one.bin": bytes(range(256)) * 40, "two.txt": b"sealed\n", "sub/three": b"3" * 9000}
    c = Container(bare_container(tmp_path, files))
    seal(c)
    (fs,) = apfs_filesystems(c.save(tmp_path / "sealed.img"))
    assert fs.describe()["sealed"] is True
    assert contents(fs) == {f"/{name}": sha256(data) for name, data in files.items()}


def test_verify_finds_a_damaged_leaf_that_the_mount_only_shows_as_eio(many: Path, tmp_path: Path) -> None:
    from conftest import run_imgfs

    (fs,) = apfs_filesystems(many)
    tree = fs.volume.tree
    leaf = tree.child(tree.root, 1)  # the second leaf: files of the folder "many"
    c = Container(many)
    block = c.block(leaf.paddr)
    block[200] ^= 0xFF
    c.put(leaf.paddr, block, checksum=False)
    image = c.save(tmp_path / "bad-leaf.img")
    done = run_imgfs("verify", str(image))
    assert done.returncode != 0 and "checksum" in done.stdout + done.stderr, done.stdout + done.stderr
    (fs,) = apfs_filesystems(image)
    assert fs.open(fs.children(fs.children(fs.root)["small"])["ok.txt"]).pread(0, 99) == b"still readable\n"
    with pytest.raises(CorruptImage, match="checksum"):
        fs.children(fs.children(fs.root)["many"])


def test_inode_extended_fields_read_as_the_reference_lays_them_out():
    """j_inode_val_t's xf_blob_t: the first data stream's size and the first device number count, a field too
    short to hold one gives 0, and a field running past the bytes the blob gives is named in the error."""
    from imgfs.filesystems.apfs import records as rec

    base = rec.INODE_VALUE.pack(1, 77, 0, 5, 6, 7, 0, 1, 0, 0, 0, 501, 20, 0o100644, 0, 0)

    def inode(*fields: tuple[int, bytes], used: int | None = None) -> bytes:
        table = b"".join(struct.pack("<BBH", kind, 0, len(data)) for kind, data in fields)
        blob = b"".join(data + bytes(-len(data) % 8) for _, data in fields)
        return base + struct.pack("<HH", len(fields), len(blob) if used is None else used) + table + blob

    def parse(value: bytes) -> tuple[int, int]:
        found = rec.parse_inode(99, value, 0, len(value))
        return found.size, found.rdev

    name = (rec.INO_EXT_DSTREAM - 4, b"file.txt\0")  # type 4: the name, 9 bytes, padded to 16
    stream = (rec.INO_EXT_DSTREAM, rec.DSTREAM.pack(123_456, 131_072, 0, 0, 0))
    assert parse(inode(name, stream)) == (123_456, 0)
    assert parse(inode(stream, (rec.INO_EXT_DSTREAM, rec.DSTREAM.pack(9, 9, 0, 0, 0)))) == (123_456, 0)  # first
    assert parse(inode((rec.INO_EXT_DSTREAM, b"\x01" * 8), stream)) == (0, 0)  # too short: 0, and the first counts
    assert parse(inode(name, (rec.INO_EXT_RDEV, struct.pack("<I", 0x0800_0001)))) == (0, 0x0800_0001)
    assert parse(base) == (0, 0)  # no blob at all
    many = [(rec.INO_EXT_DSTREAM - 4, b"n" * 3)] * 12 + [stream]  # more fields than the layouts kept
    assert parse(inode(*many)) == (123_456, 0)
    with pytest.raises(CorruptImage, match=r"inode 99: extended field \(type 8, 40 bytes\) runs past the record"):
        parse(inode(name, stream, used=30))
    with pytest.raises(CorruptImage, match="overrun a"):
        parse(inode(name, stream, used=4000))
