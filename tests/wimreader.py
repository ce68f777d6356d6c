"""A small WIM reader for the codec tests: the header, the lookup table, and each resource's bytes.

Written from the WIM format description (Microsoft's WIMGAPI documentation of the file layout, as wimlib
documents it): a 208-byte header (``MSWIM\\0\\0\\0``, flags naming the compression, the chunk size, and
short resource headers for the lookup table, the XML data and the boot metadata); the lookup table is
50-byte entries (a resource header, part number, reference count, SHA-1 of the uncompressed data). A
resource header is a 56-bit stored size, 8 flag bits (2 metadata, 4 compressed, 16 solid), the offset
and the uncompressed size. A compressed, non-solid resource is laid out as a WOF stream is: a chunk table
of n-1 offsets (32-bit, or 64-bit when the resource is 4 GiB or more) then the chunks, each stored as it
is when compression did not make it smaller: ``imgfs.codecs.wof.open_chunks`` reads it.

``chunks()`` gives each chunk's stored bytes with its uncompressed length, for tests that check a decoder
against wimlib's chunks one by one.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass

from imgfs.codecs import lzx, xpress
from imgfs.codecs.wof import Decoder, open_chunks
from imgfs.io.cache import BlockCache
from imgfs.io.stream import BytesStream, SliceStream, Stream

MAGIC = b"MSWIM\0\0\0"
HEADER = struct.Struct("<8sIIII16sHHI24s24s24sI24s60s")
ENTRY_SIZE = 50
FLAG_COMPRESSION = 0x2
FLAG_XPRESS, FLAG_LZX, FLAG_LZMS = 0x20000, 0x40000, 0x80000
RES_METADATA, RES_COMPRESSED, RES_SOLID = 0x2, 0x4, 0x10


@dataclass(frozen=True)
class Resource:
    stored_size: int
    flags: int
    offset: int
    size: int
    sha1: bytes = b""

    @classmethod
    def parse(cls, raw: bytes, sha1: bytes = b"") -> Resource:
        offset, size = struct.unpack_from("<QQ", raw, 8)
        return cls(int.from_bytes(raw[:7], "little"), raw[7], offset, size, sha1)


class Wim:
    def __init__(self, data: bytes) -> None:
        fields = HEADER.unpack_from(data)
        if fields[0] != MAGIC:
            raise ValueError("not a WIM file")
        self.data = data
        self.flags, self.chunk_size = fields[3], fields[4]
        self.lookup = Resource.parse(fields[9])
        if self.flags & FLAG_LZX:
            self.decoder: Decoder = lambda chunk, size: lzx.decompress(chunk, size, max(self.chunk_size, 32768))
        elif self.flags & FLAG_XPRESS:
            self.decoder = xpress.decompress_huffman
        else:
            self.decoder = _unsupported

    def resources(self) -> list[Resource]:
        table = self.read(self.lookup)
        return [Resource.parse(table[at : at + 24], table[at + 30 : at + 50])
                for at in range(0, len(table) - ENTRY_SIZE + 1, ENTRY_SIZE)]

    def stored(self, res: Resource) -> Stream:
        return SliceStream(BytesStream(self.data), res.offset, res.stored_size)

    def read(self, res: Resource, cache: BlockCache | None = None) -> bytes:
        """The resource's uncompressed bytes, decoded chunk by chunk with imgfs's decoders."""
        if not res.flags & RES_COMPRESSED:
            return self.data[res.offset : res.offset + res.size]
        if res.flags & RES_SOLID:
            raise NotImplementedError("solid resources")
        stream = open_chunks(self.stored(res), res.size, self.chunk_size, self.decoder, cache or BlockCache(1 << 24),
                             "WIM resource")
        return stream.pread(0, res.size)

    def chunks(self, res: Resource) -> Iterator[tuple[bytes, int]]:
        """Each chunk of a compressed resource: its stored bytes and uncompressed length."""
        count = -(-res.size // self.chunk_size)
        entry = 8 if res.size > 0xFFFFFFFF else 4
        table = self.data[res.offset : res.offset + (count - 1) * entry]
        starts = [0] + [int.from_bytes(table[i : i + entry], "little") for i in range(0, len(table), entry)]
        base = res.offset + len(table)
        ends = starts[1:] + [res.stored_size - len(table)]
        for i, (start, end) in enumerate(zip(starts, ends)):
            yield self.data[base + start : base + end], min(self.chunk_size, res.size - i * self.chunk_size)


def _unsupported(chunk: bytes, size: int) -> bytes:
    raise NotImplementedError("only XPRESS and LZX WIM files are read here")
