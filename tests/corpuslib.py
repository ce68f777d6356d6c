"""The real-world image corpus: finding it, its oracles, and comparing a mount with them.

Shared by the corpus tests (``test_corpus.py`` for ``iso/``, ``test_corpus_raw.py`` for ``raw/``). The
corpus is ``$IMGFS_CORPUS``, else ``../shared/fixtures`` beside the project (see its README for the
oracle format). Every image ``FOLDER/**/X`` has an oracle ``X.json`` beside it.
Compressed images (.xz, .gz, .bz2, .Z) are decompressed into a temporary folder, once per session and
checked against the oracle's ``decompressed.sha256``; nothing from the corpus is written into the project.

imgfs is run through ``conftest.run_imgfs`` (``$IMGFS``, else ``imgfs`` on PATH, else the venv's).
"""

from __future__ import annotations

import calendar
import json
import os
import shutil
import stat
import subprocess
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import pytest
from conftest import is_mounted, run_imgfs, sha256_of, unmount


def corpus_dir() -> Path:
    if os.environ.get("IMGFS_CORPUS"):
        return Path(os.environ["IMGFS_CORPUS"])
    return Path(__file__).resolve().parents[2] / "shared" / "fixtures"  # ../shared/fixtures beside the project


CORPUS = corpus_dir()
COMPRESSED = {".xz": ["xz", "-dc"], ".gz": ["gzip", "-dc"], ".Z": ["gzip", "-dc"], ".bz2": ["bzip2", "-dc"]}
REFUSED_WORDS = {"udf": "UDF"}  # filesystem -> what imgfs's refusal must name
# filesystem -> the test module that compares it with its oracle
COMPARED_ELSEWHERE = {"hfs+": "test_hfsplus.py", "apfs": "test_corpus_apfs.py"}


def folder_or_skip(folder: str) -> Path:
    """``CORPUS/folder``; skips the whole calling test module when it is absent."""
    path = CORPUS / folder
    if not path.is_dir():
        pytest.skip(f"no image corpus at {path} (set IMGFS_CORPUS)", allow_module_level=True)
    return path


# -- the images and their oracles -------------------------------------------------------------------------


@dataclass(frozen=True)
class CorpusImage:
    folder: str  # the corpus subfolder: "iso", "raw", ...
    rel: str  # the image's path under it, as the test id
    oracle: dict[str, Any]

    @property
    def source(self) -> Path:
        return CORPUS / self.folder / self.rel

    @property
    def size(self) -> int:
        """The size of the image imgfs reads: after decompression for a compressed copy."""
        return int(self.oracle.get("decompressed", {}).get("size", self.oracle["size"]))


def load_images(folder: str) -> list[CorpusImage]:
    """Every image of ``CORPUS/folder`` with its oracle, sorted by path; none when the folder is absent."""
    base = CORPUS / folder
    images = []
    for oracle_path in sorted(base.rglob("*.json")):
        image = oracle_path.with_suffix("")  # X.json describes X; a file without one is not an image
        if image.is_file():
            oracle = json.loads(oracle_path.read_text())
            images.append(CorpusImage(folder, image.relative_to(base).as_posix(), oracle))
    return images


def params(images: Iterable[CorpusImage]) -> list[Any]:
    return [pytest.param(image, id=image.rel) for image in images]


def corpus_file_fixture() -> Any:
    """The session fixture ``corpus_file``: ``corpus_file(image)`` is the image itself, or its decompressed
    copy in a temporary folder. A test module makes it its own with ``corpus_file = corpus_file_fixture()``."""

    @pytest.fixture(scope="session")
    def corpus_file(tmp_path_factory: pytest.TempPathFactory) -> Callable[[CorpusImage], Path]:
        workdir = tmp_path_factory.mktemp("corpus")
        done: dict[Path, Path] = {}

        def get(image: CorpusImage) -> Path:
            if image.source not in done:
                done[image.source] = decompressed(image, workdir)
            return done[image.source]

        return get

    return corpus_file


def decompressed(image: CorpusImage, workdir: Path) -> Path:
    command = COMPRESSED.get(image.source.suffix)
    if command is None:
        return image.source
    if shutil.which(command[0]) is None:
        pytest.skip(f"{command[0]} is needed to decompress {image.rel}")
    target = workdir / image.folder / Path(image.rel).with_suffix("")
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target, "wb") as out:
        subprocess.run([*command, str(image.source)], stdout=out, check=True)
    want = image.oracle.get("decompressed", {}).get("sha256")
    if want:
        assert sha256_of(target) == want, f"{image.rel} does not decompress to the image its oracle describes"
    return target


# -- running imgfs -------------------------------------------------------------------------------------------


def _unmount(mountpoint: Path) -> str:
    """``imgfs umount``, then fusermount3 if anything is left: never a mount behind. Returns imgfs's error."""
    try:
        done = run_imgfs("umount", str(mountpoint))
        error = "" if done.returncode == 0 else f"exit {done.returncode}: {done.stderr.strip()}"
    except (OSError, subprocess.SubprocessError) as exc:
        error = f"could not run: {exc}"
    unmount(mountpoint)  # returns at once when nothing is mounted any more
    return error


@contextmanager
def mounted(image: Path, mountpoint: Path, *options: str, env: Optional[dict[str, str]] = None) -> Iterator[Path]:
    """Mount ``image`` in the background, as imgfs does by default, with ``-o`` ``options`` and the process
    environment ``env``; always unmounted afterwards, and on success ``imgfs umount`` must have worked."""
    mountpoint.mkdir(parents=True, exist_ok=True)
    option_args = ["-o", ",".join(options)] if options else []
    finished = False
    try:
        done = run_imgfs(str(image), str(mountpoint), *option_args, env=env)
        assert done.returncode == 0, (f"imgfs {image.name} {' '.join(option_args)} failed with exit "
                                      f"{done.returncode}: {done.stderr.strip()}")
        assert is_mounted(mountpoint), f"imgfs exited 0 but {mountpoint} is not mounted"
        yield mountpoint
        finished = True
    finally:
        if is_mounted(mountpoint):
            error = _unmount(mountpoint)
            if finished:  # report it only on success: an earlier failure says more
                assert not error, f"imgfs umount {mountpoint} failed: {error}"


def info_layers(image: Path, env: Optional[dict[str, str]] = None) -> list[dict[str, Any]]:
    """The ``layers`` of ``imgfs info IMAGE --json``, which must succeed."""
    done = run_imgfs("info", str(image), "--json", env=env)
    assert done.returncode == 0, f"imgfs info failed with exit {done.returncode}: {done.stderr.strip()}"
    return json.loads(done.stdout)["layers"]


def refusal_line(done: subprocess.CompletedProcess, accepted: str = "imgfs mounted an image it cannot read") -> str:
    """The one line on stderr with which imgfs refused: a non-zero exit and no traceback."""
    lines = done.stderr.splitlines()
    assert done.returncode != 0, accepted
    assert "Traceback" not in done.stderr, done.stderr
    assert len(lines) == 1, f"expected exactly one line on stderr, got {len(lines)}: {done.stderr!r}"
    return lines[0]


def mount_refusal(image: Path, mountpoint: Path, env: Optional[dict[str, str]] = None) -> str:
    """Mount ``image``, which imgfs must refuse with one line (returned); no mount may be left behind."""
    mountpoint.mkdir(parents=True, exist_ok=True)
    try:
        line = refusal_line(run_imgfs(str(image), str(mountpoint), env=env))
        assert not is_mounted(mountpoint), "a refused image left a mount behind"
        return line
    finally:
        if is_mounted(mountpoint):
            _unmount(mountpoint)


def assert_ls_recursive(image: Path, expected: set[str], env: Optional[dict[str, str]] = None) -> None:
    """``imgfs ls IMAGE -R`` (no FUSE) prints every expected path, once, and nothing else."""
    done = run_imgfs("ls", str(image), "-R", env=env)
    assert done.returncode == 0, f"imgfs ls -R failed with exit {done.returncode}: {done.stderr.strip()}"
    listed = done.stdout.splitlines()
    twice = sorted(path for path, count in Counter(listed).items() if count > 1)
    assert not twice, f"paths listed more than once: {twice}"
    assert set(listed) == expected, (f"missing: {sorted(expected - set(listed))}, "
                                     f"unexpected: {sorted(set(listed) - expected)}")


# -- what a mount shows, and what the oracle expects ------------------------------------------------------

TYPES = {stat.S_IFREG: "file", stat.S_IFDIR: "dir", stat.S_IFLNK: "symlink", stat.S_IFCHR: "chardev",
         stat.S_IFBLK: "blockdev", stat.S_IFIFO: "fifo", stat.S_IFSOCK: "socket"}


def _raise(error: OSError) -> None:
    raise error


def snapshot(root: Path) -> dict[str, dict[str, Any]]:
    """Every entry below ``root`` as the oracle describes one, read through the mount."""
    entries: dict[str, dict[str, Any]] = {}
    for dirpath, dirnames, filenames in os.walk(root, onerror=_raise):  # symlinks are not followed
        for name in dirnames + filenames:
            full = Path(dirpath, name)
            st = os.lstat(full)
            kind = TYPES.get(stat.S_IFMT(st.st_mode), oct(stat.S_IFMT(st.st_mode)))
            entry: dict[str, Any] = {"type": kind, "mode": stat.S_IMODE(st.st_mode), "nlink": st.st_nlink,
                                     "mtime": st.st_mtime_ns // 1_000_000_000}
            if kind == "file":
                entry.update(size=st.st_size, sha256=sha256_of(full))
            elif kind == "symlink":
                entry.update(size=st.st_size, target=os.readlink(full))
            elif kind in ("chardev", "blockdev"):
                entry["rdev"] = [os.major(st.st_rdev), os.minor(st.st_rdev)]
            entries["/" + full.relative_to(root).as_posix()] = entry
    return entries


def _majority(entry: dict[str, Any], field: str) -> Any:
    """The oracle's value; where its readers disagreed, the one most of them gave (README: "the
    majority value is the expected one"). Without a strict majority, the entry's own value."""
    for key in ("disagreement", "meta_disagreement"):
        votes = entry.get(key, {}).get(field)
        if votes:
            tally = Counter(json.dumps(value, sort_keys=True) for value in votes.values())
            (best, count), *rest = tally.most_common()
            if not rest or count > rest[0][1]:
                return json.loads(best)
    return entry.get(field)


def mtime_seconds(text: str) -> int:
    """An oracle time ("2005-03-05T15:25:51Z", maybe with a fraction) as whole seconds since 1970.

    Times without a zone (FAT's local time) are read as UTC too: compare them with an imgfs that ran with
    ``TZ=UTC``, for which the local time is UTC."""
    return calendar.timegm(time.strptime(text.split(".")[0].rstrip("Z"), "%Y-%m-%dT%H:%M:%S"))


def expected_entries(volume: dict[str, Any], fields: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    """The oracle's entries of one volume, keyed by path, with the fields it gives of ``fields``."""
    expected = {}
    for entry in volume["entries"]:
        want = {f: value for f in fields if (value := _majority(entry, f)) is not None}
        if "mode" in want:
            want["mode"] = int(want["mode"], 8)
        if "mtime" in want:
            want["mtime"] = mtime_seconds(want["mtime"])
        expected[entry["path"]] = want
    return expected


def _show(field: str, value: Any) -> str:
    if field == "mode" and isinstance(value, int):
        return oct(value)
    if field == "mtime" and isinstance(value, int):
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(value))
    return repr(value)


def assert_matches(actual: dict[str, dict[str, Any]], expected: dict[str, dict[str, Any]], what: str) -> None:
    """The same paths, and for each the fields the oracle gives; every difference listed at once."""
    problems = [f"missing: {p}" for p in sorted(expected.keys() - actual.keys())]
    problems += [f"unexpected: {p} ({actual[p]['type']})" for p in sorted(actual.keys() - expected.keys())]
    for path in sorted(expected.keys() & actual.keys()):
        for field, want in expected[path].items():
            got = actual[path].get(field)
            if got != want:
                problems.append(f"{path}: {field}: expected {_show(field, want)}, got {_show(field, got)}")
    assert not problems, f"{what} differs from the oracle:\n  " + "\n  ".join(problems)
