"""Seeds for every fuzz target: small generated images (the tests' writers and the real tools), and, when it
is present, the real-world corpus (``$IMGFS_CORPUS`` or ``../shared/fixtures``), each encoded the way its
target reads inputs. Nothing is copied into the project: seeds go to the folder given (``make fuzz`` uses
``$IMGFS_FUZZ_DIR/seeds``).

    python fuzz/seeds.py OUT_DIR [TARGET ...] [--generated-only]

A corpus image seeds the targets of the formats it is detected as: its outermost layer (a DMG, a partition
map), and every filesystem found inside it. So a new filesystem target finds its seeds in the corpus by
itself; a generator (``fuzz/generators.py``) adds made-up ones.
"""

from __future__ import annotations

import bz2
import gzip
import hashlib
import lzma
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Optional

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent / "tests")]

from encoding import files_from, sparse_from_image  # noqa: E402
from generators import GENERATORS  # noqa: E402
from targets import TARGETS, Target  # noqa: E402

from imgfs import registry  # noqa: E402
from imgfs.errors import ImageError  # noqa: E402
from imgfs.filesystems.base import Filesystem  # noqa: E402
from imgfs.image import open_image  # noqa: E402
from imgfs.io.stream import FileStream, Stream  # noqa: E402

MAX_IMAGE = 16 << 20  # corpus images larger than this are not read


# -- encoding and the corpus --------------------------------------------------------------------------


def encode(target: Target, item: object) -> bytes:
    if target.encoding == "files":
        assert isinstance(item, list)
        return files_from(item)
    assert isinstance(item, bytes)
    return sparse_from_image(item) if target.encoding == "sparse" else item


def _write(out: Path, target: Target, name: str, item: object) -> None:
    data = encode(target, item)
    folder = out / target.name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}-{hashlib.sha256(data).hexdigest()[:12]}").write_bytes(data)


def _decompressed(path: Path) -> bytes:
    opener = {".xz": lzma.open, ".gz": gzip.open, ".bz2": bz2.open}.get(path.suffix)
    if opener is not None:
        with opener(path) as handle:  # type: ignore[operator]
            return handle.read(MAX_IMAGE + 1)
    return path.read_bytes()


def _inner_filesystems(path: Path) -> Iterator[tuple[str, bytes]]:
    """(format name, bytes) of every filesystem the assembly opens in the image at ``path``."""
    try:
        opened = open_image(str(path), passphrase=lambda: "test123")
    except ImageError:
        return
    try:
        for layer, name in opened.opened:
            stream = getattr(layer, "stream", None)
            if isinstance(layer, Filesystem) and isinstance(stream, Stream) and stream.size <= MAX_IMAGE:
                yield name, stream.pread(0, stream.size)
    finally:
        opened.close()


def corpus_root() -> Optional[Path]:
    """As the tests find it: ``$IMGFS_CORPUS``, ``../shared/fixtures`` beside the project, ``/work/shared/fixtures``."""
    for candidate in (os.environ.get("IMGFS_CORPUS"), HERE.parent.parent / "shared" / "fixtures",
                      "/work/shared/fixtures"):
        if candidate and Path(candidate).is_dir():
            return Path(candidate)
    return None


def corpus_seeds(out: Path, wanted: set[str]) -> int:
    root = corpus_root()
    if root is None:
        return 0
    by_format = {fmt: t for t in TARGETS.values() for fmt in t.formats if t.name in wanted}
    count = 0
    with tempfile.TemporaryDirectory() as tmp:
        for path in sorted(root.rglob("*")):
            if not path.is_file() or path.suffix in (".json", ".md", ".Z") or path.stat().st_size > MAX_IMAGE:
                continue
            data = _decompressed(path)
            if len(data) > MAX_IMAGE:
                continue
            plain = Path(tmp) / path.name.removesuffix(path.suffix) if path.suffix in (".xz", ".gz", ".bz2") else path
            if plain != path:
                plain.write_bytes(data)
            try:
                top = registry.detect(FileStream(str(plain))).name
            except ImageError:
                continue
            found = [(top, data)] + list(_inner_filesystems(plain))
            for fmt, image in found:
                target = by_format.get(fmt)
                if target is not None and target.encoding != "files":
                    _write(out, target, f"corpus-{path.stem}", image)
                    count += 1
    return count


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    out = Path(argv[1])
    with_corpus = "--generated-only" not in argv
    wanted = {a for a in argv[2:] if not a.startswith("--")} or set(TARGETS)
    for name in sorted(wanted):
        target = TARGETS[name]
        generator = GENERATORS.get(name)
        if generator is None:
            continue
        with tempfile.TemporaryDirectory() as tmp:
            try:
                items = list(generator(Path(tmp)))
            except (OSError, subprocess.CalledProcessError) as exc:
                print(f"{name}: generated seeds skipped ({exc})", file=sys.stderr)
                continue
        for seed_name, item in items:
            _write(out, target, seed_name, item)
        print(f"{name}: {len(items)} generated seeds")
    if with_corpus:
        print(f"corpus: {corpus_seeds(out, wanted)} seeds")
    for folder in sorted(out.iterdir()):
        if folder.is_dir() and not any(folder.iterdir()):
            shutil.rmtree(folder)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
