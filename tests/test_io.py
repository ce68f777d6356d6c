"""Unit tests of the io layer: streams, the block cache, chunked streams and the file-object adapter.

Every read is checked against a reference ``bytes`` object built independently in the test.
"""

from __future__ import annotations

import io
import os
import random
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Callable, Optional

import pytest
from streamio import StreamIO

from imgfs.errors import CorruptImage, MissingFile, UnsupportedFormat
from imgfs.io import (
    BlockCache,
    BytesStream,
    ChunkedStream,
    ConcatStream,
    Extent,
    ExtentStream,
    FileStream,
    SliceStream,
    Stream,
)

DATA = random.Random(1234).randbytes(1000)


def readinto_fresh(stream: Stream, offset: int, length: int, fill: int = 0xEE) -> tuple[int, bytes]:
    """``readinto`` into a view of the middle of a larger buffer; guards bytes either side must survive."""
    guard = 7
    buf = bytearray([fill]) * (guard + length + guard)
    n = stream.readinto(offset, memoryview(buf)[guard : guard + length])
    assert buf[:guard] == bytes([fill]) * guard, "readinto wrote before its view"
    assert buf[guard + n :] == bytes([fill]) * (len(buf) - guard - n), "readinto wrote past what it returned"
    return n, bytes(buf[guard : guard + n])


def chunk_decoder(data: bytes, starts: list[int]) -> tuple[Callable[[int], bytes], Counter]:
    """A decoder returning ``data``'s chunks, and a thread-safe counter of calls per chunk."""
    calls: Counter = Counter()
    lock = threading.Lock()

    def decode(i: int) -> bytes:
        with lock:
            calls[i] += 1
        end = starts[i + 1] if i + 1 < len(starts) else len(data)
        return data[starts[i] : end]

    return decode, calls


@pytest.fixture
def open_file(tmp_path: Path):
    """``open_file(data)`` writes ``data`` to a temp file and opens a FileStream on it (closed afterwards)."""
    streams: list[FileStream] = []

    def _open(data: bytes, name: str = "image.bin") -> FileStream:
        path = tmp_path / name
        path.write_bytes(data)
        stream = FileStream(str(path))
        streams.append(stream)
        return stream

    yield _open
    for stream in streams:
        stream.close()


# --- the contract every stream keeps -------------------------------------------------------------------

STREAM_KINDS = ["bytes", "file", "slice", "nested-slice", "concat", "extent", "chunked"]


@pytest.fixture(params=STREAM_KINDS)
def data_stream(request, open_file) -> Stream:
    """A stream of each kind whose content is exactly ``DATA``."""
    kind = request.param
    if kind == "bytes":
        return BytesStream(DATA)
    if kind == "file":
        return open_file(DATA)
    if kind == "slice":
        return SliceStream(BytesStream(b"x" * 7 + DATA + b"y" * 9), 7, len(DATA))
    if kind == "nested-slice":
        outer = SliceStream(BytesStream(b"x" * 30 + DATA + b"y" * 30), 10, len(DATA) + 40)
        return SliceStream(outer, 20, len(DATA))
    if kind == "concat":
        return ConcatStream([BytesStream(DATA[:300]), BytesStream(b""), BytesStream(DATA[300:301]),
                             BytesStream(DATA[301:])])
    if kind == "extent":
        swapped = BytesStream(DATA[600:] + DATA[:600])  # DATA[:600] lives at 400, DATA[600:] at 0
        return ExtentStream.over(swapped, [(400, 600), (0, 400)])
    if kind == "chunked":
        starts = [0, 64, 100, 101, 512, 900]
        decode, _ = chunk_decoder(DATA, starts)
        return ChunkedStream(len(DATA), starts, decode, BlockCache(4096))
    raise AssertionError(kind)


def test_stream_size(data_stream):
    assert data_stream.size == len(DATA)


@pytest.mark.parametrize("offset, length", [(0, 1), (0, 100), (0, 1000), (450, 123), (999, 1), (300, 1)])
def test_stream_pread_inside(data_stream, offset, length):
    assert data_stream.pread(offset, length) == DATA[offset : offset + length]


@pytest.mark.parametrize("offset, length, expected", [(990, 100, 10), (0, 5000, 1000), (999, 2, 1)])
def test_stream_pread_is_short_only_at_the_end(data_stream, offset, length, expected):
    data = data_stream.pread(offset, length)
    assert len(data) == expected
    assert data == DATA[offset:]


@pytest.mark.parametrize("offset", [1000, 1001, 10**9])
def test_stream_pread_at_or_past_the_end_is_empty(data_stream, offset):
    assert data_stream.pread(offset, 10) == b""
    assert readinto_fresh(data_stream, offset, 10) == (0, b"")


def test_stream_zero_length_read(data_stream):
    assert data_stream.pread(500, 0) == b""
    assert readinto_fresh(data_stream, 500, 0) == (0, b"")


@pytest.mark.parametrize("offset, length", [(-1, 5), (0, -1), (-10, -10)])
def test_stream_negative_offset_or_length_raises(data_stream, offset, length):
    with pytest.raises(ValueError):
        data_stream.pread(offset, length)


def test_stream_readinto_negative_offset_raises(data_stream):
    with pytest.raises(ValueError):
        data_stream.readinto(-1, memoryview(bytearray(4)))


@pytest.mark.parametrize("offset, length", [(0, 1000), (63, 40), (299, 3), (990, 50), (5, 0)])
def test_stream_readinto_slice_of_larger_buffer(data_stream, offset, length):
    expected = DATA[offset : offset + length]
    assert readinto_fresh(data_stream, offset, length) == (len(expected), expected)


# --- FileStream ----------------------------------------------------------------------------------------

def test_file_stream_readinto_memoryview_of_whole_bytearray(open_file):
    stream = open_file(DATA)
    buf = bytearray(200)
    assert stream.readinto(800, memoryview(buf)) == 200
    assert bytes(buf) == DATA[800:]


def test_file_stream_name_and_fileno(open_file, tmp_path):
    stream = open_file(DATA, "disk.img")
    assert stream.name == str(tmp_path / "disk.img")
    assert os.pread(stream.fileno(), 4, 10) == DATA[10:14]


def test_file_stream_shrinking_file_raises_corrupt_image(open_file, tmp_path):
    stream = open_file(DATA, "shrinks.img")
    os.truncate(tmp_path / "shrinks.img", 600)
    assert stream.size == 1000  # the size promised at open time
    assert stream.pread(500, 100) == DATA[500:600]  # still-present data reads fine

    with pytest.raises(CorruptImage) as excinfo:
        stream.pread(550, 100)
    assert excinfo.value.layer == str(tmp_path / "shrinks.img")
    assert excinfo.value.offset == 600
    assert str(excinfo.value) == f"{tmp_path / 'shrinks.img'}: file shrank while mounted (at byte offset 600)"

    with pytest.raises(CorruptImage) as excinfo:
        stream.pread(700, 10)  # wholly inside the vanished tail
    assert excinfo.value.offset == 700

    with pytest.raises(CorruptImage) as excinfo:
        stream.readinto(550, memoryview(bytearray(100)))
    assert excinfo.value.offset == 600
    assert "shrinks.img" in str(excinfo.value) and "offset 600" in str(excinfo.value)


def test_file_stream_missing_file(tmp_path):
    path = tmp_path / "nope.img"
    with pytest.raises(MissingFile) as excinfo:
        FileStream(str(path))
    assert str(path) in str(excinfo.value)


def test_file_stream_directory(tmp_path):
    with pytest.raises(UnsupportedFormat) as excinfo:
        FileStream(str(tmp_path))
    assert str(excinfo.value) == f"{tmp_path} is a directory, not an image file"


def test_file_stream_close_is_idempotent(open_file):
    stream = open_file(DATA)
    fd = stream.fileno()
    stream.close()
    stream.close()
    assert stream.fileno() == -1
    with pytest.raises(OSError):
        os.fstat(fd)


# --- BytesStream and SliceStream -----------------------------------------------------------------------

def test_bytes_stream_copies_its_input():
    source = bytearray(b"hello world")
    stream = BytesStream(source, name="mem")
    source[:5] = b"HELLO"
    assert stream.pread(0, 11) == b"hello world"
    assert stream.name == "mem"


def test_nested_slices_read_the_right_window():
    base = BytesStream(bytes(range(256)), name="disk")
    partition = SliceStream(base, 16, 200)
    inner = SliceStream(partition, 4, 10, name="file")
    assert partition.name == "disk"
    assert inner.name == "file"
    assert inner.size == 10
    assert inner.pread(0, 100) == bytes(range(20, 30))
    assert inner.pread(3, 4) == bytes(range(23, 27))
    assert SliceStream(inner, 2, 3).pread(0, 10) == bytes(range(22, 25))
    assert readinto_fresh(inner, 8, 5) == (2, bytes([28, 29]))


def test_slice_past_the_end_of_base_raises_with_offset():
    base = BytesStream(bytes(100), name="disk")
    part = SliceStream(base, 90, 20, name="part1")
    assert part.pread(0, 10) == bytes(10)  # the part that exists reads fine

    for read in (lambda: part.pread(5, 10), lambda: part.readinto(5, memoryview(bytearray(10)))):
        with pytest.raises(CorruptImage) as excinfo:
            read()
        assert excinfo.value.layer == "part1"
        assert excinfo.value.offset == 100
        assert str(excinfo.value) == "part1: data runs past the end of the image (at byte offset 100)"


def test_nested_slice_past_the_end_of_its_parent_slice():
    base = BytesStream(bytes(1000), name="disk")
    outer = SliceStream(base, 100, 50, name="outer")
    inner = SliceStream(outer, 40, 20, name="inner")
    with pytest.raises(CorruptImage) as excinfo:
        inner.pread(0, 20)
    assert excinfo.value.layer == "inner"
    assert excinfo.value.offset == 50  # where the parent (in its own coordinates) ran out


@pytest.mark.parametrize("offset, size", [(-1, 10), (0, -1)])
def test_slice_rejects_negative_bounds(offset, size):
    with pytest.raises(ValueError):
        SliceStream(BytesStream(b"abc"), offset, size)


# --- ConcatStream --------------------------------------------------------------------------------------

@pytest.fixture
def concat() -> ConcatStream:
    parts = [b"abc", b"", b"defgh", b"", b"ij"]
    return ConcatStream([BytesStream(part) for part in parts], name="split")


def test_concat_size_and_parts(concat):
    assert concat.size == 10
    assert len(concat.parts) == 5
    assert concat.name == "split"


@pytest.mark.parametrize("offset, length, expected", [
    (0, 3, b"abc"),           # exactly the first part
    (1, 4, b"bcde"),          # spans two parts (and an empty one between)
    (2, 7, b"cdefghi"),       # spans three parts
    (0, 10, b"abcdefghij"),   # everything
    (3, 5, b"defgh"),         # exactly a middle part, starting on the boundary
    (7, 10, b"hij"),          # short at the end
    (10, 1, b""),
])
def test_concat_reads_across_parts(concat, offset, length, expected):
    assert concat.pread(offset, length) == expected
    assert readinto_fresh(concat, offset, length) == (len(expected), expected)


def test_concat_of_only_empty_parts():
    stream = ConcatStream([BytesStream(b""), BytesStream(b"")])
    assert stream.size == 0
    assert stream.pread(0, 10) == b""
    assert readinto_fresh(stream, 0, 10) == (0, b"")


def test_concat_of_file_parts(open_file):
    first, second = open_file(DATA[:333], "img.001"), open_file(DATA[333:], "img.002")
    stream = ConcatStream([first, second])
    assert stream.pread(0, 1000) == DATA
    assert stream.pread(330, 10) == DATA[330:340]
    assert readinto_fresh(stream, 300, 100) == (100, DATA[300:400])


# --- ExtentStream --------------------------------------------------------------------------------------

def test_extent_stream_holes_read_as_zeros():
    base = BytesStream(bytes(range(100)))
    stream = ExtentStream([Extent(5, base, 10), Extent(3, None), Extent(4, base, 50), Extent(2, None)],
                          name="sparse")
    expected = bytes(range(10, 15)) + bytes(3) + bytes(range(50, 54)) + bytes(2)
    assert stream.size == 14
    assert stream.name == "sparse"
    assert stream.pread(0, 100) == expected
    assert readinto_fresh(stream, 0, 100, fill=0xFF) == (14, expected)  # holes are written, not skipped
    assert stream.pread(4, 5) == expected[4:9]


def test_extent_stream_over_base():
    base = BytesStream(bytes(range(200)), name="image")
    stream = ExtentStream.over(base, [(100, 4), (None, 3), (0, 2), (150, 1)])
    assert stream.name == "image"
    assert stream.size == 10
    assert stream.pread(0, 10) == bytes([100, 101, 102, 103, 0, 0, 0, 0, 1, 150])
    assert ExtentStream.over(base, [(5, 2)], name="file").name == "file"


def test_extent_stream_drops_zero_length_runs():
    base = BytesStream(bytes(range(100)))
    stream = ExtentStream.over(base, [(0, 0), (10, 5), (None, 0), (99, 0), (20, 5), (None, 0)])
    assert stream.size == 10
    assert stream.pread(0, 10) == bytes(range(10, 15)) + bytes(range(20, 25))
    assert stream.pread(5, 10) == bytes(range(20, 25))


class Tripwire(Stream):
    """A source that must never be read."""

    size = 10**6

    def pread(self, offset: int, length: int) -> bytes:
        raise AssertionError(f"tripwire read at {offset}+{length}")

    def readinto(self, offset: int, buf: memoryview) -> int:
        raise AssertionError(f"tripwire readinto at {offset}+{len(buf)}")


def test_extent_stream_never_reads_the_source_of_a_zero_length_run():
    base = BytesStream(bytes(range(100)))
    stream = ExtentStream([Extent(5, base, 0), Extent(0, Tripwire(), 123), Extent(5, base, 50)])
    expected = bytes(range(0, 5)) + bytes(range(50, 55))
    assert stream.pread(0, 10) == expected
    assert readinto_fresh(stream, 0, 10) == (10, expected)


def test_extent_stream_rejects_negative_source_offset():
    with pytest.raises(ValueError):
        ExtentStream([Extent(4, BytesStream(bytes(10)), -1)])


def test_extent_stream_empty():
    stream = ExtentStream([])
    assert stream.size == 0
    assert stream.pread(0, 5) == b""


@pytest.fixture
def extent_past_end() -> ExtentStream:
    """Positions 0..49 map to base 0..49, positions 50..69 to base 90..109: the base ends at 100."""
    base = BytesStream(bytes(range(100)), name="disk")
    return ExtentStream.over(base, [(0, 50), (90, 20)], name="file.iso")


def test_extent_past_the_end_of_base_reads_what_exists(extent_past_end):
    assert extent_past_end.size == 70
    assert extent_past_end.pread(45, 15) == bytes(range(45, 50)) + bytes(range(90, 100))


def test_extent_past_the_end_of_base_raises_in_pread(extent_past_end):
    with pytest.raises(CorruptImage) as excinfo:
        extent_past_end.pread(55, 10)  # base 95..104
    assert excinfo.value.layer == "file.iso"
    assert excinfo.value.offset == 100
    assert str(excinfo.value) == "file.iso: extent runs past the end of the image (at byte offset 100)"


def test_extent_past_the_end_of_base_raises_in_readinto(extent_past_end):
    with pytest.raises(CorruptImage) as excinfo:
        extent_past_end.readinto(0, memoryview(bytearray(70)))
    assert excinfo.value.layer == "file.iso"
    assert "file.iso" in str(excinfo.value) and "offset" in str(excinfo.value)


def test_extent_readinto_reports_the_offset_where_data_ran_out(extent_past_end):
    with pytest.raises(CorruptImage) as excinfo:
        extent_past_end.readinto(55, memoryview(bytearray(10)))
    assert excinfo.value.offset == 100


def test_extent_past_the_end_of_a_file_base(open_file):
    base = open_file(bytes(range(100)), "short.img")
    stream = ExtentStream.over(base, [(None, 10), (80, 40)], name="big.dat")
    assert stream.pread(0, 30) == bytes(10) + bytes(range(80, 100))
    with pytest.raises(CorruptImage) as excinfo:
        stream.pread(20, 20)
    assert (excinfo.value.layer, excinfo.value.offset) == ("big.dat", 100)
    with pytest.raises(CorruptImage) as excinfo:
        stream.readinto(20, memoryview(bytearray(20)))
    assert excinfo.value.layer == "big.dat"


def test_extent_stream_random_reads_match_reference():
    rng = random.Random(42)
    base_bytes = rng.randbytes(5000)
    base = BytesStream(base_bytes)
    runs: list[tuple[Optional[int], int]] = []
    reference = bytearray()
    for _ in range(60):
        length = rng.choice([0, 1, 2, rng.randrange(3, 50), rng.randrange(50, 300)])
        if rng.random() < 0.25:
            runs.append((None, length))
            reference += bytes(length)
        else:
            start = rng.randrange(0, len(base_bytes) - length)
            runs.append((start, length))
            reference += base_bytes[start : start + length]
    reference = bytes(reference)
    stream = ExtentStream.over(base, runs)
    assert stream.size == len(reference)
    assert stream.pread(0, stream.size) == reference

    for _ in range(1500):
        offset = rng.randrange(0, stream.size + 20)
        length = rng.randrange(0, 400)
        expected = reference[offset : offset + length]
        assert stream.pread(offset, length) == expected, (offset, length)
        assert readinto_fresh(stream, offset, length) == (len(expected), expected), (offset, length)


# --- BlockCache ----------------------------------------------------------------------------------------

class CountingLoader:
    """``loader(value)`` returns a load function producing ``value`` and counting its calls."""

    def __init__(self) -> None:
        self.calls: Counter = Counter()

    def __call__(self, key, value: bytes) -> Callable[[], bytes]:
        def load() -> bytes:
            self.calls[key] += 1
            return value
        return load


def test_cache_hits_and_misses():
    cache = BlockCache(1000)
    loader = CountingLoader()
    assert cache.get("a", loader("a", b"AAAA")) == b"AAAA"
    assert (cache.hits, cache.misses) == (0, 1)
    assert cache.get("a", loader("a", b"other")) == b"AAAA"
    assert cache.get("a", loader("a", b"other")) == b"AAAA"
    assert cache.get("b", loader("b", b"BB")) == b"BB"
    assert (cache.hits, cache.misses) == (2, 2)
    assert loader.calls == {"a": 1, "b": 1}
    assert "a" in cache and "b" in cache and "c" not in cache
    assert len(cache) == 2
    assert cache.current_bytes == 6


def test_cache_stats():
    cache = BlockCache(100)
    cache.get(1, lambda: b"x" * 30)
    cache.get(1, lambda: b"unused")
    cache.get(2, lambda: b"y" * 20)
    assert cache.stats() == {"hits": 1, "misses": 2, "bytes": 50, "entries": 2, "max_bytes": 100}


def test_cache_evicts_least_recently_used_by_bytes():
    cache = BlockCache(100)
    for key in "abcde":
        cache.get(key, lambda: b"." * 20)
    assert cache.current_bytes == 100
    cache.get("a", lambda: b"unused")  # a is now the most recently used
    cache.get("f", lambda: b"." * 20)  # evicts b, the least recently used
    assert [k for k in "abcdef" if k in cache] == ["a", "c", "d", "e", "f"]
    assert cache.current_bytes == 100

    cache.get("g", lambda: b"." * 50)  # needs 50: evicts c, d, e in LRU order
    assert [k for k in "abcdefg" if k in cache] == ["a", "f", "g"]
    assert cache.current_bytes == 90
    assert cache.get("a", lambda: b"reloaded") == b"." * 20


def test_cache_never_exceeds_its_byte_bound():
    rng = random.Random(7)
    cache = BlockCache(1000)
    for _ in range(300):
        cache.get(rng.randrange(60), lambda: b"z" * rng.randrange(1, 400))
        assert cache.current_bytes <= 1000
        assert cache.stats()["bytes"] == cache.current_bytes
    assert cache.hits + cache.misses == 300


def test_cache_item_bigger_than_cache_is_returned_not_kept():
    cache = BlockCache(100)
    loader = CountingLoader()
    cache.get("small", loader("small", b"s" * 60))
    assert cache.get("big", loader("big", b"B" * 101)) == b"B" * 101
    assert "big" not in cache
    assert "small" in cache  # nothing was evicted to make room for it
    assert cache.current_bytes == 60
    assert cache.get("big", loader("big", b"B" * 101)) == b"B" * 101
    assert loader.calls["big"] == 2

    assert cache.get("exact", loader("exact", b"e" * 100)) == b"e" * 100  # exactly max_bytes is kept
    assert "exact" in cache and "small" not in cache
    assert cache.current_bytes == 100


def test_cache_of_zero_bytes_keeps_nothing():
    cache = BlockCache(0)
    assert cache.get("k", lambda: b"v") == b"v"
    assert len(cache) == 0
    assert cache.stats() == {"hits": 0, "misses": 1, "bytes": 0, "entries": 0, "max_bytes": 0}


def test_cache_loader_error_propagates_and_is_not_cached():
    class Boom(Exception):
        pass

    def failing() -> bytes:
        raise Boom("decode failed")

    cache = BlockCache(100)
    with pytest.raises(Boom, match="decode failed"):
        cache.get("k", failing)
    assert "k" not in cache
    assert len(cache) == 0
    assert cache.current_bytes == 0

    assert cache.get("k", lambda: b"good") == b"good"  # a later call retries
    assert "k" in cache
    assert cache.misses == 2


def run_threads(count: int, target: Callable[[int], object]) -> tuple[list[object], list[BaseException]]:
    """Run ``target(i)`` in ``count`` threads started together; return their results and errors."""
    barrier = threading.Barrier(count)
    results: list[object] = [None] * count
    errors: list[BaseException] = []

    def run(i: int) -> None:
        barrier.wait()
        try:
            results[i] = target(i)
        except BaseException as exc:  # noqa: BLE001 - collected and asserted on by the caller
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert not any(thread.is_alive() for thread in threads), "threads hung"
    return results, errors


def test_cache_single_flight():
    cache = BlockCache(1000)
    calls = []

    def slow_load() -> bytes:
        calls.append(threading.get_ident())
        time.sleep(0.2)
        return b"decoded block"

    results, errors = run_threads(8, lambda i: cache.get("key", slow_load))
    assert errors == []
    assert len(calls) == 1
    assert results == [b"decoded block"] * 8
    assert (cache.misses, cache.hits) == (1, 7)
    assert "key" in cache


def test_cache_single_flight_error_reaches_every_waiter():
    cache = BlockCache(1000)
    calls = []

    def slow_failure() -> bytes:
        calls.append(1)
        time.sleep(0.2)
        raise CorruptImage("bad block", layer="test", offset=4096)

    _, errors = run_threads(8, lambda i: cache.get("key", slow_failure))
    assert len(calls) == 1
    assert len(errors) == 8
    assert all(isinstance(e, CorruptImage) for e in errors)
    assert {str(e) for e in errors} == {"test: bad block (at byte offset 4096)"}
    assert "key" not in cache
    assert cache.get("key", lambda: b"retried") == b"retried"


# --- ChunkedStream -------------------------------------------------------------------------------------

CHUNK_STARTS = [0, 64, 100, 101, 512, 900]  # chunks of 64, 36, 1, 411, 388 and 100 bytes


def test_chunked_reads_across_chunk_boundaries():
    decode, _ = chunk_decoder(DATA, CHUNK_STARTS)
    stream = ChunkedStream(len(DATA), CHUNK_STARTS, decode, BlockCache(4096), name="zisofs")
    assert stream.chunk_count() == 6
    for offset in range(0, 1001, 3):
        for length in (1, 37, 64, 450):
            assert stream.pread(offset, length) == DATA[offset : offset + length], (offset, length)
    assert stream.chunk(3) == DATA[101:512]


def test_chunked_decodes_each_chunk_once():
    decode, calls = chunk_decoder(DATA, CHUNK_STARTS)
    cache = BlockCache(4096)
    stream = ChunkedStream(len(DATA), CHUNK_STARTS, decode, cache)
    assert stream.pread(60, 10) == DATA[60:70]
    assert calls == {0: 1, 1: 1}  # only the touched chunks were decoded
    rng = random.Random(3)
    for _ in range(500):
        offset, length = rng.randrange(1000), rng.randrange(1, 300)
        assert stream.pread(offset, length) == DATA[offset : offset + length]
    assert calls == {i: 1 for i in range(6)}
    assert cache.misses == 6


def test_chunked_zero_length_chunks_are_never_decoded():
    data = bytes(range(30))
    starts = [0, 10, 10, 20]
    decode, calls = chunk_decoder(data, starts)
    stream = ChunkedStream(30, starts, decode, BlockCache(100))
    assert stream.pread(5, 20) == data[5:25]
    assert stream.chunk(1) == b""
    assert 1 not in calls


def test_chunked_wrong_decoded_length_raises():
    good_decode, _ = chunk_decoder(DATA, CHUNK_STARTS)

    def decode(i: int) -> bytes:
        return b"short" if i == 2 else good_decode(i)

    cache = BlockCache(4096)
    stream = ChunkedStream(len(DATA), CHUNK_STARTS, decode, cache, name="file.z")
    assert stream.pread(0, 64) == DATA[:64]
    with pytest.raises(CorruptImage) as excinfo:
        stream.pread(90, 20)  # touches chunk 2 (1 byte at 100)
    assert excinfo.value.layer == "file.z"
    assert str(excinfo.value).startswith("file.z: chunk 2 decoded to 5 bytes, expected 1")
    assert (cache.hits, cache.misses, len(cache)) == (0, 3, 2)  # the bad chunk was not cached


def test_chunked_wrong_decoded_length_names_the_offset():
    stream = ChunkedStream(20, [0, 10], lambda i: b"x", BlockCache(100), name="file.z")
    with pytest.raises(CorruptImage) as excinfo:
        stream.pread(12, 2)
    assert excinfo.value.offset == 10
    assert "offset" in str(excinfo.value)


def test_chunked_cache_eviction_causes_redecode():
    data = bytes(range(250)) * 4  # 1000 bytes
    starts = list(range(0, 1000, 100))
    decode, calls = chunk_decoder(data, starts)
    stream = ChunkedStream(1000, starts, decode, BlockCache(200))  # room for two chunks
    assert stream.pread(0, 300) == data[:300]  # chunks 0, 1, 2: chunk 0 is evicted
    assert calls == {0: 1, 1: 1, 2: 1}
    assert stream.pread(250, 10) == data[250:260]  # chunk 2 still cached
    assert calls[2] == 1
    assert stream.pread(10, 10) == data[10:20]  # chunk 0 decoded again, evicting chunk 1
    assert calls[0] == 2
    assert stream.pread(150, 1) == data[150:151]
    assert calls[1] == 2


def test_chunked_streams_sharing_a_cache_do_not_collide():
    cache = BlockCache(10_000)
    first_data, second_data = b"A" * 50 + b"B" * 50, b"C" * 50 + b"D" * 50
    first = ChunkedStream(100, [0, 50], chunk_decoder(first_data, [0, 50])[0], cache)
    second = ChunkedStream(100, [0, 50], chunk_decoder(second_data, [0, 50])[0], cache)
    assert first.pread(40, 20) == b"A" * 10 + b"B" * 10
    assert second.pread(40, 20) == b"C" * 10 + b"D" * 10
    assert len(cache) == 4


def test_chunked_first_chunk_must_start_at_zero():
    with pytest.raises(ValueError):
        ChunkedStream(10, [1], lambda i: b"", BlockCache(10))
    assert ChunkedStream(0, [], lambda i: b"", BlockCache(10)).pread(0, 5) == b""


# --- StreamIO ------------------------------------------------------------------------------------------

def test_stream_io_with_buffered_reader():
    reader = io.BufferedReader(StreamIO(BytesStream(DATA)), buffer_size=64)
    assert reader.read(10) == DATA[:10]
    assert reader.tell() == 10
    assert reader.read(100) == DATA[10:110]
    assert reader.seek(-5, io.SEEK_END) == 995
    assert reader.read() == DATA[995:]
    assert reader.read(10) == b""
    assert reader.seek(500) == 500
    assert reader.seek(20, io.SEEK_CUR) == 520
    assert reader.read(3) == DATA[520:523]
    reader.seek(0)
    assert reader.read() == DATA


def test_stream_io_raw_seek_tell_and_read_past_end():
    raw = StreamIO(BytesStream(DATA))
    assert raw.readable() and raw.seekable()
    assert raw.seek(0, io.SEEK_END) == 1000
    assert raw.read(10) == b""
    assert raw.seek(5000) == 5000
    assert raw.read(10) == b""
    assert raw.tell() == 5000
    assert raw.seek(-10, io.SEEK_END) == 990
    assert raw.read(100) == DATA[990:]
    assert raw.tell() == 1000
    with pytest.raises(ValueError):
        raw.seek(-1)
    with pytest.raises(ValueError):
        raw.seek(-1001, io.SEEK_END)
    assert raw.tell() == 1000  # a refused seek leaves the position alone


def test_stream_io_readinto_and_readall_over_a_file(open_file):
    raw = StreamIO(open_file(DATA))
    raw.seek(100)
    buf = bytearray(50)
    assert raw.readinto(buf) == 50
    assert bytes(buf) == DATA[100:150]
    assert raw.readall() == DATA[150:]


def test_stream_io_objects_have_independent_positions():
    stream = BytesStream(DATA)
    first, second = StreamIO(stream), StreamIO(stream)
    assert first.read(10) == DATA[:10]
    second.seek(500)
    assert second.read(10) == DATA[500:510]
    assert first.read(10) == DATA[10:20]
    assert (first.tell(), second.tell()) == (20, 510)


# --- concurrency ---------------------------------------------------------------------------------------

def test_threads_hammering_shared_streams(tmp_path):
    rng = random.Random(2024)
    pattern = rng.randbytes(3 << 20)
    (tmp_path / "pattern.img").write_bytes(pattern)
    base = FileStream(str(tmp_path / "pattern.img"))

    runs: list[tuple[Optional[int], int]] = []
    extent_reference = bytearray()
    while len(extent_reference) < (4 << 20):
        length = rng.randrange(1, 64 << 10)
        if rng.random() < 0.2:
            runs.append((None, length))
            extent_reference += bytes(length)
        else:
            start = rng.randrange(0, len(pattern) - length)
            runs.append((start, length))
            extent_reference += pattern[start : start + length]
    extent_reference = bytes(extent_reference)
    extents = ExtentStream.over(base, runs)

    chunked_size = 2 << 20
    starts = [0]
    while starts[-1] < chunked_size - (32 << 10):
        starts.append(starts[-1] + rng.randrange(1 << 10, 32 << 10))
    decode_calls = Counter()
    decode_lock = threading.Lock()

    def decode(i: int) -> bytes:
        with decode_lock:
            decode_calls[i] += 1
        end = starts[i + 1] if i + 1 < len(starts) else chunked_size
        return base.pread(starts[i], end - starts[i])

    cache = BlockCache(128 << 10)
    chunked = ChunkedStream(chunked_size, starts, decode, cache)
    chunked_reference = pattern[:chunked_size]

    def hammer(seed: int) -> int:
        local = random.Random(seed)
        wrong = 0
        for step in range(2000):
            stream, reference = (extents, extent_reference) if step % 2 else (chunked, chunked_reference)
            offset = local.randrange(0, stream.size + 100)
            length = local.randrange(0, 48 << 10)
            expected = reference[offset : offset + length]
            if step % 4 < 2:
                got = stream.pread(offset, length)
            else:
                buf = bytearray(length)
                got = bytes(buf[: stream.readinto(offset, memoryview(buf))])
            if got != expected:
                wrong += abs(len(got) - len(expected)) + sum(a != b for a, b in zip(got, expected))
        return wrong

    try:
        results, errors = run_threads(8, lambda i: hammer(1000 + i))
    finally:
        base.close()
    assert errors == []
    assert results == [0] * 8
    assert cache.current_bytes <= 128 << 10
    assert cache.misses > len(starts)  # evictions forced re-decodes
    assert sum(decode_calls.values()) == cache.misses  # every miss decoded once, no more
