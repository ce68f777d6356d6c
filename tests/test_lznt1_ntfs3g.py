"""LZNT1 against ntfs-3g, byte for byte: files written into a compressed folder of an ntfs-3g volume are
read back from their clusters (runs from ``ntfsinfo``) and decoded unit by unit with
``imgfs.codecs.lznt1``; and the test encoder's units, written over ntfs-3g's, are read by ntfs-3g."""

from __future__ import annotations

import random
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import is_mounted, unmount
from msencoders import lznt1_compress
from ntfs3gruns import CLUSTER, raw_chunk_count, units

from imgfs.codecs import lznt1

pytestmark = pytest.mark.skipif(shutil.which("ntfs-3g") is None or shutil.which("mkntfs") is None,
                                reason="ntfs-3g is not installed")

FILE_ATTRIBUTE_COMPRESSED_DIR = 0x810


def contents() -> dict[str, bytes]:
    rng = random.Random(1)
    words = [bytes(rng.choice(b"abcdefghij ") for _ in range(rng.randint(2, 8))) for _ in range(300)]
    text = b" ".join(rng.choice(words) for _ in range(60000))
    # per 64 KiB unit: noise (its 4 KiB chunks stored as they are) then text: the unit still compresses
    mixed = b"".join(rng.randbytes(6000) + text[n * 9000 : n * 9000 + 59536] for n in range(3))
    return {"code": Path("/usr/bin/ls").read_bytes(), "text": text[:200_000], "zeros": bytes(200_000),
            "mixed": mixed, "noise": rng.randbytes(100_000), "tail": text[:70_001], "small": text[:3000]}


def ntfs_mount(image: Path, mountpoint: Path, *options: str) -> None:
    mountpoint.mkdir(exist_ok=True)
    subprocess.run(["ntfs-3g", *(["-o", ",".join(options)] if options else []), str(image), str(mountpoint)],
                   check=True, capture_output=True)
    assert is_mounted(mountpoint)


@pytest.fixture(scope="module")
def volume(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("ntfs")
    image = root / "ntfs.img"
    with open(image, "wb") as f:
        f.truncate(24 << 20)
    subprocess.run(["mkntfs", "-q", "-F", "-f", "-c", str(CLUSTER), str(image)], check=True, capture_output=True)
    mnt = root / "mnt"
    ntfs_mount(image, mnt, "compression")
    try:
        (mnt / "c").mkdir()
        subprocess.run(["setfattr", "-h", "-n", "system.ntfs_attrib_be", "-v", f"0x{FILE_ATTRIBUTE_COMPRESSED_DIR:08x}",
                        str(mnt / "c")], check=True)
        for name, data in contents().items():
            (mnt / "c" / name).write_bytes(data)
    finally:
        unmount(mnt)
    return image


def test_lznt1_decodes_what_ntfs3g_wrote(volume: Path) -> None:
    image = volume.read_bytes()
    seen = {"hole": 0, "stored": 0, "compressed": 0, "raw chunks": 0}
    for name, want in contents().items():
        got = bytearray()
        for kind, lcns, length in units(volume, f"/c/{name}"):
            seen[kind] += 1
            if kind == "hole":
                got += bytes(length)
                continue
            data = b"".join(image[lcn * CLUSTER : (lcn + 1) * CLUSTER] for lcn in lcns if lcn is not None)
            if kind == "stored":
                got += data[:length]
            else:
                seen["raw chunks"] += raw_chunk_count(data)
                got += lznt1.decompress(data, length)
        assert bytes(got) == want, name
    assert all(seen.values()), seen


def test_ntfs3g_reads_the_test_encoder(volume: Path, tmp_path: Path) -> None:
    """The test encoder's units, written over ntfs-3g's own wherever they fit, read back through ntfs-3g."""
    image = tmp_path / "ntfs.img"
    shutil.copyfile(volume, image)
    replaced = 0
    with open(image, "r+b") as f:
        for name, data in contents().items():
            at = 0
            for kind, lcns, length in units(volume, f"/c/{name}"):
                unit, at = data[at : at + length], at + length
                allocated = [lcn for lcn in lcns if lcn is not None]
                encoded = lznt1_compress(unit)
                if kind != "compressed" or len(encoded) > len(allocated) * CLUSTER:
                    continue
                encoded += bytes(len(allocated) * CLUSTER - len(encoded))
                for n, lcn in enumerate(allocated):
                    f.seek(lcn * CLUSTER)
                    f.write(encoded[n * CLUSTER : (n + 1) * CLUSTER])
                replaced += 1
    assert replaced >= 5
    mnt = tmp_path / "mnt"
    ntfs_mount(image, mnt, "ro")
    try:
        for name, data in contents().items():
            assert (mnt / "c" / name).read_bytes() == data, name
    finally:
        unmount(mnt)
