"""A self-mounting image (``.smi``) whose resource fork was lost: its data fork is the application's
PowerPC code (a PEF container, 'Joy!peff') followed by the disk image.

With the resource fork (MacBinary, AppleSingle, an AppleDouble companion), the NDIF reader finds the image
through its chunk table. Without it, an uncompressed image still lies as it is after the code: the PEF
header says where the code ends (each section's offset and length in the container), and the image starts
at the first 512-byte boundary from there whose bytes look like a Mac disk (an Apple partition map, an HFS or
HFS+ volume). A compressed image cannot be read without its chunk table: that is refused in one line that
says where its resource fork could be.
"""

from __future__ import annotations

import struct
from typing import Any

from imgfs.containers.companions import where_looked
from imgfs.errors import UnsupportedFormat
from imgfs.io.stream import SliceStream, Stream, read_exact
from imgfs.layer import Layer, OpenContext

LAYER = "smi"
PEF_MAGIC = b"Joy!peff"
# 'Joy!', 'peff', architecture, format version, date, old definition, old implementation and current versions,
# section count, instantiated section count, reserved
PEF_HEADER = struct.Struct(">4s4s4sIIIIIHHI")
SECTION = struct.Struct(">iIIIIIBBBB")  # name, address, total, unpacked, container length, container offset, ...
SEARCH_SIZE = 1 << 20  # how far past the code the image is looked for
SECTOR_SIZE = 512


def probe(stream: Stream) -> bool:
    return stream.pread(0, len(PEF_MAGIC)) == PEF_MAGIC


def code_end(stream: Stream) -> int:
    """Where the PEF container ends: after its headers and its furthest section."""
    head = read_exact(stream, 0, PEF_HEADER.size, LAYER, "the PEF container header")
    count = PEF_HEADER.unpack(head)[8]
    table = read_exact(stream, PEF_HEADER.size, count * SECTION.size, LAYER, f"{count} PEF section headers")
    end = PEF_HEADER.size + len(table)
    for i in range(count):
        _name, _address, _total, _unpacked, length, offset, *_ = SECTION.unpack_from(table, i * SECTION.size)
        end = max(end, offset + length)
    return end


def _looks_like_a_disk(stream: Stream, at: int) -> bool:
    head = stream.pread(at, 1026)
    return head[:2] == b"ER" or head[512:514] == b"PM" or head[1024:1026] in (b"BD", b"H+", b"HX")


class SmiImage(SliceStream, Layer):
    kind = LAYER

    def __init__(self, data: Stream, start: int) -> None:
        super().__init__(data, start, data.size - start, name=data.name)
        self.start = start

    def describe(self) -> dict[str, Any]:
        return {"layer": LAYER, "image_offset": self.start, "size": self.size}


def open_smi(stream: Stream, ctx: OpenContext) -> SmiImage:
    first = code_end(stream)
    first += -first % SECTOR_SIZE
    for at in range(first, min(stream.size, first + SEARCH_SIZE), SECTOR_SIZE):
        if _looks_like_a_disk(stream, at):
            return SmiImage(stream, at)
    raise UnsupportedFormat("a self-mounting image's application code, with no uncompressed disk image after it: "
                            "its image needs the chunk table of its resource fork, which is missing"
                            f"{where_looked(ctx.path)}", layer=LAYER)

