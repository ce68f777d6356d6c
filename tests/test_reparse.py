"""Listings dropped and parsed again show the same tree, for every format in the real-world corpus.

The tree holds a bounded number of parsed entries (``filesystems.base.RESIDENT_ENTRIES``) and parses a
directory again when it is needed after its listing was dropped; the FUSE adapter names files by their place
in that listing. Both need every reader's ``_load_children`` to give the same entries in the same order each
time. Here each image is walked with the default bound, then twice with a bound of one entry (every listing
dropped as soon as another is parsed): the paths, what ``stat`` shows, link targets and file bytes must not
change. The FUSE side is in ``test_fuse_ops.py``; the bound itself in ``test_tree_safety.py``.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest
from corpuslib import corpus_file_fixture, load_images, params

from imgfs.errors import ImageError
from imgfs.filesystems import base
from imgfs.image import open_image
from imgfs.options import MountOptions

IMAGES = [image for folder in ("iso", "raw", "dmg", "bincue", "nrg", "mds") for image in load_images(folder)]
if not IMAGES:
    pytest.skip("no image corpus (set IMGFS_CORPUS)", allow_module_level=True)
corpus_file = corpus_file_fixture()
READ_AT_MOST = 1 << 20


def shown(path: Path, walks: int) -> list[list[tuple[Any, ...]]]:
    """Each walk of the image's tree: every entry's path, attributes, link target and first bytes' hash."""
    image = open_image(str(path), MountOptions())
    try:
        tree, every = image.tree, []
        for _ in range(walks):
            seen = []
            for entry in tree.walk_entries():
                node, fs = entry.node, entry.fs
                data: Any = None
                if node.is_file:
                    try:
                        data = hashlib.sha256(fs.open(node).pread(0, min(node.size, READ_AT_MOST))).hexdigest()
                    except ImageError as exc:  # a damaged file fails alike each time
                        data = str(exc)
                seen.append((entry.path, tree.attributes(node, fs), node.target, data))
            every.append(seen)
        return every
    finally:
        image.close()


@pytest.mark.parametrize("image", params(IMAGES))
def test_listings_parsed_again_show_the_same_tree(image, corpus_file, monkeypatch):
    path = corpus_file(image)
    try:
        [first] = shown(path, 1)
    except ImageError as exc:
        pytest.skip(f"not opened without options ({exc}); its own corpus test covers it")
    monkeypatch.setattr(base, "RESIDENT_ENTRIES", 1)
    again, third = shown(path, 2)
    assert again == first and third == first
