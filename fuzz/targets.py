"""The fuzz targets, one per layer family, and what each does with an input: open it through the same stream
stack a mount uses, then walk, stat, read links, extended attributes and file data (capped).

Two ways in:

* a **filesystem** target puts the image in memory (an ``ExtentStream`` over a ``BytesStream``, zeros where a
  sparse input has nothing), detects it among its formats with the registry, calls the registry's opener,
  and walks the ``Tree`` of what it returns (with its raw views);
* an **image** target writes the input as files in a private tmpfs folder (a sparse file, a sheet and its
  data files, split segments, a sparse bundle) and opens the first with ``imgfs.image.open_image``: the
  whole assembly, sources and sheet finders included; then it walks the tree, describes every layer
  (``imgfs info``) and checks every checksum (``imgfs verify``).

An ``ImageError`` is the answer a bad image must get; anything else escapes and is a finding.

To fuzz a new filesystem, add its registry name to ``FILESYSTEMS``: seeds come from every corpus image and
generated fixture that detects as it (``fuzz/seeds.py``), and ``make fuzz`` runs it with the others.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import zlib
from dataclasses import dataclass
from typing import Any, Optional

from encoding import SPARSE_BODY, decode_files
from fixups import FIXUPS, image_runs

from imgfs import registry
from imgfs.codecs import kdf
from imgfs.errors import ImageError, UnsupportedFormat
from imgfs.filesystems.base import Filesystem, Node
from imgfs.image import open_image
from imgfs.io import background
from imgfs.io.cache import BlockCache
from imgfs.io.stream import BytesStream, ExtentStream, Stream
from imgfs.layer import Layer, OpenContext, VolumeSet
from imgfs.options import MountOptions
from imgfs.tree import Tree

# Registry names of the filesystems fuzzed, one target each: a new filesystem is one more name here.
FILESYSTEMS = ("iso9660", "udf", "hfs+", "hfs", "fat", "exfat", "ext", "ntfs", "apfs")


@dataclass(frozen=True)
class Target:
    name: str
    mode: str  # "filesystem" or "image"
    encoding: str  # "sparse", "raw" or "files"
    formats: tuple[str, ...]  # the registry formats whose images seed it
    file_name: str = "image"  # image targets with one file: its name
    max_len: int = 1 << 16  # the largest input libFuzzer makes
    fixup: str = ""  # the format whose checksums are put right after a mutation (fuzz/fixups.py)


LARGER_INPUTS = {"ntfs": 1 << 18}  # a fresh NTFS volume's MFT alone is 80 KiB


def _fs_target(name: str) -> Target:
    size = LARGER_INPUTS.get(name, 1 << 17)
    return Target(name.replace("+", "plus"), "filesystem", "sparse", (name,), max_len=size,
                  fixup=name if name in FIXUPS else "")


TARGETS: dict[str, Target] = {t.name: t for t in (
    Target("udif", "image", "raw", ("udif",), "image.dmg"),
    Target("sparse", "image", "files", ("sparseimage", "sparsebundle", "asif")),
    Target("encrypted", "image", "raw", ("encrcdsa", "cdsaencr"), "image.dmg"),
    Target("split", "image", "files", ("split",)),
    Target("optical", "image", "files", ("cue", "ccd", "mds", "nrg", "raw-sectors"), max_len=1 << 17),
    Target("oldmac", "image", "files", ("dc42", "ndif", "smi", "macbinary", "applesingle", "appledouble")),
    Target("partitions", "image", "sparse", ("mbr", "gpt", "apm"), "disk.img"),
    *(_fs_target(name) for name in FILESYSTEMS),
)}

PASSPHRASE = "fuzz"  # the passphrase of the encrypted seeds, given to every image target
FUZZ_MAX_ITERATIONS = 20_000  # PBKDF2 under fuzzing: the real limit costs tens of seconds per input, by design
MAX_ENTRIES = 2_000  # entries walked per tree
READ_SIZE = 1 << 16  # bytes read per file, from its start and near its end
MAX_XATTR_BYTES = 1 << 20
CACHE_SIZE = 16 << 20
VERIFY_ONE_IN = 8  # inputs whose checksums are all checked as imgfs verify does: the same ones every run


def setup() -> None:
    """What every fuzzing process does once: PBKDF2 bounded low (see above), and no log output (a warning per
    damaged input would cost more than the input)."""
    kdf.MAX_ITERATIONS = FUZZ_MAX_ITERATIONS
    logging.disable(logging.CRITICAL)


def run(target: Target, data: bytes, workdir: str) -> None:
    """One input, start to end; only an ``ImageError`` is caught."""
    with background.held():  # no decoding ahead in other threads: a finding must come from this one
        try:
            if target.mode == "filesystem":
                _run_filesystem(target, data)
            else:
                _run_image(target, data, workdir)
        except ImageError:
            pass


# -- filesystem targets -------------------------------------------------------------------------------


def memory_image(data: bytes, fixup: str = "") -> Stream:
    """A sparse input as a stream: its chunks in one ``BytesStream``, zeros between them (checksums put right
    for a format of ``fixups.FIXUPS``)."""
    size, image = image_runs(data, fixup)
    runs: list[tuple[Optional[int], int]] = []
    pieces: list[bytes] = []
    stored = end = 0
    for offset, body in image:
        if offset > end:
            runs.append((None, offset - end))
        runs.append((stored, len(body)))
        pieces.append(body)
        stored += len(body)
        end = offset + len(body)
    if size > end:
        runs.append((None, size - end))
    return ExtentStream.over(BytesStream(b"".join(pieces), "fuzz"), runs, name="fuzz")


def _run_filesystem(target: Target, data: bytes) -> None:
    stream = memory_image(data, target.fixup)
    if stream.size == 0:
        return
    fmt = next((f for f in registry.FORMATS if f.name in target.formats and f.matches(stream)), None)
    if fmt is None or fmt.opener is None:
        return
    ctx = OpenContext("fuzz", BlockCache(CACHE_SIZE), raw_views=True, passphrase=lambda: PASSPHRASE)
    _exercise_layer(registry.load(fmt.opener)(stream, ctx), ctx)


def _exercise_layer(layer: Layer, ctx: OpenContext) -> None:
    """A filesystem's tree, a volume set's volumes that open themselves (an APFS container's), the raw views."""
    try:
        json.dumps(layer.describe(), default=str)
        if isinstance(layer, Filesystem):
            exercise(Tree(layer))
        elif isinstance(layer, VolumeSet):
            for volume in layer.volumes():
                if volume.open is not None:
                    _checked(lambda v: _exercise_layer(v.open(ctx), ctx), volume)
        for view in layer.views():
            _exercise_view(view.target)
    finally:
        layer.close()


def _exercise_view(target: Any) -> None:
    if isinstance(target, Filesystem):
        exercise(Tree(target))
    elif isinstance(target, Stream):
        _read(target)


# -- image targets ------------------------------------------------------------------------------------


def _run_image(target: Target, data: bytes, workdir: str) -> None:
    path = materialize(target, data, workdir)
    if path is None:
        return
    options = MountOptions(cache_size=CACHE_SIZE, raw_views=True)
    opened = open_image(path, options, passphrase=lambda: PASSPHRASE)
    try:
        json.dumps({"layers": opened.layers}, default=str)
        if zlib.crc32(data) % VERIFY_ONE_IN == 0:  # imgfs verify: every sector's EDC/ECC costs milliseconds
            for layer, _ in opened.opened:
                if layer.checks:
                    layer.verify()
        try:
            opened.require_content()
        except UnsupportedFormat:
            return
        exercise(opened.tree)
    finally:
        opened.close()


def materialize(target: Target, data: bytes, workdir: str) -> Optional[str]:
    """The input as files in ``workdir`` (emptied first); the path to open, or None for an empty input."""
    for entry in os.listdir(workdir):
        full = os.path.join(workdir, entry)
        shutil.rmtree(full) if os.path.isdir(full) and not os.path.islink(full) else os.unlink(full)
    if target.encoding == "files":
        return _write_files(decode_files(data), workdir)
    path = os.path.join(workdir, target.file_name)
    if target.encoding == "raw":
        with open(path, "wb") as handle:
            handle.write(data)
    else:
        _write_sparse(path, data, target.fixup)
    return path


def _write_sparse(path: str, data: bytes, fixup: str = "") -> None:
    size, runs = image_runs(data, fixup)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.ftruncate(fd, size)  # a sparse file: the zeros take no room
        for offset, body in runs:
            os.pwrite(fd, body, offset)
    finally:
        os.close(fd)


def _write_files(files: list[tuple[str, int, bytes]], workdir: str) -> Optional[str]:
    written: list[str] = []
    for name, flags, body in files:
        full = os.path.join(workdir, name)
        try:
            os.makedirs(os.path.dirname(full), exist_ok=True)
            if flags & SPARSE_BODY:
                _write_sparse(full, body)
            else:
                with open(full, "wb") as handle:
                    handle.write(body)
        except (IsADirectoryError, NotADirectoryError, FileExistsError):
            continue  # "a" as a file and "a/b": the second cannot be
        written.append(name)
    if not written:
        return None
    return os.path.join(workdir, written[0].split("/")[0])  # a file, or the folder it is in (a sparse bundle)


def new_workdir() -> str:
    return tempfile.mkdtemp(prefix="imgfs-fuzz-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None)


# -- what a user does with a tree ---------------------------------------------------------------------


def exercise(tree: Tree) -> None:
    """Walk (each entry looked up again by path), stat, read links, xattrs and data, as ``ls -lR``, ``getfattr``
    and ``cat`` through a mount would; an entry that fails fails alone."""
    for count, (path, node, fs) in enumerate(tree.walk_entries("/", on_error=_ignore)):
        if count >= MAX_ENTRIES:
            break
        tree.attributes(node, fs)
        _checked(tree.resolve, path)
        if node.is_symlink:
            assert isinstance(node.target, bytes)
        _checked(_xattrs, fs, node)
        if node.is_file:
            _checked(_read_node, fs, node)


def _ignore(path: str, exc: Exception) -> None:
    pass


def _checked(function: Any, *args: Any) -> None:
    try:
        function(*args)
    except ImageError:
        pass


def _xattrs(fs: Filesystem, node: Node) -> None:
    total = 0
    for name, value in fs.xattrs(node).items():
        assert isinstance(name, str) and isinstance(value, bytes)
        total += len(value)
        if total > MAX_XATTR_BYTES:
            break


def _read_node(fs: Filesystem, node: Node) -> None:
    _read(fs.open(node))


def _read(stream: Stream) -> None:
    stream.pread(0, READ_SIZE)
    if stream.size > READ_SIZE:
        stream.pread(max(0, stream.size - 4096), 8192)
        buf = memoryview(bytearray(4096))
        stream.readinto(stream.size // 2, buf)
