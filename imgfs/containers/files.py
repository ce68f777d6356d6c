"""The file the user named: one file, or the segments of a split raw image read as one disk.

This is the registry's last source: it takes any path. Split images are ``disk.001``, ``disk.002``, ...
(or ``disk.raw.001``, or numbered from ``disk.000``); the segments are found by name, since their bytes
say nothing about each other, and a gap in the numbering is an error that names the missing segment.
"""

from __future__ import annotations

import os
import re
from typing import Any, Optional

from imgfs.errors import MissingFile
from imgfs.io.stream import ConcatStream, FileStream, Stream
from imgfs.layer import Layer, OpenContext

_FIRST = re.compile(r"^(?P<stem>.+)\.(?P<number>0*[01])$")
MAX_SEGMENTS = 100_000


def segment_paths(path: str) -> Optional[list[str]]:
    """Every segment of a split image whose first segment is ``path`` (numbered from .001, or from .000 when
    there is one); None if it is not one."""
    match = _FIRST.match(os.path.basename(path))
    if not match:
        return None
    directory = os.path.dirname(path) or "."
    stem, width = match.group("stem"), len(match.group("number"))
    first = int(match.group("number"))
    if first == 1 and os.path.isfile(os.path.join(directory, f"{stem}.{0:0{width}d}")):
        first = 0  # the set is numbered from .000: .001 is its second segment
    segments = numbered_segments(directory, stem, width, first, "split")
    return segments if len(segments) >= 2 else None


def numbered_segments(directory: str, stem: str, width: int, first: int, layer: str) -> list[str]:
    """``stem.NNN`` in ``directory``, numbered from ``first`` with at least ``width`` digits; a gap in the
    numbering is ``MissingFile`` naming the first missing segment."""
    pattern = re.compile(re.escape(stem) + r"\.(\d{" + str(width) + r",})$")
    numbers = sorted(int(m.group(1)) for name in os.listdir(directory) if (m := pattern.match(name)))
    numbers = [n for n in numbers if n >= first][:MAX_SEGMENTS]
    for expected, number in enumerate(numbers, start=first):
        if number != expected:
            missing = os.path.join(directory, f"{stem}.{expected:0{width}d}")
            raise MissingFile(f"segment {missing} of the split image is missing (found up to .{numbers[-1]:0{width}d})",
                              layer=layer)
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
    return SplitImage(open_all(segments), name=path)


def open_all(paths: list[str]) -> list[Stream]:
    """Every file of ``paths`` opened, or none (those opened are closed again when one fails)."""
    parts: list[Stream] = []
    try:
        for segment in paths:
            parts.append(FileStream(segment))
    except BaseException:
        for part in parts:
            assert isinstance(part, FileStream)
            part.close()
        raise
    return parts
