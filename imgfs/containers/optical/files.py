"""Finding the data files a sidecar names: relative to the sidecar, tolerating another letter case, and a
renamed data file: users rename downloads, and the sheet still names the old file. When the named file is
not there and exactly one file beside the sheet has the sheet's stem and a data extension (.bin, .img, .mdf,
.iso, any letter case), that one is used, with a warning.
"""

from __future__ import annotations

import logging
import os
from typing import Optional

from imgfs.errors import MissingFile
from imgfs.io.stream import FileStream

log = logging.getLogger(__name__)

DATA_EXTENSIONS = (".bin", ".img", ".mdf", ".iso")


def resolve(sheet: str, name: str, what: str = "data file", renamed: bool = False, warn: bool = True) -> str:
    """The path of ``name`` (as a cue/MDS/CCD names it) next to ``sheet``; ``MissingFile`` names it when absent.

    Windows sheets use backslashes and drive letters; only the last component is trusted when the
    whole path does not exist. A different letter case is accepted when exactly one file matches. With
    ``renamed`` (the sheet names one data file only), the one data file with the sheet's stem stands in for a
    missing one.
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
    stand_in = renamed_data_file(sheet) if renamed else None
    if stand_in is not None:
        if warn:
            log.warning("%s names the %s %r, which is not in %s; using %s, the one data file named like the sheet",
                        os.path.basename(sheet), what, name, folder, os.path.basename(stand_in))
        return stand_in
    raise MissingFile(f"{os.path.basename(sheet)} names the {what} {name!r}, which is not in {folder}")


def renamed_data_file(sheet: str) -> Optional[str]:
    """The one file beside ``sheet`` with its stem and a data extension (any letter case), if exactly one."""
    folder = os.path.dirname(os.path.abspath(sheet))
    stem = os.path.splitext(os.path.basename(sheet))[0].lower()
    try:
        entries = os.listdir(folder)
    except OSError:
        return None
    found = [e for e in entries if os.path.splitext(e)[0].lower() == stem
             and os.path.splitext(e)[1].lower() in DATA_EXTENSIONS and os.path.isfile(os.path.join(folder, e))]
    return os.path.join(folder, found[0]) if len(found) == 1 else None


def open_data_file(sheet: str, name: str, what: str = "data file", renamed: bool = False) -> FileStream:
    return FileStream(resolve(sheet, name, what, renamed))


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
