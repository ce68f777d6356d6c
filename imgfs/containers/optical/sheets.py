"""The sheet that describes a data file: mounting ``Game.bin`` mounts what ``Game.cue`` beside it describes.

The registry's sheet finder. A sheet with the data file's stem and a sheet extension (.cue, .ccd, .mds,
any letter case) describes it (a cue sheet only when one of its FILE lines names it, or when it names one
data file that is missing and this file is the one renamed data file beside it); failing that, any cue sheet
in the folder that names it does (redump's ``Game (Track 1).bin`` is named by ``Game.cue``).
"""

from __future__ import annotations

import os
from typing import Optional

from imgfs.containers.optical.files import resolve, sibling
from imgfs.errors import ImageError

SHEETS = (".cue", ".ccd", ".mds", ".nrg")
MAX_SHEETS_LOOKED_AT = 64


def sheet_for(path: str) -> Optional[str]:
    """The cue sheet, CloneCD or Alcohol descriptor that describes the data file ``path``, if one is beside it."""
    if os.path.isdir(path) or not os.path.isfile(path) or path.lower().endswith(SHEETS):
        return None
    named = sibling(path, (".cue", ".ccd", ".mds"))
    if named and (not named.lower().endswith(".cue") or names(named, path)):
        return named
    folder = os.path.dirname(os.path.abspath(path))
    try:
        sheets = sorted(e for e in os.listdir(folder) if e.lower().endswith(".cue"))[:MAX_SHEETS_LOOKED_AT]
    except OSError:
        return None
    for entry in sheets:
        candidate = os.path.join(folder, entry)
        if names(candidate, path):
            return candidate
    return None


def names(sheet: str, path: str) -> bool:
    """Whether the cue sheet ``sheet`` has a FILE line for ``path``."""
    # Imported here: this module runs on every mount, and the cue reader (with the disc model) is needed
    # only when a sheet lies beside the image.
    from imgfs.containers.optical import cue

    try:
        files = cue.data_files(sheet)
    except (OSError, ImageError):
        return False
    target = os.path.realpath(path)
    for name in files:
        try:
            if os.path.realpath(resolve(sheet, name, renamed=len(files) == 1, warn=False)) == target:
                return True
        except ImageError:
            continue
    return False
