"""A small LZBITMAP encoder for the tests, from the format's public description (see
``imgfs/codecs/lzbitmap.py``): no tool on Linux writes it, and decmpfs types 13 and 14 need test data.

It is meant to exercise every path of a decoder, not to compress well: stored and compressed chunks,
copies across chunk boundaries, periods of 1 and 2 bytes, short periods (overlapping copies), bitmaps
from the chunk's table and from the second metadata area, and repeat counts of several nibbles.
"""

from __future__ import annotations

from collections import Counter

MAGIC = b"ZBM\x09"
CHUNK = 0x8000


def _u24(value: int) -> bytes:
    return value.to_bytes(3, "little")


def compress(data: bytes, stored_every: int = 0) -> bytes:
    """``data`` as an LZBITMAP stream; with ``stored_every`` n, every n-th chunk is stored as it is."""
    out = bytearray(MAGIC)
    last: dict[bytes, int] = {}
    for index, start in enumerate(range(0, len(data), CHUNK)):
        plain = data[start : start + CHUNK]
        packed = _compressed_chunk(data, start, len(plain), last)
        if len(packed) >= len(plain) + 6 or (stored_every and index % stored_every == stored_every - 1):
            packed = _u24(len(plain) + 6) + _u24(len(plain)) + plain
        out += packed
    return bytes(out + _u24(6) + _u24(0))


def _steps(data: bytes, start: int, length: int, last: dict[bytes, int]) -> list[tuple[int, int, int]]:
    """(bitmap, period bytes, period) for each 8-byte group of the chunk; 0 period bytes keeps it."""
    steps = []
    period = 8
    end = start + length
    for pos in range(start, end, 8):
        candidates = {period}
        key = data[pos : pos + 4]
        seen = last.get(key)
        if seen is not None and 0 < pos - seen <= 0xFFFF:
            candidates.add(pos - seen)
        for near in (1, 2, 3):  # short periods: runs of one byte or short patterns
            candidates.add(near)
        best = max(candidates, key=lambda p: (_matches(data, pos, min(8, end - pos), p), p == period))
        bitmap = _bitmap(data, pos, min(8, end - pos), best)
        if best != period:
            steps.append((bitmap, 1 if best < 256 else 2, best))
            period = best
        else:
            steps.append((bitmap, 0, period))
        for i in range(pos, min(pos + 8, end)):
            last[data[i : i + 4]] = i
    return steps


def _matches(data: bytes, pos: int, count: int, period: int) -> int:
    return sum(1 for i in range(count) if pos + i - period >= 0 and data[pos + i] == data[pos + i - period])


def _bitmap(data: bytes, pos: int, count: int, period: int) -> int:
    bitmap = 0
    for i in range(count):
        if pos + i - period < 0 or data[pos + i] != data[pos + i - period]:
            bitmap |= 1 << i
    return bitmap


def _compressed_chunk(data: bytes, start: int, length: int, last: dict[bytes, int]) -> bytes:
    steps = _steps(data, start, length, last)
    table = [key for key, _ in Counter((b, n) for b, n, _ in steps).most_common(12)]
    table += [(0xFF, 0)] * (12 - len(table))
    literals, periods, bitmaps, numbers = bytearray(), bytearray(), bytearray(), []
    for step, (bitmap, period_bytes, period) in enumerate(steps):
        pos = start + 8 * step
        for i in range(min(8, start + length - pos)):
            if bitmap >> i & 1:
                literals.append(data[pos + i])
        if period_bytes:
            periods += period.to_bytes(period_bytes, "little")
        if (bitmap, period_bytes) in table:
            numbers.append(3 + table.index((bitmap, period_bytes)))
        else:
            numbers.append(period_bytes)
            bitmaps.append(bitmap)
    nibbles = _with_repeats(numbers)
    if len(nibbles) % 2:
        nibbles.append(0)
    meta3 = bytes(nibbles[i] | nibbles[i + 1] << 4 for i in range(0, len(nibbles), 2))
    entries = 0
    for i, (bitmap, period_bytes) in enumerate(table):
        entries |= (bitmap | period_bytes << 8) << (10 * i)
    off1 = 15 + len(literals)
    off2 = off1 + len(periods)
    off3 = off2 + len(bitmaps)
    body = bytes(literals + periods + bitmaps + meta3) + entries.to_bytes(17, "little")
    total = 15 + len(body)
    return _u24(total) + _u24(length) + _u24(off1) + _u24(off2) + _u24(off3) + body


def _with_repeats(numbers: list[int]) -> list[int]:
    """Runs of four or more equal numbers as the number, 15, and nibbles adding up to the rest."""
    nibbles: list[int] = []
    i = 0
    while i < len(numbers):
        j = i
        while j < len(numbers) and numbers[j] == numbers[i]:
            j += 1
        run = j - i
        if run >= 4:
            nibbles += [numbers[i], 15]
            rest = run - 4
            while rest >= 15:
                nibbles.append(15)
                rest -= 15
            nibbles.append(rest)
        else:
            nibbles += [numbers[i]] * run
        i = j
    return nibbles
