"""decmpfs: files compressed by macOS (com.apple.decmpfs, and the resource fork for large files).

The attribute starts with a 16-byte little-endian header: magic 'fpmc', the compression type, the
uncompressed size. Odd types keep the compressed data in the attribute after the header, even types in
the resource fork as 64 KiB chunks:

    1      uncompressed, in the attribute
    3, 4   zlib; a chunk whose first byte has its low nibble 0xF is stored raw after that byte
    7, 8   LZVN; a chunk starting with 0x06 (LZVN's end of stream) is stored raw after that byte
    9, 10  uncompressed ("copy"), after a marker byte (0xCC) when there is one
    11, 12 LZFSE ('bvx' blocks); a chunk not starting with 'bvx' is stored raw after one marker byte
    13, 14 LZBITMAP ('ZBM\\x09' streams); a chunk without that magic is stored raw after one marker byte

Type 4 keeps its chunks in a classic resource (fork header at 0, data at its data offset: a 4-byte
big-endian length, a little-endian chunk count, then (offset, length) pairs counted from after the
length field). Types 8, 10, 12 and 14 start the fork with little-endian offsets of every chunk and of the
end. Chunks decode lazily through a ``ChunkedStream``; only the table's entries a read needs are read.
"""

from __future__ import annotations

import struct
import zlib
from typing import Callable, NamedTuple, Optional

from imgfs.codecs import lzbitmap, lzvn
from imgfs.errors import CorruptImage, UnsupportedFormat
from imgfs.io.cache import BlockCache
from imgfs.io.chunked import ChunkedStream
from imgfs.io.stream import BytesStream, Stream

try:
    import lzfse
except ImportError:  # pragma: no cover - the venv installs it
    lzfse = None

ATTRIBUTE = "com.apple.decmpfs"
HEADER = struct.Struct("<4sIQ")
MAGIC = b"fpmc"
CHUNK = 1 << 16
MAX_INLINE_SIZE = 1 << 26  # an attribute's few KiB cannot honestly expand past this
MAX_SIZE = 1 << 56  # 2^40 chunks, far past any real file, and st_size cannot pass 2^63
LZFSE_V1_HEADER = 770  # the fixed header of a 'bvx1' block
ZLIB, LZVN, COPY, LZFSE, LZBITMAP = "zlib", "lzvn", "copy", "lzfse", "lzbitmap"
TYPES = {1: (COPY, False), 3: (ZLIB, False), 4: (ZLIB, True), 7: (LZVN, False), 8: (LZVN, True),
         9: (COPY, False), 10: (COPY, True), 11: (LZFSE, False), 12: (LZFSE, True), 13: (LZBITMAP, False),
         14: (LZBITMAP, True)}


class Header(NamedTuple):
    kind: int
    size: int

    @property
    def in_resource_fork(self) -> bool:
        return TYPES.get(self.kind, ("", False))[1]


def parse_header(value: bytes, layer: str = "hfs+") -> Header:
    """The attribute's header; ``layer`` is the filesystem that holds it (for the error message)."""
    if len(value) < HEADER.size:
        raise CorruptImage(f"{ATTRIBUTE} is {len(value)} bytes, shorter than its header", layer=layer)
    magic, kind, size = HEADER.unpack_from(value)
    if magic != MAGIC:
        raise CorruptImage(f"{ATTRIBUTE}: expected magic 'fpmc', got {magic!r}", layer=layer)
    return Header(kind, size)


def _decoder(method: str) -> Callable[[bytes, int], bytes]:
    return {ZLIB: _zlib, LZVN: _lzvn, COPY: _copy, LZFSE: _lzfse, LZBITMAP: _lzbitmap}[method]


def _zlib(data: bytes, size: int) -> bytes:
    if data[:1] and data[0] & 0x0F == 0x0F:
        return data[1 : 1 + size]
    try:
        return zlib.decompressobj().decompress(data, size)
    except zlib.error as exc:
        raise ValueError(f"zlib: {exc}") from None


def _lzvn(data: bytes, size: int) -> bytes:
    if data[:1] == b"\x06":
        return data[1 : 1 + size]
    return lzvn.decode(data, size)


def _copy(data: bytes, size: int) -> bytes:
    return data[1 : 1 + size] if len(data) == size + 1 else data[:size]


def _lzfse(data: bytes, size: int) -> bytes:
    if data[:3] != b"bvx":
        return data[1 : 1 + size]
    if lzfse is None:  # pragma: no cover
        raise ValueError("the lzfse package is not installed")
    declared = lzfse_raw_size(data)
    if declared != size:  # checked first: lzfse.decompress grows its output to whatever the blocks say
        raise ValueError(f"the LZFSE blocks say {declared} bytes")
    try:
        return lzfse.decompress(data)
    except (lzfse.error, MemoryError):  # the binding says MemoryError when the decoder fails
        raise ValueError("the LZFSE stream is damaged") from None


def _lzbitmap(data: bytes, size: int) -> bytes:
    if data[:4] != lzbitmap.MAGIC:
        return data[1 : 1 + size]
    return lzbitmap.decode(data, size)


def lzfse_raw_size(data: bytes) -> int:
    """The bytes an LZFSE stream's block headers promise, walked without decoding; ValueError when a
    header is unknown or runs past the data."""
    total = pos = 0
    while pos + 4 <= len(data):
        magic, raw = data[pos : pos + 4], int.from_bytes(data[pos + 4 : pos + 8], "little")
        if magic == b"bvx$":
            return total
        if pos + 8 > len(data):
            break
        total += raw
        if magic == b"bvx-":
            pos += 8 + raw
        elif magic == b"bvxn" and pos + 12 <= len(data):
            pos += 12 + int.from_bytes(data[pos + 8 : pos + 12], "little")
        elif magic == b"bvx1" and pos + LZFSE_V1_HEADER <= len(data):
            literal, lmd = struct.unpack_from("<II", data, pos + 20)
            pos += LZFSE_V1_HEADER + literal + lmd
        elif magic == b"bvx2" and pos + 32 <= len(data):
            v0, v1, v2 = struct.unpack_from("<QQQ", data, pos + 8)
            pos += (v2 & 0xFFFFFFFF) + ((v0 >> 20) & 0xFFFFF) + ((v1 >> 40) & 0xFFFFF)
        else:
            break
    raise ValueError("the LZFSE block headers are damaged")


def open_compressed(value: bytes, fork: Optional[Stream], cache: BlockCache, name: str, layer: str = "hfs+"
                    ) -> Stream:
    """The uncompressed file: ``value`` is the com.apple.decmpfs attribute, ``fork`` the resource fork (None
    when the file has none), ``layer`` the filesystem that holds them (HFS+, APFS)."""
    header = parse_header(value, layer)
    if header.size > MAX_SIZE:
        raise CorruptImage(f"{ATTRIBUTE} says the file has {header.size} bytes", layer=name)
    kind = TYPES.get(header.kind)
    if kind is None:
        raise UnsupportedFormat(f"{name}: decmpfs compression type {header.kind} is not supported", layer=layer)
    method, in_fork = kind
    decode = _decoder(method)
    if not in_fork:
        return _inline(header, value[HEADER.size :], decode if header.kind != 1 else _raw, cache, name)
    if fork is None:
        raise CorruptImage(f"decmpfs type {header.kind} keeps its data in the resource fork, and the file has none",
                           layer=name)
    locate = _zlib_table(fork, header.size, name) if method == ZLIB else _offset_table(fork, header.size, name)

    def chunk(i: int) -> bytes:
        want = min(CHUNK, header.size - i * CHUNK)
        start, length = locate(i)
        data = fork.pread(start, length)
        if len(data) < length:
            raise CorruptImage(f"decmpfs chunk {i} runs past the end of the resource fork", layer=name, offset=start)
        return _checked(decode, data, want, f"decmpfs chunk {i}", name)

    return ChunkedStream(header.size, range(0, header.size, CHUNK), chunk, cache, name=name)


def _raw(data: bytes, size: int) -> bytes:
    return data[:size]


def _inline(header: Header, data: bytes, decode: Callable[[bytes, int], bytes], cache: BlockCache,
            name: str) -> Stream:
    if header.size == 0:
        return BytesStream(b"", name=name)
    if header.size > MAX_INLINE_SIZE:
        raise CorruptImage(f"{ATTRIBUTE} says {header.size} bytes are stored in the attribute itself",
                           layer=name)
    return ChunkedStream(header.size, [0], lambda _i: _checked(decode, data, header.size, ATTRIBUTE, name), cache,
                         name=name)


def _checked(decode: Callable[[bytes, int], bytes], data: bytes, want: int, what: str, name: str) -> bytes:
    if not data:
        raise CorruptImage(f"{what} is empty, expected {want} bytes", layer=name)
    try:
        out = decode(data, want)
    except ValueError as exc:
        raise CorruptImage(f"{what} does not decompress: {exc}", layer=name) from None
    if len(out) != want:
        raise CorruptImage(f"{what} decompressed to {len(out)} bytes, expected {want}", layer=name)
    return out


def _count(size: int) -> int:
    return -(-size // CHUNK)


def _read(fork: Stream, offset: int, length: int, what: str, name: str) -> bytes:
    data = fork.pread(offset, length)
    if len(data) < length:
        raise CorruptImage(f"{what}: the resource fork ({fork.size} bytes) ends before byte {offset + length}",
                           layer=name, offset=offset)
    return data


def _offset_table(fork: Stream, size: int, name: str) -> Callable[[int], tuple[int, int]]:
    """Types 8, 10, 12, 14: little-endian offsets of each chunk and of the end, at the start of the fork."""
    count = _count(size)
    table = 4 * (count + 1)
    first = struct.unpack("<I", _read(fork, 0, 4, "decmpfs chunk table", name))[0]
    if first != table or table > fork.size:
        raise CorruptImage(f"decmpfs chunk table: {size} bytes need {count} chunks and a table of {table} bytes; "
                           f"the fork ({fork.size} bytes) says {first}", layer=name, offset=0)

    def locate(i: int) -> tuple[int, int]:
        start, end = struct.unpack("<II", _read(fork, 4 * i, 8, "decmpfs chunk table", name))
        if not table <= start < end <= fork.size or end - start > CHUNK + 1:
            raise CorruptImage(f"decmpfs chunk {i}: bytes {start} to {end} are not a chunk of the "
                               f"{fork.size}-byte resource fork", layer=name, offset=4 * i)
        return start, end - start

    return locate


def _zlib_table(fork: Stream, size: int, name: str) -> Callable[[int], tuple[int, int]]:
    """Type 4: a resource whose data holds a chunk count and (offset, length) pairs."""
    data_offset = struct.unpack(">I", _read(fork, 0, 4, "resource fork header", name))[0]
    length, count = struct.unpack(">I", _read(fork, data_offset, 4, "cmpf resource", name))[0], \
        struct.unpack("<I", _read(fork, data_offset + 4, 4, "cmpf resource", name))[0]
    base = data_offset + 4
    if count != _count(size) or 4 + 8 * count > length or base + length > fork.size:
        raise CorruptImage(f"cmpf resource: {size} bytes need {_count(size)} chunks; the resource says {count} "
                           f"chunks in {length} bytes (fork {fork.size} bytes)", layer=name, offset=data_offset)

    def locate(i: int) -> tuple[int, int]:
        start, chunk_length = struct.unpack("<II", _read(fork, base + 4 + 8 * i, 8, "cmpf chunk table", name))
        if not 0 < chunk_length <= CHUNK + 1 or start + chunk_length > length:
            raise CorruptImage(f"decmpfs chunk {i}: {chunk_length} bytes at {start} are not inside the "
                               f"{length}-byte resource", layer=name, offset=base + 4 + 8 * i)
        return base + start, chunk_length

    return locate
