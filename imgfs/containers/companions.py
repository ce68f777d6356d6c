"""A plain file whose Mac resource fork is kept beside it, as Linux, zip files and file servers keep them.

Where a data file ``DIR/NAME``'s resource fork may be:

* ``DIR/._NAME``: an AppleDouble header file, as macOS writes on filesystems without forks, and as
  ``unar``/``ditto`` extract;
* ``ROOT/__MACOSX/REL/._NAME``: the same, from a zip made on macOS and unpacked elsewhere (``ROOT`` is the
  folder the zip was unpacked in, ``REL`` the file's folder below it);
* ``DIR/.AppleDouble/NAME``: netatalk's AppleDouble v2 header file;
* ``DIR/NAME/..namedfork/rsrc``: the fork itself, on macOS.

The first one that holds a non-empty resource fork is used: the file is then opened as its data fork with
``forks["rsrc"]`` set, and detection goes on in it (NDIF finds its chunk table there).
"""

from __future__ import annotations

import logging
import os
from typing import Optional

from imgfs.containers import applesingle
from imgfs.containers.forks import ForkedFile
from imgfs.errors import CorruptImage, ImageError, MissingFile, UnsupportedFormat
from imgfs.io.stream import FileStream, Stream
from imgfs.layer import OpenContext

MAX_LEVELS = 8  # folders looked through upwards for a __MACOSX folder
MAC_IMAGE_EXTENSIONS = (".img", ".image", ".smi", ".dmg", ".ndif", ".dc6", ".toast")
log = logging.getLogger(__name__)


def candidates(path: str) -> list[tuple[str, str]]:
    """(place, kind) of every file that may hold ``path``'s resource fork, in the order they are tried."""
    folder, name = os.path.split(os.path.abspath(path))
    found = [(os.path.join(folder, "._" + name), "appledouble")]
    rel = "._" + name
    root = folder
    for _ in range(MAX_LEVELS):
        found.append((os.path.join(root, "__MACOSX", rel), "appledouble"))
        parent = os.path.dirname(root)
        if parent == root:
            break
        rel = os.path.join(os.path.basename(root), rel)
        root = parent
    found.append((os.path.join(folder, ".AppleDouble", name), "appledouble"))
    found.append((os.path.join(path, "..namedfork", "rsrc"), "namedfork"))
    return found


def resource_fork(path: str) -> Optional[tuple[Stream, FileStream, str]]:
    """``path``'s resource fork, the open file that holds it, and that file's path; or None."""
    for place, kind in candidates(path):
        if not os.path.isfile(place):
            continue
        stream = FileStream(place)
        if kind == "namedfork":
            fork: Stream = stream
        elif not applesingle.probe(stream):
            stream.close()
            continue  # not an AppleDouble file: a stray ._ file of another kind
        else:
            try:
                fork = applesingle.parse(stream).stream(stream, applesingle.RESOURCE_FORK)
            except ImageError as exc:  # an AppleDouble file, but damaged: say which
                stream.close()
                raise CorruptImage(f"{place}: {exc.message}", layer=exc.layer, offset=exc.offset) from None
        if fork.size:
            return fork, stream, place
        stream.close()
    return None


def claims(path: str) -> bool:
    """A file whose resource fork is in a companion file (the registry's source for it). A damaged companion
    is passed over with a warning: the file may well be readable without it (and if not, the refusal names
    the damage)."""
    if not os.path.isfile(path) or not any(os.path.isfile(place) for place, _ in candidates(path)):
        return False
    try:
        return resource_fork(path) is not None
    except CorruptImage as exc:
        log.info("%s; the file is read without it", exc)
        return False


def where_looked(path: str) -> str:
    """The end of a sentence saying where ``path``'s resource fork was looked for, and what was wrong there."""
    try:
        if resource_fork(path) is not None:
            return ""
    except CorruptImage as exc:
        return f" ({exc})"
    places = [place for place, kind in candidates(path) if kind != "namedfork"][:4]
    return f" (looked for {', '.join(places)}; or mount a MacBinary or AppleSingle copy)"


def probe_lost_fork(stream: Stream) -> bool:
    """The file the user named, which nothing recognised, without a resource fork, and named like a Disk Copy
    image: only the message it gets depends on the name (detection by content has already failed)."""
    return isinstance(stream, FileStream) and not stream.forks and \
        os.path.splitext(stream.name)[1].lower() in MAC_IMAGE_EXTENSIONS


def refuse_lost_fork(stream: Stream, ctx: OpenContext) -> Stream:
    if ctx.namespace != "auto":  # detection skipped what does not offer that namespace: that is the reason
        raise UnsupportedFormat(f"{stream.name} has no {ctx.namespace} side (namespace=auto shows what it holds)")
    raise UnsupportedFormat(f"no known image format in {stream.name}; if it is a Disk Copy 6 (NDIF) image, its chunk "
                            f"table is in its resource fork, which is missing{where_looked(stream.name)}",
                            layer="ndif")


def open_with_companion(path: str, ctx: Optional[OpenContext] = None) -> ForkedFile:
    """The file at ``path`` with the resource fork of its companion."""
    found = resource_fork(path)
    if found is None:
        raise MissingFile(f"{path}: no companion file holds its resource fork", layer="companion")
    fork, holder, place = found
    data = FileStream(path)
    return ForkedFile(data, 0, data.size, {"rsrc": fork}, "companion", {"resource_fork": place},
                      owned=(data, holder))
