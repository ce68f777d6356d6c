"""Every APFS volume of the real-world corpus, mounted and compared with its oracle.

The corpus (``../shared/fixtures`` or ``$IMGFS_CORPUS``) holds APFS in hdiutil DMGs of every codec
(``dmg/go-apfs-v2``, ``dmg/dmgwiz``, one of them an encrypted DMG), as a raw GPT disk, as bare containers
(``raw/dfvfs/apfs.raw``, ``iso/util-linux/apfs.img.xz``) and as a natively encrypted container
(``dmg/go-apfs-v2/encrypted.img.gz``, password in its oracle's notes: ``hunter2hunter2``). Each is mounted
with ``TZ=UTC`` and compared entry by entry: paths, types, sizes, contents, symlink targets, permission
bits, link counts, mtimes, and the names of the extended attributes (as ``user.*``; the filesystem's
own ``com.apple.fs.symlink`` and a compressed file's decmpfs attribute and resource fork are hidden, as
the module docstring of ``imgfs.filesystems.apfs.reader`` says). ``imgfs info`` gives the volume's label.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from conftest import run_imgfs
from corpuslib import (
    CORPUS,
    CorpusImage,
    assert_matches,
    corpus_file_fixture,
    expected_entries,
    info_layers,
    load_images,
    mount_refusal,
    mounted,
    snapshot,
)

FIELDS = ("type", "size", "sha256", "target", "mode", "nlink", "mtime")
PASSWORDS = {"dmg/go-apfs-v2/encrypted.img.gz": "hunter2hunter2", "dmg/dmgwiz/input_aes256.dmg": "test123"}
HIDDEN_XATTRS = {"com.apple.fs.symlink"}
# The encrypted container's oracle comes from pyfsapfs alone, and its "mtime" is each inode's creation
# time: .fseventsd and fseventsd-uuid were modified 50 s after they were made (their inodes say so), and
# every other entry has equal times. Its other fields are compared.
BIRTH_TIMES_AS_MTIME = {"dmg/go-apfs-v2/encrypted.img.gz"}
COMPRESSION_XATTRS = {"com.apple.decmpfs", "com.apple.ResourceFork"}

if not CORPUS.is_dir():
    pytest.skip(f"no image corpus at {CORPUS} (set IMGFS_CORPUS)", allow_module_level=True)

IMAGES = [i for folder in ("dmg", "raw", "iso") for i in load_images(folder)
          if any(v["filesystem"] == "apfs" for v in i.oracle["volumes"])]
corpus_file = corpus_file_fixture()


def key(image: CorpusImage) -> str:
    return f"{image.folder}/{image.rel}"


def env(image: CorpusImage, password: str | None = None) -> dict[str, str]:
    found = {**os.environ, "TZ": "UTC"}
    found.pop("IMGFS_PASSPHRASE", None)
    if password or key(image) in PASSWORDS:
        found["IMGFS_PASSPHRASE"] = password or PASSWORDS[key(image)]
    return found


def apfs_volume(image: CorpusImage) -> dict[str, Any]:
    (volume,) = [v for v in image.oracle["volumes"] if v["filesystem"] == "apfs"]
    return volume


def volume_root(root: Path, label: str) -> Path:
    """The APFS volume in the mount: the root when it is alone, else the one folder named for it."""
    folders = [e for e in os.listdir(root) if e.endswith(f" {label}") and (root / e).is_dir()]
    return root / folders[0] if len(folders) == 1 else root


def params() -> list[Any]:
    return [pytest.param(image, id=key(image)) for image in IMAGES]


def test_the_corpus_has_its_apfs_images() -> None:
    assert len(IMAGES) >= 10, [key(i) for i in IMAGES]


@pytest.mark.parametrize("image", params())
def test_volume_matches_oracle(image: CorpusImage, corpus_file, tmp_path: Path) -> None:
    volume = apfs_volume(image)
    with mounted(corpus_file(image), tmp_path / "mnt", env=env(image)) as root:
        where = volume_root(root, volume["label"])
        actual = snapshot(where)
        xattrs = {path: set(os.listxattr(where / path.lstrip("/"), follow_symlinks=False)) for path in actual
                  if actual[path]["type"] in ("file", "dir")}
    fields = tuple(f for f in FIELDS if f != "mtime" or key(image) not in BIRTH_TIMES_AS_MTIME)
    assert_matches(actual, expected_entries(volume, fields), f"{key(image)} mounted")
    problems = []
    for entry in volume["entries"]:
        if entry["path"] not in xattrs:
            continue
        names = set(entry.get("xattrs", {})) - HIDDEN_XATTRS
        if "com.apple.decmpfs" in names:
            names -= COMPRESSION_XATTRS
        want = {f"user.{n}" for n in names}
        if xattrs[entry["path"]] != want:
            problems.append(f"{entry['path']}: xattrs {sorted(xattrs[entry['path']])}, expected {sorted(want)}")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("image", params())
def test_info_names_the_volume(image: CorpusImage, corpus_file) -> None:
    volume = apfs_volume(image)
    layers = info_layers(corpus_file(image), env=env(image))
    apfs = [layer for layer in layers if layer.get("filesystem") == "apfs"]
    assert apfs and apfs[0]["label"] == volume["label"], layers
    assert "roles" in apfs[0]


def test_an_encrypted_container_wants_its_password(corpus_file, tmp_path: Path) -> None:
    (image,) = [i for i in IMAGES if key(i) == "dmg/go-apfs-v2/encrypted.img.gz"]
    path = corpus_file(image)
    for password, words in ((None, "passphrase"), ("not it", "wrong passphrase")):
        line = mount_refusal(path, tmp_path / f"mnt-{bool(password)}", env=env(image, password) if password
                             else {k: v for k, v in env(image).items() if k != "IMGFS_PASSPHRASE"})
        assert words in line and "Enc" in line, line
    done = run_imgfs("cat", str(path), "/secret.txt", env=env(image))
    assert done.returncode == 0 and done.stdout == "secret content for the encrypted volume\n", done.stderr
