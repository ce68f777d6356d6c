"""The layer contract: what every opened layer offers, and the three things an opener returns.

Every format has one opener, named by its registry entry and called as ``opener(stream, ctx)``: the
stream to read (the image file, the disk inside a container, a partition) and one frozen
``OpenContext``. It returns one of three things, each a ``Layer``:

* a **container**: a ``Stream`` that is also a ``Layer`` (a decoded DMG, a sparse image, a decrypted
  image). Detection goes on inside it.
* a **volume set** (``VolumeSet``): named child volumes, each a stream to be detected again (a
  partition, a session of a disc) or a layer opened directly (an APFS volume, which shares its
  container's blocks), plus what the set shows itself: files beside the volumes (audio tracks), files
  when no volume can be shown, and raw views.
* a **filesystem** (``imgfs.filesystems.base.Filesystem``): the tree of one volume.

A layer describes itself for ``imgfs info`` (``describe``), may check its own checksums (``verify``),
may offer raw views for the ``.imgfs`` folder (``views``), and releases what it opened (``close``).
Nothing here names a format: the assembler (``imgfs.image``) only ever sees this contract.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Optional, Union

from imgfs.io.cache import BlockCache
from imgfs.io.stream import Stream

Progress = Callable[[str, int, int], None]  # (what, done, total): total 0 when unknown


def no_progress(what: str, done: int, total: int) -> None:
    """The default progress callback: silent."""


def no_passphrase() -> Optional[str]:
    return None


@dataclass(frozen=True)
class OpenContext:
    """What every opener is told: one per image, the same for every layer of it."""

    path: str  # the file (or folder) the user named, or the sheet that describes it
    cache: BlockCache  # the mount's one cache of decoded bytes
    verify: bool = False  # -o verify: check checksums (before mounting, or of each sector read)
    passphrase: Callable[[], Optional[str]] = no_passphrase  # asked only when an image needs one, at most once
    namespace: str = "auto"  # -o namespace=: which directory tree of a volume that has several
    raw_views: bool = False  # -o rawviews: the .imgfs folder of raw views is wanted
    progress: Progress = no_progress  # long work at open time (key derivation, whole-image checks) reports here

    def replace(self, **changes: Any) -> OpenContext:
        return replace(self, **changes)


class Layer:
    """Base of every opened layer; each method has a default that does nothing."""

    kind = ""  # the layer's name in ``imgfs info`` when it differs from its format's (a disc shown as UDF)
    label = ""  # the volume name, when the layer has one
    checks = ""  # what ``verify`` checks ("EDC/ECC of the raw data sectors"); empty: nothing to check

    def describe(self) -> dict[str, Any]:
        """What ``imgfs info`` shows of this layer: plain JSON-able values."""
        return {}

    def verify(self, progress: Progress = no_progress) -> list[str]:
        """Check every checksum this layer has; one line per problem found."""
        return []

    def views(self) -> Sequence[View]:
        """Raw views of this layer for the ``.imgfs`` folder (``-o rawviews``); asked only when wanted."""
        return ()

    def close(self) -> None:
        """Release what this layer opened itself (never the stream it was given)."""


@dataclass(frozen=True)
class View:
    """An entry of the ``.imgfs`` folder: ``path`` below it ("tracks/Track 01.bin"), and what it shows: a
    stream as a file, or a filesystem as a folder (a snapshot, an earlier session)."""

    path: str
    target: Union[Stream, Layer]  # a Filesystem, for a folder


@dataclass
class Volume:
    """One child of a volume set: a stream to detect again, or a layer to open directly."""

    name: str  # the folder's name; the label of what opens is appended ("1" -> "1 EFI")
    stream: Optional[Stream] = None  # detected again, for formats of ``kinds``
    open: Optional[Callable[[OpenContext], Layer]] = None  # or opened by this (no detection)
    label: str = ""  # shown when what opens has no label of its own (a GPT partition's name)
    kinds: tuple[str, ...] = ("filesystem",)  # what detection looks for in ``stream``
    raw: str = ""  # the file its bytes are shown as when nothing readable opens ("3.img"); "": not shown
    view: str = ""  # where its bytes are among the raw views ("partitions/3.img"); "": nowhere
    details: dict[str, Any] = field(default_factory=dict)  # for ``imgfs info``: {"partition": 3}


class VolumeSet(Layer):
    """A layer of volumes: a partition map, the sessions of a disc, an APFS container.

    By default each volume that opens is a folder (a set of exactly one volume shows it at the root).
    With ``choose_one``, the volumes are alternatives in order of preference: the first that opens is
    shown at the root, and the others only among the raw views, under ``others/NAME``.
    """

    choose_one = False
    others = ""  # choose_one: the raw-views folder of the volumes not shown ("sessions")

    def volumes(self) -> Sequence[Volume]:
        raise NotImplementedError

    def extras(self) -> Sequence[tuple[str, Stream]]:
        """Files shown beside whatever is at the root (a mixed-mode disc's audio tracks)."""
        return ()

    def fallback(self) -> Sequence[tuple[str, Stream]]:
        """Files shown at the root when no volume opens (a disc's data tracks as images)."""
        return ()

    def empty_reason(self) -> str:
        """Why nothing at all can be shown, when that is so: the one line the user gets."""
        return ""
