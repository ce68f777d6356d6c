"""The commands that read an image without mounting it: ``ls``, ``cat`` and ``verify``."""

from __future__ import annotations

import argparse
import os
import stat
import sys
import time

from imgfs.cli.common import fail, open_for_user
from imgfs.cli.progress import terminal_progress
from imgfs.filesystems.base import Filesystem, Node
from imgfs.image import OpenedImage
from imgfs.options import parse_options
from imgfs.tree import Tree


class PathError(Exception):
    """A path the user named that the image does not have, or that is not what the command needs."""


USER_ERRORS = (PathError,)


def add_arguments(name: str, parser: argparse.ArgumentParser) -> None:
    parser.add_argument("image", help="the image file (or folder, for a sparse bundle)")
    if name == "ls":
        parser.add_argument("path", nargs="?", default="/", help="a folder or file in the image (default /)")
        parser.add_argument("-l", dest="long", action="store_true", help="modes, owners, sizes and times")
        parser.add_argument("-R", dest="recursive", action="store_true", help="every folder below, too")
    elif name == "cat":
        parser.add_argument("path", help="a file in the image")
    add_options_argument(parser)


def add_options_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-o", dest="options", action="append", default=[], metavar="OPTIONS",
                        help="mount options that apply here too, e.g. namespace=joliet (see imgfs --help)")


def run(name: str, args: argparse.Namespace) -> int:
    image = open_for_user(args.image, parse_options(args.options))
    try:
        if name == "verify":
            return verify(image)
        image.require_content()
        if name == "ls":
            return ls(image, args.path, args.long, args.recursive)
        return cat(image, args.path)
    finally:
        image.close()


def resolve(tree: Tree, path: str) -> tuple[Node, Filesystem]:
    """``path`` in the image, or a ``PathError`` that says what is wrong with it in words."""
    try:
        return tree.resolve(path)
    except FileNotFoundError:
        raise PathError(f"{path}: no such file or folder in the image") from None
    except NotADirectoryError:
        raise PathError(f"{path}: a part of this path is a file, not a folder") from None


def verify(image: OpenedImage) -> int:
    """Check every checksum the image has: each layer says what it checks (EDC/ECC of raw sectors, a
    container's checksums)."""
    problems: list[str] = []
    checked: list[str] = []
    progress = terminal_progress()
    for layer, name in image.opened:
        if layer.checks:
            checked.append(f"{name}: {layer.checks}")
            problems += layer.verify(progress)
    if not checked:
        image.require_content()  # nothing checked, and nothing known inside: that is the answer
        print(f"{image.path}: nothing to verify (no layer of this image carries checksums)")
        return 0
    for problem in problems:
        print(f"imgfs: {problem}", file=sys.stderr)
    verdict = f"{len(problems)} problem(s)" if problems else "OK"
    print(f"{image.path}: {verdict} ({'; '.join(checked)})")
    return 1 if problems else 0


def long_line(tree: Tree, node: Node, fs: Filesystem, name: str) -> str:
    st = tree.attributes(node, fs)
    when = time.strftime("%Y-%m-%d %H:%M", time.gmtime(st.mtime_ns // 1_000_000_000))
    size = f"{os.major(st.rdev)}, {os.minor(st.rdev)}" if stat.S_ISCHR(st.mode) or stat.S_ISBLK(st.mode) \
        else str(st.size)
    line = f"{stat.filemode(st.mode)} {st.nlink:>3} {st.uid:>5} {st.gid:>5} {size:>12} {when} {name}"
    if node.target is not None:
        line += f" -> {node.target.decode('utf-8', 'surrogateescape')}"
    return line


def ls(image: OpenedImage, path: str, long: bool, recursive: bool) -> int:
    tree = image.tree
    node, fs = resolve(tree, path)

    def show(child: Node, child_fs: Filesystem, name: str) -> str:
        return long_line(tree, child, child_fs, name) if long else name

    out = sys.stdout
    if not node.is_dir:
        print(show(node, fs, path))
        return 0
    if not recursive:
        for name, child, child_fs in tree.listing(node, fs):
            out.write(show(child, child_fs, name) + "\n")
        return 0
    unreadable: list[str] = []

    def report(where: str, exc: Exception) -> None:  # one line for this directory; the walk goes on
        unreadable.append(where)
        fail(f"{where}: {exc}")

    for child_path, child, child_fs in tree.walk_entries(path, on_error=report):
        out.write(show(child, child_fs, child_path) + "\n")
    return 1 if unreadable else 0


def cat(image: OpenedImage, path: str) -> int:
    node, fs = resolve(image.tree, path)
    if node.is_dir:
        raise PathError(f"{path}: is a folder, not a file (imgfs ls lists it)")
    stream = fs.open(node)
    out = sys.stdout.buffer
    for offset in range(0, stream.size, 1 << 20):
        out.write(stream.pread(offset, 1 << 20))
    out.flush()
    return 0
