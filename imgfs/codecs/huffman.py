"""Canonical Huffman decoding tables, as XPRESS Huffman and LZX build them from code lengths.

Codes are canonical: shorter codes first, and within one length in symbol order. A table is indexed by
the next ``table_bits`` bits of the stream (``table_bits`` is the longest code length, at most 16), each
entry holding ``symbol << 5 | length``, so that one list look-up decodes one symbol. Entries no code
reaches (an incomplete code, when the format allows one) hold ``UNUSED``: a stream that reaches them is
corrupt.
"""

from __future__ import annotations

from collections.abc import Sequence

from imgfs.codecs import DecodeError

UNUSED = -1


def decode_table(lengths: Sequence[int], max_length: int, what: str,
                 complete: bool = True) -> tuple[list[int], int]:
    """The look-up table and its index width in bits for a code with these lengths (0 = symbol unused).

    ``DecodeError`` for a length above ``max_length``, an over-subscribed code (more codes than bit
    patterns), and, when ``complete``, a code that leaves bit patterns unused. A code with no symbols at
    all gives a one-entry table of ``UNUSED``.
    """
    counts = [lengths.count(n) for n in range(max_length + 1)]
    if sum(counts) != len(lengths):
        raise DecodeError(f"{what}: a code length above {max_length} bits")
    table_bits = max((n for n in range(1, max_length + 1) if counts[n]), default=0)
    if table_bits == 0:
        if complete:
            raise DecodeError(f"{what}: no symbol has a code")
        return [UNUSED], 0
    used = sum(counts[n] << (table_bits - n) for n in range(1, table_bits + 1))
    if used > 1 << table_bits:
        raise DecodeError(f"{what}: the code lengths are over-subscribed")
    if complete and used < 1 << table_bits:
        raise DecodeError(f"{what}: the code lengths leave codes unused")
    table: list[int] = []
    extend = table.extend
    for symbol in sorted(range(len(lengths)), key=lengths.__getitem__)[counts[0]:]:  # stable: canonical
        length = lengths[symbol]
        extend([symbol << 5 | length] * (1 << (table_bits - length)))
    if used < 1 << table_bits:
        table.extend([UNUSED] * ((1 << table_bits) - used))
    return table, table_bits
