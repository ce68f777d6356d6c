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

import re
import struct
from typing import Any

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
