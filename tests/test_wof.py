"""WOF-compressed streams (imgfs/codecs/wof.py): the test writer's and wimlib's streams read back through
``open_wof`` for every algorithm, random access and the cache, the reparse point, files of 4 GiB and
more (8-byte chunk table entries), and damaged streams: each a ``CorruptImage`` naming the chunk."""

from __future__ import annotations

import random
import shutil
import subprocess
from pathlib import Path

import pytest
from msencoders import xpress_huffman_compress
from wofwriter import assemble, reparse_point, wof_stream, write_wof_file

from imgfs.codecs.wof import (
    ALGORITHMS,
    LZX,
    XPRESS4K,
    XPRESS8K,
    XPRESS16K,
    open_wof,
    parse_reparse_data,
)
from imgfs.errors import CorruptImage, UnsupportedFormat
from imgfs.io.cache import BlockCache
from imgfs.io.stream import BytesStream, Stream

ENGINES = ["test"] + (["wimlib"] if shutil.which("wimlib-imagex") else [])


def content() -> bytes:
    rng = random.Random(3)
    code = Path("/usr/bin/ls").read_bytes()[:60_000]
    return code + bytes(20_000) + rng.randbytes(9_000) + code[:11_111]  # not a multiple of any chunk size


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("algorithm", [XPRESS4K, LZX, XPRESS8K, XPRESS16K])
def test_round_trip(algorithm: int, engine: str) -> None:
    data = content()
    stream = open_wof(BytesStream(wof_stream(data, algorithm, engine=engine)), len(data), algorithm,
                      BlockCache(1 << 24), "test file")
    assert stream.size == len(data)
    assert stream.pread(0, len(data) + 100) == data
    chunk = ALGORITHMS[algorithm].chunk_size
    rng = random.Random(algorithm)
    for offset in [0, chunk - 1, chunk, len(data) - 1, len(data)] + [rng.randrange(len(data)) for _ in range(30)]:
        length = rng.choice([1, 7, chunk, 3 * chunk + 5])
        assert stream.pread(offset, length) == data[offset : offset + length], (offset, length)


def test_each_chunk_decodes_once() -> None:
    data = content()
    cache = BlockCache(1 << 24)
    stream = open_wof(BytesStream(wof_stream(data, XPRESS4K)), len(data), XPRESS4K, cache)
    for _ in range(3):
        assert stream.pread(0, len(data)) == data
    assert cache.misses == -(-len(data) // 4096)


@pytest.mark.parametrize("size", [0, 1, 4096, 3 * 4096])
def test_sizes_at_chunk_boundaries(size: int) -> None:
    data = content()[:size]
    raw = wof_stream(data, XPRESS4K)
    assert len(raw) < 4 * max(size // 4096 - 1, 0) + size + 1  # table of n-1 entries, chunks no larger
    assert open_wof(BytesStream(raw), size, XPRESS4K, BlockCache(1 << 20)).pread(0, size + 1) == data


def test_reparse_point() -> None:
    for algorithm in ALGORITHMS:
        buffer = reparse_point(algorithm)
        assert buffer[:8] == bytes.fromhex("1700008010000000")  # tag 0x80000017, 16 bytes of data
        assert parse_reparse_data(buffer[8:]) == algorithm
    wimboot = bytes.fromhex("01000000" "01000000") + bytes(16)
    with pytest.raises(UnsupportedFormat, match="WIMBoot"):
        parse_reparse_data(wimboot, "f")
    with pytest.raises(UnsupportedFormat, match="algorithm 4"):
        parse_reparse_data(reparse_point(0)[8:20] + (4).to_bytes(4, "little"))
    with pytest.raises(UnsupportedFormat, match="version 2"):
        parse_reparse_data((2).to_bytes(4, "little") + reparse_point(0)[12:])
    with pytest.raises(CorruptImage, match="12 bytes"):
        parse_reparse_data(reparse_point(0)[8:20])


class RepeatedChunks(Stream):
    """A WofCompressedData stream of a file of 4 GiB and more, computed on demand: 8-byte table entries
    then the same compressed chunk over and over."""

    def __init__(self, chunk: bytes, count: int) -> None:
        self.chunk, self.count = chunk, count
        self.table_size = 8 * (count - 1)
        self.size = self.table_size + count * len(chunk)

    def pread(self, offset: int, length: int) -> bytes:
        out = bytearray()
        end = min(offset + length, self.size)
        while offset < end:
            if offset < self.table_size:
                entry = (offset // 8 + 1) * len(self.chunk)
                piece = entry.to_bytes(8, "little")[offset % 8 :]
            else:
                piece = self.chunk[(offset - self.table_size) % len(self.chunk) :]
            piece = piece[: end - offset]
            out += piece
            offset += len(piece)
        return bytes(out)


def test_files_of_4_gib_use_8_byte_entries() -> None:
    block = bytes(range(256)) * 16
    chunk = xpress_huffman_compress(block)
    count = (1 << 20) + 3  # 4 GiB + 12 KiB
    stream = open_wof(RepeatedChunks(chunk, count), count * 4096, XPRESS4K, BlockCache(1 << 20))
    for index in (0, 1, 1 << 19, count - 1):
        assert stream.pread(index * 4096 + 100, 5000) == (block * 2)[100:5100][: count * 4096 - index * 4096 - 100]


def test_table_larger_than_the_stream() -> None:
    with pytest.raises(CorruptImage, match="chunk table of 10 chunks") as err:
        open_wof(BytesStream(bytes(20)), 10 * 4096, XPRESS4K, BlockCache(1 << 20), "the file")
    assert err.value.layer == "the file" and err.value.offset == 0


@pytest.mark.parametrize(("damage", "bad"), [("entries out of order", {1, 2}), ("entry past the end", {1, 2}),
                                            ("stored chunk too large", {2}), ("over-subscribed code", {2}),
                                            ("cut short", {4})])
def test_damaged_streams(damage: str, bad: set[int]) -> None:
    """A damaged chunk is a CorruptImage naming it and its offset; the other chunks still read."""
    data = content()[: 5 * 4096]
    chunks = [xpress_huffman_compress(data[at : at + 4096]) for at in range(0, len(data), 4096)]
    if damage == "stored chunk too large":
        chunks[2] += bytes(4096)
    elif damage == "over-subscribed code":
        chunks[2] = bytes([0x11]) * 256 + chunks[2][256:]
    raw = bytearray(assemble(chunks, len(data)))
    if damage == "entries out of order":
        raw[4:8] = (int.from_bytes(raw[0:4], "little") - 1).to_bytes(4, "little")  # chunk 2 before chunk 1
    elif damage == "entry past the end":
        raw[4:8] = len(raw).to_bytes(4, "little")
    elif damage == "cut short":
        del raw[-10:]
    stream = open_wof(BytesStream(bytes(raw)), len(data), XPRESS4K, BlockCache(1 << 20), "dir/file")
    for i in range(5):
        if i not in bad:
            assert stream.pread(i * 4096, 4096) == data[i * 4096 : (i + 1) * 4096], i
            continue
        with pytest.raises(CorruptImage, match=f"chunk {i} of 5") as err:
            stream.pread(i * 4096, 1)
        assert err.value.layer == "dir/file" and err.value.offset is not None


@pytest.mark.skipif(shutil.which("ntfs-3g") is None, reason="ntfs-3g is not installed")
def test_wof_file_on_an_ntfs3g_volume(tmp_path: Path) -> None:
    """The writer's recipe on a real volume: the reparse point, the attributes, and the named stream as
    ntfscat reads it back, which open_wof decodes to the file."""
    image, mnt = tmp_path / "ntfs.img", tmp_path / "mnt"
    with open(image, "wb") as f:
        f.truncate(16 << 20)
    subprocess.run(["mkntfs", "-q", "-F", "-f", "-c", "4096", str(image)], check=True, capture_output=True)
    mnt.mkdir()
    subprocess.run(["ntfs-3g", "-o", "streams_interface=windows", str(image), str(mnt)], check=True)
    files = {f"f{algorithm}.exe": (algorithm, content()[: 50_000 + algorithm * 7]) for algorithm in ALGORITHMS}
    try:
        for name, (algorithm, data) in files.items():
            write_wof_file(mnt / name, data, algorithm)
    finally:
        subprocess.run(["umount", str(mnt)], check=True)
    for name, (algorithm, data) in files.items():
        info = subprocess.run(["ntfsinfo", "-F", f"/{name}", str(image)], capture_output=True, text=True).stdout
        assert "SPARSE_FILE REPARSE_POINT" in info and "$REPARSE_POINT" in info
        stored = subprocess.run(["ntfscat", "-a", "0x80", "-n", "WofCompressedData", str(image), f"/{name}"],
                                check=True, capture_output=True).stdout
        assert open_wof(BytesStream(stored), len(data), algorithm, BlockCache(1 << 20)).pread(0, len(data)) == data
