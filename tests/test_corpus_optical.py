"""The real-world optical images of the corpus (``bincue/``, ``nrg/``, ``mds/``), through real FUSE mounts.

Each image ``X`` has an oracle ``X.json`` (see the corpus README). What is compared:

* ``track N <namespace>`` / ``disc <namespace>`` volumes: the filesystem of the disc. The default mount
  shows the richest namespace at its root; ``-o namespace=...`` shows each other one. Paths, types,
  sizes, sha256 of the contents and mtimes (Rock Ridge also modes and link counts).
* audio volumes (``pcm``): ``Track NN.wav`` at the root is a 44-byte RIFF header for 44.1 kHz 16-bit
  stereo followed by the track's PCM from its INDEX 01 to the next track's INDEX 01: the oracle's
  ``pcm`` size and sha256.
* raw track volumes (``raw``): with ``-o rawviews``, ``.imgfs/tracks/Track NN.bin`` holds the track's
  stored sectors, the oracle's ``raw`` size and sha256; ``.imgfs/disc.iso`` is the disc's user data at
  absolute addresses, the oracle's ``disc_userdata_image``.
* A CUE's image is its ``.bin`` (the oracle's key): mounting the ``.bin`` uses the sheet beside it, and
  mounting the ``.cue`` gives the same tree.
* An Alcohol descriptor whose ``.mdf`` is not in the corpus is refused with one line naming the file.
"""

from __future__ import annotations

import hashlib
import json
import re
import struct
from pathlib import Path
from typing import Any

import pytest
from conftest import run_imgfs, sha256_of
from corpuslib import (
    CorpusImage,
    assert_matches,
    expected_entries,
    folder_or_skip,
    load_images,
    mount_refusal,
    mounted,
    params,
    snapshot,
)

for _folder in ("bincue", "nrg", "mds"):
    folder_or_skip(_folder)

NAMESPACES = ("rockridge", "udf", "joliet", "iso9660")  # richest first, as imgfs picks them
COMMON = ("type", "size", "sha256", "target", "mtime")
FIELDS = {"rockridge": COMMON + ("mode", "nlink"), "joliet": COMMON, "iso9660": COMMON, "udf": COMMON}
VOLUME = re.compile(r"^(?:track (\d+)|disc)(?: (\S+))?$")

IMAGES = [image for folder in ("bincue", "nrg", "mds") for image in load_images(folder)]


def _filesystems(image: CorpusImage) -> dict[str, dict[str, Any]]:
    """namespace -> the oracle's volume of the disc's filesystem."""
    found = {}
    for volume in image.oracle["volumes"]:
        match = VOLUME.match(volume["name"])
        if match and volume["filesystem"] in FIELDS:
            found[volume["filesystem"]] = volume
    return found


def _audio(image: CorpusImage) -> list[tuple[int, dict[str, Any]]]:
    return [(int(VOLUME.match(v["name"]).group(1)), v["pcm"]) for v in image.oracle["volumes"] if "pcm" in v]


def _raw_tracks(image: CorpusImage) -> list[tuple[int, dict[str, Any]]]:
    return [(int(VOLUME.match(v["name"]).group(1)), v["raw"]) for v in image.oracle["volumes"] if "raw" in v]


WITH_DATA = [i for i in IMAGES if _filesystems(i) or _audio(i)]
WITHOUT_DATA = [i for i in IMAGES if not (_filesystems(i) or _audio(i) or _raw_tracks(i))]


@pytest.mark.parametrize("image", params(WITH_DATA))
def test_default_mount_matches_the_oracle(image: CorpusImage, tmp_path: Path) -> None:
    filesystems = _filesystems(image)
    audio = _audio(image)
    with mounted(image.source, tmp_path / "mnt") as root:
        actual = snapshot(root)
        wavs = {f"/Track {n:02d}.wav" for n, _ in audio}
        files = {p: e for p, e in actual.items() if p not in wavs}
        if filesystems:
            namespace = next(ns for ns in NAMESPACES if ns in filesystems)
            assert_matches(files, expected_entries(filesystems[namespace], FIELDS[namespace]),
                           f"{image.rel} (default mount, {namespace})")
        else:
            assert files == {}, f"an all-audio disc shows only WAV files, got {sorted(files)}"
        for number, pcm in audio:
            wav = root / f"Track {number:02d}.wav"
            data = wav.read_bytes()
            header = struct.unpack("<4sI4s4sIHHIIHH4sI", data[:44])
            assert header == (b"RIFF", 36 + pcm["size"], b"WAVE", b"fmt ", 16, 1, 2, 44100, 176400, 4, 16,
                              b"data", pcm["size"]), f"{wav.name}: RIFF header"
            assert len(data) - 44 == pcm["size"], f"{wav.name}: PCM size"
            assert hashlib.sha256(data[44:]).hexdigest() == pcm["sha256"], f"{wav.name}: PCM bytes"


def _other_namespaces() -> list[Any]:
    return [pytest.param(image, ns, id=f"{image.rel}:{ns}") for image in WITH_DATA
            for ns in _filesystems(image) if ns != next(n for n in NAMESPACES if n in _filesystems(image))]


@pytest.mark.parametrize(("image", "namespace"), _other_namespaces())
def test_each_namespace_matches_the_oracle(image: CorpusImage, namespace: str, tmp_path: Path) -> None:
    with mounted(image.source, tmp_path / "mnt", f"namespace={namespace}") as root:
        actual = {p: e for p, e in snapshot(root).items() if not p.startswith("/Track ")}
    assert_matches(actual, expected_entries(_filesystems(image)[namespace], FIELDS[namespace]),
                   f"{image.rel} ({namespace})")


@pytest.mark.parametrize("image", params(i for i in WITH_DATA if i.folder == "bincue"))
def test_the_cue_and_its_bin_mount_the_same(image: CorpusImage, tmp_path: Path) -> None:
    sheet = image.source.with_suffix(".cue")
    with mounted(image.source, tmp_path / "a") as by_bin, mounted(sheet, tmp_path / "b") as by_cue:
        assert snapshot(by_bin) == snapshot(by_cue)


@pytest.mark.parametrize("image", params(i for i in IMAGES if _raw_tracks(i) or "disc_userdata_image" in i.oracle))
def test_raw_views_match_the_oracle(image: CorpusImage, tmp_path: Path) -> None:
    with mounted(image.source, tmp_path / "mnt", "rawviews") as root:
        for number, raw in _raw_tracks(image):
            track = root / ".imgfs" / "tracks" / f"Track {number:02d}.bin"
            assert track.stat().st_size == raw["size"], track.name
            assert sha256_of(track) == raw["sha256"], track.name
        disc = image.oracle.get("disc_userdata_image")
        if disc:
            # The oracle's image of videocd.nrg is 1,727 sectors, one more than the disc's lead-out (1,726,
            # as cd-info and the oracle's own track table say), and that sector is zeros: compare with
            # the disc padded by at most one sector of zeros.
            data = (root / ".imgfs" / "disc.iso").read_bytes()
            assert 0 <= disc["size"] - len(data) <= 2048, f"disc.iso is {len(data)} bytes"
            data += bytes(disc["size"] - len(data))
            assert hashlib.sha256(data).hexdigest() == disc["sha256"]
        assert (root / ".imgfs" / "info.json").stat().st_size > 0
    with mounted(image.source, tmp_path / "plain") as root:
        assert not (root / ".imgfs").exists(), "raw views only with -o rawviews"


def _track_table(image: CorpusImage) -> list[tuple[int, int]]:
    """(track, LSN) as cd-info reported them."""
    return [(t["track"], t["lsn"]) for t in image.oracle.get("cd_info", {}).get("tracks", []) if t["track"] < 100]


@pytest.mark.parametrize("image", params(i for i in IMAGES if _track_table(i)))
def test_info_lists_the_tracks_cd_info_found(image: CorpusImage) -> None:
    done = run_imgfs("info", "--json", str(image.source), check=True)
    disc = next(layer for layer in json.loads(done.stdout)["layers"] if "tracks" in layer)
    assert [(t["track"], t["start"]) for t in disc["tracks"]] == _track_table(image)
    leadout = next(t["lsn"] for t in image.oracle["cd_info"]["tracks"] if t["track"] == 170)
    assert disc["leadout"] == leadout


@pytest.mark.parametrize("image", params(WITHOUT_DATA))
def test_a_descriptor_without_its_data_is_refused_naming_the_file(image: CorpusImage, tmp_path: Path) -> None:
    line = mount_refusal(image.source, tmp_path / "mnt")
    data = image.source.with_suffix(".mdf").name
    assert data in line, line
    assert "Traceback" not in line
