"""Containers: what wraps a disk or a disc (split segments, cue sheets, NRG, MDS, CCD, DMG, sparse images).

A container's opener is named by its registry entry and called as ``opener(stream, ctx)``, where
``stream`` is the file the user named (or the first file of a sidecar's set) and ``ctx`` is an
``OpenContext``. It returns either

* a ``Stream`` of the disk inside (a decoded DMG, a sparse image), with a ``describe() -> dict``
  method for ``imgfs info``; detection then goes on inside it (partition map or filesystem); or
* a ``Disc`` (``imgfs.containers.optical.disc``): sessions and tracks of a CD or DVD.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

from imgfs.io.cache import BlockCache


def _no_passphrase() -> Optional[str]:
    return None


@dataclass
class OpenContext:
    path: str  # the file (or directory, for a sparsebundle) the user named
    cache: BlockCache  # the mount's one cache of decoded bytes
    verify: bool = False  # -o verify: check EDC/ECC or checksums while reading
    passphrase: Callable[[], Optional[str]] = _no_passphrase  # asked only when an image needs one
