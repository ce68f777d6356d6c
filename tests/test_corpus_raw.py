"""The real-world raw images of the corpus (``raw/``), through the imgfs command and real FUSE mounts.

The corpus is ``../shared/fixtures`` beside the project (or ``$IMGFS_CORPUS``); these tests skip when
its ``raw/`` folder is absent. Each image ``raw/**/X`` has an oracle ``X.json`` (see the corpus README):

* ``partition_tables``: the table as the oracle's own parser read it (for a truncated GPT dump, a list of
  the headers it found). ``imgfs info --json`` must list the same partitions, field by field in the
  scheme's own units, and the same disk id / GUID. Where the partitions' data is in the image, the
  mount shows each as a raw ``N.img`` file (the oracle found no filesystem in any of them), whose size
  and sha256 must be the oracle's. A table whose partitions are all beyond the end of the image (a
  dump of the table alone) is refused by mount, ``ls`` and ``cat`` with one line.
* ``volumes``: a bare filesystem. ext2 and FAT12 are mounted and compared entry by entry, as
  ``test_corpus.py`` does for ISO 9660; HFS+ and APFS are compared in ``test_hfsplus.py`` and
  ``test_corpus_apfs.py``; a filesystem imgfs does not read must be refused with one line naming it.

Times: FAT stores local time without a zone, and its oracle gives it so (no ``Z``). Every imgfs process
here runs with ``TZ=UTC``, so that imgfs turns those fields into seconds as UTC, and the oracle's
zone-less times are read as UTC too (``corpuslib.mtime_seconds``): the comparison is the same on every
machine, whatever its time zone and DST. Times with a ``Z`` (ext) do not depend on the zone at all.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
from pathlib import Path
from typing import Any, Optional

import pytest
from conftest import IMGFS, run_imgfs, sha256_of
from corpuslib import (
    COMPARED_ELSEWHERE,
    REFUSED_WORDS,
    CorpusImage,
    assert_ls_recursive,
    assert_matches,
    corpus_file_fixture,
    expected_entries,
    folder_or_skip,
    info_layers,
    load_images,
    mount_refusal,
    mounted,
    params,
    refusal_line,
    snapshot,
)

folder_or_skip("raw")

UTC = {**os.environ, "TZ": "UTC"}  # the environment of every imgfs process that shows times
FIELDS = ("type", "size", "sha256", "target", "mode", "nlink", "mtime")
FS_LAYERS = {"ext2": "ext", "ext3": "ext", "ext4": "ext", "fat12": "fat", "fat16": "fat", "fat32": "fat",
             "exfat": "exfat"}  # the oracle's filesystem -> the layer imgfs reports

# Entries that describe the disk's layout rather than hold data: the APM entry for the map itself and
# free space, GPT's protective MBR entry, MBR extended partitions (containers of the logical ones).
NOT_DATA = {"Apple_partition_map", "Apple_Free", "0xee", "0x05", "0x0f", "0x85"}

corpus_file = corpus_file_fixture()


# -- the oracle's partition table -----------------------------------------------------------------------


class OracleTable:
    """The first partition table of an image's oracle, as its own parser read it."""

    def __init__(self, image: CorpusImage) -> None:
        table = image.oracle["partition_tables"][0]
        self.image = image
        self.scheme = table["scheme"].split()[0]  # "mbr", "gpt", "apm" ("gpt (truncated dump)" too)
        own = table["own_parser"]
        self.dump = isinstance(own, list)  # a GPT table dumped alone: the headers found in it
        self.header: dict[str, Any] = (next(h for h in own if h["header_crc_ok"] and h["entries_crc_ok"])
                                       if self.dump else own)
        # bytes per unit of the entries' start and size: APM's entry_unit (= its block size), else sectors
        self.unit: int = self.header.get("entry_unit", self.header.get("sector_size", 512))

    @property
    def partitions(self) -> list[dict[str, Any]]:
        return self.header["partitions"]

    def span(self, part: dict[str, Any]) -> tuple[int, int]:
        """A partition's first unit and its length in units (GPT's LastLBA is inclusive)."""
        if self.scheme == "mbr":
            return part["start_lba"], part["sectors"]
        if self.scheme == "gpt":
            return part["first_lba"], part["last_lba"] - part["first_lba"] + 1
        return part["start_block"], part["blocks"]

    def type_id(self, part: dict[str, Any]) -> str:
        return part["type_guid"] if self.scheme == "gpt" else part["type"]

    def present(self, part: dict[str, Any]) -> int:
        """How many of the partition's bytes are in the image: none for a dump, else up to its end."""
        first, count = self.span(part)
        return 0 if self.dump else max(0, min(count * self.unit, self.image.size - first * self.unit))

    def with_data(self) -> list[dict[str, Any]]:
        """The partitions whose data is (at least partly) in the image."""
        return [p for p in self.partitions if self.present(p) and self.type_id(p) not in NOT_DATA]

    def expected_table(self) -> dict[str, Any]:
        """The table-wide fields of imgfs's layer that the oracle gives."""
        h = self.header
        if self.scheme == "mbr":
            return {"sector_size": self.unit, "disk_id": h["disk_id"]}
        if self.scheme == "gpt":
            return {"sector_size": self.unit, "disk_guid": h["disk_guid"],
                    "header_lba": h.get("header_lba", h.get("my_lba")),
                    "backup_lba": h.get("backup_lba", h.get("alternate_lba")),
                    "first_usable": h["first_usable"], "last_usable": h["last_usable"]}
        return {"sector_size": h["block_size"], "block_size": h["block_size"]}

    def expected_partitions(self) -> list[dict[str, Any]]:
        """Each partition imgfs must list, with the fields the oracle gives, in imgfs's terms."""
        found = []
        for part in self.partitions:
            first, count = self.span(part)
            size, present = count * self.unit, self.present(part)
            want: dict[str, Any] = {"number": part["number"], "type_id": self.type_id(part),
                                    "name": part.get("name", ""), "size": size,
                                    "available": None if present == size else present}
            if not self.dump:  # a dump's partitions are nowhere in the image: no byte offset to check
                want["start"] = first * self.unit
            if self.scheme == "mbr":
                want.update(start_lba=first, sectors=count, bootable=part["bootable"])
            elif self.scheme == "gpt":
                want.update(first_lba=part["first_lba"], last_lba=part["last_lba"], guid=part["guid"],
                            attributes=part["attributes"])
            else:
                want.update(type=part["type"], start_block=first, blocks=count, status=part["status"])
            found.append(want)
        return found


def _shown(part: dict[str, Any], fields: dict[str, Any]) -> dict[str, Any]:
    """The fields of one of imgfs's partitions that ``fields`` names; ``name`` and ``available`` are
    left out of imgfs's JSON when empty / when the partition is whole."""
    defaults = {"name": "", "available": None}
    return {key: part.get(key, defaults.get(key)) for key in fields}


def _differences(expected: dict[str, Any], actual: dict[str, Any], where: str) -> list[str]:
    return [f"{where}: {key}: expected {value!r}, got {actual.get(key)!r}"
            for key, value in expected.items() if actual.get(key) != value]


# -- the images ---------------------------------------------------------------------------------------------

IMAGES = load_images("raw")
TABLES = [i for i in IMAGES if i.oracle.get("partition_tables")]
TABLE_ONLY = [i for i in TABLES if not OracleTable(i).with_data()]
RAW_PARTITIONS = [i for i in TABLES if OracleTable(i).with_data() and not i.oracle["volumes"]]
FILESYSTEMS = [i for i in IMAGES if not i.oracle.get("partition_tables") and i.oracle["volumes"]
               and i.oracle["volumes"][0]["filesystem"] in FS_LAYERS]
REFUSED = [i for i in IMAGES if not i.oracle.get("partition_tables") and i.oracle["volumes"]
           and i.oracle["volumes"][0]["filesystem"] in REFUSED_WORDS]
ELSEWHERE = [i for i in IMAGES if not i.oracle.get("partition_tables") and i.oracle["volumes"]
             and i.oracle["volumes"][0]["filesystem"] in COMPARED_ELSEWHERE]


def _with_commands(images: list[CorpusImage], commands: tuple[str, ...]) -> list[Any]:
    return [pytest.param(image, command, id=f"{image.rel}:{command}") for image in images for command in commands]


def test_every_raw_image_is_checked() -> None:
    """A new image in ``raw/`` that none of the tests below would look at is a gap: name it."""
    checked = {i.rel for i in TABLES + FILESYSTEMS + REFUSED + ELSEWHERE}
    unchecked = [i.rel for i in IMAGES if i.rel not in checked]
    partitioned_filesystems = [i.rel for i in TABLES if i.oracle["volumes"]]
    assert not unchecked, f"no test checks these images: {unchecked}"
    assert not partitioned_filesystems, f"filesystems inside partitions are not compared yet: {partitioned_filesystems}"


# -- partition tables ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("image", params(TABLES))
def test_partition_table_matches_oracle(image: CorpusImage, corpus_file) -> None:
    """``imgfs info --json`` lists the oracle's partitions: numbers, types, start and size in the scheme's
    units and in bytes, names, GPT partition GUIDs and attributes, the disk id or GUID, and how much of
    each partition the image holds (``available``, given only for a clipped partition)."""
    oracle = OracleTable(image)
    layers = info_layers(corpus_file(image))
    assert [layer["layer"] for layer in layers[:2]] == ["file", oracle.scheme], f"imgfs found {layers[:2]}"
    table = layers[1]
    expected = oracle.expected_partitions()
    problems = _differences(oracle.expected_table(), table, "table")
    listed = [p["number"] for p in table["partitions"]]
    if listed != [p["number"] for p in expected]:
        problems.append(f"partitions: expected {[p['number'] for p in expected]}, got {listed}")
    shown = {p["number"]: p for p in table["partitions"]}
    for want in expected:
        if want["number"] in shown:
            problems += _differences(want, _shown(shown[want["number"]], want), f"partition {want['number']}")
    assert not problems, f"{image.rel}: imgfs info differs from the oracle:\n  " + "\n  ".join(problems)


@pytest.mark.parametrize(("image", "command"), _with_commands(TABLE_ONLY, ("mount", "ls", "cat")))
def test_table_without_data_is_refused(image: CorpusImage, command: str, corpus_file, tmp_path: Path) -> None:
    """A table whose partitions all lie beyond the end of the image: nothing to show, so mount, ``ls`` and
    ``cat`` refuse it with one line saying that no partition has data (``imgfs info`` lists it: above)."""
    path = corpus_file(image)
    if command == "mount":
        line = mount_refusal(path, tmp_path / "mnt")
    else:
        args = ("ls", str(path)) if command == "ls" else ("cat", str(path), "/1.img")
        line = refusal_line(run_imgfs(*args), f"imgfs {command} accepted a table without any partition data")
    scheme = OracleTable(image).scheme
    assert re.search(r"\bno(ne)?\b.*\bdata\b", line), f"the error does not say that no partition has data: {line!r}"
    assert scheme in line.lower(), f"the error does not name the {scheme} table: {line!r}"


def _raw_files(image: CorpusImage) -> dict[str, dict[str, Any]]:
    """``N.img`` -> what the oracle says of partition N: bytes in the image, and sha256 where it has one."""
    oracle = OracleTable(image)
    return {f"{p['number']}.img": {"size": oracle.present(p), "extracted_size": p.get("extracted_size"),
                                   "sha256": p.get("sha256")} for p in oracle.with_data()}


@pytest.mark.parametrize("image", params(RAW_PARTITIONS))
def test_partitions_with_data_are_raw_files_in_info(image: CorpusImage, corpus_file) -> None:
    """The oracle found no filesystem in any partition: each partition with data is one raw layer."""
    layers = info_layers(corpus_file(image))[2:]
    shown = [(layer["layer"], layer.get("partition"), layer.get("shown_as")) for layer in layers]
    expected = [("raw", int(name.split(".")[0]), name) for name in _raw_files(image)]
    assert shown == expected, f"imgfs info shows {layers}"


def _check_raw_file(name: str, size: int, sha256: str, want: dict[str, Any]) -> list[str]:
    """A partition's file against the oracle: its size (also the size the oracle's extractor got, where
    it gives one) and its sha256 where the oracle has one."""
    problems = [f"{name}: size: expected {expected}, got {size}"
                for expected in (want["size"], want["extracted_size"]) if expected is not None and size != expected]
    if want["sha256"] and sha256 != want["sha256"]:
        problems.append(f"{name}: sha256: expected {want['sha256']}, got {sha256}")
    return problems


@pytest.mark.parametrize("image", params(RAW_PARTITIONS))
def test_partitions_with_data_mounted(image: CorpusImage, corpus_file, tmp_path: Path) -> None:
    """Mounted, the disk shows exactly one ``N.img`` per partition with data, holding its bytes."""
    expected = _raw_files(image)
    problems = []
    with mounted(corpus_file(image), tmp_path / "mnt") as root:
        names = sorted(os.listdir(root))
        assert names == sorted(expected), f"the mount shows {names}"
        for name, want in expected.items():
            problems += _check_raw_file(name, os.stat(root / name).st_size, sha256_of(root / name), want)
    assert not problems, f"{image.rel}: the partitions' files differ from the oracle:\n  " + "\n  ".join(problems)


@pytest.mark.parametrize("image", params(RAW_PARTITIONS))
def test_partitions_with_data_through_ls_and_cat(image: CorpusImage, corpus_file) -> None:
    """``imgfs ls`` lists the same files, and ``imgfs cat`` prints each partition's bytes (no FUSE)."""
    path, expected = corpus_file(image), _raw_files(image)
    done = run_imgfs("ls", str(path))
    assert done.returncode == 0, f"imgfs ls failed with exit {done.returncode}: {done.stderr.strip()}"
    assert sorted(done.stdout.splitlines()) == sorted(expected), f"imgfs ls lists {done.stdout.split()}"
    problems = []
    for name, want in expected.items():
        cat = subprocess.run([IMGFS, "cat", str(path), f"/{name}"], capture_output=True, timeout=120)
        assert cat.returncode == 0, f"imgfs cat {name} failed with exit {cat.returncode}: {cat.stderr!r}"
        problems += _check_raw_file(name, len(cat.stdout), hashlib.sha256(cat.stdout).hexdigest(), want)
    assert not problems, f"{image.rel}: imgfs cat differs from the oracle:\n  " + "\n  ".join(problems)


# -- bare filesystems ---------------------------------------------------------------------------------------


def _volume(image: CorpusImage) -> dict[str, Any]:
    return image.oracle["volumes"][0]


@pytest.mark.parametrize("image", params(FILESYSTEMS))
def test_filesystem_matches_oracle(image: CorpusImage, corpus_file, tmp_path: Path) -> None:
    """Mounted (with ``TZ=UTC``), the filesystem shows exactly the oracle's entries: paths, types, sizes,
    contents, symlink targets, permission bits, link counts and mtimes."""
    with mounted(corpus_file(image), tmp_path / "mnt", env=UTC) as root:
        actual = snapshot(root)
    assert_matches(actual, expected_entries(_volume(image), FIELDS), f"{image.rel} mounted")


@pytest.mark.parametrize("image", params(FILESYSTEMS))
def test_filesystem_info_gives_kind_and_label(image: CorpusImage, corpus_file) -> None:
    """``imgfs info --json``: the file, then the filesystem alone, with the oracle's kind, label and serial."""
    volume = _volume(image)
    layers = info_layers(corpus_file(image), env=UTC)
    assert [layer["layer"] for layer in layers] == ["file", FS_LAYERS[volume["filesystem"]]], f"imgfs: {layers}"
    fs = layers[1]
    kinds = {str(fs.get("filesystem", "")).lower(), str(fs.get("type", "")).lower()}
    assert volume["filesystem"] in kinds, f"imgfs calls it {fs.get('filesystem')!r} / {fs.get('type')!r}"
    assert fs.get("label") == volume["label"], f"label: expected {volume['label']!r}, got {fs.get('label')!r}"
    serial: Optional[str] = fs.get("serial")
    if "volume_serial" in volume and serial is not None:
        assert int(serial.replace("-", ""), 16) == int(volume["volume_serial"]), \
            f"serial: expected {int(volume['volume_serial']):08X}, got {serial}"


@pytest.mark.parametrize("image", params(FILESYSTEMS))
def test_filesystem_ls_recursive(image: CorpusImage, corpus_file) -> None:
    """``imgfs ls IMAGE -R`` (no FUSE) prints every path of the oracle's volume, once."""
    assert_ls_recursive(corpus_file(image), {entry["path"] for entry in _volume(image)["entries"]}, env=UTC)


@pytest.mark.parametrize(("image", "command"), _with_commands(REFUSED, ("mount", "ls")))
def test_unsupported_filesystem_is_refused(image: CorpusImage, command: str, corpus_file, tmp_path: Path) -> None:
    """A filesystem imgfs does not read is refused with one line that names it, no traceback."""
    path, word = corpus_file(image), REFUSED_WORDS[_volume(image)["filesystem"]]
    if command == "mount":
        line = mount_refusal(path, tmp_path / "mnt")
    else:
        line = refusal_line(run_imgfs("ls", str(path)), "imgfs ls listed an image it cannot read")
    assert word in line, f"the error does not name {word}: {line!r}"
