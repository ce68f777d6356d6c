"""LZNT1, the LZ77 codec of NTFS compression units, decoded in pure Python from [MS-XCA] section 2.5.

The data is a run of chunks, each coding up to 4096 output bytes and starting with a 16-bit little-endian
header: bits 0-11 are the chunk's size less 3 counting the header (so ``(h & 0xFFF) + 1`` bytes follow),
bits 12-14 a signature (3), bit 15 set when the chunk is compressed. A header of 0 (or the end of the
data) ends the stream. An uncompressed chunk is its bytes as they are. A compressed chunk is groups of a
flag byte and eight items (bit 0 first): a literal byte for 0, for 1 a 16-bit little-endian pair
``(distance - 1) << k | (length - 3)``, where the ``16 - k`` distance bits grow with the position in the
chunk (4 bits for the first 16 bytes, 12 from byte 2049 on), so that no distance reaches before the
chunk's start.

A chunk that makes fewer than 4096 bytes is followed by zeros up to the next chunk, and the output ends
in zeros when the data ends before the stated size (an NTFS compression unit holding the file's end, or
a unit cut short), as ntfs-3g reads them; once the stated size is made, what follows is ignored (the
slack of the unit's last cluster). A stored chunk may be shorter than 4096 bytes (ntfs-3g writes only
full ones). A chunk that would decode past the stated size, a pair reaching before its chunk's start, or
a chunk running past the data is a ``DecodeError``.

For NTFS, state the whole compression unit (16 clusters) as the size and cut the file's part out of it:
Windows may compress the last unit up to its last whole cluster, past the file's end.
"""

from __future__ import annotations

from imgfs.codecs import DecodeError, copy_match

CHUNK_SIZE = 4096


def _length_bits() -> list[int]:
    """The number of length bits in a pair found ``pos`` bytes into its chunk, for pos in 0..4096."""
    bits = []
    for pos in range(CHUNK_SIZE + 1):
        bits.append(16 - max(4, (pos - 1).bit_length()))
    return bits


_LENGTH_BITS = _length_bits()


def decompress(data: bytes, out_size: int) -> bytes:
    """``data`` decoded to exactly ``out_size`` bytes (zeros after the last chunk), or ``DecodeError``."""
    if out_size < 0:
        raise DecodeError(f"a negative output size ({out_size})")
    n = len(data)
    out = bytearray()
    ip = 0
    chunk_start = 0  # where the current chunk's output begins: a multiple of 4096
    while ip + 2 <= n:
        header = data[ip] | data[ip + 1] << 8
        if header == 0:
            break
        if chunk_start >= out_size:  # all made: what follows is slack (ntfs-3g stops here too)
            break
        if len(out) < chunk_start:  # the previous chunk was short: zeros up to this one
            out += bytes(chunk_start - len(out))
        end = ip + 3 + (header & 0xFFF)
        if end > n:
            raise DecodeError(f"the chunk at input byte {ip} ({end - ip} bytes) runs past the end of the data")
        if header & 0x8000:
            _chunk(data, ip + 2, end, out, chunk_start, min(chunk_start + CHUNK_SIZE, out_size))
        else:
            if chunk_start + end - ip - 2 > out_size:
                raise DecodeError(f"the chunk at input byte {ip} decodes past the stated {out_size} bytes")
            out += data[ip + 2 : end]
        ip = end
        chunk_start += CHUNK_SIZE
    if len(out) < out_size:
        out += bytes(out_size - len(out))
    return bytes(out)


def _chunk(data: bytes, ip: int, end: int, out: bytearray, base: int, limit: int) -> None:
    """Decode the compressed chunk ``data[ip:end]`` onto ``out`` (its output starting at ``base``), at
    most up to output byte ``limit``."""
    length_bits = _LENGTH_BITS
    while ip < end:
        flags = data[ip]
        ip += 1
        if flags == 0:  # eight literals: the common case in poorly compressible data
            count = min(8, end - ip)
            if len(out) + count > limit:
                raise _past(ip, limit)
            out += data[ip : ip + count]
            ip += count
            continue
        for _ in range(8):
            if ip >= end:
                break
            if not flags & 1:
                if len(out) >= limit:
                    raise _past(ip, limit)
                out.append(data[ip])
                ip += 1
            else:
                if ip + 2 > end:
                    raise DecodeError(f"a pair at input byte {ip} is cut short by its chunk's end")
                pair = data[ip] | data[ip + 1] << 8
                ip += 2
                opos = len(out)
                bits = length_bits[opos - base]
                offset = (pair >> bits) + 1
                if offset > opos - base:
                    raise DecodeError(f"a pair at input byte {ip - 2} reaches {offset} bytes back, before "
                                      f"its chunk's start")
                length = (pair & ((1 << bits) - 1)) + 3
                stop = opos + length
                if stop > limit:
                    raise _past(ip - 2, limit)
                copy_match(out, opos - offset, length)
            flags >>= 1


def _past(ip: int, limit: int) -> DecodeError:
    return DecodeError(f"the chunk decodes past byte {limit} at input byte {ip} (its chunk's or the stated end)")
