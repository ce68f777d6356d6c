"""Finding the data files a sidecar names: relative to the sidecar, tolerating another letter case."""

from __future__ import annotations

import os

from imgfs.errors import MissingFile
from imgfs.io.stream import FileStream


def resolve(sheet: str, name: str, what: str = "data file") -> str:
    """The path of ``name`` (as a cue/MDS/CCD names it) next to ``sheet``; ``MissingFile`` names it when absent.

    Windows sheets use backslashes and drive letters; only the last component is trusted when the
    whole path does not exist. A different letter case is accepted when exactly one file matches.
    """
    folder = os.path.dirname(os.path.abspath(sheet))
    cleaned = name.strip().strip('"').replace("\\", "/")
    candidates = [cleaned, os.path.basename(cleaned)] if "/" in cleaned else [cleaned]
    for candidate in candidates:
        path = candidate if os.path.isabs(candidate) else os.path.join(folder, candidate)
        if os.path.isfile(path):
            return path
        parent, base = os.path.split(path)
        try:
            matches = [e for e in os.listdir(parent or ".") if e.lower() == base.lower()]
        except OSError:
            continue
        if len(matches) == 1 and os.path.isfile(os.path.join(parent, matches[0])):
            return os.path.join(parent, matches[0])
    raise MissingFile(f"{os.path.basename(sheet)} names the {what} {name!r}, which is not in {folder}")


def open_data_file(sheet: str, name: str, what: str = "data file") -> FileStream:
    return FileStream(resolve(sheet, name, what))


def sibling(path: str, extensions: tuple[str, ...]) -> str | None:
    """A file beside ``path`` with the same stem and one of ``extensions`` (any letter case), if there is one."""
    folder = os.path.dirname(os.path.abspath(path))
    stem = os.path.splitext(os.path.basename(path))[0].lower()
    try:
        entries = sorted(os.listdir(folder))
    except OSError:
        return None
    for ext in extensions:
        for entry in entries:
            if entry.lower() == stem + ext and os.path.isfile(os.path.join(folder, entry)):
                return os.path.join(folder, entry)
    return None
