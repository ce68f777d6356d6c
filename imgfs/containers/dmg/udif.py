"""Opening a UDIF image (.dmg): from the koly trailer, through its block tables, to the disk inside.

The trailer is normally the last 512 bytes (rarely the first 512, with the data after it). Its offsets
count from the start of the UDIF image, which is not always the start of the file: a DMG appended to
other data (a self-extracting stub, a download wrapper) keeps its own offsets, so when they do not fit
the file the image is taken to end at its trailer, and to start where its parts then have to begin.
Runs point into the data fork: at the data fork's offset, plus the block table's data offset.

Segmented images (``X.dmg``, ``X.002.dmgpart``, ...) are read when the opener is given the first
segment as a file: each segment's trailer places its data fork at a running offset in one data fork.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from typing import Any, Optional

from imgfs.containers.dmg import resources
from imgfs.containers.dmg.disk import Piece, UdifDisk
from imgfs.containers.dmg.structs import (
    CODEC_NAMES,
    COMPRESSED,
    HOLES,
    KOLY_MAGIC,
    KOLY_SIZE,
    LAYER,
    SECTOR,
    ZERO,
    BlkxTable,
    Koly,
    codec_name,
)
from imgfs.containers.dmg.verify import verify_image
from imgfs.errors import CorruptImage, MissingFile, UnsupportedFormat
from imgfs.io.cache import BlockCache
from imgfs.io.stream import Extent, ExtentStream, FileStream, SliceStream, Stream, read_exact
from imgfs.layer import Layer, OpenContext, Progress, no_progress

log = logging.getLogger(__name__)

VARIANTS = {1: "device image", 2: "partition image"}  # kUDIFDeviceImageType, kUDIFPartitionImageType
FORMAT_NAMES = {"zlib": "UDZO", "bzip2": "UDBZ", "lzfse": "ULFO", "lzma": "ULMO", "adc": "UDCO"}


@dataclass(frozen=True)
class Trailer:
    koly: Koly
    at: int  # where the koly block is in the file
    base: int  # where the UDIF image starts in the file (what its offsets count from)
    leading: bool = False  # the rare layout with the koly block first and the data after it


def probe(stream: Stream) -> bool:
    """A koly block (its magic and its 512-byte size) at the end, or at the start, of the stream."""
    return _koly_at_end(stream) or _is_koly(stream.pread(0, 12))


def _is_koly(head: bytes) -> bool:
    return head[:4] == KOLY_MAGIC and head[8:12] == KOLY_SIZE.to_bytes(4, "big")


def _koly_at_end(stream: Stream) -> bool:
    return stream.size >= KOLY_SIZE and _is_koly(stream.pread(stream.size - KOLY_SIZE, 12))


def find_trailer(stream: Stream) -> Trailer:
    """The koly trailer and where the image it describes starts."""
    at = max(0, stream.size - KOLY_SIZE)
    tail = stream.pread(at, KOLY_SIZE)
    if tail[:4] == KOLY_MAGIC and stream.size >= KOLY_SIZE:
        koly = Koly.parse(tail, at)
        return Trailer(koly, at, _image_start(stream, koly, at))
    head = stream.pread(0, KOLY_SIZE)
    if _is_koly(head):
        return Trailer(Koly.parse(head, 0), 0, 0, leading=True)
    raise UnsupportedFormat(f"no UDIF trailer: expected 'koly' 512 bytes before the end, got {tail[:4]!r}",
                            layer=LAYER, offset=at)


def _image_start(stream: Stream, koly: Koly, at: int) -> int:
    """0 when the trailer's offsets fit the file; else where an image ending at its trailer begins."""
    forks = koly.forks()
    top = max((offset + length for offset, length in forks.values()), default=0)
    if top > at:
        name, (offset, length) = max(forks.items(), key=lambda item: sum(item[1]))
        raise CorruptImage(f"the koly trailer places the {name} at bytes {offset}-{offset + length - 1}, past the "
                           f"trailer itself (the image may be truncated)", layer=LAYER, offset=at)
    if top == at or _metadata_at(stream, koly, 0):
        return 0
    if _metadata_at(stream, koly, at - top):
        log.info("udif: the image starts at byte %d of the file, after other data", at - top)
        return at - top
    return 0


def _metadata_at(stream: Stream, koly: Koly, base: int) -> bool:
    if koly.xml_length:
        return stream.pread(base + koly.xml_offset, 6) in (b"<?xml ", b"<plist", b"bplist")
    if koly.rsrc_length >= 16:
        return stream.pread(base + koly.rsrc_offset, 4) == b"\0\0\x01\0"
    return False


# -- block tables ------------------------------------------------------------------------------------


def read_tables(stream: Stream, trailer: Trailer) -> tuple[list[BlkxTable], str]:
    """The block tables, and where they came from ("XML plist" or "resource fork")."""
    koly, base = trailer.koly, trailer.base
    found: Optional[list[resources.BlkxResource]] = None
    source = ""
    if koly.xml_length:
        try:
            found, source = resources.from_plist(_metadata(stream, base + koly.xml_offset, koly.xml_length,
                                                           "the XML plist"), base + koly.xml_offset), "XML plist"
        except CorruptImage:
            if not koly.rsrc_length:
                raise
            log.warning("udif: the XML plist is damaged; reading the resource fork instead")
    if found is None and koly.rsrc_length:
        fork = _metadata(stream, base + koly.rsrc_offset, koly.rsrc_length, "the resource fork")
        found, source = resources.from_resource_fork(fork, base + koly.rsrc_offset), "resource fork"
    if found is None:
        raise UnsupportedFormat("the koly trailer points to no block tables (no XML plist, no resource fork)",
                                layer=LAYER, offset=trailer.at)
    if not found:
        raise CorruptImage(f"the {source} lists no partitions (no blkx resources)", layer=LAYER, offset=trailer.at)
    return [BlkxTable.parse(r.data, r.name, r.resource_id) for r in found], source


def _metadata(stream: Stream, offset: int, length: int, what: str) -> bytes:
    if length > resources.MAX_METADATA_SIZE:
        raise UnsupportedFormat(f"{what} is {length} bytes, more than imgfs reads "
                                f"({resources.MAX_METADATA_SIZE})", layer=LAYER, offset=offset)
    return read_exact(stream, offset, length, LAYER, f"{what} ({length} bytes)")


def lay_out(tables: list[BlkxTable], sector_count: int) -> tuple[list[Piece], int]:
    """Every run at its place on the disk, with zero-filled gaps; and the disk's size."""
    runs = []
    for t, table in enumerate(tables):
        for r, run in enumerate(table.runs):
            if run.kind not in CODEC_NAMES:
                raise UnsupportedFormat(f"partition {table.name!r}: chunk {r} has type 0x{run.kind:08x}, which "
                                        f"is not a UDIF chunk type imgfs knows", layer=LAYER)
            runs.append(Piece((table.first_sector + run.sector) * SECTOR, run.sector_count * SECTOR, run.kind,
                              table.data_offset + run.comp_offset, run.comp_length, t, r))
    runs.sort(key=lambda piece: piece.start)
    pieces: list[Piece] = []
    end = 0
    for piece in runs:
        if piece.start < end:
            other = tables[pieces[-1].table].name
            raise CorruptImage(f"partitions {other!r} and {tables[piece.table].name!r} both claim disk bytes "
                               f"{piece.start}-{end - 1}", layer=LAYER)
        if piece.start > end:
            pieces.append(Piece(end, piece.start - end, ZERO, 0, 0, -1, -1))
        pieces.append(piece)
        end = piece.start + piece.length
    size = max(end, sector_count * SECTOR)
    if end > sector_count * SECTOR:
        log.warning("udif: the partitions reach byte %d, past the %d sectors the trailer gives", end, sector_count)
    if size > end:
        pieces.append(Piece(end, size - end, ZERO, 0, 0, -1, -1))
    return pieces, size


# -- the data fork ----------------------------------------------------------------------------------------


def data_fork(stream: Stream, trailer: Trailer, pieces: list[Piece], path: str,
              opened: list[FileStream]) -> tuple[Stream, Optional[int]]:
    """The stream runs point into, and where it starts in the file (None when it spans several files).
    Segment files it opens are added to ``opened``."""
    koly = trailer.koly
    if koly.segment_count > 1:
        return _segments(stream, trailer, path, opened), None
    if trailer.leading:  # the data follows the koly block
        start = max(KOLY_SIZE, koly.data_fork_offset)
    else:
        start = trailer.base + koly.data_fork_offset
        if koly.data_fork_offset and not _fits(pieces, koly.data_fork_length) and _fits(pieces, trailer.at, start):
            start = trailer.base  # the runs count from the start of the image, not from the data fork
    return SliceStream(stream, start, max(0, stream.size - start), name=stream.name), start


def _fits(pieces: list[Piece], end: int, low: int = 0) -> bool:
    return all(low <= p.source and p.source + p.source_length <= end for p in pieces if p.source_length)


_SEGMENT = re.compile(r"^(?P<stem>.+)\.dmg$", re.IGNORECASE)


def _segments(stream: Stream, trailer: Trailer, path: str, opened: list[FileStream]) -> Stream:
    koly = trailer.koly
    match = _SEGMENT.match(os.path.basename(path))
    if stream.name != path or match is None:
        raise UnsupportedFormat(f"a segmented image ({koly.segment_count} segments) whose other segments cannot be "
                                "found: imgfs looks for NAME.002.dmgpart ... beside NAME.dmg", layer=LAYER)
    first = SliceStream(stream, trailer.base + koly.data_fork_offset, koly.data_fork_length, name=path)
    extents: list[tuple[int, Stream]] = [(koly.running_data_fork_offset, first)]
    for number in range(2, koly.segment_count + 1):
        extents.append(_segment(path, match.group("stem"), number, koly, opened))
    return _join(sorted(extents, key=lambda e: e[0]), path)


def _segment(path: str, stem: str, number: int, first: Koly, opened: list[FileStream]) -> tuple[int, Stream]:
    name = os.path.join(os.path.dirname(path), f"{stem}.{number:03d}.dmgpart")
    try:
        part = FileStream(name)
    except MissingFile:
        raise MissingFile(f"segment {number} of {first.segment_count} of the image is missing: {name}",
                          layer=LAYER) from None
    opened.append(part)
    trailer = find_trailer(part)
    koly = trailer.koly
    if koly.segment_number != number or koly.segment_id != first.segment_id:
        raise CorruptImage(f"{name} is not segment {number} of this image (it says segment {koly.segment_number}, "
                           f"id {koly.segment_id.hex()})", layer=LAYER, offset=trailer.at)
    return koly.running_data_fork_offset, SliceStream(part, trailer.base + koly.data_fork_offset,
                                                      koly.data_fork_length, name=name)


def _join(extents: list[tuple[int, Stream]], name: str) -> Stream:
    parts, end = [], 0
    for offset, part in extents:
        if offset < end:
            raise CorruptImage(f"segment data forks overlap at data fork byte {offset}", layer=LAYER)
        if offset > end:
            parts.append(Extent(offset - end, None))
        parts.append(Extent(part.size, part))
        end = offset + part.size
    return ExtentStream(parts, name=name)


# -- the opened image -----------------------------------------------------------------------------------


class UdifImage(UdifDisk, Layer):
    """The disk inside a UDIF image, with what ``imgfs info`` shows of it."""

    checks = "CRC32 checksums of the data fork, each partition and the master checksum"

    def __init__(self, file: Stream, trailer: Trailer, tables: list[BlkxTable], metadata: str, data: Stream,
                 data_at: Optional[int], pieces: list[Piece], size: int, cache: BlockCache, name: str) -> None:
        super().__init__(data, data_at, pieces, size, [t.name for t in tables], cache, name=name)
        self.file = file  # the image itself (the first segment of a segmented one)
        self.segment_files: list[FileStream] = []  # the other segments, opened here
        self.trailer = trailer
        self.tables = tables
        self.metadata = metadata

    def codecs(self) -> list[str]:
        """The run types used: those that store data first, then holes; each by the bytes it makes."""
        used: dict[int, int] = {}
        for piece in self.pieces:
            if piece.table >= 0:
                used[piece.kind] = used.get(piece.kind, 0) + piece.length
        return [codec_name(kind) for kind in sorted(used, key=lambda k: (k in HOLES, -used[k]))]

    def describe(self) -> dict[str, Any]:
        koly = self.trailer.koly
        compressed = [codec_name(p.kind) for p in self.pieces if p.kind in COMPRESSED]
        info: dict[str, Any] = {
            "layer": LAYER, "format": _format_name(compressed, self.pieces),
            "codecs": self.codecs(), "chunks": sum(1 for p in self.pieces if p.table >= 0),
            "compressed_chunks": len(compressed), "size": self.size, "sectors": self.size // SECTOR,
            "metadata": self.metadata, "data_fork_offset": self.data_at, "data_fork_size": koly.data_fork_length,
            "checksums": {"data_fork": koly.data_checksum.describe(), "master": koly.master_checksum.describe(),
                          "partitions": sorted({t.checksum.describe().split()[0] for t in self.tables})},
            "blkx": [_describe_table(t) for t in self.tables],
        }
        if koly.image_variant in VARIANTS:
            info["variant"] = VARIANTS[koly.image_variant]
        if self.trailer.base:
            info["image_offset"] = self.trailer.base
        if koly.segment_count > 1:
            info["segments"] = koly.segment_count
        return info

    def close(self) -> None:
        """Close the segment files this layer opened (the image file itself belongs to the caller)."""
        for part in self.segment_files:
            part.close()

    def verify(self, progress: Progress = no_progress) -> list[str]:
        """Every checksum the image holds, checked: the problems found (see ``verify.py``)."""
        return verify_image(self, progress)


def _format_name(compressed: list[str], pieces: list[Piece]) -> str:
    if compressed:
        return FORMAT_NAMES.get(max(set(compressed), key=compressed.count), "UDIF")
    return "UDRO" if any(codec_name(p.kind) == "raw" for p in pieces) else "UDIF"


def _describe_table(table: BlkxTable) -> dict[str, Any]:
    return {"name": table.name, "id": table.resource_id, "first_sector": table.first_sector,
            "sectors": table.sector_count, "codecs": sorted({codec_name(r.kind) for r in table.runs}),
            "checksum": table.checksum.describe()}


def open_udif(stream: Stream, ctx: OpenContext) -> UdifImage:
    """The registry's opener: the disk inside the UDIF image ``stream`` (any Stream: a file, a decrypted view)."""
    trailer = find_trailer(stream)
    koly = trailer.koly
    if koly.segment_count > 1 and koly.segment_number != 1:
        raise UnsupportedFormat(f"segment {koly.segment_number} of a segmented image ({koly.segment_count} "
                                "segments): open its first segment, the .dmg", layer=LAYER)
    tables, metadata = read_tables(stream, trailer)
    pieces, size = lay_out(tables, trailer.koly.sector_count)
    opened: list[FileStream] = []
    try:
        data, data_at = data_fork(stream, trailer, pieces, ctx.path, opened)
    except BaseException:
        for part in opened:
            part.close()
        raise
    image = UdifImage(stream, trailer, tables, metadata, data, data_at, pieces, size, ctx.cache,
                      name=f"{stream.name} (udif)")
    image.segment_files = opened
    if ctx.verify:
        _verify_before_mounting(image, ctx.progress)
    return image


def _verify_before_mounting(image: UdifImage, progress: Progress) -> None:
    """-o verify: every checksum is checked before the image is mounted; a mismatch refuses it."""
    problems = image.verify(progress)
    if problems:
        image.close()
        more = f" (and {len(problems) - 1} more: imgfs verify lists them)" if len(problems) > 1 else ""
        raise CorruptImage(f"checksum mismatch: {problems[0]}{more}", layer=LAYER)
    log.info("%s: every checksum matches", LAYER)
