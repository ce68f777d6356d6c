"""The partitions of a UDF logical volume, each seen as a stream of its logical blocks.

* physical (type 1): a slice of the image;
* sparable: a physical partition whose damaged packets were moved elsewhere, per its sparing table;
* virtual (CD-R, DVD-R, BD-R): each block looked up in the virtual allocation table (VAT), a file
  recorded last on the disc;
* metadata (UDF 2.50+): the data of the metadata file (or of its mirror), itself in a physical
  partition.

A file's extents then become an ``ExtentStream`` over these streams, so data is never copied.
``where(offset)`` turns a byte offset in a partition into one in the image, for error messages.
"""

from __future__ import annotations

import bisect
import struct
from collections.abc import Sequence
from typing import Callable, Optional

from imgfs.errors import CorruptImage
from imgfs.filesystems.udf.descriptors import LAYER, entity_id, read_tag
from imgfs.io.stream import SliceStream, Stream

UNUSED = 0xFFFFFFFF  # a VAT entry that maps nothing
SPARING_UNUSED = 0xFFFFFFF0  # sparing map entries at or above this are free or defective
MAX_SPARING_TABLE = 1 << 20


class PartitionView:
    """One partition reference: what kind it is, its stream, and where its bytes are in the image."""

    def __init__(self, kind: str, number: int, stream: Stream, where: Callable[[int], Optional[int]]) -> None:
        self.kind = kind
        self.number = number
        self.stream = stream
        self._where = where

    def where(self, offset: int) -> Optional[int]:
        try:
            return self._where(offset)
        except CorruptImage:
            return None

    def __repr__(self) -> str:
        return f"PartitionView({self.kind}, {self.number}, {self.stream.size} bytes)"


def physical_view(kind: str, number: int, image: Stream, start_offset: int, size: int) -> PartitionView:
    stream = SliceStream(image, start_offset, size, name=f"{image.name}: udf partition {number}")
    return PartitionView(kind, number, stream, lambda offset: start_offset + offset)


# -- sparable partitions --------------------------------------------------------------------------------


def parse_sparing_table(data: bytes, offset: int) -> tuple[int, dict[int, int]]:
    """(sequence number, {packet's first block: sector it was moved to}) of a sparing table."""
    read_tag(data, offset, "sparing table", expect=(0,))
    if entity_id(data, 16).ident != b"*UDF Sparing Table":
        raise CorruptImage("sparing table: wrong identifier", layer=LAYER, offset=offset + 16)
    count, sequence = struct.unpack_from("<H2xI", data, 48)
    if 56 + 8 * count > len(data):
        raise CorruptImage(f"sparing table: {count} entries do not fit in it", layer=LAYER, offset=offset + 48)
    moved = {}
    for original, mapped in struct.iter_unpack("<II", data[56 : 56 + 8 * count]):
        if original < SPARING_UNUSED:
            moved[original] = mapped
    return sequence, moved


class SparedStream(Stream):
    """A physical partition with some packets read from where the sparing table moved them."""

    def __init__(self, base: SliceStream, image: Stream, block_size: int, packet_blocks: int,
                 moved: dict[int, int]) -> None:
        self.base = base
        self.image = image
        self.size = base.size
        self.name = base.name
        self._packet_size = packet_blocks * block_size
        self._block_size = block_size
        self._packet_blocks = packet_blocks
        self._moved = moved

    def where(self, offset: int) -> int:
        packet, inner = divmod(offset, self._packet_size)
        sector = self._moved.get(packet * self._packet_blocks)
        return self.base.offset + offset if sector is None else sector * self._block_size + inner

    def pread(self, offset: int, length: int) -> bytes:
        n = self._clamp(offset, length)
        parts = []
        pos, end = offset, offset + n
        while pos < end:
            count = min(end, (pos // self._packet_size + 1) * self._packet_size) - pos
            source = self.where(pos)
            data = self.image.pread(source, count)
            if len(data) < count:
                raise CorruptImage("a spared packet lies past the end of the image", layer=self.name,
                                   offset=source + len(data))
            parts.append(data)
            pos += count
        return b"".join(parts)


# -- virtual partitions ---------------------------------------------------------------------------------


def parse_vat(data: bytes, file_type: int, offset: Optional[int]) -> tuple[memoryview, str]:
    """The entries of a VAT file (UDF 2.00+ with a header, or UDF 1.50 with a trailing identifier)."""
    if file_type == 248:
        if len(data) < 152:
            raise CorruptImage(f"the VAT is {len(data)} bytes, too short for its header", layer=LAYER, offset=offset)
        header = struct.unpack_from("<H", data)[0]
        if not 152 <= header <= len(data):
            raise CorruptImage(f"VAT header length {header} is implausible", layer=LAYER, offset=offset)
        body, kind = memoryview(data)[header:], "2.00"
    else:
        if len(data) < 36 or entity_id(data, len(data) - 36).ident != b"*UDF Virtual Alloc Tbl":
            raise CorruptImage("not a VAT: no '*UDF Virtual Alloc Tbl' identifier", layer=LAYER, offset=offset)
        body, kind = memoryview(data)[: len(data) - 36], "1.50"
    return body[: len(body) & ~3], kind


class VatStream(Stream):
    """A virtual partition: block N is the block the VAT's entry N names in the physical partition."""

    def __init__(self, physical: PartitionView, entries: memoryview, block_size: int, name: str) -> None:
        self.physical = physical
        self._entries = entries
        self._block_size = block_size
        self.size = len(entries) // 4 * block_size
        self.name = name

    def block(self, virtual: int) -> int:
        """The physical partition's block for virtual block ``virtual``."""
        if not 0 <= virtual < len(self._entries) // 4:
            raise CorruptImage(f"virtual block {virtual} is past the end of the VAT ({len(self._entries) // 4} "
                               "entries)", layer=self.name)
        entry = int(struct.unpack_from("<I", self._entries, virtual * 4)[0])
        if entry == UNUSED:
            raise CorruptImage(f"virtual block {virtual} is not mapped by the VAT", layer=self.name)
        return entry

    def where(self, offset: int) -> Optional[int]:
        block, inner = divmod(offset, self._block_size)
        return self.physical.where(self.block(block) * self._block_size + inner)

    def pread(self, offset: int, length: int) -> bytes:
        n = self._clamp(offset, length)
        bs = self._block_size
        runs: list[tuple[int, int]] = []  # (physical offset, length), neighbours merged
        pos, end = offset, offset + n
        while pos < end:
            block, inner = divmod(pos, bs)
            count = min(bs - inner, end - pos)
            source = self.block(block) * bs + inner
            if runs and runs[-1][0] + runs[-1][1] == source:
                runs[-1] = (runs[-1][0], runs[-1][1] + count)
            else:
                runs.append((source, count))
            pos += count
        parts = []
        for source, count in runs:
            data = self.physical.stream.pread(source, count)
            if len(data) < count:
                raise CorruptImage("a VAT entry points past the end of its partition", layer=self.name,
                                   offset=self.physical.where(source))
            parts.append(data)
        return b"".join(parts)


# -- metadata partitions --------------------------------------------------------------------------------


class RunMap:
    """Where each byte of a file's data is in a partition: (file offset, length, partition offset) runs."""

    def __init__(self, runs: Sequence[tuple[int, int, Optional[int]]]) -> None:
        self._runs = list(runs)
        self._starts = [r[0] for r in self._runs]

    def where(self, offset: int) -> Optional[int]:
        i = bisect.bisect_right(self._starts, offset) - 1
        if i < 0:
            return None
        start, length, target = self._runs[i]
        if offset >= start + length or target is None:
            return None
        return target + offset - start
