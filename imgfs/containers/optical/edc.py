"""EDC and ECC of raw CD-ROM sectors (ECMA-130 annex A and 14.5/14.6), for ``-o verify``.

A Mode 1 sector is sync (12), header (4: BCD minute, second, frame, mode), 2048 user bytes, EDC (4),
8 zero bytes, P parity (172) and Q parity (104). The EDC is a 32-bit CRC, polynomial
(x^16 + x^15 + x^2 + 1)(x^16 + x^2 + x + 1), processed LSB first, over bytes 0-2063, stored
little-endian. P and Q are Reed-Solomon product codes over GF(2^8) (primitive polynomial
x^8 + x^4 + x^3 + x^2 + 1) computed on bytes 12-2075 (Q also covers P): P on 86 columns of 24 bytes,
Q on 52 diagonals of 43 bytes. An XA Mode 2 Form 1 sector has the same parity with the header taken
as zeros, and its EDC over bytes 16-2071; Form 2 has only an EDC (over 16-2347; zero means none).

The parity is computed for all columns at once: each step XORs whole rows (as integers) and maps
them through GF(2^8) tables with ``bytes.translate``.
"""

from __future__ import annotations

import operator

_EDC_POLY = 0xD8018001  # the EDC polynomial, bit-reversed


def _edc_table() -> list[int]:
    table = []
    for i in range(256):
        value = i
        for _ in range(8):
            value = (value >> 1) ^ (_EDC_POLY if value & 1 else 0)
        table.append(value)
    return table


def _gf_tables() -> tuple[bytes, bytes]:
    forward, backward = bytearray(256), bytearray(256)
    for i in range(256):
        doubled = ((i << 1) ^ (0x11D if i & 0x80 else 0)) & 0xFF
        forward[i] = doubled
        backward[i ^ doubled] = i
    return bytes(forward), bytes(backward)


_EDC = _edc_table()
_F, _B = _gf_tables()


def edc(data: bytes) -> int:
    value = 0
    table = _EDC
    for byte in data:
        value = table[(value ^ byte) & 0xFF] ^ (value >> 8)
    return value


def _xor(a: bytes, b: bytes) -> bytes:
    n = len(a)
    return (int.from_bytes(a, "little") ^ int.from_bytes(b, "little")).to_bytes(n, "little")


def _gathers(majors: int, minors: int, major_mult: int, minor_inc: int) -> list[operator.itemgetter]:
    """For each step ``minor``, the byte positions that each of the ``majors`` code words takes."""
    size = majors * minors
    rows: list[list[int]] = [[] for _ in range(minors)]
    for major in range(majors):
        index = (major >> 1) * major_mult + (major & 1)
        for minor in range(minors):
            rows[minor].append(index)
            index += minor_inc
            if index >= size:
                index -= size
    return [operator.itemgetter(*row) for row in rows]


_P = _gathers(86, 24, 2, 86)
_Q = _gathers(52, 43, 86, 88)


def _parity(area: bytes, gathers: list[operator.itemgetter], majors: int) -> bytes:
    a = b = bytes(majors)
    for gather in gathers:
        row = bytes(gather(area))
        b = _xor(b, row)
        a = _xor(a, row).translate(_F)
    a = _xor(a.translate(_F), b).translate(_B)
    return a + _xor(a, b)


def ecc(area: bytes) -> bytes:
    """P and Q parity (276 bytes) of the 2064 bytes from the header to the end of the EDC field."""
    p = _parity(area, _P, 86)
    q = _parity(area + p, _Q, 52)
    return p + q


def check_sector(sector: bytes) -> str:
    """What is wrong with a raw 2352-byte data sector ("" when nothing, or when it has no check)."""
    if len(sector) < 2352:
        return "length"
    mode = sector[15]
    if mode == 1:
        if edc(sector[:2064]) != int.from_bytes(sector[2064:2068], "little"):
            return "EDC"
        if ecc(sector[12:2076]) != sector[2076:2352]:
            return "ECC"
        return ""
    if mode == 2 and sector[16:20] == sector[20:24]:
        if sector[18] & 0x20:  # Form 2
            stored = int.from_bytes(sector[2348:2352], "little")
            return "EDC" if stored and edc(sector[16:2348]) != stored else ""
        if edc(sector[16:2072]) != int.from_bytes(sector[2072:2076], "little"):
            return "EDC"
        if ecc(bytes(4) + sector[16:2076]) != sector[2076:2352]:
            return "ECC"
    return ""
