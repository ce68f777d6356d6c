"""Microsoft's codecs (imgfs/codecs: XPRESS, LZX, LZNT1) against a third-party writer and a third-party
reader: wimlib-imagex compresses files into WIM resources (XPRESS Huffman and LZX chunks, as WOF uses
them) that imgfs decodes; the test encoders' chunks, put in a WIM, are decoded by wimlib-imagex. Then
round trips through the test encoders on edge cases, and bad input (test_codecs_ms_bad.py)."""

from __future__ import annotations

import hashlib
import random
import shutil
import struct
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from lzxencoder import ALIGNED, UNCOMPRESSED, VERBATIM, lzx_compress
from msencoders import lznt1_compress, xpress_huffman_compress, xpress_plain_compress
from wimreader import FLAG_LZX, RES_COMPRESSED, RES_METADATA, Wim
from wofwriter import assemble

from imgfs.codecs import lznt1, lzx, xpress

pytestmark = pytest.mark.skipif(shutil.which("wimlib-imagex") is None, reason="wimtools is not installed")

# (method, chunk size): WOF's four (XPRESS 4, 8 and 16 KiB, LZX 32 KiB) and WIM's defaults and larger windows
WIM_KINDS = [("XPRESS", 4096), ("XPRESS", 8192), ("XPRESS", 16384), ("XPRESS", 32768), ("XPRESS", 65536),
             ("LZX", 32768), ("LZX", 65536)]


def sample_files() -> dict[str, bytes]:
    """Contents that reach every decoder path: x86 code (E8 translation), text, long runs (long match
    lengths), noise (chunks stored as they are), a mix within chunks, sizes around chunk boundaries."""
    rng = random.Random(15)
    words = [bytes(rng.choice(b"etaoinshrdlu") for _ in range(rng.randint(2, 9))) for _ in range(400)]
    text = b" ".join(rng.choice(words) for _ in range(40000))
    code = Path("/usr/bin/ls").read_bytes()[:200_000]
    calls = b"".join(b"\x55\x48\x89\xe5\xe8" + struct.pack("<i", rng.randint(-5000, 5000)) for _ in range(3000))
    mixed = b"".join(rng.randbytes(1500) + bytes([n]) * 3000 + text[n * 700 : n * 700 + 2500] for n in range(60))
    return {"code": code, "calls": calls, "text": text, "zeros": bytes(300_000), "noise": rng.randbytes(40_000),
            "mixed": mixed, "small": text[:100], "exact": text[: 3 * 16384], "odd": text[:32769],
            "one": b"x", "halves": text[:70_000] + rng.randbytes(140_000)}


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("wimsrc")
    for name, data in sample_files().items():
        (root / name).write_bytes(data)
    return root


def capture(sources: Path, wim_path: Path, method: str, chunk_size: int) -> Wim:
    subprocess.run(["wimlib-imagex", "capture", str(sources), str(wim_path), f"--compress={method}",
                    f"--chunk-size={chunk_size}"], check=True, capture_output=True)
    return Wim(wim_path.read_bytes())


def file_resources(wim: Wim, sources: Path) -> dict[str, object]:
    by_sha1 = {r.sha1: r for r in wim.resources()}
    return {p.name: by_sha1[hashlib.sha1(p.read_bytes()).digest()] for p in sources.iterdir()}


@pytest.mark.parametrize(("method", "chunk_size"), WIM_KINDS)
def test_wimlib_chunks_decode_to_the_files(sources: Path, tmp_path: Path, method: str, chunk_size: int) -> None:
    wim = capture(sources, tmp_path / "t.wim", method, chunk_size)
    assert wim.chunk_size == chunk_size
    kinds = set()
    for name, res in file_resources(wim, sources).items():
        content = (sources / name).read_bytes()
        assert wim.read(res) == content, name  # through imgfs.codecs.wof.open_chunks
        if not res.flags & RES_COMPRESSED:
            continue
        for i, (stored, length) in enumerate(wim.chunks(res)):
            if len(stored) < length:
                assert wim.decoder(stored, length) == content[i * chunk_size : i * chunk_size + length], (name, i)
                kinds.add(stored[1] >> 5 if wim.flags & FLAG_LZX else "xpress")
            else:
                kinds.add("stored")
    for res in wim.resources():  # the image's metadata resources (directory trees) too
        if res.flags & RES_METADATA:
            assert hashlib.sha1(wim.read(res)).digest() == res.sha1
    # both kinds of chunk occurred, and for LZX both compressed block kinds (first block of each chunk)
    assert "stored" in kinds
    assert kinds - {"stored"} == ({VERBATIM, ALIGNED} if method == "LZX" else {"xpress"})


def _recompressed_wim(wim: Wim, sources: Path, compress: Callable[[bytes], bytes]) -> bytes:
    """The WIM with every file resource replaced by the test encoder's chunks (appended at its end, the
    lookup table entries pointing there)."""
    data = bytearray(wim.data)
    table_at = wim.lookup.offset
    entries = {r.sha1: i for i, r in enumerate(wim.resources())}
    for name, res in file_resources(wim, sources).items():
        content = (sources / name).read_bytes()
        chunks = [content[at : at + wim.chunk_size] for at in range(0, len(content), wim.chunk_size)]
        stored = assemble([c if len(z := compress(c)) >= len(c) else z for c in chunks], len(content))
        at = table_at + 50 * entries[res.sha1]
        header = len(stored).to_bytes(7, "little") + bytes([res.flags | RES_COMPRESSED])
        data[at : at + 24] = header + struct.pack("<QQ", len(data), len(content))
        data += stored
    return bytes(data)


@pytest.mark.parametrize(("method", "chunk_size", "compress"), [
    ("XPRESS", 4096, xpress_huffman_compress),
    ("XPRESS", 16384, xpress_huffman_compress),
    ("LZX", 32768, lambda chunk: lzx_compress(chunk, kinds=(ALIGNED, UNCOMPRESSED, VERBATIM), block_size=9000)),
    ("LZX", 32768, lzx_compress),
], ids=["xpress4k", "xpress16k", "lzx-all-blocks", "lzx-verbatim"])
def test_wimlib_decodes_the_test_encoders(sources: Path, tmp_path: Path, method: str, chunk_size: int,
                                          compress: Callable[[bytes], bytes]) -> None:
    """The test encoders (and so the WOF test writer) make what a third-party decoder reads: wimlib
    extracts the WIM, checking every file's SHA-1, and the files come out byte for byte."""
    wim = capture(sources, tmp_path / "t.wim", method, chunk_size)
    patched = tmp_path / "patched.wim"
    patched.write_bytes(_recompressed_wim(wim, sources, compress))
    out = tmp_path / "out"
    subprocess.run(["wimlib-imagex", "apply", str(patched), "1", str(out)], check=True, capture_output=True)
    for path in sources.iterdir():
        assert (out / path.name).read_bytes() == path.read_bytes(), path.name
    assert imgfs_reads(Wim(patched.read_bytes()), sources)


def imgfs_reads(wim: Wim, sources: Path) -> bool:
    return all(wim.read(res) == (sources / name).read_bytes() for name, res in file_resources(wim, sources).items())


ROUND_TRIPS = {
    "xpress-huffman": (xpress_huffman_compress, xpress.decompress_huffman),
    "xpress-plain": (xpress_plain_compress, xpress.decompress_plain),
    "lznt1": (lznt1_compress, lznt1.decompress),
}


def edge_cases() -> list[bytes]:
    rng = random.Random(7)
    return [b"", b"a", b"ab" * 5, bytes(3), bytes(200_000), rng.randbytes(5000),
            bytes(range(256)) * 300,  # every literal, offsets of every bit length
            b"".join(bytes([n % 7]) * (n % 40 + 1) for n in range(5000)),  # lengths of every size class
            rng.randbytes(70_000) + bytes(70_000)]  # XPRESS Huffman: a second 64 KiB block


@pytest.mark.parametrize("codec", sorted(ROUND_TRIPS))
def test_round_trips(codec: str) -> None:
    compress, decompress = ROUND_TRIPS[codec]
    for data in edge_cases():
        assert decompress(compress(data), len(data)) == data, (codec, len(data))


@pytest.mark.parametrize("kinds", [(VERBATIM,), (ALIGNED,), (UNCOMPRESSED,), (UNCOMPRESSED, ALIGNED, VERBATIM)])
def test_lzx_round_trips(kinds: tuple[int, ...]) -> None:
    for data in edge_cases() + [Path("/usr/bin/ls").read_bytes()[:32768]]:
        data = data[:32768]
        for block_size in (32768, 4001):
            stream = lzx_compress(data, kinds=kinds, block_size=block_size)
            assert lzx.decompress(stream, len(data)) == data, (kinds, block_size, len(data))


def test_lzx_uncompressed_block_without_its_last_pad_byte() -> None:
    stream = lzx_compress(b"hello", kinds=(UNCOMPRESSED,))
    assert stream.endswith(b"hello\0")
    assert lzx.decompress(stream[:-1], 5) == lzx.decompress(stream, 5) == b"hello"


def test_lzx_e8_translation_bounds() -> None:
    """E8 bytes in the last 10 bytes stay as they are; targets outside the translated range too."""
    body = bytearray(b"\x90" * 60)
    for at, value in ((0, 5), (10, -3), (20, -25), (30, 11_999_999), (40, 12_000_000), (52, 7)):
        body[at] = 0xE8
        body[at + 1 : at + 5] = struct.pack("<i", value)
    data = bytes(body)
    assert lzx.decompress(lzx_compress(data), len(data)) == data
    assert lzx.decompress(lzx_compress(data, e8=False), len(data)) != data  # the translation is on


def test_lznt1_short_chunks_and_end_are_zero_filled() -> None:
    """A chunk making fewer than 4096 bytes is followed by zeros (as ntfs-3g reads it), so is the end."""
    first = lznt1_compress(b"abc" * 100, end_marker=False)
    second = lznt1_compress(b"xyz" * 10, end_marker=True)
    got = lznt1.decompress(first + second, 9000)
    assert got == b"abc" * 100 + bytes(4096 - 300) + b"xyz" * 10 + bytes(9000 - 4096 - 30)
