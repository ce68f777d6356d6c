"""Which filesystem of an optical disc to show: ISO 9660 (with Joliet or Rock Ridge) or UDF.

A bridge disc holds both, over the same file data. ``-o namespace=`` picks one; by default the
richest is shown: Rock Ridge, then UDF, then Joliet, then plain ISO 9660 (design.md). When UDF is
there but cannot be read, the ISO 9660 side is shown with a warning rather than nothing. The one shown
lists every namespace of the disc (``Filesystem.namespaces``), for ``imgfs info``.
"""

from __future__ import annotations

import logging
from typing import Optional

from imgfs.errors import ImageError
from imgfs.filesystems.base import Filesystem
from imgfs.filesystems.iso9660 import NAMESPACES as ISO_NAMESPACES
from imgfs.filesystems.iso9660 import IsoFilesystem
from imgfs.filesystems.vrs import recognition_sequence
from imgfs.io.stream import Stream
from imgfs.layer import OpenContext
from imgfs.registry import DISC_NAMESPACES as NAMESPACES  # richest first

log = logging.getLogger(__name__)


def open_disc_filesystem(stream: Stream, ctx: OpenContext) -> Filesystem:
    """The filesystem ``ctx.namespace`` asks for, or the richest one on the disc."""
    if ctx.namespace == "udf":
        return _offering(_udf(stream, ctx), _iso_namespaces(stream, ctx))
    if ctx.namespace in ISO_NAMESPACES:
        chosen = IsoFilesystem(stream, ctx)
        return _offering(chosen, (*chosen.namespaces, *(["udf"] if has_udf(stream) else [])))
    iso, iso_error = _try_iso(stream, ctx)
    if iso is not None and iso.namespace == "rockridge":
        return _offering(iso, (*iso.namespaces, *(["udf"] if has_udf(stream) else [])))
    if not has_udf(stream):
        if iso is None:
            assert iso_error is not None
            raise iso_error
        return iso
    try:
        udf = _udf(stream, ctx)
    except ImageError as exc:
        if iso is None:
            raise
        log.warning("%s: the UDF side of this disc cannot be read (%s); showing its %s namespace", stream.name, exc,
                    iso.namespace)
        return iso
    return _offering(udf, iso.namespaces if iso is not None else ())


def _udf(stream: Stream, ctx: OpenContext) -> Filesystem:
    from imgfs.filesystems.udf import UdfFilesystem  # imported for a disc with a UDF side only: 8 ms

    return UdfFilesystem(stream, ctx)


def has_udf(stream: Stream) -> bool:
    """Whether the session has a UDF volume recognition sequence (BEA01, NSR02/NSR03)."""
    disc, start = stream.origin()
    try:
        recognition_sequence(disc, start)
    except ImageError:
        return False
    return True


def _try_iso(stream: Stream, ctx: OpenContext) -> tuple[Optional[IsoFilesystem], Optional[ImageError]]:
    if ctx.namespace not in ISO_NAMESPACES:
        ctx = ctx.replace(namespace="auto")
    try:
        return IsoFilesystem(stream, ctx), None
    except ImageError as exc:
        return None, exc


def _iso_namespaces(stream: Stream, ctx: OpenContext) -> tuple[str, ...]:
    """The ISO namespaces of a disc mounted as UDF, for ``imgfs info``; none when there is no ISO side."""
    iso, _ = _try_iso(stream, ctx)
    return iso.namespaces if iso is not None else ()


def _offering(fs: Filesystem, available: tuple[str, ...]) -> Filesystem:
    """``fs``, listing every namespace of the disc (its own too), richest first."""
    names = set(available) | {fs.namespace}
    fs.namespaces = tuple(ns for ns in NAMESPACES if ns in names)
    return fs
