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

import calendar
import contextlib
import hashlib
import json
import os
import re
import shutil
import stat
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import pytest


def _corpus_dir() -> Path:
    if os.environ.get("IMGFS_CORPUS"):
        return Path(os.environ["IMGFS_CORPUS"])
    beside_project = Path(__file__).resolve().parents[2] / "shared" / "fixtures"
    return beside_project if beside_project.is_dir() else Path("/work/shared/fixtures")


CORPUS = _corpus_dir()
ISO_DIR = CORPUS / "iso"
if not ISO_DIR.is_dir():
    pytest.skip(f"no image corpus at {ISO_DIR} (set IMGFS_CORPUS)", allow_module_level=True)

NAMESPACES = ("rockridge", "joliet", "iso9660")  # the oracle's ISO views, richest first
SESSION = re.compile(r"session (\d+) \(sector (\d+)\) (\S+)$")
REFUSED_WORDS = {"udf": "UDF", "apfs": "APFS", "hfs+": "HFS+"}  # filesystem -> what the error must name
COMPRESSED = {".xz": ["xz", "-dc"], ".gz": ["gzip", "-dc"], ".Z": ["gzip", "-dc"], ".bz2": ["bzip2", "-dc"]}
MOUNT_TIMEOUT = 60

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
class CorpusImage:
    rel: str  # the image's path under iso/, as the test id
    oracle: dict[str, Any]

    @property
    def source(self) -> Path:
        return ISO_DIR / self.rel

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


def _load_corpus() -> list[CorpusImage]:
    images = []
    for oracle_path in sorted(ISO_DIR.rglob("*.json")):
        image = oracle_path.with_suffix("")  # X.json describes X; a file without one is not an image
        if image.is_file():
            oracle = json.loads(oracle_path.read_text())
            images.append(CorpusImage(image.relative_to(ISO_DIR).as_posix(), oracle))
    return images


CORPUS_IMAGES = _load_corpus()
SINGLE_SESSION = [i for i in CORPUS_IMAGES if i.namespaces]
MULTI_SESSION = [i for i in CORPUS_IMAGES if i.sessions]
REFUSED = [i for i in CORPUS_IMAGES if i.refusal_word]


def _params(images: list[CorpusImage]) -> list[Any]:
    return [pytest.param(image, id=image.rel) for image in images]


def _namespace_params() -> list[Any]:
    params = []
    for image in SINGLE_SESSION:
        for namespace in image.namespaces:
            params.append(pytest.param(image, namespace, id=f"{image.rel}:{namespace}"))
    return params


@pytest.fixture(scope="session")
def corpus_file(tmp_path_factory: pytest.TempPathFactory):
    """``corpus_file(image)``: the image itself, or its decompressed copy in a temporary folder."""
    workdir = tmp_path_factory.mktemp("corpus")
    done: dict[str, Path] = {}

    def get(image: CorpusImage) -> Path:
        if image.rel not in done:
            done[image.rel] = _decompressed(image, workdir)
        return done[image.rel]

    return get


def _decompressed(image: CorpusImage, workdir: Path) -> Path:
    command = COMPRESSED.get(image.source.suffix)
    if command is None:
        return image.source
    if shutil.which(command[0]) is None:
        pytest.skip(f"{command[0]} is needed to decompress {image.rel}")
    target = workdir / Path(image.rel).with_suffix("")
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target, "wb") as out:
        subprocess.run([*command, str(image.source)], stdout=out, check=True)
    want = image.oracle.get("decompressed", {}).get("sha256")
    if want:
        assert _sha256(target) == want, f"{image.rel} does not decompress to the image its oracle describes"
    return target


# -- running imgfs -----------------------------------------------------------------------------------


def _imgfs_command() -> str:
    if os.environ.get("IMGFS"):
        return os.environ["IMGFS"]
    beside_python = Path(sys.executable).with_name("imgfs")  # the venv that runs the tests
    return str(beside_python) if beside_python.exists() else (shutil.which("imgfs") or "imgfs")


IMGFS = _imgfs_command()


def run_imgfs(*args: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([IMGFS, *map(str, args)], capture_output=True, text=True, timeout=MOUNT_TIMEOUT)


def _is_mounted(mountpoint: Path) -> bool:
    """From /proc/mounts, which (unlike a stat of the mount point) cannot hang on a stuck daemon."""
    target = os.path.realpath(mountpoint).replace(" ", "\\040")
    with open("/proc/mounts") as mounts:
        return any(line.split()[1] == target for line in mounts)


def _unmount(mountpoint: Path) -> str:
    """``imgfs umount``, then fusermount3 if anything is left: never a mount behind. Returns imgfs's error."""
    try:
        done = run_imgfs("umount", mountpoint)
        error = "" if done.returncode == 0 else f"exit {done.returncode}: {done.stderr.strip()}"
    except (OSError, subprocess.SubprocessError) as exc:
        error = f"could not run: {exc}"
    if _is_mounted(mountpoint):
        subprocess.run(["fusermount3", "-u", "-z", str(mountpoint)], capture_output=True)
    return error


@contextlib.contextmanager
def mounted(image: Path, mountpoint: Path, namespace: Optional[str] = None) -> Iterator[Path]:
    """Mount ``image`` in the background, as imgfs does by default; always unmounted afterwards."""
    mountpoint.mkdir(parents=True, exist_ok=True)
    options = ["-o", f"namespace={namespace}"] if namespace else []
    finished = False
    try:
        done = run_imgfs(image, mountpoint, *options)
        assert done.returncode == 0, (f"imgfs {image.name} {' '.join(options)} failed with exit "
                                      f"{done.returncode}: {done.stderr.strip()}")
        assert _is_mounted(mountpoint), f"imgfs exited 0 but {mountpoint} is not mounted"
        yield mountpoint
        finished = True
    finally:
        if _is_mounted(mountpoint):
            error = _unmount(mountpoint)
            if finished:  # report it only on success: an earlier failure says more
                assert not error, f"imgfs umount {mountpoint} failed: {error}"


# -- what a mount shows, and what the oracle expects ------------------------------------------------------

TYPES = {stat.S_IFREG: "file", stat.S_IFDIR: "dir", stat.S_IFLNK: "symlink", stat.S_IFCHR: "chardev",
         stat.S_IFBLK: "blockdev", stat.S_IFIFO: "fifo", stat.S_IFSOCK: "socket"}


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


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
                entry.update(size=st.st_size, sha256=_sha256(full))
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


def _mtime_seconds(text: str) -> int:
    """An oracle time ("2005-03-05T15:25:51Z", maybe with a fraction) as whole seconds since 1970."""
    return calendar.timegm(time.strptime(text.split(".")[0].rstrip("Z"), "%Y-%m-%dT%H:%M:%S"))


def expected_entries(volume: dict[str, Any], fields: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    """The oracle's entries of one volume, keyed by path, with the fields it gives of ``fields``."""
    expected = {}
    for entry in volume["entries"]:
        want = {f: value for f in fields if (value := _majority(entry, f)) is not None}
        if "mode" in want:
            want["mode"] = int(want["mode"], 8)
        if "mtime" in want:
            want["mtime"] = _mtime_seconds(want["mtime"])
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


def imgfs_info(image: Path) -> dict[str, Any]:
    done = run_imgfs("info", image, "--json")
    assert done.returncode == 0, f"imgfs info failed with exit {done.returncode}: {done.stderr.strip()}"
    layers = json.loads(done.stdout)["layers"]
    return next(layer for layer in layers if layer["layer"] == "iso9660")


# -- the tests -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("image", "namespace"), _namespace_params())
def test_namespace_matches_oracle(image: CorpusImage, namespace: str, corpus_file, tmp_path: Path) -> None:
    """Each ISO namespace the oracle knows, mounted with ``-o namespace=``, shows exactly that volume."""
    with mounted(corpus_file(image), tmp_path / "mnt", namespace) as root:
        actual = snapshot(root)
    expected = expected_entries(image.namespaces[namespace], FIELDS[namespace])
    if (image.rel, namespace) in DEVIATIONS:
        DEVIATIONS[image.rel, namespace](expected)
    assert_matches(actual, expected, f"{image.rel} mounted with namespace={namespace}")


@pytest.mark.parametrize("image", _params(SINGLE_SESSION))
def test_default_mount_is_richest_namespace(image: CorpusImage, corpus_file, tmp_path: Path) -> None:
    """Without ``-o namespace`` the mount shows Rock Ridge, else Joliet, else plain ISO 9660."""
    namespace = image.default_namespace
    with mounted(corpus_file(image), tmp_path / "mnt") as root:
        actual = snapshot(root)
    assert_matches(actual, expected_entries(image.namespaces[namespace], FIELDS[namespace]),
                   f"{image.rel} mounted without options (expected its {namespace} view)")


@pytest.mark.parametrize("image", _params(SINGLE_SESSION))
def test_info_lists_the_oracle_namespaces(image: CorpusImage, corpus_file) -> None:
    """``imgfs info`` finds the namespaces the oracle found (ISO 9660:1999 aside: no oracle has it)."""
    info = imgfs_info(corpus_file(image))
    offered = [ns for ns in info["namespaces"] if ns != "iso1999"]
    assert offered == list(image.namespaces), f"imgfs offers {info['namespaces']}"
    assert info["namespace"] == image.default_namespace


@pytest.mark.parametrize("image", _params(SINGLE_SESSION))
def test_ls_recursive_lists_the_default_namespace(image: CorpusImage, corpus_file) -> None:
    """``imgfs ls IMAGE -R`` (no FUSE) prints every path of the default namespace, once."""
    done = run_imgfs("ls", corpus_file(image), "-R")
    assert done.returncode == 0, f"imgfs ls -R failed with exit {done.returncode}: {done.stderr.strip()}"
    listed = done.stdout.splitlines()
    expected = {entry["path"] for entry in image.namespaces[image.default_namespace]["entries"]}
    twice = sorted(path for path, count in Counter(listed).items() if count > 1)
    assert not twice, f"paths listed more than once: {twice}"
    assert set(listed) == expected, (f"missing: {sorted(expected - set(listed))}, "
                                     f"unexpected: {sorted(set(listed) - expected)}")


@pytest.mark.parametrize("namespace", [None, "iso9660"], ids=["default", "iso9660"])
@pytest.mark.parametrize("image", _params(MULTI_SESSION))
def test_multisession_mounts_one_session(image: CorpusImage, namespace: Optional[str], corpus_file,
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
    with mounted(path, tmp_path / "mnt", namespace) as root:
        actual = snapshot(root)
    assert_matches(actual, expected_entries(session, COMMON_FIELDS), f"{image.rel} ({session['name']})")


@pytest.mark.parametrize("image", _params(REFUSED))
def test_refused_with_one_clear_line(image: CorpusImage, corpus_file, tmp_path: Path) -> None:
    """A disc without ISO 9660 (UDF-only, APFS, HFS+) is refused: one line naming what it is, no traceback."""
    path, mountpoint, word = corpus_file(image), tmp_path / "mnt", str(image.refusal_word)
    mountpoint.mkdir()
    try:
        done = run_imgfs(path, mountpoint)
        lines = done.stderr.splitlines()
        assert done.returncode != 0, "imgfs mounted an image it cannot read"
        assert "Traceback" not in done.stderr, done.stderr
        assert len(lines) == 1, f"expected exactly one line on stderr, got {len(lines)}: {done.stderr!r}"
        assert word in lines[0], f"the error does not name {word}: {lines[0]!r}"
        assert not _is_mounted(mountpoint), "a refused image left a mount behind"
    finally:
        if _is_mounted(mountpoint):
            _unmount(mountpoint)
