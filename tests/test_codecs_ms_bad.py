"""Bad input for Microsoft's codecs (imgfs/codecs: XPRESS, LZX, LZNT1): truncated streams, references
before the start, invalid or over-subscribed Huffman codes, output past the stated size, and random
damage. Each is a DecodeError, quickly; a stream that decodes at all decodes to exactly the stated size."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from lzxencoder import ALIGNED, UNCOMPRESSED, VERBATIM, LzxBits, _Encoder, lzx_compress, write_lengths
from msencoders import _xpress_block, lznt1_compress, xpress_huffman_compress, xpress_plain_compress

from imgfs.codecs import DecodeError, lznt1, lzx, xpress

Decoder = Callable[[bytes, int], bytes]


def sample() -> bytes:
    """Ends in a long run, so that one byte less than the stated size cuts a match."""
    return Path("/usr/bin/ls").read_bytes()[4096:20000] + bytes(range(256)) * 8 + bytes(8000)


CODECS: dict[str, tuple[Callable[[bytes], bytes], Decoder]] = {
    "xpress-huffman": (xpress_huffman_compress, xpress.decompress_huffman),
    "xpress-plain": (xpress_plain_compress, xpress.decompress_plain),
    "lznt1": (lznt1_compress, lznt1.decompress),
    "lzx": (lambda d: lzx_compress(d, kinds=(ALIGNED, UNCOMPRESSED, VERBATIM), block_size=7000), lzx.decompress),
}


def decodes_exactly_or_fails(decode: Decoder, stream: bytes, size: int, want: bytes | None = None) -> bool:
    """True when it raised DecodeError; otherwise the output must be ``size`` bytes (``want`` if given)."""
    started = time.perf_counter()
    try:
        out = decode(stream, size)
    except DecodeError:
        return True
    finally:
        assert time.perf_counter() - started < 2, "a bad stream took too long"
    assert len(out) == size and (want is None or out == want)
    return False


@pytest.mark.parametrize("codec", sorted(CODECS))
def test_truncated(codec: str) -> None:
    """Every cut either fails or, when only padding was cut, decodes to the very same bytes."""
    compress, decode = CODECS[codec]
    data = sample()
    stream = compress(data)
    cuts = sorted(set(range(0, len(stream), 97)) | {1, 2, 255, 256, 257, len(stream) - 3})
    failed = [cut for cut in cuts if decodes_exactly_or_fails(decode, stream[:cut], len(data),
                                                                None if codec == "lznt1" else data)]
    # LZNT1 fills the rest of a unit cut between chunks with zeros (as ntfs-3g reads it): only cuts inside
    # a chunk fail there; elsewhere a stream cut anywhere but in its last padding bytes fails
    assert len(failed) >= len(cuts) - (len(data) // 4096 + 2 if codec == "lznt1" else 1)


@pytest.mark.parametrize("codec", sorted(CODECS))
def test_stated_size_too_small_or_too_large(codec: str) -> None:
    compress, decode = CODECS[codec]
    data = sample()
    stream = compress(data)
    assert decode(stream, len(data)) == data
    with pytest.raises(DecodeError, match="past"):
        decode(stream, len(data) - 1)
    if codec == "lznt1":  # the rest of a compression unit past the data is zeros
        assert decode(stream, len(data) + 100) == data + bytes(100)
    else:
        with pytest.raises(DecodeError):
            decode(stream, len(data) + 100)
    with pytest.raises(DecodeError, match="negative|window"):
        decode(stream, -1)


@pytest.mark.parametrize("codec", sorted(CODECS))
def test_random_damage(codec: str) -> None:
    """Bytes flipped, inserted, dropped, or pure noise: a DecodeError or exactly the stated size."""
    compress, decode = CODECS[codec]
    data = sample()[:12000]
    stream = compress(data)
    rng = random.Random(codec)
    failures = 0
    for trial in range(150):
        damaged = bytearray(stream)
        for _ in range(rng.randint(1, 4)):
            at = rng.randrange(len(damaged))
            kind = trial % 3
            if kind == 0:
                damaged[at] ^= 1 << rng.randrange(8)
            elif kind == 1:
                damaged.insert(at, rng.randrange(256))
            else:
                del damaged[at]
        failures += decodes_exactly_or_fails(decode, bytes(damaged), len(data))
    for _ in range(30):
        failures += decodes_exactly_or_fails(decode, rng.randbytes(rng.randrange(1, 3000)), rng.randrange(20000))
    assert failures > 60


def test_xpress_huffman_codes() -> None:
    with pytest.raises(DecodeError, match="over-subscribed"):
        xpress.decompress_huffman(bytes([0x11]) * 256 + bytes(64), 10)  # 512 codes of 1 bit
    with pytest.raises(DecodeError, match="unused"):
        xpress.decompress_huffman(bytes([0x01]) + bytes(255) + bytes(64), 10)  # one code of 1 bit: incomplete
    with pytest.raises(DecodeError, match="no symbol"):
        xpress.decompress_huffman(bytes(256 + 64), 10)
    with pytest.raises(DecodeError, match="Huffman table"):
        xpress.decompress_huffman(bytes(100), 10)


def test_references_before_the_start() -> None:
    out = bytearray()
    _xpress_block(out, [97, 98, (3, 5)], last=True)  # "ab" then a match 5 back
    with pytest.raises(DecodeError, match="before the start"):
        xpress.decompress_huffman(bytes(out), 5)
    flags = (0b01 << 30).to_bytes(4, "little")  # a literal, then a match 2 back
    with pytest.raises(DecodeError, match="before the start"):
        xpress.decompress_plain(flags + b"a" + ((2 - 1) << 3).to_bytes(2, "little"), 4)
    pair = ((2 - 1) << 12 | 0).to_bytes(2, "little")  # at chunk position 1: distance 2, length 3
    chunk = b"\x02" + b"a" + pair
    with pytest.raises(DecodeError, match="before its chunk's start"):
        lznt1.decompress((0xB000 | (len(chunk) - 1)).to_bytes(2, "little") + chunk, 4)
    encoder = _Encoder(b"xyzxyz")
    encoder.bits.put(VERBATIM, 3)
    encoder.bits.put(0, 1)
    encoder.bits.put(5, 16)
    encoder.compressed_block(False, [120, 121, (3, 7)])
    with pytest.raises(DecodeError, match="before the start"):
        lzx.decompress(encoder.bits.finish(), 5)


def test_lznt1_chunk_limits() -> None:
    pair = (0 << 12 | (4098 - 3)).to_bytes(2, "little")  # at position 1: distance 1, length 4098 > 4095 left
    chunk = b"\x02" + b"a" + pair
    with pytest.raises(DecodeError, match="past byte 4096"):
        lznt1.decompress((0xB000 | (len(chunk) - 1)).to_bytes(2, "little") + chunk, 65536)
    with pytest.raises(DecodeError, match="runs past the end of the data"):
        lznt1.decompress((0xB000 | 100).to_bytes(2, "little") + bytes(20), 4096)
    # once the stated size is made, the rest (a unit's slack) is not read
    text = bytes(range(256)) * 32
    assert lznt1.decompress(lznt1_compress(text, end_marker=False) + b"\xff" * 50, 8192) == text
    assert lznt1.decompress(lznt1_compress(text), 4096) == text[:4096]


def lzx_header(block_type: int, size: int) -> LzxBits:
    bits = LzxBits()
    bits.put(block_type, 3)
    bits.put(0, 1)
    bits.put(size, 16)
    return bits


def test_lzx_codes_and_headers() -> None:
    bits = lzx_header(VERBATIM, 100)
    for _ in range(20):
        bits.put(1, 4)  # a pretree of 20 one-bit codes
    with pytest.raises(DecodeError, match="over-subscribed"):
        lzx.decompress(bits.finish() + bytes(64), 100)
    bits = lzx_header(VERBATIM, 100)
    write_lengths(bits, [0] * 256, [1] * 256)  # 256 literals of one bit each
    write_lengths(bits, [0] * 240, [0] * 240)
    write_lengths(bits, [0] * 249, [0] * 249)
    with pytest.raises(DecodeError, match="LZX main code: the code lengths are over-subscribed"):
        lzx.decompress(bits.finish() + bytes(64), 100)
    for block_type in (0, 4, 7):
        with pytest.raises(DecodeError, match=f"block type {block_type}"):
            lzx.decompress(lzx_header(block_type, 100).finish() + bytes(64), 100)
    for size, stated in ((0, 100), (200, 100)):
        with pytest.raises(DecodeError, match="runs past|of 0 bytes"):
            lzx.decompress(lzx_header(VERBATIM, size).finish() + bytes(64), stated)
    with pytest.raises(DecodeError, match="window"):
        lzx.decompress(b"", 40000)
    with pytest.raises(DecodeError, match="window"):
        lzx.decompress(b"", 10, window_size=12345)
    with pytest.raises(DecodeError, match="uncompressed LZX block"):
        lzx.decompress(lzx_header(UNCOMPRESSED, 100).finish() + bytes(20), 100)
