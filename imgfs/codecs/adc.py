"""Apple Data Compression (ADC), the LZ77 codec of UDCO images (the test writer has an encoder).

A stream of codes, each starting with one byte ``b``:

* ``b & 0x80``: a literal run of ``(b & 0x7F) + 1`` bytes (1..128), which follow;
* ``b & 0x40``: a long match, ``(b & 0x3F) + 4`` bytes (4..67) copied from ``distance + 1`` bytes back,
  the distance being the next two bytes (big-endian, 0..65535);
* otherwise a short match, ``((b >> 2) & 0x0F) + 3`` bytes (3..18), distance ``((b & 3) << 8) | next``
  (0..1023).

Matches may overlap their own output (a distance shorter than the length repeats a pattern).
"""

from __future__ import annotations

from imgfs.codecs import copy_match


def decode(src: bytes, size: int) -> bytes:
    """``src`` decoded to exactly ``size`` bytes; ``ValueError`` when it ends early or would make more."""
    out = bytearray()
    i, n, pos = 0, len(src), 0
    while pos < size:
        if i >= n:
            raise ValueError(f"data ends after {pos} of {size} bytes")
        b = src[i]
        if b >= 0x80:  # literal run
            end = i + b - 0x7F + 1
            if end > n:
                raise ValueError(f"a literal run at input byte {i} runs past the end of the data")
            out += src[i + 1 : end]
            pos += b - 0x7F
            i = end
        else:
            code = 3 if b >= 0x40 else 2
            if i + code > n:
                raise ValueError(f"a match code at input byte {i} is cut short")
            if code == 3:
                length, distance = b - 0x3C, ((src[i + 1] << 8) | src[i + 2]) + 1
            else:
                length, distance = (b >> 2) + 3, (((b & 3) << 8) | src[i + 1]) + 1
            i += code
            if distance > pos:
                raise ValueError(f"a match reaches {distance} bytes back from output byte {pos}")
            copy_match(out, pos - distance, length)
            pos += length
        if pos > size:
            raise ValueError(f"data decodes to more than the stated {size} bytes")
    return bytes(out)
