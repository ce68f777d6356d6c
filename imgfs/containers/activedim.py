"""Active@ Disk Image raw sets: ``NAME.dim`` (a configuration file) and the data in ``NAME.dim.001``,
``NAME.dim.002``, ... beside it.

The data files are the disk's sectors, back to back, with nothing added. The configuration file "describes
the disk or partition geometry and keeps the image description" (Active@'s documentation); its layout is
not published. What imgfs reads of it is what can be read without knowing the layout: the text it holds
(UTF-16 or ASCII), for ``imgfs info``, and whether it records the data's size (as a 32- or 64-bit
little-endian count of bytes or of 512-byte sectors) where that agrees with the segments; a descriptor that
disagrees is not trusted over the segments.
"""

from __future__ import annotations

import os
import re
import struct
from typing import Any, Optional

from imgfs.containers.files import SplitImage, numbered_segments, open_all
from imgfs.errors import MissingFile
from imgfs.io.stream import Stream
from imgfs.layer import OpenContext

LAYER = "activedim"
MAX_DESCRIPTOR_SIZE = 1 << 20
MAX_STRINGS = 16
_UTF16 = re.compile(rb"(?:[\x20-\x7e]\x00){4,}")
_ASCII = re.compile(rb"[\x20-\x7e]{6,}")


def texts(raw: bytes) -> list[str]:
    """The readable strings of a descriptor, UTF-16LE ones first, in order, without repeats."""
    found: list[str] = []
    for match in _UTF16.finditer(raw):
        found.append(match.group().decode("utf-16-le").strip())
    for match in _ASCII.finditer(raw):
        found.append(match.group().decode("ascii").strip())
    unique = list(dict.fromkeys(t for t in found if t))
    return unique[:MAX_STRINGS]


def records_size(raw: bytes, size: int) -> bool:
    """Whether ``size`` bytes (or ``size`` / 512 sectors) appears in ``raw`` as a little-endian integer."""
    wanted = {struct.pack("<Q", size)}
    if size < 1 << 32:
        wanted.add(struct.pack("<I", size))
    if size % 512 == 0:
        wanted.add(struct.pack("<Q", size // 512))
        if size // 512 < 1 << 32 and size // 512 >= 1 << 16:  # a short count would match too much by chance
            wanted.add(struct.pack("<I", size // 512))
    return any(w in raw for w in wanted)


def describe(raw: bytes, data_size: int) -> dict[str, Any]:
    """What ``imgfs info`` shows of a descriptor of ``raw`` bytes for ``data_size`` bytes of segments."""
    return {"descriptor_size": len(raw), "descriptor_text": texts(raw),
            "descriptor_records_data_size": records_size(raw, data_size)}


def first_segment(path: str) -> Optional[str]:
    """``NAME.dim.001`` beside ``NAME.dim`` (any letter case of the ``.dim``), or None."""
    if not path.lower().endswith(".dim") or not os.path.isfile(path):
        return None
    candidate = path + ".001"
    return candidate if os.path.isfile(candidate) else None


def claims(path: str) -> bool:
    return first_segment(path) is not None


class DimSet(SplitImage):
    """The data segments of an Active@ raw set, back to back, described with what its ``.dim`` says."""

    kind = LAYER

    def __init__(self, parts: list[Stream], path: str, descriptor: bytes) -> None:
        super().__init__(parts, name=path)
        self.descriptor = descriptor

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), **describe(self.descriptor, self.size)}


def open_dim(path: str, ctx: Optional[OpenContext] = None) -> DimSet:
    if first_segment(path) is None:
        raise MissingFile(f"{path}: its first data segment {path}.001 is missing", layer=LAYER)
    directory, name = os.path.split(path)
    segments = numbered_segments(directory or ".", name, 3, 1, LAYER)
    with open(path, "rb") as handle:
        descriptor = handle.read(MAX_DESCRIPTOR_SIZE)
    return DimSet(open_all(segments), path, descriptor)
