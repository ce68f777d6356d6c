"""LZX as WIM resources and WOF-compressed files use it, decoded in pure Python.

From Microsoft's LZX format descriptions ([MS-PATCH] section 2, the CAB LZX format) with the WIM
variant's differences: every chunk (32 KiB for WOF, the window) is compressed on its own, so the window,
the repeated offsets (1, 1, 1) and the previous code lengths (all 0) start afresh with each chunk; there
is no E8 header: E8 translation is always on, with a file size of 12,000,000 and positions counted from
the chunk's start; a block header is a 3-bit type, then 1 bit set for the default block size (32768) or
else a 16-bit size (24 bits, for windows above 32 KiB).

The bit stream is 16-bit little-endian words, most significant bit first. A block is verbatim (1),
aligned-offset (2) or uncompressed (3). The compressed kinds send the code lengths of the aligned-offset
code (8 x 3 bits, aligned blocks only), of the main code (256 literals, then 8 symbols per position
slot) and of the length code (249 symbols), each run of lengths through a 20-symbol pretree, as deltas
from the previous block's lengths. A main symbol ``256 + slot * 8 + l`` is a match of length ``l + 2``
(``l == 7``: plus a length-code symbol) whose offset is repeated offset R0/R1/R2 for slots 0-2, else
``base[slot] + footer - 2`` where the footer has ``footer_bits[slot]`` bits (aligned blocks send its low 3
bits with the aligned code). An uncompressed block pads the bit stream to the next 16-bit boundary (1 to
16 bits), then holds R0, R1, R2 (32-bit little-endian), the bytes, and a pad byte if their count is odd.

Matches may run past their block's end into the next block; nothing may run past the stated output size
or reach before the chunk's start (``DecodeError``).
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

from imgfs.codecs import DecodeError, copy_match
from imgfs.codecs.huffman import decode_table

WIM_CHUNK_SIZE = 32768
E8_FILE_SIZE = 12_000_000
_NUM_CHARS = 256
_PRETREE_SYMBOLS = 20
_LENGTH_SYMBOLS = 249
_ALIGNED_SYMBOLS = 8
_MAX_CODE_LENGTH = 16
_VERBATIM, _ALIGNED, _UNCOMPRESSED = 1, 2, 3
_SLOTS_BY_ORDER = {15: 30, 16: 32, 17: 34, 18: 36, 19: 38, 20: 42, 21: 50}
_MASKS = tuple((1 << n) - 1 for n in range(64))


def _slot_tables() -> tuple[list[int], list[int]]:
    """Footer bits and base (formatted) offset of each position slot."""
    footer_bits, bases = [], []
    base = 0
    for slot in range(50):
        bits = 0 if slot < 4 else min((slot >> 1) - 1, 17)
        footer_bits.append(bits)
        bases.append(base)
        base += 1 << bits
    return footer_bits, bases


_FOOTER_BITS, _BASES = _slot_tables()


class _Bits:
    """The bit stream over 16-bit words; ``buf`` holds exactly ``nbits`` unread bits."""

    __slots__ = ("words", "nwords", "wi", "buf", "nbits")

    def __init__(self, data: bytes) -> None:
        self.nwords = len(data) // 2
        self.words = list(struct.unpack_from(f"<{self.nwords}H", data)) + [0, 0, 0, 0]
        self.restart(0)

    def restart(self, byte_pos: int) -> None:
        self.wi = byte_pos // 2
        self.buf = self.nbits = 0

    def refill(self) -> None:
        if self.wi > self.nwords + 1:  # two zero words past the end were loaded and used
            raise DecodeError(f"the compressed data ends too soon (at byte {2 * self.nwords})")
        self.buf = self.buf << 32 | self.words[self.wi] << 16 | self.words[self.wi + 1]
        self.wi += 2
        self.nbits += 32

    def read(self, count: int) -> int:
        if self.nbits < count:
            self.refill()
        self.nbits -= count
        value = self.buf >> self.nbits
        self.buf &= _MASKS[self.nbits]
        return value

    def decode(self, table: list[int], table_bits: int, what: str) -> int:
        if self.nbits < _MAX_CODE_LENGTH:
            self.refill()
        entry = table[self.buf >> (self.nbits - table_bits)]
        if entry < 0:
            raise DecodeError(f"{what}: a bit pattern no code uses")
        self.nbits -= entry & 31
        self.buf &= _MASKS[self.nbits]
        return entry >> 5

    def byte_position_after_padding(self) -> int:
        """Where an uncompressed block's bytes start: past 1 to 16 bits of padding to a word boundary."""
        consumed = 16 * self.wi - self.nbits
        return 2 * (consumed // 16 + 1)

    def check_end(self) -> None:
        if self.wi > self.nwords and 16 * (self.wi - self.nwords) > self.nbits:
            raise DecodeError(f"the compressed data ends too soon (at byte {2 * self.nwords})")


class _State:
    """What carries from one block to the next within a chunk."""

    def __init__(self, num_main: int) -> None:
        self.main_lengths = [0] * num_main
        self.length_lengths = [0] * _LENGTH_SYMBOLS
        self.recent = [1, 1, 1]


def decompress(data: bytes, out_size: int, window_size: int = WIM_CHUNK_SIZE) -> bytes:
    """One WIM/WOF LZX chunk decoded to exactly ``out_size`` bytes (at most ``window_size``), with the
    E8 translation undone; ``DecodeError`` when the data does not make exactly that."""
    order = window_size.bit_length() - 1
    if window_size != 1 << order or order not in _SLOTS_BY_ORDER:
        raise DecodeError(f"an LZX window of {window_size} bytes (a power of 2 from 32 KiB to 2 MiB)")
    if not 0 <= out_size <= window_size:
        raise DecodeError(f"an LZX chunk of {out_size} bytes in a {window_size}-byte window")
    bits = _Bits(data)
    state = _State(_NUM_CHARS + 8 * _SLOTS_BY_ORDER[order])
    out = bytearray()
    block_end = 0
    while len(out) < out_size:
        block_type = bits.read(3)
        if bits.read(1):
            block_size = 32768
        else:
            block_size = bits.read(16)
            if order >= 16:
                block_size = block_size << 8 | bits.read(8)
        block_end += block_size
        if block_size == 0 or block_end > out_size:
            raise DecodeError(f"an LZX block of {block_size} bytes at output byte {len(out)} runs past the "
                              f"stated {out_size}")
        if block_type == _UNCOMPRESSED:
            if len(out) != block_end - block_size:
                raise DecodeError(f"a match runs into the uncompressed LZX block at output byte {len(out)}")
            _uncompressed_block(bits, data, out, block_end, state)
        elif block_type in (_VERBATIM, _ALIGNED):
            _compressed_block(bits, out, block_end, out_size, state, block_type == _ALIGNED)
        else:
            raise DecodeError(f"LZX block type {block_type} at output byte {len(out)}")
    bits.check_end()
    if out_size > 10:
        _undo_e8(out)
    return bytes(out)


def _uncompressed_block(bits: _Bits, data: bytes, out: bytearray, block_end: int, state: _State) -> None:
    pos = bits.byte_position_after_padding()
    count = block_end - len(out)
    if count < 0 or pos + 12 + count > len(data):
        raise DecodeError(f"an uncompressed LZX block at input byte {pos} runs past the end of the data")
    state.recent = list(struct.unpack_from("<3I", data, pos))
    out += data[pos + 12 : pos + 12 + count]
    bits.restart(min(pos + 12 + count + (count & 1), len(data)))  # a last block may lack its pad byte


def _read_lengths(bits: _Bits, lengths: list[int], start: int, stop: int) -> None:
    """Lengths ``start:stop`` of a code, as deltas from their previous values through a pretree."""
    pre_lengths = [bits.read(4) for _ in range(_PRETREE_SYMBOLS)]
    table, table_bits = decode_table(pre_lengths, 15, "LZX pretree", complete=False)
    i = start
    while i < stop:
        symbol = bits.decode(table, table_bits, "LZX pretree")
        if symbol < 17:
            lengths[i] = (lengths[i] - symbol) % 17
            i += 1
            continue
        if symbol == 17:
            run, value = 4 + bits.read(4), 0
        elif symbol == 18:
            run, value = 20 + bits.read(5), 0
        else:
            run = 4 + bits.read(1)
            symbol = bits.decode(table, table_bits, "LZX pretree")
            if symbol > 16:
                raise DecodeError(f"LZX pretree: symbol {symbol} after a run code")
            value = (lengths[i] - symbol) % 17
        if i + run > stop:
            raise DecodeError("LZX pretree: a run of code lengths past the end of the code")
        lengths[i : i + run] = [value] * run
        i += run


def _code(lengths: Sequence[int], what: str) -> tuple[list[int], int]:
    return decode_table(lengths, _MAX_CODE_LENGTH, what, complete=False)


def _compressed_block(bits: _Bits, out: bytearray, block_end: int, out_size: int, state: _State,
                      aligned: bool) -> None:
    aligned_code = None
    if aligned:
        aligned_code = decode_table([bits.read(3) for _ in range(_ALIGNED_SYMBOLS)], 7, "LZX aligned code",
                                    complete=False)
    main_lengths = state.main_lengths
    _read_lengths(bits, main_lengths, 0, _NUM_CHARS)
    _read_lengths(bits, main_lengths, _NUM_CHARS, len(main_lengths))
    _read_lengths(bits, state.length_lengths, 0, _LENGTH_SYMBOLS)
    main_code = _code(main_lengths, "LZX main code")
    length_code = _code(state.length_lengths, "LZX length code")
    _decode_symbols(bits, out, block_end, out_size, state, main_code, length_code, aligned_code)


def _decode_symbols(bits: _Bits, out: bytearray, block_end: int, out_size: int, state: _State,
                    main_code: tuple[list[int], int], length_code: tuple[list[int], int],
                    aligned_code: tuple[list[int], int] | None) -> None:
    """The literals and matches of one verbatim or aligned block. Everything is bound locally: this loop
    is where the time goes."""
    main_table, main_bits = main_code
    length_table, length_bits = length_code
    aligned_table, aligned_bits = aligned_code if aligned_code else ([], 0)
    aligned_min = 3 if aligned_code else 99  # footers of 3 bits or more send their low 3 bits aligned
    words, wi, buf, nbits = bits.words, bits.wi, bits.buf, bits.nbits
    last_wi = bits.nwords + 1
    masks, footer_bits, bases = _MASKS, _FOOTER_BITS, _BASES
    r0, r1, r2 = state.recent
    opos = len(out)
    append = out.append
    while opos < block_end:
        if nbits < 17:
            if wi > last_wi:
                raise _truncated(bits)
            buf = buf << 32 | words[wi] << 16 | words[wi + 1]
            wi += 2
            nbits += 32
        entry = main_table[buf >> (nbits - main_bits)]
        if entry < 0:
            raise DecodeError(f"LZX main code: a bit pattern no code uses, at output byte {opos}")
        nbits -= entry & 31
        buf &= masks[nbits]
        symbol = entry >> 5
        if symbol < 256:
            append(symbol)
            opos += 1
            continue
        symbol -= 256
        length = symbol & 7
        slot = symbol >> 3
        if nbits < 17:
            if wi > last_wi:
                raise _truncated(bits)
            buf = buf << 32 | words[wi] << 16 | words[wi + 1]
            wi += 2
            nbits += 32
        if length == 7:
            entry = length_table[buf >> (nbits - length_bits)]
            if entry < 0:
                raise DecodeError(f"LZX length code: a bit pattern no code uses, at output byte {opos}")
            nbits -= entry & 31
            buf &= masks[nbits]
            length += entry >> 5
            if nbits < 17:
                if wi > last_wi:
                    raise _truncated(bits)
                buf = buf << 32 | words[wi] << 16 | words[wi + 1]
                wi += 2
                nbits += 32
        length += 2
        if slot == 0:
            offset = r0
        elif slot == 1:
            offset, r1 = r1, r0
            r0 = offset
        elif slot == 2:
            offset, r2 = r2, r0
            r0 = offset
        else:
            extra = footer_bits[slot]
            if extra >= aligned_min:
                extra -= 3
                nbits -= extra
                offset = bases[slot] + ((buf >> nbits) << 3) - 2
                buf &= masks[nbits]
                if nbits < 17:
                    if wi > last_wi:
                        raise _truncated(bits)
                    buf = buf << 32 | words[wi] << 16 | words[wi + 1]
                    wi += 2
                    nbits += 32
                entry = aligned_table[buf >> (nbits - aligned_bits)]
                if entry < 0:
                    raise DecodeError(f"LZX aligned code: a bit pattern no code uses, at output byte {opos}")
                nbits -= entry & 31
                buf &= masks[nbits]
                offset += entry >> 5
            else:
                nbits -= extra
                offset = bases[slot] + (buf >> nbits) - 2
                buf &= masks[nbits]
            r2, r1, r0 = r1, r0, offset
        if offset > opos:
            raise DecodeError(f"a match at output byte {opos} reaches {offset} bytes back, before the start")
        end = opos + length
        if end > out_size:
            raise DecodeError(f"a match at output byte {opos} runs to byte {end}, past the stated {out_size}")
        copy_match(out, opos - offset, length)
        opos = end
    bits.wi, bits.buf, bits.nbits = wi, buf, nbits
    state.recent = [r0, r1, r2]


def _truncated(bits: _Bits) -> DecodeError:
    return DecodeError(f"the compressed data ends too soon (at byte {2 * bits.nwords})")


def _undo_e8(out: bytearray) -> None:
    """Turn the absolute targets of x86 CALL (E8) instructions back into relative ones, as the compressor
    made them absolute: for an E8 at position ``i`` below ``len - 10``, a 32-bit value ``a`` after it
    with ``-i <= a < 12,000,000`` becomes ``a - i`` (``a >= 0``) or ``a + 12,000,000``; the scan then
    resumes after those four bytes."""
    limit = len(out) - 10
    i = out.find(0xE8, 0, limit)
    while i >= 0:
        value = int.from_bytes(out[i + 1 : i + 5], "little", signed=True)
        if -i <= value < E8_FILE_SIZE:
            value = value - i if value >= 0 else value + E8_FILE_SIZE
            out[i + 1 : i + 5] = (value & 0xFFFFFFFF).to_bytes(4, "little")
        i = out.find(0xE8, i + 5, limit)
