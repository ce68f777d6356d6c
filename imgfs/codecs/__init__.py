"""Decompressors shared by several formats, each a pure function from compressed bytes to at most a stated
size: ADC (DMG and NDIF), LZVN (decmpfs and DMG), and Microsoft's XPRESS (plain and Huffman), LZX and
LZNT1 (NTFS compression units and WOF-compressed files, ``wof.py``)."""

from __future__ import annotations


def copy_match(out: bytearray, start: int, length: int) -> None:
    """Append an LZ77 match: ``length`` bytes copied from ``out[start:]``. A match longer than its distance
    overlaps what it writes, so the last ``len(out) - start`` bytes repeat. The caller has checked ``start``."""
    distance = len(out) - start
    if distance >= length:
        out += out[start : start + length]
    else:
        out += (out[start:] * (length // distance + 1))[:length]


class DecodeError(ValueError):
    """Compressed bytes that do not decode to their stated size: truncated, malformed, or reaching before
    the start of the output. The message says what and where in the compressed data; the caller (which
    knows the file and the image offset) turns it into ``CorruptImage``."""
