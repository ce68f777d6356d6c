"""Test encoders for Microsoft's codecs, written from [MS-XCA]: XPRESS Huffman, plain XPRESS and LZNT1.

They aim at correct streams that exercise every path of the decoders, not at ratio or speed: greedy
LZ77 matching over a small hash chain, and Huffman codes limited in length by flattening frequencies.
``lzxencoder.py`` uses the same pieces for LZX.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator, Sequence
from typing import Union

Token = Union[int, tuple[int, int]]  # a literal byte, or (length, offset)


def find_matches(data: bytes, start: int, stop: int, *, min_length: int, max_length: int, max_offset: int,
                 limit_offset: Sequence[int] | None = None, chain: int = 16) -> Iterator[Token]:
    """Greedy LZ77 tokens for ``data[start:stop]``, matches reaching back at most ``max_offset`` (also
    into ``data[:start]``) and never past ``stop``. ``limit_offset[pos]``, when given, caps the offset
    and length bits at each position as ``(max_offset, max_length)`` pairs packed in one list (LZNT1)."""
    heads: dict[bytes, list[int]] = {}
    for pos in range(max(0, start - max_offset), start):
        heads.setdefault(data[pos : pos + 3], []).append(pos)
    pos = start
    while pos < stop:
        best_length, best_offset = 0, 0
        top_offset, top_length = max_offset, max_length
        if limit_offset is not None:
            top_offset, top_length = limit_offset[pos - start]
        top_length = min(top_length, stop - pos)
        key = data[pos : pos + 3]
        candidates = heads.get(key, []) if top_length >= min_length else []
        for cand in reversed(candidates[-chain:]):
            offset = pos - cand
            if offset > top_offset:
                break
            length = 0
            while length < top_length and data[cand + length] == data[pos + length]:
                length += 1
            if length > best_length:
                best_length, best_offset = length, offset
        step = best_length if best_length >= min_length else 1
        for p in range(pos, pos + step):
            heads.setdefault(data[p : p + 3], []).append(p)
        if best_length >= min_length:
            yield (best_length, best_offset)
        else:
            yield data[pos]
        pos += step


def huffman_lengths(freqs: Sequence[int], max_length: int) -> list[int]:
    """Code lengths of a complete prefix code for the used symbols (two at least), none above
    ``max_length``: Huffman's, on frequencies flattened until the code fits."""
    freqs = list(freqs)
    used = [i for i, f in enumerate(freqs) if f]
    if len(used) < 2:
        extra = next(i for i in range(len(freqs)) if i not in used)
        freqs[extra] = 1
        if not used:
            freqs[next(i for i in range(len(freqs)) if i != extra)] = 1
    while True:
        lengths = _huffman(freqs)
        if max(lengths) <= max_length:
            return lengths
        freqs = [max(1, f >> 1) if f else 0 for f in freqs]


def _huffman(freqs: Sequence[int]) -> list[int]:
    heap = [(f, i, (i,)) for i, f in enumerate(freqs) if f]
    heapq.heapify(heap)
    lengths = [0] * len(freqs)
    tie = len(freqs)
    while len(heap) > 1:
        f1, _, a = heapq.heappop(heap)
        f2, _, b = heapq.heappop(heap)
        for sym in a + b:
            lengths[sym] += 1
        heapq.heappush(heap, (f1 + f2, tie, a + b))
        tie += 1
    return lengths


def canonical_codes(lengths: Sequence[int]) -> list[int]:
    """The canonical code of each symbol: shorter first, in symbol order within a length."""
    codes = [0] * len(lengths)
    code = 0
    for length in range(1, max(lengths) + 1):
        for sym, n in enumerate(lengths):
            if n == length:
                codes[sym] = code
                code += 1
        code <<= 1
    return codes


class XpressBits:
    """The XPRESS Huffman bit stream: 16-bit words, most significant bit first, with whole bytes put
    where the decoder, which keeps at least 16 bits loaded, will read them: after the words it holds."""

    def __init__(self, out: bytearray) -> None:
        self.out = out
        self.word_at: list[int] = []  # byte position of each word, reserved in stream order
        self.acc = self.nacc = self.total = self.done = 0

    def _reserve(self, count: int) -> None:
        while len(self.word_at) < count:
            self.word_at.append(len(self.out))
            self.out += b"\0\0"

    def _loaded(self) -> int:
        return max(2, 1 + -(-self.total // 16))

    def put(self, value: int, nbits: int) -> None:
        self.acc = self.acc << nbits | value
        self.nacc += nbits
        self.total += nbits
        while self.nacc >= 16:
            self.nacc -= 16
            word = self.acc >> self.nacc
            self.acc &= (1 << self.nacc) - 1
            self._reserve(self.done + 1)
            self.out[self.word_at[self.done] : self.word_at[self.done] + 2] = word.to_bytes(2, "little")
            self.done += 1

    def raw(self, data: bytes) -> None:
        self._reserve(self._loaded())
        self.out += data

    def finish(self) -> None:
        if self.nacc:
            self.put(0, 16 - self.nacc)
        self._reserve(self._loaded())


def xpress_huffman_compress(data: bytes, *, chain: int = 16) -> bytes:
    """LZ77+Huffman: one block (a 256-byte length table, then the bit stream) per 64 KiB of input."""
    out = bytearray()
    for block_start in range(0, len(data), 65536):
        block_stop = min(block_start + 65536, len(data))
        tokens = list(find_matches(data, block_start, block_stop, min_length=3, max_length=block_stop,
                                   max_offset=65535, chain=chain))
        _xpress_block(out, tokens, last=block_stop == len(data))
    return bytes(out)


def _xpress_symbol(token: Token) -> int:
    if isinstance(token, int):
        return token
    length, offset = token
    return 256 + ((offset.bit_length() - 1) << 4 | min(length - 3, 15))


def _xpress_block(out: bytearray, tokens: list[Token], last: bool) -> None:
    freqs = [0] * 512
    for token in tokens:
        freqs[_xpress_symbol(token)] += 1
    if last:
        freqs[256] += 1  # the end-of-stream symbol Windows writes
    lengths = huffman_lengths(freqs, 15)
    codes = canonical_codes(lengths)
    out += bytes(lengths[2 * i] | lengths[2 * i + 1] << 4 for i in range(256))
    bits = XpressBits(out)
    for token in tokens:
        sym = _xpress_symbol(token)
        bits.put(codes[sym], lengths[sym])
        if isinstance(token, int):
            continue
        length, offset = token
        if length - 3 >= 15:
            if length - 18 < 255:
                bits.raw(bytes([length - 18]))
            elif length - 3 < 65536:
                bits.raw(b"\xff" + (length - 3).to_bytes(2, "little"))
            else:
                bits.raw(b"\xff\0\0" + (length - 3).to_bytes(4, "little"))
        obits = offset.bit_length() - 1
        bits.put(offset - (1 << obits), obits)
    if last:
        bits.put(codes[256], lengths[256])
    bits.finish()


def xpress_plain_compress(data: bytes) -> bytes:
    """Plain LZ77: 32-bit flag words ahead of their 32 items, matches with shared half-byte lengths."""
    out = bytearray()
    flag_at, flags, count = 0, 0, 32
    half_at = -1
    for token in find_matches(data, 0, len(data), min_length=3, max_length=len(data), max_offset=8192):
        if count == 32:
            if flag_at or out:
                out[flag_at : flag_at + 4] = flags.to_bytes(4, "little")
            flag_at, flags, count = len(out), 0, 0
            out += bytes(4)
        count += 1
        flags <<= 1
        if isinstance(token, int):
            out.append(token)
            continue
        flags |= 1
        length, offset = token
        out += ((offset - 1) << 3 | min(length - 3, 7)).to_bytes(2, "little")
        if length - 3 < 7:
            continue
        rest = length - 10
        if half_at < 0:
            half_at = len(out)
            out.append(min(rest, 15))
        else:
            out[half_at] |= min(rest, 15) << 4
            half_at = -1
        if rest >= 15:
            if rest - 15 < 255:
                out.append(rest - 15)
            elif length - 3 < 65536:
                out += b"\xff" + (length - 3).to_bytes(2, "little")
            else:
                out += b"\xff\0\0" + (length - 3).to_bytes(4, "little")
    flags = (flags << (32 - count)) | ((1 << (32 - count)) - 1)  # the rest "matches": the end, per MS-XCA
    out[flag_at : flag_at + 4] = flags.to_bytes(4, "little")
    return bytes(out)


def _lznt1_limits() -> list[tuple[int, int]]:
    limits = []
    for pos in range(4096):
        distance_bits = max(4, (pos - 1).bit_length())
        limits.append((1 << distance_bits, (1 << (16 - distance_bits)) + 2))
    return limits


_LZNT1_LIMITS = _lznt1_limits()


def lznt1_compress(data: bytes, *, end_marker: bool = True) -> bytes:
    """LZNT1: a chunk per 4 KiB, compressed when that makes it smaller, else stored (signature 3). A
    short last chunk is stored compressed even when that makes it larger, as ntfs-3g does (its reader
    takes only full 4 KiB chunks as stored), unless it would not fit in a chunk."""
    out = bytearray()
    for start in range(0, len(data), 4096):
        chunk = data[start : start + 4096]
        body = _lznt1_chunk(chunk)
        if len(body) < len(chunk) or len(chunk) < 4096 and len(body) <= 4096:
            out += (0xB000 | (len(body) - 1)).to_bytes(2, "little") + body
        else:
            out += (0x3000 | (len(chunk) - 1)).to_bytes(2, "little") + chunk
    if end_marker:
        out += b"\0\0"
    return bytes(out)


def _lznt1_chunk(chunk: bytes) -> bytes:
    body = bytearray()
    items: list[bytes] = []
    flags = 0
    pos = 0
    for token in find_matches(chunk, 0, len(chunk), min_length=3, max_length=4098, max_offset=4096,
                              limit_offset=_LZNT1_LIMITS):
        if isinstance(token, int):
            items.append(bytes([token]))
            pos += 1
        else:
            length, offset = token
            length_bits = 16 - max(4, (pos - 1).bit_length())
            flags |= 1 << len(items)
            items.append(((offset - 1) << length_bits | (length - 3)).to_bytes(2, "little"))
            pos += length
        if len(items) == 8:
            body += bytes([flags]) + b"".join(items)
            items, flags = [], 0
    if items:
        body += bytes([flags]) + b"".join(items)
    return bytes(body)
