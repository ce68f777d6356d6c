"""Which filesystem of an optical disc to show: ISO 9660 (with Joliet or Rock Ridge) or UDF.

A bridge disc holds both, over the same file data. ``-o namespace=`` picks one; by default the
richest is shown: Rock Ridge, then UDF, then Joliet, then plain ISO 9660 (design.md). When UDF is
there but cannot be read, the ISO 9660 side is shown with a warning rather than nothing.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Optional

from imgfs.errors import ImageError
from imgfs.filesystems.iso9660 import NAMESPACES as ISO_NAMESPACES
from imgfs.filesystems.iso9660 import IsoFilesystem
from imgfs.filesystems.udf import UdfFilesystem
from imgfs.filesystems.udf.volume import recognition_sequence
from imgfs.io.cache import BlockCache
from imgfs.io.stream import Stream
from imgfs.tree import Filesystem, FsOptions

log = logging.getLogger(__name__)

NAMESPACES = ("rockridge", "udf", "joliet", "iso1999", "iso9660")  # richest first


def open_disc_filesystem(stream: Stream, cache: BlockCache, options: FsOptions = FsOptions()) -> Filesystem:
    """The filesystem ``options.namespace`` asks for, or the richest one on the disc."""
    if options.namespace == "udf":
        return _with_namespaces(UdfFilesystem(stream, cache, options), _iso_namespaces(stream, cache, options))
    if options.namespace in ISO_NAMESPACES:
        chosen = IsoFilesystem(stream, cache, options)
        return _with_namespaces(chosen, chosen.namespaces + (["udf"] if has_udf(stream, options) else []))
    iso, iso_error = _try_iso(stream, cache, options)
    if iso is not None and iso.namespace == "rockridge":
        return _with_namespaces(iso, iso.namespaces + (["udf"] if has_udf(stream, options) else []))
    if not has_udf(stream, options):
        if iso is None:
            assert iso_error is not None
            raise iso_error
        return iso
    try:
        udf = UdfFilesystem(stream, cache, options)
    except ImageError as exc:
        if iso is None:
            raise
        log.warning("%s: the UDF side of this disc cannot be read (%s); showing its %s namespace", stream.name, exc,
                    iso.namespace)
        return iso
    return _with_namespaces(udf, iso.namespaces if iso is not None else [])


def has_udf(stream: Stream, options: FsOptions) -> bool:
    """Whether the session has a UDF volume recognition sequence (BEA01, NSR02/NSR03)."""
    try:
        recognition_sequence(stream, options.start_sector * 2048)
    except ImageError:
        return False
    return True


def _try_iso(stream: Stream, cache: BlockCache, options: FsOptions) -> tuple[Optional[IsoFilesystem],
                                                                             Optional[ImageError]]:
    if options.namespace not in ISO_NAMESPACES:
        options = dataclasses.replace(options, namespace="auto")
    try:
        return IsoFilesystem(stream, cache, options), None
    except ImageError as exc:
        return None, exc


def _iso_namespaces(stream: Stream, cache: BlockCache, options: FsOptions) -> list[str]:
    """The ISO namespaces of a disc mounted as UDF, for ``imgfs info``; none when there is no ISO side."""
    iso, _ = _try_iso(stream, cache, options)
    return iso.namespaces if iso is not None else []


def _with_namespaces(fs: Filesystem, available: list[str]) -> Filesystem:
    """Record every namespace of the disc on the filesystem shown, richest first (``describe`` lists them)."""
    names = set(available) | {getattr(fs, "namespace", "udf")}
    fs.namespaces = [ns for ns in NAMESPACES if ns in names]  # type: ignore[attr-defined]
    return fs
