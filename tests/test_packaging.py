"""The package as an installer sees it: PEP 621/639 metadata, one version, the licence file."""

from __future__ import annotations

import importlib.metadata
import re
from pathlib import Path

from conftest import run_imgfs

import imgfs

PROJECT = Path(__file__).resolve().parents[1]


def test_metadata():
    meta = importlib.metadata.metadata("imgfs")
    assert meta["Version"] == imgfs.__version__
    assert meta["License-Expression"] == "MIT" and meta.get_all("License-File") == ["LICENSE"]
    assert "\n" not in meta["Summary"] and all(kind in meta["Summary"] for kind in ("ISO 9660", "UDF", "DMG", "ext"))
    classifiers = meta.get_all("Classifier")
    assert "Topic :: System :: Filesystems" in classifiers and "Operating System :: POSIX :: Linux" in classifiers
    assert {url.split(",")[0] for url in meta.get_all("Project-URL")} >= {"Homepage", "Source", "Issues"}
    assert "fuse" in meta["Keywords"].split(",")


def test_one_version_source():
    pyproject = (PROJECT / "pyproject.toml").read_text()
    project = pyproject.split("\n[project]\n")[1].split("\n[")[0]  # the [project] table
    assert not re.search(r"^version\s*=", project, re.M) and re.search(r'^dynamic = \["version"\]', project, re.M)
    assert 'version = { attr = "imgfs.__version__" }' in pyproject.split("[tool.setuptools.dynamic]")[1]
    assert run_imgfs("--version", check=True).stdout == f"imgfs {imgfs.__version__}\n"


def test_the_licence_file_is_the_mit_licence():
    text = (PROJECT / "LICENSE").read_text()
    assert text.startswith("MIT License\n") and "Permission is hereby granted, free of charge" in text
