"""LZVN, Apple's LZ77 variant of decmpfs types 7 and 8, decoded in pure Python.

Each opcode carries up to three literal bytes and/or a match (a length and a distance back into the
output); some reuse the previous distance. The first byte says which:

    LLMMMDDD DDDDDDDD            small distance: L literals, match M+3 at distance D (11 bits)
    LLMMM110                     previous distance: L literals, match M+3 at the last distance
    LLMMM111 DDDDDDDD DDDDDDDD   large distance: distance in 16 bits (little-endian)
    101LLMMM DDDDDDMM DDDDDDDD   medium distance: L literals, 5-bit match length, 14-bit distance
    1110LLLL / 11100000 LLLLLLLL literal only (1..15, or 16..271 bytes)
    1111MMMM / 11110000 MMMMMMMM match only at the last distance (1..15, or 16..271 bytes)
    00000110 (+ 7 bytes)         end of stream; 00001110 and 00010110 are no-ops

``lzfse.decompress`` does the same work in C, about 30 times faster, when the stream is wrapped in an
LZFSE "bvxn" block; ``decode`` uses that when the ``lzfse`` package is there, and this decoder otherwise
or when lzfse refuses a stream (it then says precisely what is wrong with it).
"""

from __future__ import annotations

import struct

from imgfs.codecs import copy_match

_EOS, _NOP1, _NOP2 = 0x06, 0x0E, 0x16
_BLOCK_HEADER = struct.Struct("<4sII")  # "bvxn", raw bytes, payload bytes
_LZFSE_END = b"bvx$"

try:
    import lzfse as _lzfse
except ImportError:  # pragma: no cover - the venv installs it
    _lzfse = None


class LzvnError(ValueError):
    """The stream is not valid LZVN, or does not make the expected number of bytes."""


def _opcode_kinds() -> list[int]:
    """The kind of every first byte: 0 small, 1 previous, 2 large, 3 medium, 4/5 literal, 6/7 match,
    8 end, 9 no-op, 10 undefined."""
    kinds = []
    for op in range(256):
        low = op & 7
        if op == _EOS:
            kinds.append(8)
        elif op in (_NOP1, _NOP2):
            kinds.append(9)
        elif 0xA0 <= op <= 0xBF:
            kinds.append(3)
        elif op == 0xE0:
            kinds.append(4)
        elif 0xE1 <= op <= 0xEF:
            kinds.append(5)
        elif op == 0xF0:
            kinds.append(6)
        elif op >= 0xF1:
            kinds.append(7)
        elif 0x70 <= op <= 0x7F or 0xD0 <= op <= 0xDF or (low == 6 and op < 0x40):
            kinds.append(10)  # includes "previous distance" with no literal before 0x40: undefined
        elif low == 7:
            kinds.append(2)
        elif low == 6:
            kinds.append(1)
        else:
            kinds.append(0)
    return kinds


_KINDS = _opcode_kinds()


def decode_python(src: bytes, size: int) -> bytes:
    """Exactly ``size`` bytes from the LZVN stream ``src``; ``LzvnError`` when it cannot make them."""
    out = bytearray()
    pos, end, dist = 0, len(src), 0
    kinds = _KINDS
    while len(out) < size:
        if pos >= end:
            raise LzvnError(f"the stream ends after {len(out)} of {size} bytes")
        op = src[pos]
        kind = kinds[op]
        if kind <= 3:
            if kind == 0:
                lit, match, dist, pos = op >> 6, ((op >> 3) & 7) + 3, ((op & 7) << 8) | _at(src, pos + 1), pos + 2
            elif kind == 1:
                lit, match, pos = op >> 6, ((op >> 3) & 7) + 3, pos + 1
            elif kind == 2:
                lit, match, pos = op >> 6, ((op >> 3) & 7) + 3, pos + 3
                dist = _at(src, pos - 2) | _at(src, pos - 1) << 8
            else:
                pair = _at(src, pos + 1) | _at(src, pos + 2) << 8
                lit, match, dist, pos = (op >> 3) & 3, (((op & 7) << 2) | (pair & 3)) + 3, pair >> 2, pos + 3
            if lit:
                out += src[pos : pos + lit]
                pos += lit
            _copy_match(out, dist, match)
        elif kind <= 5:
            lit, pos = (_at(src, pos + 1) + 16, pos + 2) if kind == 4 else (op & 15, pos + 1)
            if pos + lit > end:
                raise LzvnError(f"a literal of {lit} bytes runs past the end of the stream")
            out += src[pos : pos + lit]
            pos += lit
        elif kind <= 7:
            match, pos = (_at(src, pos + 1) + 16, pos + 2) if kind == 6 else (op & 15, pos + 1)
            _copy_match(out, dist, match)
        elif kind == 8:
            break
        elif kind == 9:
            pos += 1
        else:
            raise LzvnError(f"undefined opcode 0x{op:02x} at byte {pos}")
    if len(out) < size:
        raise LzvnError(f"the stream ends after {len(out)} of {size} bytes")
    return bytes(out[:size])


def _at(src: bytes, pos: int) -> int:
    if pos >= len(src):
        raise LzvnError("an opcode runs past the end of the stream")
    return src[pos]


def _copy_match(out: bytearray, dist: int, length: int) -> None:
    have = len(out)
    if not 0 < dist <= have:
        raise LzvnError(f"match distance {dist} with {have} bytes decoded")
    copy_match(out, have - dist, length)


def decode_lzfse(src: bytes, size: int) -> bytes:
    """The same as ``decode_python``, by the lzfse library: the stream wrapped in a "bvxn" block."""
    if _lzfse is None:  # pragma: no cover
        return decode_python(src, size)
    block = _BLOCK_HEADER.pack(b"bvxn", size, len(src)) + src + _LZFSE_END
    try:
        data = _lzfse.decompress(block)
    except (_lzfse.error, MemoryError):  # the binding says MemoryError when the decoder fails
        data = b""
    if len(data) != size:  # damaged, or without an end-of-stream opcode: let the careful decoder say which
        return decode_python(src, size)
    return data


decode = decode_lzfse if _lzfse is not None else decode_python
