"""The real-world ISO corpus, mounted through FUSE and compared with each image's oracle.

The corpus is ``../shared/fixtures`` beside the project (or ``$IMGFS_CORPUS``); these tests skip when
it is absent. Every image ``iso/**/X`` has an oracle ``X.json`` written by independent readers (see
the corpus README). Its ``volumes`` say what each view of the image holds:

* ``rockridge``, ``udf``, ``joliet``, ``iso9660``: one namespace each (UDF counts as one: on a bridge
  disc it shows the same files). Each is mounted with ``-o namespace=...`` and compared entry by
  entry: paths, types, sizes, sha256 of the contents, symlink targets and mtimes; for Rock Ridge and
  UDF also permission bits and link counts (and device numbers for Rock Ridge). The default mount
  must show the richest one: Rock Ridge, else UDF, else Joliet, else plain ISO 9660.
* ``session N (sector S) ...``: multi-session discs. The mount must show one session; which one is
  read from ``imgfs info`` (the label) and the mount is compared with that session's oracle, by
  default and with ``-o namespace=`` each of the session's filesystems.
* A disc with neither ISO 9660 nor UDF, of a filesystem imgfs does not read, must be refused with one
  clear line on stderr. The HFS+ image is compared with its oracle in ``test_hfsplus.py``, the APFS
  image in ``test_corpus_apfs.py``.

Compressed images (.xz, .gz, .bz2, .Z) are decompressed once per session into a temporary folder;
nothing from the corpus is ever written into the project.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import pytest
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
    snapshot,
)

folder_or_skip("iso")

NAMESPACES = ("rockridge", "udf", "joliet", "iso9660")  # the oracle's views of a disc, richest first
SESSION = re.compile(r"session (\d+) \(sector (\d+)\) (\S+)$")

# What is compared, where the oracle gives it. Every namespace has names, data and the directory
# record's date; only Rock Ridge (PX, TF) and UDF (its file entries) have POSIX attributes.
COMMON_FIELDS = ("type", "size", "sha256", "target", "mtime")
FIELDS = {"rockridge": COMMON_FIELDS + ("mode", "nlink", "rdev"), "udf": COMMON_FIELDS + ("mode", "nlink"),
          "joliet": COMMON_FIELDS, "iso9660": COMMON_FIELDS}


def _keep_both_clashing_entries(expected: dict[str, dict[str, Any]]) -> None:
    """The plain root holds a directory ``12345678`` and a file ``12345678.;1``, which clean to the same
    name. The oracle's readers kept only the file (pycdlib: "duplicate name"); imgfs drops nothing and
    shows the file under its identifier without the version, ``12345678.``, beside the empty directory."""
    expected["/12345678."] = expected.pop("/12345678")
    expected["/12345678"] = {"type": "dir"}


# Where imgfs deliberately shows more than the oracle: (image, namespace) -> how the expectation changes.
DEVIATIONS = {
    ("libarchive/test_read_format_iso_joliet_long.iso", "iso9660"): _keep_both_clashing_entries,
}


# -- the corpus ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class IsoImage(CorpusImage):
    """An image of ``iso/``, with the ISO views its oracle found."""

    @property
    def namespaces(self) -> dict[str, dict[str, Any]]:
        """The oracle's volume for each namespace (ISO or UDF) of a single-session image, richest first."""
        volumes = {v["filesystem"]: v for v in self.oracle["volumes"] if v["name"] in NAMESPACES}
        return {ns: volumes[ns] for ns in NAMESPACES if ns in volumes}

    @property
    def sessions(self) -> list[dict[str, Any]]:
        """The ISO and UDF volumes of each session of a multi-session image."""
        return [v for v in self.oracle["volumes"]
                if (m := SESSION.match(v["name"])) and m.group(3) in NAMESPACES]

    @property
    def refusal_word(self) -> Optional[str]:
        """For an image with neither an ISO nor a UDF view: the filesystem its refusal must name."""
        if self.namespaces or self.sessions:
            return None
        kind = self.oracle["volumes"][0]["filesystem"]
        if kind in COMPARED_ELSEWHERE:
            return None
        return REFUSED_WORDS.get(kind, kind.upper())

    @property
    def default_namespace(self) -> str:
        return next(iter(self.namespaces))


CORPUS_IMAGES = [IsoImage(i.folder, i.rel, i.oracle) for i in load_images("iso")]
SINGLE_SESSION = [i for i in CORPUS_IMAGES if i.namespaces]
MULTI_SESSION = [i for i in CORPUS_IMAGES if i.sessions]
REFUSED = [i for i in CORPUS_IMAGES if i.refusal_word]

corpus_file = corpus_file_fixture()


def _namespace_params() -> list[Any]:
    return [pytest.param(image, namespace, id=f"{image.rel}:{namespace}")
            for image in SINGLE_SESSION for namespace in image.namespaces]


def _namespace_option(namespace: Optional[str]) -> tuple[str, ...]:
    return (f"namespace={namespace}",) if namespace else ()


def imgfs_info(image: Path) -> dict[str, Any]:
    """The layer of ``imgfs info`` that describes the disc's filesystem (ISO 9660 or UDF): it lists the namespaces."""
    return next(layer for layer in info_layers(image) if "namespaces" in layer)


# -- the tests -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("image", "namespace"), _namespace_params())
def test_namespace_matches_oracle(image: IsoImage, namespace: str, corpus_file, tmp_path: Path) -> None:
    """Each ISO namespace the oracle knows, mounted with ``-o namespace=``, shows exactly that volume."""
    with mounted(corpus_file(image), tmp_path / "mnt", *_namespace_option(namespace)) as root:
        actual = snapshot(root)
    expected = expected_entries(image.namespaces[namespace], FIELDS[namespace])
    if (image.rel, namespace) in DEVIATIONS:
        DEVIATIONS[image.rel, namespace](expected)
    assert_matches(actual, expected, f"{image.rel} mounted with namespace={namespace}")


@pytest.mark.parametrize("image", params(SINGLE_SESSION))
def test_default_mount_is_richest_namespace(image: IsoImage, corpus_file, tmp_path: Path) -> None:
    """Without ``-o namespace`` the mount shows Rock Ridge, else UDF, else Joliet, else plain ISO 9660."""
    namespace = image.default_namespace
    with mounted(corpus_file(image), tmp_path / "mnt") as root:
        actual = snapshot(root)
    assert_matches(actual, expected_entries(image.namespaces[namespace], FIELDS[namespace]),
                   f"{image.rel} mounted without options (expected its {namespace} view)")


@pytest.mark.parametrize("image", params(SINGLE_SESSION))
def test_info_lists_the_oracle_namespaces(image: IsoImage, corpus_file) -> None:
    """``imgfs info`` finds the namespaces the oracle found, UDF among them (ISO 9660:1999 aside: no oracle has
    it)."""
    info = imgfs_info(corpus_file(image))
    offered = [ns for ns in info["namespaces"] if ns != "iso1999"]
    assert offered == list(image.namespaces), f"imgfs offers {info['namespaces']}"
    assert info["namespace"] == image.default_namespace


@pytest.mark.parametrize("image", params(SINGLE_SESSION))
def test_ls_recursive_lists_the_default_namespace(image: IsoImage, corpus_file) -> None:
    """``imgfs ls IMAGE -R`` (no FUSE) prints every path of the default namespace, once."""
    expected = {entry["path"] for entry in image.namespaces[image.default_namespace]["entries"]}
    assert_ls_recursive(corpus_file(image), expected)


def _multisession_params() -> list[Any]:
    """Each multi-session image by default and with ``-o namespace=`` each filesystem its sessions hold."""
    found = []
    for image in MULTI_SESSION:
        kinds = [ns for ns in NAMESPACES if any(SESSION.match(v["name"]).group(3) == ns for v in image.sessions)]
        found += [pytest.param(image, ns, id=f"{image.rel}:{ns or 'default'}") for ns in [None, *kinds]]
    return found


@pytest.mark.parametrize(("image", "namespace"), _multisession_params())
def test_multisession_mounts_one_session(image: IsoImage, namespace: Optional[str], corpus_file,
                                         tmp_path: Path) -> None:
    """A multi-session disc mounts and shows one of its sessions: the one whose label ``imgfs info`` gives.

    A plain image file (no sheet saying where the sessions start) shows session 1 (the descriptors at
    sector 16, the UDF anchor at sector 256), which is also what Linux shows through a loop device;
    the oracle notes that a drive would show the last. Every session of the corpus's discs is an empty
    root, so only the label tells them apart. Without ``-o namespace`` the session's richest
    filesystem is shown (UDF over plain ISO 9660).
    """
    path = corpus_file(image)
    info = imgfs_info(path)
    label = info["label"]
    shown = namespace or info["namespace"]
    session = next((v for v in image.sessions if v["label"] == label and SESSION.match(v["name"]).group(3) == shown),
                   None)
    assert session is not None, (f"imgfs reports label {label!r} ({shown}), which no session has: "
                                 f"{[v['name'] + ': ' + v['label'] for v in image.sessions]}")
    if namespace is None:
        richest = next(ns for ns in NAMESPACES if any(v["label"] == label and SESSION.match(v["name"]).group(3) == ns
                                                      for v in image.sessions))
        assert shown == richest, f"the default mount shows {shown}, not the richest ({richest})"
    with mounted(path, tmp_path / "mnt", *_namespace_option(namespace)) as root:
        actual = snapshot(root)
    assert_matches(actual, expected_entries(session, COMMON_FIELDS), f"{image.rel} ({session['name']})")


@pytest.mark.parametrize("image", params(REFUSED))
def test_refused_with_one_clear_line(image: IsoImage, corpus_file, tmp_path: Path) -> None:
    """A disc with neither ISO 9660 nor UDF, nor a filesystem imgfs reads, is refused: one line naming what it
    is, no traceback."""
    word = str(image.refusal_word)
    line = mount_refusal(corpus_file(image), tmp_path / "mnt")
    assert word in line, f"the error does not name {word}: {line!r}"
