"""A test LZX encoder for one WIM/WOF chunk (32 KiB window), from the LZX format description.

It writes every block kind (verbatim, aligned-offset, uncompressed), repeated offsets, every pretree
code (deltas and the three run codes) and E8 translation, so that the decoder's paths are all exercised;
``kinds`` says which block kinds follow each other (cycling) and ``block_size`` how long blocks are.
"""

from __future__ import annotations

from collections.abc import Sequence

from msencoders import Token, canonical_codes, find_matches, huffman_lengths

VERBATIM, ALIGNED, UNCOMPRESSED = 1, 2, 3
WINDOW = 32768
E8_FILE_SIZE = 12_000_000
NUM_SLOTS = 30
NUM_MAIN = 256 + 8 * NUM_SLOTS
NUM_LENGTHS = 249


def _slots() -> tuple[list[int], list[int]]:
    footer_bits, bases, base = [], [], 0
    for slot in range(NUM_SLOTS + 1):
        bits = 0 if slot < 4 else (slot >> 1) - 1
        footer_bits.append(bits)
        bases.append(base)
        base += 1 << bits
    return footer_bits, bases


FOOTER_BITS, BASES = _slots()


class LzxBits:
    """16-bit little-endian words, most significant bit first; raw bytes between them."""

    def __init__(self) -> None:
        self.out = bytearray()
        self.acc = self.nacc = 0

    def put(self, value: int, nbits: int) -> None:
        self.acc = self.acc << nbits | value
        self.nacc += nbits
        while self.nacc >= 16:
            self.nacc -= 16
            self.out += (self.acc >> self.nacc).to_bytes(2, "little")
            self.acc &= (1 << self.nacc) - 1

    def align(self) -> None:
        """1 to 16 bits of zeros up to the next word boundary, as an uncompressed block wants."""
        self.put(0, 16 - self.nacc)

    def finish(self) -> bytes:
        if self.nacc:
            self.put(0, 16 - self.nacc)
        return bytes(self.out)


def e8_translate(data: bytes) -> bytes:
    """The compressor's side of E8 translation: relative CALL targets become absolute."""
    out = bytearray(data)
    i = 0
    while i < len(out) - 10:
        if out[i] != 0xE8:
            i += 1
            continue
        rel = int.from_bytes(out[i + 1 : i + 5], "little", signed=True)
        if -i <= rel < E8_FILE_SIZE:
            value = rel + i if rel < E8_FILE_SIZE - i else rel - E8_FILE_SIZE
            out[i + 1 : i + 5] = (value & 0xFFFFFFFF).to_bytes(4, "little")
        i += 5
    return bytes(out)


class _Encoder:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.bits = LzxBits()
        self.recent = [1, 1, 1]
        self.main_lengths = [0] * NUM_MAIN
        self.length_lengths = [0] * NUM_LENGTHS

    def match_symbols(self, length: int, offset: int) -> tuple[int, int | None, int, int]:
        """Main symbol, length symbol (or None), footer value and its bit count; updates R0-R2."""
        r = self.recent
        if offset in r:
            slot = r.index(offset)
            r[0], r[slot] = r[slot], r[0]
            footer = nbits = 0
        else:
            formatted = offset + 2
            slot = max(s for s in range(NUM_SLOTS) if BASES[s] <= formatted)
            footer, nbits = formatted - BASES[slot], FOOTER_BITS[slot]
            r[2], r[1], r[0] = r[1], r[0], offset
        header = min(length - 2, 7)
        return 256 + slot * 8 + header, (length - 9 if header == 7 else None), footer, nbits

    def block(self, kind: int, start: int, stop: int) -> None:
        size = stop - start
        self.bits.put(kind, 3)
        if size == 32768:
            self.bits.put(1, 1)
        else:
            self.bits.put(0, 1)
            self.bits.put(size, 16)
        if kind == UNCOMPRESSED:
            self.bits.align()
            raw = b"".join(v.to_bytes(4, "little") for v in self.recent) + self.data[start:stop]
            self.bits.out += raw + (b"\0" if size & 1 else b"")
            return
        tokens = list(find_matches(self.data, start, stop, min_length=3, max_length=257, max_offset=WINDOW - 3))
        self.compressed_block(kind == ALIGNED, tokens)

    def compressed_block(self, aligned: bool, tokens: list[Token]) -> None:
        items = []  # (main symbol, length symbol, footer, footer bits)
        main_freqs, length_freqs, aligned_freqs = [0] * NUM_MAIN, [0] * NUM_LENGTHS, [0] * 8
        for token in tokens:
            if isinstance(token, int):
                items.append((token, None, 0, 0))
                main_freqs[token] += 1
                continue
            item = self.match_symbols(*token)
            items.append(item)
            main_freqs[item[0]] += 1
            if item[1] is not None:
                length_freqs[item[1]] += 1
            if aligned and item[3] >= 3:
                aligned_freqs[item[2] & 7] += 1
        bits = self.bits
        aligned_lengths = huffman_lengths(aligned_freqs, 7) if aligned else []
        for n in aligned_lengths:
            bits.put(n, 3)
        main_lengths = huffman_lengths(main_freqs, 16)
        length_lengths = huffman_lengths(length_freqs, 16) if any(length_freqs) else [0] * NUM_LENGTHS
        write_lengths(bits, self.main_lengths[:256], main_lengths[:256])
        write_lengths(bits, self.main_lengths[256:], main_lengths[256:])
        write_lengths(bits, self.length_lengths, length_lengths)
        self.main_lengths, self.length_lengths = main_lengths, length_lengths
        main_codes, length_codes = canonical_codes(main_lengths), canonical_codes(length_lengths)
        aligned_codes = canonical_codes(aligned_lengths) if aligned else []
        for main, length_sym, footer, nbits in items:
            bits.put(main_codes[main], main_lengths[main])
            if length_sym is not None:
                bits.put(length_codes[length_sym], length_lengths[length_sym])
            if aligned and nbits >= 3:
                bits.put(footer >> 3, nbits - 3)
                bits.put(aligned_codes[footer & 7], aligned_lengths[footer & 7])
            else:
                bits.put(footer, nbits)


def write_lengths(bits: LzxBits, previous: Sequence[int], lengths: Sequence[int]) -> None:
    """Code lengths as pretree symbols: deltas (0-16), runs of zeros (17, 18), runs of one value (19)."""
    items: list[tuple[int, int, int, int | None]] = []  # symbol, extra bits value, their count, delta symbol
    i = 0
    while i < len(lengths):
        run = 1
        while i + run < len(lengths) and lengths[i + run] == lengths[i]:
            run += 1
        delta = (previous[i] - lengths[i]) % 17
        if lengths[i] == 0 and run >= 20:
            run = min(run, 51)
            items.append((18, run - 20, 5, None))
        elif lengths[i] == 0 and run >= 4:
            run = min(run, 19)
            items.append((17, run - 4, 4, None))
        elif run >= 4:
            run = min(run, 5)
            items.append((19, run - 4, 1, delta))
        else:
            run = 1
            items.append((delta, 0, 0, None))
        i += run
    freqs = [0] * 20
    for sym, _, _, delta in items:
        freqs[sym] += 1
        if delta is not None:
            freqs[delta] += 1
    pre_lengths = huffman_lengths(freqs, 15)
    pre_codes = canonical_codes(pre_lengths)
    for n in pre_lengths:
        bits.put(n, 4)
    for sym, extra, nbits, delta in items:
        bits.put(pre_codes[sym], pre_lengths[sym])
        bits.put(extra, nbits)
        if delta is not None:
            bits.put(pre_codes[delta], pre_lengths[delta])


def lzx_compress(data: bytes, *, kinds: Sequence[int] = (VERBATIM,), block_size: int = WINDOW,
                 e8: bool = True) -> bytes:
    """One chunk (at most 32 KiB) as WIM and WOF store it: E8-translated, blocks of ``kinds`` in turn."""
    if len(data) > WINDOW:
        raise ValueError("an LZX chunk holds at most 32 KiB")
    encoder = _Encoder(e8_translate(data) if e8 else data)
    for n, start in enumerate(range(0, len(data), block_size)):
        encoder.block(kinds[n % len(kinds)], start, min(start + block_size, len(data)))
    return encoder.bits.finish()
