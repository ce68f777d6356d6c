"""HFS+ names: UTF-16 on disk, the order of the catalog's keys, and what a user sees.

HFS+ (and HFSX with key compare type 0xCF) orders names case-insensitively with Apple's
FastUnicodeCompare: each UTF-16 unit is folded through the case-folding table of TN1150, units that
fold to zero are ignored, and the folded sequences compare unit by unit, a shorter one first when it is
a prefix of the other. NUL folds to 0xFFFF, which is what sorts "\\0\\0\\0\\0HFS+ Private Data" last.
HFSX with key compare type 0xBC compares the raw units (binary). Here a name is a str of one character
per UTF-16 unit, folded with ``str.translate``: both orders are then plain str comparison.

The table below is TN1150's, written as ranges: it folds only the scripts that were in Unicode 2.0
and only characters without a canonical decomposition (names are stored decomposed).
"""

from __future__ import annotations

import unicodedata

KEY_COMPARE_FOLDING = 0xCF
KEY_COMPARE_BINARY = 0xBC


def _table() -> dict[int, int]:
    fold: dict[int, int] = {0x0000: 0xFFFF}
    spans = (  # (first, last, step, distance): every step-th unit of first..last folds to unit + distance
        (0x0041, 0x005A, 1, 0x20),  # Latin A-Z
        (0x0391, 0x03A1, 1, 0x20), (0x03A3, 0x03A9, 1, 0x20),  # Greek capitals (0x03A2 is unassigned)
        (0x03E2, 0x03EE, 2, 1),  # Coptic pairs
        (0x0402, 0x0402, 1, 0x50), (0x0404, 0x0406, 1, 0x50), (0x0408, 0x040B, 1, 0x50), (0x040F, 0x040F, 1, 0x50),
        (0x0410, 0x0418, 1, 0x20), (0x041A, 0x042F, 1, 0x20),  # Cyrillic capitals but the decomposable Й
        (0x0460, 0x0474, 2, 1), (0x0478, 0x0480, 2, 1), (0x0490, 0x04BE, 2, 1),
        (0x04C3, 0x04C3, 1, 1), (0x04C7, 0x04C7, 1, 1), (0x04CB, 0x04CB, 1, 1),
        (0x0531, 0x0556, 1, 0x30),  # Armenian
        (0x10A0, 0x10C5, 1, 0x30),  # Georgian
        (0x2160, 0x216F, 1, 0x10),  # Roman numerals
        (0xFF21, 0xFF3A, 1, 0x20),  # full-width Latin
    )
    for first, last, step, distance in spans:
        for unit in range(first, last + 1, step):
            fold[unit] = unit + distance
    pairs = {  # Latin-1 and Latin Extended capitals that have no decomposition, and their small letters
        0x00C6: 0x00E6, 0x00D0: 0x00F0, 0x00D8: 0x00F8, 0x00DE: 0x00FE,
        0x0110: 0x0111, 0x0126: 0x0127, 0x0132: 0x0133, 0x013F: 0x0140, 0x0141: 0x0142, 0x014A: 0x014B,
        0x0152: 0x0153, 0x0166: 0x0167, 0x0181: 0x0253, 0x0182: 0x0183, 0x0184: 0x0185, 0x0186: 0x0254,
        0x0187: 0x0188, 0x0189: 0x0256, 0x018A: 0x0257, 0x018B: 0x018C, 0x018E: 0x01DD, 0x018F: 0x0259,
        0x0190: 0x025B, 0x0191: 0x0192, 0x0193: 0x0260, 0x0194: 0x0263, 0x0196: 0x0269, 0x0197: 0x0268,
        0x0198: 0x0199, 0x019C: 0x026F, 0x019D: 0x0272, 0x019F: 0x0275, 0x01A2: 0x01A3, 0x01A4: 0x01A5,
        0x01A7: 0x01A8, 0x01A9: 0x0283, 0x01AC: 0x01AD, 0x01AE: 0x0288, 0x01B1: 0x028A, 0x01B2: 0x028B,
        0x01B3: 0x01B4, 0x01B5: 0x01B6, 0x01B7: 0x0292, 0x01B8: 0x01B9, 0x01BC: 0x01BD, 0x01C4: 0x01C6,
        0x01C5: 0x01C6, 0x01C7: 0x01C9, 0x01C8: 0x01C9, 0x01CA: 0x01CC, 0x01CB: 0x01CC, 0x01E4: 0x01E5,
        0x01F1: 0x01F3, 0x01F2: 0x01F3,
    }
    fold.update(pairs)
    ignored = [*range(0x200C, 0x2010), *range(0x202A, 0x202F), *range(0x206A, 0x2070), 0xFEFF]
    fold.update(dict.fromkeys(ignored, 0))
    return fold


FOLD = _table()
_TRANSLATE = {unit: chr(folded) if folded else None for unit, folded in FOLD.items()}


def unit_string(raw: bytes) -> str:
    """The UTF-16BE units of a name as a str of one character per unit (a surrogate pair stays two), so
    that str comparison is unit order."""
    raw = raw[: len(raw) & ~1]
    text = raw.decode("utf-16-be", "surrogatepass")
    if len(text) * 2 == len(raw):
        return text
    return "".join(chr(int.from_bytes(raw[i : i + 2], "big")) for i in range(0, len(raw), 2))


def folded(name: str) -> str:
    """A unit string as FastUnicodeCompare sees it: folded, ignorable units dropped."""
    return name.translate(_TRANSLATE)


def sort_name(raw: bytes, case_folding: bool) -> str:
    """The part of a catalog key that orders names, from the name's UTF-16BE bytes."""
    name = unit_string(raw)
    return folded(name) if case_folding else name


def encode(name: str) -> bytes:
    """A name as HFS+ stores it: decomposed, UTF-16BE."""
    return unicodedata.normalize("NFD", name).encode("utf-16-be")


def shown(raw: bytes) -> str:
    """What a user sees: NFC, with the Mac's '/' shown as ':' (the POSIX view) and NUL as U+2400."""
    text = raw.decode("utf-16-be", "replace")  # a lone surrogate cannot become a Linux name
    return unicodedata.normalize("NFC", text).replace("/", ":").replace("\0", "\u2400")
