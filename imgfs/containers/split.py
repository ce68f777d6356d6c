"""Split raw images: ``disk.001``, ``disk.002``, ... (or ``disk.raw.001``) read as one disk.

Segments are found by name, since their bytes say nothing about each other; a gap in the numbering
is an error that names the missing segment.
"""

from __future__ import annotations

import os
import re
from typing import Optional

from imgfs.errors import MissingFile
from imgfs.io.stream import ConcatStream, FileStream, Stream

_FIRST = re.compile(r"^(?P<stem>.+)\.(?P<number>0*1)$")
MAX_SEGMENTS = 100_000


def segment_paths(path: str) -> Optional[list[str]]:
    """Every segment of a split image whose first segment is ``path``; None if it is not one."""
    match = _FIRST.match(os.path.basename(path))
    if not match:
        return None
    directory = os.path.dirname(path) or "."
    stem, width = match.group("stem"), len(match.group("number"))
    pattern = re.compile(re.escape(stem) + r"\.(\d{" + str(width) + r",})$")
    numbers = sorted(int(m.group(1)) for name in os.listdir(directory) if (m := pattern.match(name)))
    if len(numbers) < 2:
        return None
    for expected, number in enumerate(numbers[:MAX_SEGMENTS], start=1):
        if number != expected:
            missing = os.path.join(directory, f"{stem}.{expected:0{width}d}")
            raise MissingFile(f"segment {missing} of the split image is missing (found up to .{numbers[-1]})",
                              layer="split")
    return [os.path.join(directory, f"{stem}.{n:0{width}d}") for n in numbers]


def open_disk(path: str) -> Stream:
    """The image at ``path``: one file, or all the segments of a split image back to back."""
    segments = segment_paths(path)
    if segments is None:
        return FileStream(path)
    parts = [FileStream(p) for p in segments]
    return ConcatStream(parts, name=path)
