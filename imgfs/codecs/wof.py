"""WOF-compressed files (Windows 10 "CompactOS", ``compact /c /exe:...``): what is not NTFS-specific.

Windows' overlay filter keeps a compressed file as a reparse point (tag ``0x80000017``), an empty sparse
unnamed data stream of the file's full size, and the compressed bytes in a named data stream
``WofCompressedData``. The reparse data (16 bytes after the 8-byte reparse header) is a
``WOF_EXTERNAL_INFO`` (version 1, provider: 1 = WIMBoot, pointing into a WIM file elsewhere; 2 = the
file provider) then, for the file provider, a ``FILE_PROVIDER_EXTERNAL_INFO_V1`` (version 1, the
algorithm: 0 XPRESS4K, 1 LZX, 2 XPRESS8K, 3 XPRESS16K).

``WofCompressedData`` is laid out like a WIM resource: the file is cut into chunks of the algorithm's
size (4, 32, 8 or 16 KiB; the last one shorter), and the stream starts with a table of where chunks 1 to
n-1 start, as 32-bit little-endian offsets (64-bit when the file is 4 GiB or more) counted from the end of
the table; chunk 0 starts right after it and the last one ends at the stream's end. A chunk whose stored
size equals its uncompressed size is stored as it is; any other is compressed on its own (XPRESS
Huffman, or LZX with a fresh 32 KiB window).

``open_wof`` turns such a stream into a ``ChunkedStream`` that decodes each chunk on first touch through
the mount's cache; ``open_chunks`` is the same for any chunk size and decoder (a WIM resource).
"""

from __future__ import annotations

import struct
from typing import Callable, NamedTuple

from imgfs.codecs import DecodeError, lzx, xpress
from imgfs.errors import CorruptImage, UnsupportedFormat
from imgfs.io.cache import BlockCache
from imgfs.io.chunked import ChunkedStream
from imgfs.io.stream import Stream, read_exact

REPARSE_TAG_WOF = 0x80000017
WOF_VERSION = 1
PROVIDER_WIM, PROVIDER_FILE = 1, 2
FILE_PROVIDER_VERSION = 1
XPRESS4K, LZX, XPRESS8K, XPRESS16K = 0, 1, 2, 3
_REPARSE_DATA = struct.Struct("<IIII")  # WOF version, provider, file-provider version, algorithm

Decoder = Callable[[bytes, int], bytes]


class Algorithm(NamedTuple):
    name: str
    chunk_size: int
    decode: Decoder


ALGORITHMS = {
    XPRESS4K: Algorithm("XPRESS4K", 4096, xpress.decompress_huffman),
    LZX: Algorithm("LZX", 32768, lzx.decompress),
    XPRESS8K: Algorithm("XPRESS8K", 8192, xpress.decompress_huffman),
    XPRESS16K: Algorithm("XPRESS16K", 16384, xpress.decompress_huffman),
}


def parse_reparse_data(data: bytes, layer: str = "WOF") -> int:
    """The algorithm named by a WOF reparse point's data (the bytes after its 8-byte header).

    ``UnsupportedFormat`` for WIMBoot files (provider 1: their data is in a WIM file outside the volume)
    and for versions or algorithms this reader does not know; ``CorruptImage`` when it is too short.
    """
    if len(data) < _REPARSE_DATA.size:
        raise CorruptImage(f"WOF reparse data of {len(data)} bytes (16 expected)", layer=layer)
    version, provider, file_version, algorithm = _REPARSE_DATA.unpack_from(data)
    if version != WOF_VERSION:
        raise UnsupportedFormat(f"WOF version {version} (1 expected)", layer=layer)
    if provider == PROVIDER_WIM:
        raise UnsupportedFormat("a WIMBoot file (WOF provider 1): its data lives in a WIM file outside the "
                                "volume", layer=layer)
    if provider != PROVIDER_FILE or file_version != FILE_PROVIDER_VERSION:
        raise UnsupportedFormat(f"WOF provider {provider} version {file_version} (file provider 2, version 1 "
                                f"expected)", layer=layer)
    if algorithm not in ALGORITHMS:
        raise UnsupportedFormat(f"WOF compression algorithm {algorithm} (0-3 known)", layer=layer)
    return int(algorithm)


def open_wof(data: Stream, size: int, algorithm: int, cache: BlockCache, name: str = "WOF") -> ChunkedStream:
    """The file's ``size`` uncompressed bytes, from the ``WofCompressedData`` stream ``data``.

    Chunks decode lazily through ``cache``. Errors (a bad chunk table, a chunk that does not decode)
    are ``CorruptImage`` with ``layer=name`` and the offset within ``data``; the table is checked at once
    as far as its size goes, each entry when its chunk is read.
    """
    if algorithm not in ALGORITHMS:
        raise UnsupportedFormat(f"WOF compression algorithm {algorithm} (0-3 known)", layer=name)
    chunk_size, decoder = ALGORITHMS[algorithm].chunk_size, ALGORITHMS[algorithm].decode
    return open_chunks(data, size, chunk_size, decoder, cache, name)


def open_chunks(data: Stream, size: int, chunk_size: int, decoder: Decoder, cache: BlockCache,
                name: str) -> ChunkedStream:
    """``size`` bytes cut into ``chunk_size`` chunks, stored in ``data`` behind a chunk table (the WOF
    and WIM resource layout), each decoded on first touch with ``decoder(compressed, chunk_length)``."""
    return _ChunkTable(data, size, chunk_size, decoder, name).stream(cache)


class _ChunkTable:
    """Where each chunk's bytes are in ``data``, read from the table entry by entry as chunks are needed."""

    def __init__(self, data: Stream, size: int, chunk_size: int, decoder: Decoder, name: str) -> None:
        if size < 0:
            raise CorruptImage(f"a negative uncompressed size ({size})", layer=name)
        self.data, self.size, self.chunk_size, self.decoder, self.name = data, size, chunk_size, decoder, name
        self.count = -(-size // chunk_size)
        self.entry_size = 8 if size > 0xFFFFFFFF else 4
        self.table_size = max(self.count - 1, 0) * self.entry_size
        if self.table_size > data.size:
            raise CorruptImage(f"the chunk table of {self.count} chunks ({self.table_size} bytes) is larger than "
                               f"the compressed stream ({data.size} bytes)", layer=name, offset=0)
        self.stored_size = data.size - self.table_size

    def stream(self, cache: BlockCache) -> ChunkedStream:
        return ChunkedStream(self.size, range(0, self.size, self.chunk_size), self.decode, cache, self.name)

    def _entry(self, i: int) -> int:
        """Where chunk ``i`` starts, counted from the end of the table."""
        if i == 0:
            return 0
        if i == self.count:
            return self.stored_size
        at = (i - 1) * self.entry_size
        raw = read_exact(self.data, at, self.entry_size, self.name, f"chunk table entry {i}")
        return int.from_bytes(raw, "little")

    def decode(self, i: int) -> bytes:
        start, end = self._entry(i), self._entry(i + 1)
        length = min(self.chunk_size, self.size - i * self.chunk_size)
        at = self.table_size + start
        if not start <= end <= self.stored_size or end - start > length:
            raise CorruptImage(f"chunk {i} of {self.count} spans stored bytes {start}-{end} of {self.stored_size}"
                               f" (at most {length} bytes)", layer=self.name, offset=at)
        stored = read_exact(self.data, at, end - start, self.name, f"chunk {i}")
        if end - start == length:
            return stored
        try:
            return self.decoder(stored, length)
        except DecodeError as exc:
            raise CorruptImage(f"chunk {i} of {self.count}: {exc}", layer=self.name, offset=at) from None
