"""zisofs: Rock Ridge ZF files, stored as zlib blocks behind a table of block pointers.

Only the blocks a read touches are inflated, each once, into the mount's cache.
"""

from __future__ import annotations

import struct
import zlib

from imgfs.errors import CorruptImage
from imgfs.io.cache import BlockCache
from imgfs.io.chunked import ChunkedStream
from imgfs.io.stream import Stream

MAGIC = b"\x37\xe4\x53\x96\xc9\xdb\xd6\x07"
MIN_LOG2_BLOCK, MAX_LOG2_BLOCK = 15, 17


def open_zisofs(raw: Stream, algorithm: bytes, size: int, cache: BlockCache, name: str) -> Stream:
    """The decompressed view of ``raw``, the file's stored bytes, which must say ``size`` bytes."""
    if algorithm != b"pz":
        raise CorruptImage(f"zisofs algorithm {algorithm!r} is not supported (only 'pz', zlib)", layer=name)
    header = raw.pread(0, 16)
    if len(header) < 16 or header[:8] != MAGIC:
        raise CorruptImage("zisofs file has no zisofs header", layer=name)
    header_size, log2_block = header[12] * 4, header[13]
    stored_size = struct.unpack_from("<I", header, 8)[0]
    if not MIN_LOG2_BLOCK <= log2_block <= MAX_LOG2_BLOCK or header_size < 16:
        raise CorruptImage(f"zisofs header is invalid (block 2^{log2_block}, header {header_size})", layer=name)
    if stored_size != size:
        raise CorruptImage(f"zisofs header says {stored_size} bytes, Rock Ridge says {size}", layer=name)
    block_size = 1 << log2_block
    count = -(-size // block_size)
    table_size = (count + 1) * 4
    if header_size + table_size > raw.size:
        raise CorruptImage("zisofs block table runs past the end of the file", layer=name)
    table = struct.unpack(f"<{count + 1}I", raw.pread(header_size, table_size))

    def decode(i: int) -> bytes:
        start, end = table[i], table[i + 1]
        want = min(block_size, size - i * block_size)
        if start == end:
            return bytes(want)  # an all-zero block is stored as nothing
        if not header_size + table_size <= start < end <= raw.size:
            raise CorruptImage(f"zisofs block {i} points outside the file", layer=name, offset=start)
        inflater = zlib.decompressobj()
        try:
            data = inflater.decompress(raw.pread(start, end - start), want)
        except zlib.error as exc:
            raise CorruptImage(f"zisofs block {i} does not inflate: {exc}", layer=name, offset=start) from None
        return data

    return ChunkedStream(size, range(0, size, block_size), decode, cache, name=name)
