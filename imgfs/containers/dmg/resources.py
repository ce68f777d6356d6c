"""Where a UDIF image keeps its block tables: an XML plist, or (old images) a binary resource fork.

Both hold the same ``blkx`` resources, one per partition: a name, a numeric id and the bytes of a
``mish`` block table. The XML plist is ``resource-fork`` -> ``blkx`` -> an array of dicts with ``Data``,
``Name`` (or ``CFName``) and ``ID``. The resource fork is the classic Mac OS layout, read by
``imgfs.containers.resourcefork`` (which NDIF shares).
"""

from __future__ import annotations

import plistlib
from typing import Any, NamedTuple

from imgfs.containers import resourcefork
from imgfs.containers.dmg.structs import LAYER
from imgfs.errors import CorruptImage
from imgfs.io.stream import BytesStream

MAX_METADATA_SIZE = 256 << 20  # a plist of 100,000 runs is about 6 MB; a bigger one is not a real image


class BlkxResource(NamedTuple):
    name: str
    resource_id: int
    data: bytes


def from_plist(text: bytes, offset: int) -> list[BlkxResource]:
    """The ``blkx`` resources of the XML plist ``text`` (read at ``offset``, which errors name)."""
    try:
        root = plistlib.loads(text)
    except Exception as exc:  # noqa: BLE001 - expat, plistlib and binascii each raise their own kind
        first = text[:16].split(b"\n")[0]
        raise CorruptImage(f"the XML plist is not a property list ({type(exc).__name__}: {exc}; it begins "
                           f"{first!r})", layer=LAYER, offset=offset) from None
    entries = _dig(root, offset)
    found = []
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict) or not isinstance(entry.get("Data"), bytes):
            raise CorruptImage(f"blkx entry {index} of the plist has no Data", layer=LAYER, offset=offset)
        name = entry.get("Name") or entry.get("CFName") or ""
        found.append(BlkxResource(str(name), _int(entry.get("ID"), index), entry["Data"]))
    return found


def _dig(root: Any, offset: int) -> list[Any]:
    fork = root.get("resource-fork") if isinstance(root, dict) else None
    blkx = fork.get("blkx") if isinstance(fork, dict) else None
    if not isinstance(blkx, list):
        raise CorruptImage("the plist has no resource-fork/blkx array", layer=LAYER, offset=offset)
    return blkx


def _int(value: Any, default: int) -> int:
    try:
        return int(str(value), 0)
    except ValueError:
        return default


def from_resource_fork(fork: bytes, offset: int) -> list[BlkxResource]:
    """The ``blkx`` resources of a binary resource fork ``fork`` (read at ``offset``)."""
    try:
        found = resourcefork.resources(BytesStream(fork, name="resource fork"), b"blkx", LAYER)
    except CorruptImage as exc:  # name the place in the image, not in the fork
        raise CorruptImage(exc.message, layer=LAYER, offset=offset + (exc.offset or 0)) from None
    return [BlkxResource(r.name, r.id, r.data) for r in found]
