"""The real-world DMGs of the corpus (``dmg/``): made by hdiutil, in every codec, checked against their oracles.

The corpus is ``../shared/fixtures`` beside the project (or ``$IMGFS_CORPUS``); these tests skip when its
``dmg/`` folder is absent. Each image ``dmg/**/X.dmg`` has an oracle ``X.dmg.json`` (see the corpus README):

* ``container_details``: the koly trailer's fields, every blkx entry (name, first sector, sectors, run
  types) and the decoded disk's size and sha256, on which 7-Zip, libmodi and a reference decoder agreed.
  imgfs's UDIF layer must decode the same disk, list the same entries, and find every checksum right.
  Where 7-Zip is installed, each partition it extracts must equal imgfs's bytes of that blkx entry.
* ``partition_tables``: each partition's sha256; a partition whose filesystem imgfs does not read would
  be a raw ``N.img`` file in the mount, holding exactly those bytes.
* ``volumes``: FAT12, HFS+ and APFS volumes are mounted and compared entry by entry (as
  ``test_corpus_raw.py`` does; ``test_corpus_apfs.py`` checks APFS further).

The encrypted image (``dmgwiz/input_aes256.dmg``, passphrase ``test123``) goes through the encrypted-image
layer first; it is skipped while that layer is absent. Times: every imgfs process runs with ``TZ=UTC``.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import unicodedata
from pathlib import Path
from typing import Any

import pytest
from conftest import sha256_of
from corpuslib import (
    CorpusImage,
    assert_matches,
    expected_entries,
    folder_or_skip,
    info_layers,
    load_images,
    mount_refusal,
    mounted,
    params,
    snapshot,
)

from imgfs.containers.dmg import UdifImage, encrypted, open_udif, verify
from imgfs.io.cache import BlockCache
from imgfs.io.stream import FileStream, Stream
from imgfs.layer import OpenContext
from imgfs.registry import FORMATS, detect

folder_or_skip("dmg")

PASSPHRASE = "test123"
ENV = {**os.environ, "TZ": "UTC", "IMGFS_PASSPHRASE": PASSPHRASE}
SEVEN_ZIP = shutil.which("7zz") or shutil.which("7z")
FIELDS = ("type", "size", "sha256", "target", "mode", "nlink", "mtime")
STEP = 1 << 20

IMAGES = [i for i in load_images("dmg") if i.rel.endswith(".dmg")]
PLAIN = [i for i in IMAGES if not i.oracle.get("encrypted")]


def reads(fmt: str) -> bool:
    return any(f.name == fmt and f.opener for f in FORMATS)


def assert_detected_as_udif(image: CorpusImage) -> None:
    """An uncompressed DMG starts with the disk's own sectors (a raw MBR, GPT or HFS+ volume header): the
    registry must try UDIF before the formats that would claim them."""
    if not image.oracle.get("encrypted"):
        assert detect(FileStream(str(image.source))).name == "udif"


def open_image(image: CorpusImage) -> UdifImage:
    path = str(image.source)
    ctx = OpenContext(path, BlockCache(32 << 20), passphrase=lambda: PASSPHRASE)
    stream: Stream = FileStream(path)
    if image.oracle.get("encrypted"):
        stream = encrypted.open_encrypted(stream, ctx)
    return open_udif(stream, ctx)


def sha256_range(stream: Stream, start: int, size: int) -> str:
    digest = hashlib.sha256()
    for at in range(start, start + size, STEP):
        digest.update(stream.pread(at, min(STEP, start + size - at)))
    return digest.hexdigest()


# -- the UDIF layer (library) ------------------------------------------------------------------------------


@pytest.mark.parametrize("image", params(IMAGES))
def test_decoded_disk_matches_oracle(image: CorpusImage) -> None:
    udif = open_image(image)
    media = image.oracle["container_details"]["decoded_media"]
    assert udif.size == media["size"]
    assert sha256_range(udif, 0, udif.size) == media["sha256"]


@pytest.mark.parametrize("image", params(IMAGES))
def test_blkx_entries_and_trailer_match_oracle(image: CorpusImage) -> None:
    details = image.oracle["container_details"]
    udif = open_image(image)
    info = udif.describe()
    found = [(b["name"], b["first_sector"], b["sectors"]) for b in info["blkx"]]
    assert found == [(b["name"], b["first_sector"], b["sector_count"]) for b in details["blkx"]]
    koly = details["koly"]
    assert info["data_fork_size"] == koly["data_fork_length"] and info["sectors"] == koly["sector_count"]
    assert info["format"] == details["codec"].split()[0].split("/")[0]
    for table, expected in zip(udif.tables, details["blkx"]):
        kinds = {f"0x{run.kind:x}" for run in table.runs}
        assert kinds <= set(expected["chunk_types"]), f"{table.name}: {kinds}"


@pytest.mark.parametrize("image", params(IMAGES))
def test_every_checksum_is_right(image: CorpusImage) -> None:
    assert verify(open_image(image)) == []


@pytest.mark.skipif(SEVEN_ZIP is None, reason="7-Zip (7zz) is not installed")
@pytest.mark.parametrize("image", params(PLAIN))
def test_partitions_match_seven_zip(image: CorpusImage, tmp_path: Path) -> None:
    done = subprocess.run([SEVEN_ZIP, "x", "-tdmg", "-y", f"-o{tmp_path}", str(image.source)], capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stdout[-400:]
    extracted = sorted(os.listdir(tmp_path), key=lambda name: int(name.split(".")[0].split("_")[0]))
    udif = open_image(image)
    assert len(extracted) == len(udif.tables)
    for name, table in zip(extracted, udif.tables):
        ours = sha256_range(udif, table.first_sector * 512, table.sector_count * 512)
        assert sha256_of(tmp_path / name) == ours, f"{name} ({table.name}) differs from 7-Zip's"


# -- mounted ---------------------------------------------------------------------------------------------------


def partition_number(volume: dict[str, Any]) -> int:
    match = re.match(r"partition (\d+)", volume["name"])
    return int(match.group(1)) if match else 0


def partition_sha256(image: CorpusImage, number: int) -> dict[str, Any]:
    table = image.oracle["partition_tables"][0]["own_parser"]
    return next(p for p in table["partitions"] if p["number"] == number)


def volume_root(root: Path, volume: dict[str, Any]) -> Path:
    """Where a volume is in the mount: its ``N LABEL`` folder, or the root when it is the only one."""
    number = partition_number(volume)
    folders = [e for e in os.listdir(root) if e.split(" ")[0] == str(number) and not e.endswith(".img")]
    return root / folders[0] if number and folders else root


def volume_cases() -> list[Any]:
    cases = []
    for image in IMAGES:
        for index, volume in enumerate(image.oracle["volumes"]):
            cases.append(pytest.param(image, index, id=f"{image.rel}:{volume['name'].split(' (')[0]}"))
    return cases


def nfd(path: str) -> str:
    return unicodedata.normalize("NFD", path)


def is_read(volume: dict[str, Any]) -> bool:
    fs = volume["filesystem"]
    return fs.startswith("fat") or (fs in ("hfs+", "apfs") and reads(fs))


@pytest.mark.parametrize(("image", "index"), volume_cases())
def test_mounted_volume(image: CorpusImage, index: int, tmp_path: Path) -> None:
    """A volume imgfs reads is compared entry by entry; a partition it does not read is a raw ``N.img`` with
    the oracle's bytes; a whole-disk filesystem it does not read is refused in one line naming it."""
    assert_detected_as_udif(image)
    volume = image.oracle["volumes"][index]
    number = partition_number(volume)
    if not is_read(volume) and not number:
        line = mount_refusal(image.source, tmp_path / "mnt", env=ENV)
        assert volume["filesystem"].upper() in line.upper(), line
        return
    with mounted(image.source, tmp_path / "mnt", env=ENV) as root:
        if not is_read(volume):
            raw = root / f"{number}.img"
            assert raw.is_file(), f"the mount shows {sorted(os.listdir(root))}"
            assert sha256_of(raw) == partition_sha256(image, number)["sha256"]
            return
        where = volume_root(root, volume)
        entries = {path: entry for path, entry in snapshot(where).items()}
        expected = expected_entries(volume, FIELDS)
        if volume["filesystem"] == "hfs+":  # the HFS+ reader's own tests check its names, system entries, metadata
            system = tuple(e["path"] for e in volume["entries"] if e.get("system"))
            expected = {nfd(p): {k: v for k, v in e.items() if k in ("type", "size", "sha256")}
                        for p, e in expected.items() if not p.startswith(system)}
            entries = {nfd(p): e for p, e in entries.items() if nfd(p) in expected or not p.startswith("/.")}
        assert_matches(entries, expected, f"{image.rel} {volume['name']}")


@pytest.mark.parametrize("image", params(IMAGES))
def test_info_shows_the_udif_layer(image: CorpusImage) -> None:
    assert_detected_as_udif(image)
    layers = info_layers(image.source, env=ENV)
    udif = next(layer for layer in layers if layer["layer"] == "udif")
    assert udif["size"] == image.oracle["container_details"]["decoded_media"]["size"]
    assert len(udif["blkx"]) == len(image.oracle["container_details"]["blkx"])
