"""Decoding one compressed UDIF chunk to exactly its stated size.

Every decoder stops at the size the block table states and never produces (or allocates) more: a chunk
that would decode to more, or to less, is ``CorruptImage``. zlib, bzip2, LZMA and LZFSE run in C and
release the GIL; ADC is pure Python (``adc.py``).
"""

from __future__ import annotations

import bz2
import ctypes
import lzma
import struct
import zlib
from typing import Callable, Optional

import lzfse

from imgfs.codecs import DecodeError, adc
from imgfs.containers.dmg.structs import ADC, BZIP2, LZFSE, LZMA, ZLIB

XZ_MAGIC = b"\xfd7zXZ\x00"
# An LZMA stream's header says how big a dictionary to allocate, whatever the chunk's size. hdiutil's
# ULMO chunks use 8 MiB (xz preset 6); xz's largest preset needs 65 MiB to decode. More is refused.
LZMA_MEMORY_LIMIT = 96 << 20


def decode(kind: int, data: bytes, size: int) -> bytes:
    """``data`` decoded with codec ``kind`` to exactly ``size`` bytes, or ``DecodeError``."""
    out = DECODERS[kind](data, size)
    if len(out) != size:
        raise DecodeError(f"decodes to {len(out)} bytes, expected {size}")
    return out


def _streaming(decompressor, data: bytes, size: int, name: str) -> bytes:
    """Run a bz2/lzma decompressor for at most ``size`` bytes, then make sure that nothing is left."""
    out = decompressor.decompress(data, max_length=size)
    if decompressor.eof:
        return out
    if len(out) < size:
        raise DecodeError(f"{name} data ends after {len(out)} of {size} bytes")
    if not decompressor.needs_input and decompressor.decompress(b"", max_length=1):
        raise DecodeError(f"{name} data decodes to more than the stated {size} bytes")
    return out  # every stated byte is there; at most the stream's end marker is missing


def _zlib(data: bytes, size: int) -> bytes:
    d = zlib.decompressobj()
    try:
        out = d.decompress(data, size)
    except zlib.error as exc:
        raise DecodeError(f"zlib: {exc}") from None
    if d.eof:
        return out
    if len(out) < size:
        raise DecodeError(f"zlib data ends after {len(out)} of {size} bytes")
    try:
        more = d.decompress(d.unconsumed_tail, 1)
    except zlib.error:
        more = b""
    if more:
        raise DecodeError(f"zlib data decodes to more than the stated {size} bytes")
    return out


def _bzip2(data: bytes, size: int) -> bytes:
    try:
        return _streaming(bz2.BZ2Decompressor(), data, size, "bzip2")
    except (OSError, EOFError) as exc:
        raise DecodeError(f"bzip2: {exc}") from None


def _lzma(data: bytes, size: int) -> bytes:
    """xz streams and LZMA "alone" streams both occur in ULMO images; the magic tells them apart."""
    kind = lzma.FORMAT_XZ if data.startswith(XZ_MAGIC) else lzma.FORMAT_ALONE
    try:
        return _streaming(lzma.LZMADecompressor(format=kind, memlimit=LZMA_MEMORY_LIMIT), data, size, "lzma")
    except (lzma.LZMAError, EOFError) as exc:
        raise DecodeError(f"lzma: {exc}") from None


def _lzfse(data: bytes, size: int) -> bytes:
    """The lzfse package's ``decompress`` grows its buffer until the data fits, so a crafted chunk could make
    it allocate without bound. Its block headers say how much it should make: a chunk that promises more
    than its stated size is refused unread, and the C decoder the package carries is then called with a
    buffer of the stated size (plus one byte, to notice more)."""
    promised = lzfse_raw_size(data)
    if promised > size:
        raise DecodeError(f"lzfse data decodes to {promised} bytes, more than the stated {size}")
    if _lzfse_decode_buffer is None:  # pragma: no cover - a build of the package without the C symbols
        try:
            return lzfse.decompress(data)
        except lzfse.error as exc:
            raise DecodeError(f"lzfse: {exc}") from None
    out = ctypes.create_string_buffer(size + 1)
    made = _lzfse_decode_buffer(out, size + 1, data, len(data), None)
    if made > size:
        raise DecodeError(f"lzfse data decodes to more than the stated {size} bytes")
    if made < size:
        raise DecodeError(f"lzfse data ends after {made} of {size} bytes")
    return out.raw[:size]


def _bounded_lzfse_decoder() -> Optional[Callable[..., int]]:
    """``lzfse_decode_buffer`` from the lzfse extension module itself (ctypes releases the GIL)."""
    try:
        function = ctypes.CDLL(lzfse.__file__).lzfse_decode_buffer
    except (OSError, AttributeError, TypeError):
        return None
    function.restype = ctypes.c_size_t
    function.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_char_p, ctypes.c_size_t, ctypes.c_void_p]
    return function


_lzfse_decode_buffer = _bounded_lzfse_decoder()


_LZFSE_END = b"bvx$"
_V1_HEADER_SIZE = 770


def lzfse_raw_size(data: bytes) -> int:
    """The decoded size an LZFSE stream's block headers add up to, walking the blocks without decoding."""
    total, at = 0, 0
    while True:
        magic = data[at : at + 4]
        if magic == _LZFSE_END:
            return total
        if len(data) < at + 8:
            raise DecodeError(f"lzfse stream ends inside a block header at byte {at}")
        raw = struct.unpack_from("<I", data, at + 4)[0]
        total += raw
        at += _lzfse_block_size(magic, raw, data, at)


def _lzfse_block_size(magic: bytes, raw: int, data: bytes, at: int) -> int:
    if magic == b"bvx-":  # stored
        return 8 + raw
    if magic == b"bvxn":  # LZVN
        return 12 + _u32(data, at + 8)
    if magic == b"bvx1":
        return _V1_HEADER_SIZE + _u32(data, at + 20) + _u32(data, at + 24)
    if magic == b"bvx2":
        if len(data) < at + 32:
            raise DecodeError(f"lzfse stream ends inside a block header at byte {at}")
        v0, v1, v2 = struct.unpack_from("<QQQ", data, at + 8)
        literal_payload, lmd_payload, header_size = (v0 >> 20) & 0xFFFFF, (v1 >> 40) & 0xFFFFF, v2 & 0xFFFFFFFF
        return header_size + literal_payload + lmd_payload
    raise DecodeError(f"lzfse: no block at byte {at} (magic {magic!r})")


def _u32(data: bytes, at: int) -> int:
    if len(data) < at + 4:
        raise DecodeError(f"lzfse stream ends inside a block header at byte {at}")
    return struct.unpack_from("<I", data, at)[0]


def _adc(data: bytes, size: int) -> bytes:
    try:
        return adc.decode(data, size)
    except ValueError as exc:
        raise DecodeError(f"adc: {exc}") from None


DECODERS: dict[int, Callable[[bytes, int], bytes]] = {
    ZLIB: _zlib, BZIP2: _bzip2, LZMA: _lzma, LZFSE: _lzfse, ADC: _adc,
}
RELEASES_GIL = frozenset({ZLIB, BZIP2, LZMA, LZFSE})  # worth decoding ahead in another thread
