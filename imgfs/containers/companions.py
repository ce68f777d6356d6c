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

import os
from typing import Optional

from imgfs.containers import applesingle
from imgfs.containers.forks import ForkedFile
from imgfs.errors import CorruptImage, ImageError
from imgfs.io.stream import FileStream, Stream

MAX_LEVELS = 8  # folders looked through upwards for a __MACOSX folder


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


def open_with_companion(path: str) -> Optional[ForkedFile]:
    """The file at ``path`` with the resource fork of its companion, when it has one."""
    found = resource_fork(path)
    if found is None:
        return None
    fork, holder, place = found
    data = FileStream(path)
    return ForkedFile(data, 0, data.size, {"rsrc": fork}, "companion", {"resource_fork": place},
                      owned=(data, holder))
