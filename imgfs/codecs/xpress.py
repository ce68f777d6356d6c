"""Microsoft XPRESS, plain LZ77 and LZ77+Huffman, decoded in pure Python from [MS-XCA] sections 2.2 and 2.4.

**LZ77+Huffman** ("XPRESS Huffman"; WOF's XPRESS4K/8K/16K chunks and WIM's XPRESS resources) codes each
64 KiB of output as one block: a 256-byte table of 512 four-bit code lengths (symbol ``2i`` in the low
nibble of byte ``i``) and then a bit stream read as 16-bit little-endian words, most significant bit
first. Symbols 0-255 are literals; symbol ``256 + (b << 4 | l)`` is a match whose distance has ``b``
bits below an implicit leading one (the bits follow the symbol) and whose length is ``l + 3``, where
``l == 15`` takes the length from whole bytes read from the input at the position just after the last
16-bit word loaded (one byte, then 16 and 32 bits for long matches). The decoder keeps at least 16 bits
loaded, one word at a time, exactly as the specification's pseudocode does: the position of those bytes
depends on it.

**Plain LZ77** reads 32-bit flag words (most significant bit first; 0 = literal byte, 1 = match); a
match is a 16-bit word ``(distance - 1) << 3 | length``, with longer lengths in a shared half byte, then a
byte, a 16-bit and a 32-bit field.

Both decoders stop at the stated output size: a match reaching before the start of the output, a stream
that would decode past the size, or one that ends first, is a ``DecodeError``.
"""

from __future__ import annotations

from functools import lru_cache

from imgfs.codecs import DecodeError, copy_match
from imgfs.codecs.huffman import decode_table

BLOCK_SIZE = 65536  # output bytes per Huffman table
_TABLE_SIZE = 256
_MASKS = tuple((1 << n) - 1 for n in range(64))
_LOW_NIBBLES = bytes(b & 15 for b in range(256))
_HIGH_NIBBLES = bytes(b >> 4 for b in range(256))


def _check_size(out_size: int) -> None:
    if out_size < 0:
        raise DecodeError(f"a negative output size ({out_size})")


@lru_cache(maxsize=64)
def _huffman_table(packed: bytes) -> tuple[list[int], int]:
    """The decoding table of one block's 256-byte length table (equal tables recur: cache them)."""
    lengths = bytearray(512)
    lengths[0::2] = packed.translate(_LOW_NIBBLES)
    lengths[1::2] = packed.translate(_HIGH_NIBBLES)
    return decode_table(lengths, 15, "XPRESS Huffman table")


def decompress_huffman(data: bytes, out_size: int) -> bytes:
    """``data`` (LZ77+Huffman) decoded to exactly ``out_size`` bytes, or ``DecodeError``."""
    _check_size(out_size)
    n = len(data)
    src = bytes(data) + bytes(8)  # zero words past the end; _block checks none of their bits is used
    out = bytearray()
    pos = 0
    while len(out) < out_size:
        if pos + _TABLE_SIZE > n:
            raise DecodeError(f"XPRESS Huffman data ends at byte {pos}, where a Huffman table should be, "
                              f"after {len(out)} of {out_size} bytes")
        pos = _block(src, n, pos, out, min(len(out) + BLOCK_SIZE, out_size), out_size)
    return bytes(out)


def _block(src: bytes, n: int, pos: int, out: bytearray, block_end: int, out_size: int) -> int:
    """Decode one block (table at ``pos``) into ``out`` up to ``block_end``; the input position after it.

    One function with everything bound locally: this loop is where the time goes.
    """
    table, table_bits = _huffman_table(src[pos : pos + _TABLE_SIZE])
    pos += _TABLE_SIZE
    bitbuf = (src[pos] | src[pos + 1] << 8) << 16 | src[pos + 2] | src[pos + 3] << 8
    pos += 4
    nbits = 32  # bitbuf holds exactly nbits unread bits; at least 16 between symbols
    masks = _MASKS
    last_word = n + 4  # words loaded past the end are zeros: more than two of them means bits were missing
    opos = len(out)
    append = out.append
    while opos < block_end:
        entry = table[bitbuf >> (nbits - table_bits)]
        nbits -= entry & 31
        bitbuf &= masks[nbits]
        if nbits < 16:
            if pos > last_word:
                raise _truncated(pos, opos, out_size)
            bitbuf = bitbuf << 16 | src[pos] | src[pos + 1] << 8
            pos += 2
            nbits += 16
        symbol = entry >> 5
        if symbol < 256:
            append(symbol)
            opos += 1
            continue
        symbol -= 256
        length = symbol & 15
        offset_bits = symbol >> 4
        if length == 15:
            length, pos = _long_length(src, n, pos, opos, out_size)
        length += 3
        offset = bitbuf >> (nbits - offset_bits) | 1 << offset_bits
        nbits -= offset_bits
        bitbuf &= masks[nbits]
        if nbits < 16:
            if pos > last_word:
                raise _truncated(pos, opos, out_size)
            bitbuf = bitbuf << 16 | src[pos] | src[pos + 1] << 8
            pos += 2
            nbits += 16
        if offset > opos:
            raise DecodeError(f"a match at output byte {opos} reaches {offset} bytes back, before the start")
        end = opos + length
        if end > out_size:
            raise DecodeError(f"a match at output byte {opos} runs to byte {end}, past the stated {out_size}")
        copy_match(out, opos - offset, length)
        opos = end
    if pos > n and (pos - n) * 8 > nbits:
        raise _truncated(pos, opos, out_size)
    return pos


def _long_length(src: bytes, n: int, pos: int, opos: int, out_size: int, bias: int = 0) -> tuple[int, int]:
    """A match length of 15 or more, from the bytes at ``pos`` (MS-XCA 2.2.4 and 2.4.4): one byte added to 15, or a
    16-bit, else a 32-bit, length that counts ``bias`` more (plain LZ77's counts the 7 added after it); and the
    position after them."""
    if pos >= n:
        raise _truncated(pos, opos, out_size)
    length = src[pos]
    pos += 1
    if length < 255:
        return length + 15, pos
    if pos + 2 > n:
        raise _truncated(pos, opos, out_size)
    length = src[pos] | src[pos + 1] << 8
    pos += 2
    if length == 0:
        if pos + 4 > n:
            raise _truncated(pos, opos, out_size)
        length = int.from_bytes(src[pos : pos + 4], "little")
        pos += 4
    if length < 15 + bias:
        raise DecodeError(f"a match at output byte {opos} has an invalid long length ({length})")
    return length - bias, pos


def _truncated(pos: int, opos: int, out_size: int) -> DecodeError:
    return DecodeError(f"compressed data ends (input byte {pos}) after {opos} of {out_size} bytes")


def decompress_plain(data: bytes, out_size: int) -> bytes:
    """``data`` (plain LZ77) decoded to exactly ``out_size`` bytes, or ``DecodeError``."""
    _check_size(out_size)
    n = len(data)
    out = bytearray()
    opos = ip = flags = flag_count = 0
    half_byte = 0  # input position of a half-used length byte; 0 = none (byte 0 is always flags)
    masks = _MASKS
    while opos < out_size:
        if flag_count == 0:
            if ip + 4 > n:
                raise _truncated(ip, opos, out_size)
            flags = int.from_bytes(data[ip : ip + 4], "little")
            ip += 4
            flag_count = 32
        literals = flag_count - (flags & masks[flag_count]).bit_length()  # leading zero flags
        if literals:
            literals = min(literals, out_size - opos)
            if ip + literals > n:
                raise _truncated(n, opos, out_size)
            out += data[ip : ip + literals]
            ip += literals
            opos += literals
            flag_count -= literals
            continue
        flag_count -= 1
        if ip + 2 > n:
            raise _truncated(ip, opos, out_size)
        word = data[ip] | data[ip + 1] << 8
        ip += 2
        length = word & 7
        offset = (word >> 3) + 1
        if length == 7:
            if half_byte == 0:
                if ip >= n:
                    raise _truncated(ip, opos, out_size)
                length = data[ip] & 15
                half_byte = ip
                ip += 1
            else:
                length = data[half_byte] >> 4
                half_byte = 0
            if length == 15:
                length, ip = _long_length(data, len(data), ip, opos, out_size, bias=7)
            length += 7
        length += 3
        if offset > opos:
            raise DecodeError(f"a match at output byte {opos} reaches {offset} bytes back, before the start")
        end = opos + length
        if end > out_size:
            raise DecodeError(f"a match at output byte {opos} runs to byte {end}, past the stated {out_size}")
        copy_match(out, opos - offset, length)
        opos = end
    return bytes(out)

