"""The real-world ISO corpus, mounted through FUSE and compared with each image's oracle.

The corpus is ``../shared/fixtures`` beside the project (or ``$IMGFS_CORPUS``); these tests skip when
it is absent. Every image ``iso/**/X`` has an oracle ``X.json`` written by independent readers (see
the corpus README). Its ``volumes`` say what each view of the image holds:

* ``rockridge``, ``joliet``, ``iso9660``: one namespace each. Each is mounted with
  ``-o namespace=...`` and compared entry by entry: paths, types, sizes, sha256 of the contents,
  symlink targets and mtimes; for Rock Ridge also permission bits, link counts and device numbers.
  The default mount must show the richest one (Rock Ridge, else Joliet, else plain ISO 9660).
* ``session N (sector S) ...``: multi-session discs. The mount must show one session; which one is
  read from ``imgfs info`` (the label) and the mount is compared with that session's oracle.
* ``udf``: imgfs does not read UDF yet. On a UDF bridge only the ISO namespaces are compared; a
  UDF-only disc, like the APFS and HFS+ images, must be refused with one clear line on stderr.

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

NAMESPACES = ("rockridge", "joliet", "iso9660")  # the oracle's ISO views, richest first
SESSION = re.compile(r"session (\d+) \(sector (\d+)\) (\S+)$")

# What is compared, where the oracle gives it. Every namespace has names, data and the directory
# record's date; only Rock Ridge has POSIX attributes (and its own mtime, from TF).
COMMON_FIELDS = ("type", "size", "sha256", "target", "mtime")
FIELDS = {"rockridge": COMMON_FIELDS + ("mode", "nlink", "rdev"), "joliet": COMMON_FIELDS,
          "iso9660": COMMON_FIELDS}


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
        """The oracle's volume for each ISO namespace of a single-session image, richest first."""
        volumes = {v["filesystem"]: v for v in self.oracle["volumes"] if v["name"] in NAMESPACES}
        return {ns: volumes[ns] for ns in NAMESPACES if ns in volumes}

    @property
    def sessions(self) -> list[dict[str, Any]]:
        """The ISO volume of each session of a multi-session image."""
        return [v for v in self.oracle["volumes"]
                if (m := SESSION.match(v["name"])) and m.group(3) in NAMESPACES]

    @property
    def refusal_word(self) -> Optional[str]:
        """For an image with no ISO view at all: the filesystem its refusal must name."""
        if self.namespaces or self.sessions:
            return None
        kind = self.oracle["volumes"][0]["filesystem"]
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
    return next(layer for layer in info_layers(image) if layer["layer"] == "iso9660")


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
    """Without ``-o namespace`` the mount shows Rock Ridge, else Joliet, else plain ISO 9660."""
    namespace = image.default_namespace
    with mounted(corpus_file(image), tmp_path / "mnt") as root:
        actual = snapshot(root)
    assert_matches(actual, expected_entries(image.namespaces[namespace], FIELDS[namespace]),
                   f"{image.rel} mounted without options (expected its {namespace} view)")


@pytest.mark.parametrize("image", params(SINGLE_SESSION))
def test_info_lists_the_oracle_namespaces(image: IsoImage, corpus_file) -> None:
    """``imgfs info`` finds the namespaces the oracle found (ISO 9660:1999 aside: no oracle has it)."""
    info = imgfs_info(corpus_file(image))
    offered = [ns for ns in info["namespaces"] if ns != "iso1999"]
    assert offered == list(image.namespaces), f"imgfs offers {info['namespaces']}"
    assert info["namespace"] == image.default_namespace


@pytest.mark.parametrize("image", params(SINGLE_SESSION))
def test_ls_recursive_lists_the_default_namespace(image: IsoImage, corpus_file) -> None:
    """``imgfs ls IMAGE -R`` (no FUSE) prints every path of the default namespace, once."""
    expected = {entry["path"] for entry in image.namespaces[image.default_namespace]["entries"]}
    assert_ls_recursive(corpus_file(image), expected)


@pytest.mark.parametrize("namespace", [None, "iso9660"], ids=["default", "iso9660"])
@pytest.mark.parametrize("image", params(MULTI_SESSION))
def test_multisession_mounts_one_session(image: IsoImage, namespace: Optional[str], corpus_file,
                                         tmp_path: Path) -> None:
    """A multi-session disc mounts and shows one of its sessions: the one whose label ``imgfs info`` gives.

    At present that is session 1 (the descriptors at sector 16), which is also what Linux shows
    through a loop device; the oracle notes that a drive would show the last. Every session of the
    corpus's discs is an empty root, so only the label tells them apart.
    """
    path = corpus_file(image)
    label = imgfs_info(path)["label"]
    session = next((v for v in image.sessions if v["label"] == label), None)
    assert session is not None, (f"imgfs reports label {label!r}, which no session has: "
                                 f"{[v['label'] for v in image.sessions]}")
    with mounted(path, tmp_path / "mnt", *_namespace_option(namespace)) as root:
        actual = snapshot(root)
    assert_matches(actual, expected_entries(session, COMMON_FIELDS), f"{image.rel} ({session['name']})")


@pytest.mark.parametrize("image", params(REFUSED))
def test_refused_with_one_clear_line(image: IsoImage, corpus_file, tmp_path: Path) -> None:
    """A disc without ISO 9660 (UDF-only, APFS, HFS+) is refused: one line naming what it is, no traceback."""
    word = str(image.refusal_word)
    line = mount_refusal(corpus_file(image), tmp_path / "mnt")
    assert word in line, f"the error does not name {word}: {line!r}"
