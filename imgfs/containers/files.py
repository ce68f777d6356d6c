"""The file the user named: one file, or the segments of a split raw image read as one disk.

This is the registry's last source: it takes any path. Split images are ``disk.001``, ``disk.002``, ...
(or ``disk.raw.001``); the segments are found by name, since their bytes say nothing about each other,
and a gap in the numbering is an error that names the missing segment.
"""

from __future__ import annotations

import os
import re
from typing import Any, Optional

from imgfs.errors import MissingFile
from imgfs.io.stream import ConcatStream, FileStream, Stream
from imgfs.layer import Layer, OpenContext

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


class ImageFile(FileStream, Layer):
    """One image file."""

    def describe(self) -> dict[str, Any]:
        return {"path": self.name, "size": self.size}


class SplitImage(ConcatStream, Layer):
    """The segments of a split image, back to back."""

    def describe(self) -> dict[str, Any]:
        return {"path": self.name, "size": self.size, "segments": len(self.parts)}

    def close(self) -> None:
        for part in self.parts:
            if isinstance(part, FileStream):
                part.close()


def claims(path: str) -> bool:
    return True


def open_files(path: str, ctx: Optional[OpenContext] = None) -> Stream:
    """The image at ``path``: one file, or all the segments of a split image back to back."""
    segments = segment_paths(path)
    if segments is None:
        return ImageFile(path)
    parts: list[Stream] = []
    try:
        for segment in segments:
            parts.append(FileStream(segment))
    except BaseException:
        for part in parts:
            assert isinstance(part, FileStream)
            part.close()
        raise
    return SplitImage(parts, name=path)
