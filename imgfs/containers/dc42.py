"""Disk Copy 4.2 images (``.image``, ``.dc42``, often ``.img``): an 84-byte header, the disk, its tag bytes.

The header (big-endian): the image name (a Pascal string of at most 63 MacRoman bytes in 64), the data
size, the tag size (12 bytes per 512-byte sector of a GCR floppy, or 0), the checksums of the data and of
the tags, the disk format (0 400K GCR, 1 800K GCR, 2 720K MFM, 3 1440K MFM), a format byte, and 0x0100.
The data follows; the tags (the Lisa's and early Macs' per-sector bytes) follow it and are ignored.

There is no magic number beyond the 0x0100, so detection checks that the fields agree with each other
and with the file's size. A file shorter than its header says is mounted with a warning, as far as it goes:
the filesystem inside finds its end, and the files that lie past it read as errors. ``verify`` checks both
checksums: add each big-endian 16-bit word to a 32-bit sum and rotate it right by one bit; the tag checksum
leaves out the first 12 tag bytes (as Disk Copy does).
"""

from __future__ import annotations

import logging
import struct
from typing import Any

from imgfs.errors import CorruptImage, UnsupportedFormat
from imgfs.io.stream import SliceStream, Stream
from imgfs.layer import Layer, OpenContext, Progress, no_progress

log = logging.getLogger(__name__)

LAYER = "dc42"
HEADER = struct.Struct(">64sIIIIBBH")  # name, data size, tag size, data sum, tag sum, disk format, format byte, 0x0100
HEADER_SIZE = 84
PRIVATE = 0x0100
TAG_BYTES_PER_SECTOR = 12
TAG_SUM_SKIP = 12  # the first 12 tag bytes are not in the tag checksum
DISK_FORMATS = {0: "400K GCR", 1: "800K GCR", 2: "720K MFM", 3: "1440K MFM"}
MAX_DATA_SIZE = 1 << 32
CHECKSUM_BLOCK = 1 << 20  # words summed per read while verifying


def _fields(stream: Stream) -> tuple[bytes, int, int, int, int, int, int, int]:
    raw = stream.pread(0, HEADER_SIZE)
    if len(raw) < HEADER_SIZE:
        raise UnsupportedFormat(f"{stream.size} bytes: too short for a Disk Copy 4.2 header", layer=LAYER)
    return HEADER.unpack(raw)


def _consistent(stream: Stream) -> str:
    """Why the header does not describe a Disk Copy 4.2 image of this file; empty when it does."""
    name, data_size, tag_size, _dsum, _tsum, _disk, _fmt, private = _fields(stream)
    if private != PRIVATE:
        return f"expected 0x0100 at byte 82, got 0x{private:04x}"
    if not 0 < name[0] <= 63:
        return f"an image name of {name[0]} bytes (1 to 63)"
    if data_size == 0 or data_size % 512:
        return f"a data size of {data_size} bytes (a non-zero multiple of 512)"
    if tag_size not in (0, data_size // 512 * TAG_BYTES_PER_SECTOR):
        return f"{tag_size} tag bytes for {data_size // 512} sectors (0 or 12 per sector)"
    if HEADER_SIZE + data_size + tag_size < stream.size:
        return f"{stream.size} bytes, more than the header's {HEADER_SIZE + data_size + tag_size}"
    return ""


def probe(stream: Stream) -> bool:
    """A header whose fields agree with each other and do not leave bytes of the file unaccounted for."""
    try:
        return not _consistent(stream)
    except UnsupportedFormat:
        return False


def checksum(stream: Stream, offset: int, length: int, progress: Progress = no_progress, done: int = 0,
             total: int = 0) -> int:
    """Disk Copy's checksum of ``length`` bytes at ``offset``: each 16-bit word added, then the sum rotated
    right by one bit."""
    value = 0
    for start in range(0, length, CHECKSUM_BLOCK):
        block = stream.pread(offset + start, min(CHECKSUM_BLOCK, length - start))
        if len(block) & 1:
            block = block[:-1]
        for (word,) in struct.iter_unpack(">H", block):
            value = (value + word) & 0xFFFFFFFF
            value = (value >> 1) | ((value & 1) << 31)
        progress("checksums", done + start + len(block), total)
    return value


class DiskCopy42(SliceStream, Layer):
    """The disk inside a Disk Copy 4.2 image."""

    kind = LAYER
    checks = "the data and tag checksums of the header"

    def __init__(self, file: Stream) -> None:
        problem = _consistent(file)
        if problem:
            raise UnsupportedFormat(f"not a Disk Copy 4.2 image: {problem}", layer=LAYER)
        name, data_size, tag_size, data_sum, tag_sum, disk_format, format_byte, _ = _fields(file)
        # A file cut short shows the disk as far as it goes: the filesystem inside says what is missing.
        super().__init__(file, HEADER_SIZE, min(data_size, file.size - HEADER_SIZE), name=file.name)
        self.file = file
        self.data_size = data_size
        self.label = name[1 : 1 + name[0]].decode("mac_roman")
        self.tag_size = tag_size
        self.sums = (data_sum, tag_sum)
        self.disk_format, self.format_byte = disk_format, format_byte
        if self.size < data_size:
            log.warning("%s: the Disk Copy 4.2 image lacks the last %d bytes of its disk; what lies there reads "
                        "as an error", file.name, data_size - self.size)

    def describe(self) -> dict[str, Any]:
        return {"layer": LAYER, "name": self.label, "data_size": self.data_size, "tag_size": self.tag_size,
                "disk_format": DISK_FORMATS.get(self.disk_format, f"0x{self.disk_format:02x}"),
                "format_byte": f"0x{self.format_byte:02x}", "data_checksum": f"0x{self.sums[0]:08x}",
                "tag_checksum": f"0x{self.sums[1]:08x}"}

    def verify(self, progress: Progress = no_progress) -> list[str]:
        total = self.data_size + self.tag_size
        if HEADER_SIZE + total > self.file.size:
            return [f"{LAYER}: the file ends at byte {self.file.size}, before the end of its data and tags "
                    f"(byte {HEADER_SIZE + total}); the checksums cannot be checked"]
        problems = []
        data_sum = checksum(self.file, HEADER_SIZE, self.size, progress, 0, total)
        if data_sum != self.sums[0]:
            problems.append(f"{LAYER}: data checksum mismatch: the header says 0x{self.sums[0]:08x}, the data sums "
                            f"to 0x{data_sum:08x}")
        tags_at = HEADER_SIZE + self.size + TAG_SUM_SKIP
        tag_sum = checksum(self.file, tags_at, max(0, self.tag_size - TAG_SUM_SKIP), progress, self.size, total)
        if self.tag_size and tag_sum != self.sums[1]:
            problems.append(f"{LAYER}: tag checksum mismatch: the header says 0x{self.sums[1]:08x}, the tags sum "
                            f"to 0x{tag_sum:08x}")
        return problems


def open_dc42(stream: Stream, ctx: OpenContext) -> DiskCopy42:
    image = DiskCopy42(stream)
    if ctx.verify:  # -o verify: both checksums before mounting; a mismatch refuses it
        problems = image.verify(ctx.progress)
        if problems:
            raise CorruptImage(f"checksum mismatch: {'; '.join(p.removeprefix(LAYER + ': ') for p in problems)}",
                               layer=LAYER)
    return image
