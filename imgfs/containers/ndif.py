"""NDIF, the New Disk Image Format of Disk Copy 6 (``.img``, ``.smi``, older ``.dmg``).

The chunk table is the 'bcem' resource in the file's resource fork, which reaches imgfs through the
stream's ``forks["rsrc"]`` (from MacBinary, AppleSingle, or an AppleDouble companion beside the file). It
is a 128-byte header (version, driver, the image's name as a Str63, the disk's 512-byte sectors, the
largest chunk, an offset added to every chunk's offset, a checksum, a segmented flag, ..., an encrypted
flag (ShrinkWrap), ..., the entry count) and 12-byte entries: the chunk's first sector (24 bits), its type,
and the offset and length of its bytes in the data fork. A chunk runs to the next entry's first sector; an
entry of type 0xFF closes the table at the disk's size.

Chunk types read: 0 (zeros, nothing stored), 2 (raw), 0x83 (ADC, the codec UDIF's UDCO shares). KenCode
(0x80), RLE (0x81), LZH (0x82) and StuffIt (0xF0) chunks are refused by name. Raw and zero chunks are read
straight through; ADC chunks decode on first touch into the mount's cache. A data fork cut short (a truncated
download) shows the disk up to its first chunk whose bytes lie past the end, with a warning: the filesystem
inside finds its end there, and the files that lie past it read as errors.
"""

from __future__ import annotations

import logging
import struct
from typing import Any, NamedTuple

from imgfs.codecs import adc
from imgfs.containers.resourcefork import resources
from imgfs.errors import CorruptImage, EncryptedImage, ImageError, UnsupportedFormat
from imgfs.io.chunked import ChunkedStream
from imgfs.io.stream import Extent, ExtentStream, Stream
from imgfs.layer import Layer, OpenContext

log = logging.getLogger(__name__)

LAYER = "ndif"
SECTOR_SIZE = 512
# version, driver, name (Str63), sectors, largest chunk (sectors), data offset, checksum, segmented, 2 unknown,
# 20 reserved bytes, encrypted, password hash, entry count
HEADER = struct.Struct(">hh64sIIIIIII20sIII")
ENTRY = struct.Struct(">III")  # first sector << 8 | type, offset, length
ZERO, RAW, ADC, END = 0x00, 0x02, 0x83, 0xFF
REFUSED = {0x80: "KenCode", 0x81: "RLE", 0x82: "LZH", 0xF0: "StuffIt"}
MAX_CHUNK_SIZE = 64 << 20  # decoded; Disk Copy's chunks are far smaller


class Chunk(NamedTuple):
    start: int  # byte offset on the disk
    length: int  # bytes on the disk
    kind: int
    offset: int  # byte offset of its data in the data fork
    stored: int  # bytes stored


class Table(NamedTuple):
    name: str
    version: int
    sectors: int
    data_offset: int
    chunks: list[Chunk]


def probe(stream: Stream) -> bool:
    """A resource fork travels with the stream and holds a 'bcem' resource."""
    fork = stream.forks.get("rsrc")
    if fork is None or fork.size == 0:
        return False
    try:
        return bool(resources(fork, b"bcem", LAYER))
    except ImageError:
        return False


def parse_table(bcem: bytes) -> Table:
    if len(bcem) < HEADER.size:
        raise CorruptImage(f"the 'bcem' resource has {len(bcem)} bytes, too few for its header", layer=LAYER)
    (version, _driver, name, sectors, _largest, data_offset, _sum, segmented, _p1, _p2, _reserved, encrypted, _hash,
     count) = HEADER.unpack_from(bcem)
    if encrypted:
        raise EncryptedImage("a ShrinkWrap-encrypted NDIF image: imgfs cannot decrypt it", layer=LAYER)
    if segmented:
        raise UnsupportedFormat("a segmented NDIF image (one disk in several files) is not supported", layer=LAYER)
    if HEADER.size + count * ENTRY.size > len(bcem):
        raise CorruptImage(f"the 'bcem' resource says {count} chunks but holds {(len(bcem) - HEADER.size) // 12}",
                           layer=LAYER)
    entries = [ENTRY.unpack_from(bcem, HEADER.size + i * ENTRY.size) for i in range(count)]
    return Table(name[1 : 1 + min(name[0], 63)].decode("mac_roman"), version, sectors, data_offset,
                 _chunks(entries, sectors, data_offset))


def _chunks(entries: list[tuple[int, int, int]], sectors: int, data_offset: int) -> list[Chunk]:
    """The chunks of the table's entries, each running to the next one's first sector."""
    chunks: list[Chunk] = []
    bounds = [first_and_type >> 8 for first_and_type, _, _ in entries] + [sectors]
    for i, (first_and_type, offset, stored) in enumerate(entries):
        kind, first = first_and_type & 0xFF, first_and_type >> 8
        if kind == END:
            break
        end = bounds[i + 1]
        if not first < end <= sectors:
            raise CorruptImage(f"chunk {i} spans sectors {first} to {end} of a {sectors}-sector disk: out of order "
                               "or past the end", layer=LAYER)
        if kind in REFUSED:
            raise UnsupportedFormat(f"chunk {i} (sector {first}) is compressed with {REFUSED[kind]} (type "
                                    f"0x{kind:02x}), which imgfs does not decode", layer=LAYER)
        if kind not in (ZERO, RAW, ADC):
            raise UnsupportedFormat(f"chunk {i} (sector {first}) has the unknown type 0x{kind:02x}", layer=LAYER)
        length = (end - first) * SECTOR_SIZE
        if kind == RAW and stored != length:
            raise CorruptImage(f"raw chunk {i} stores {stored} bytes for {length}", layer=LAYER)
        if kind == ADC and length > MAX_CHUNK_SIZE:
            raise CorruptImage(f"ADC chunk {i} decodes to {length} bytes (at most {MAX_CHUNK_SIZE})", layer=LAYER)
        chunks.append(Chunk(first * SECTOR_SIZE, length, kind, data_offset + offset, stored))
    if chunks and chunks[-1].start + chunks[-1].length != sectors * SECTOR_SIZE:
        raise CorruptImage(f"the chunks end at byte {chunks[-1].start + chunks[-1].length} of a "
                           f"{sectors * SECTOR_SIZE}-byte disk", layer=LAYER)
    return chunks


class NdifDisk(ExtentStream, Layer):
    """The disk of an NDIF image: raw chunks read from the data fork, zero chunks as holes, ADC chunks decoded."""

    kind = LAYER

    def __init__(self, data: Stream, table: Table, ctx: OpenContext) -> None:
        self.data = data
        self.table = table
        self.label = table.name
        compressed = [(i, c) for i, c in enumerate(table.chunks) if c.kind == ADC]
        starts, at = [], 0
        for _, chunk in compressed:
            starts.append(at)
            at += chunk.length
        self._compressed = compressed
        decoded = ChunkedStream(at, starts, self._decode, ctx.cache, name=f"{data.name}:adc")
        extents, position = [], 0
        for chunk in table.chunks:
            if chunk.kind == ZERO:
                extents.append(Extent(chunk.length, None))
            elif chunk.kind == RAW:
                extents.append(Extent(chunk.length, data, chunk.offset))
            else:
                extents.append(Extent(chunk.length, decoded, position))
                position += chunk.length
        super().__init__(extents[: self._available(table.chunks, data.size)], name=data.name)

    def _decode(self, i: int) -> bytes:
        where, chunk = self._compressed[i]
        raw = self.data.pread(chunk.offset, chunk.stored)
        if len(raw) < chunk.stored:
            raise CorruptImage(f"ADC chunk {where} ({chunk.stored} bytes at data fork byte {chunk.offset}) runs past "
                               f"the end of the data fork ({self.data.size} bytes)", layer=LAYER, offset=chunk.offset)
        try:
            return adc.decode(raw, chunk.length)
        except ValueError as exc:
            raise CorruptImage(f"ADC chunk {where} (disk bytes {chunk.start}-{chunk.start + chunk.length - 1}): {exc}",
                               layer=LAYER, offset=chunk.offset) from None

    def _available(self, chunks: list[Chunk], data_size: int) -> int:
        """How many chunks (from the first) the data fork holds: a truncated image shows its disk as far as it
        goes, and the filesystem inside finds its end there."""
        past = [i for i, c in enumerate(chunks) if c.kind != ZERO and c.offset + c.stored > data_size]
        if not past:
            return len(chunks)
        log.warning("%s: %d NDIF chunks (the first is chunk %d, at disk byte %d) lie past the end of the %d-byte data "
                    "fork; the disk ends there, and what lies after it reads as an error", self.data.name, len(past),
                    past[0], chunks[past[0]].start, data_size)
        return past[0]

    def describe(self) -> dict[str, Any]:
        kinds = {ZERO: "zero", RAW: "raw", ADC: "adc"}
        counts: dict[str, int] = {}
        for chunk in self.table.chunks:
            counts[kinds[chunk.kind]] = counts.get(kinds[chunk.kind], 0) + 1
        return {"layer": LAYER, "name": self.table.name, "version": self.table.version,
                "size": self.table.sectors * SECTOR_SIZE, **({"available": self.size} if self.size <
                                                              self.table.sectors * SECTOR_SIZE else {}),
                "chunks": counts, "data_offset": self.table.data_offset}


def open_ndif(stream: Stream, ctx: OpenContext) -> NdifDisk:
    fork = stream.forks.get("rsrc")
    found = resources(fork, b"bcem", LAYER) if fork is not None else []
    if not found:
        raise UnsupportedFormat("no 'bcem' resource in the resource fork: not an NDIF image", layer=LAYER)
    return NdifDisk(stream, parse_table(found[0].data), ctx)
