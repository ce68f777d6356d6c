"""LZBITMAP, Apple's compression for decmpfs types 13 and 14 (macOS 11 and later).

Written from the public description of the format (reverse-engineered by Ernesto A. Fernández, the
author of the Linux APFS driver):

* A stream starts with the magic ``ZBM\\x09``, then chunks. Each chunk starts with its length in bytes
  (header included) and its decompressed length, both 24-bit little-endian. A chunk decompresses to at
  most 32 KiB; the last chunk decompresses to 0 bytes and ends the stream.
* A chunk whose length is its decompressed length plus the 6-byte header holds its bytes as they are.
* Any other chunk continues its header with three 24-bit offsets, from the chunk's start, of three
  metadata areas; its literal bytes start right after that 15-byte header. Its last 17 bytes hold a
  table of twelve bitmap entries, 10 bits each, least significant bit first: an 8-bit bitmap and a
  2-bit count of period bytes.
* Decoding writes 8 bytes per bitmap: for each bit, least significant first, a set bit takes the next
  literal, a clear bit copies the byte ``period`` bytes back in the output (which may reach into earlier
  chunks). The period starts at 8 in each chunk. The third metadata area is a string of 4-bit numbers
  (low nibble first), one per step: 3 to 14 name an entry of the table; 0, 1 and 2 take the bitmap from
  the next byte of the second area and say how many bytes of a new period to take from the first area
  (0: keep the period). A step's number may be followed by a repeat count: a nibble 15, then nibbles
  added to 4 until one is not 15.
"""

from __future__ import annotations

from imgfs.codecs import copy_match

MAGIC = b"ZBM\x09"
MAX_CHUNK = 0x8000
HEADER_SIZE, COMPRESSED_HEADER_SIZE = 6, 15
TABLE_SIZE, TABLE_ENTRIES, TABLE_BASE = 17, 12, 3
REPEAT, MAX_PERIOD_BYTES = 0xF, 2


def _runs(bitmap: int) -> tuple[tuple[bool, int], ...]:
    """A bitmap as runs of (literal?, count), least significant bit first."""
    runs: list[tuple[bool, int]] = []
    for bit in range(8):
        literal = bool(bitmap >> bit & 1)
        if runs and runs[-1][0] == literal:
            runs[-1] = (literal, runs[-1][1] + 1)
        else:
            runs.append((literal, 1))
    return tuple(runs)


RUNS = tuple(_runs(b) for b in range(256))


def _u24(data: bytes, pos: int) -> int:
    return data[pos] | data[pos + 1] << 8 | data[pos + 2] << 16


def decode(data: bytes, size: int) -> bytes:
    """The first ``size`` bytes that the LZBITMAP stream ``data`` holds; ValueError when it is damaged or
    would produce more than ``size`` bytes."""
    if data[:4] != MAGIC:
        raise ValueError("not an LZBITMAP stream (no 'ZBM\\x09')")
    out = bytearray()
    pos = 4
    while True:
        if pos + HEADER_SIZE > len(data):
            raise ValueError("the stream ends inside a chunk header")
        length, plain = _u24(data, pos), _u24(data, pos + 3)
        if plain > MAX_CHUNK or length < HEADER_SIZE or pos + length > len(data):
            raise ValueError(f"chunk of {length} bytes decoding to {plain} at byte {pos}")
        if plain == 0:
            return bytes(out)
        if len(out) + plain > size:
            raise ValueError(f"the chunks hold more than {size} bytes")
        chunk = data[pos : pos + length]
        if length == plain + HEADER_SIZE:
            out += chunk[HEADER_SIZE:]
        else:
            _chunk(chunk, plain, out)
        pos += length


def _table(chunk: bytes) -> list[tuple[int, int]]:
    bits = int.from_bytes(chunk[-TABLE_SIZE:], "little")
    table = []
    for i in range(TABLE_ENTRIES):
        entry = bits >> (10 * i) & 0x3FF
        period_bytes = entry >> 8
        if period_bytes > MAX_PERIOD_BYTES:
            raise ValueError(f"bitmap table entry {i} takes {period_bytes} period bytes")
        table.append((entry & 0xFF, period_bytes))
    return table


class _Cursor:
    """Positions in a compressed chunk: literals, the three metadata areas (the third in nibbles)."""

    def __init__(self, chunk: bytes) -> None:
        if len(chunk) < COMPRESSED_HEADER_SIZE + TABLE_SIZE:
            raise ValueError(f"compressed chunk of {len(chunk)} bytes")
        self.chunk = chunk
        self.end = len(chunk)
        self.literal = COMPRESSED_HEADER_SIZE
        self.periods, self.bitmaps, nibbles = (_u24(chunk, 6 + 3 * i) for i in range(3))
        if max(self.periods, self.bitmaps, nibbles) >= self.end:
            raise ValueError("a metadata area starts past its chunk")
        self.nibble = 2 * nibbles

    def next_nibble(self) -> int:
        byte = self.nibble >> 1
        if byte >= self.end:
            raise ValueError("the chunk ends inside its bitmap numbers")
        value = self.chunk[byte] >> (4 * (self.nibble & 1)) & 0xF
        self.nibble += 1
        return value

    def repeat_count(self) -> int:
        if self.nibble >> 1 >= self.end or self.chunk[self.nibble >> 1] >> (4 * (self.nibble & 1)) & 0xF != REPEAT:
            return 1
        self.nibble += 1
        total = 4
        while True:
            value = self.next_nibble()
            total += value
            if value != REPEAT:
                return total

    def literals(self, count: int) -> bytes:
        start = self.literal
        if start + count > self.end:
            raise ValueError("the chunk ends inside its literals")
        self.literal = start + count
        return self.chunk[start : start + count]

    def next_period(self, count: int) -> int:
        start = self.periods
        if start + count > self.end:
            raise ValueError("the chunk ends inside its periods")
        self.periods = start + count
        return int.from_bytes(self.chunk[start : start + count], "little")

    def next_bitmap(self) -> int:
        if self.bitmaps >= self.end:
            raise ValueError("the chunk ends inside its bitmaps")
        self.bitmaps += 1
        return self.chunk[self.bitmaps - 1]


def _chunk(chunk: bytes, plain: int, out: bytearray) -> None:
    cursor = _Cursor(chunk)
    table = _table(chunk)
    goal = len(out) + plain
    period = 8
    while len(out) < goal:
        number = cursor.next_nibble()
        if number == REPEAT:
            raise ValueError("a repeat count where a bitmap number belongs")
        for _ in range(cursor.repeat_count()):
            if number >= TABLE_BASE:
                bitmap, period_bytes = table[number - TABLE_BASE]
            else:
                bitmap, period_bytes = cursor.next_bitmap(), number
            if period_bytes:
                period = cursor.next_period(period_bytes)
            if period == 0:
                raise ValueError("a period of 0")
            _apply(bitmap, period, cursor, out, goal)
            if len(out) >= goal:
                break


def _apply(bitmap: int, period: int, cursor: _Cursor, out: bytearray, goal: int) -> None:
    """Eight bytes (fewer at the end of the chunk) of ``bitmap``: literals and copies ``period`` back."""
    for literal, count in RUNS[bitmap]:
        count = min(count, goal - len(out))
        if count <= 0:
            return
        if literal:
            out += cursor.literals(count)
            continue
        start = len(out) - period
        if start < 0:
            raise ValueError(f"a copy from {period} bytes back, before the start")
        copy_match(out, start, count)
