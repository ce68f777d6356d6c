"""ASIF (Apple Sparse Image Format, macOS 26): images written by fs-explorer (an APFS volume of the trap
tree), read by imgfs and by fs-explorer; and hand-made images for the states fs-explorer does not write
for data (a partly stored chunk, an unmapped one, a missing table, a truncated last chunk) and for damage.
"""

from __future__ import annotations

import struct
import uuid
from pathlib import Path

import pytest
from apfslib import apfs_filesystems, fsx_create, fsx_listing, imgfs_listing, trap_tree

from imgfs.containers.asif import AsifImage
from imgfs.errors import CorruptImage, UnsupportedFormat
from imgfs.io.cache import BlockCache
from imgfs.io.stream import FileStream

CHUNK, BLOCK = 1 << 20, 512
PER_GROUP = 4 * BLOCK
FULL, UNMAPPED, PARTIAL = 1 << 62, 2 << 62, 3 << 62


def test_fs_explorer_asif_of_apfs_reads_like_fs_explorer_reads_it(tmp_path: Path) -> None:
    src = trap_tree(tmp_path / "src", big_size=1 << 20)
    image = fsx_create(tmp_path / "traps.asif", src, "ASIF", "GPT")
    (fs,) = apfs_filesystems(image)
    mine, theirs = imgfs_listing(fs), fsx_listing(image)
    assert sorted(mine) == sorted(theirs)
    assert all(mine[p].get(f) == v for p, item in theirs.items() for f, v in item.items())
    disk = AsifImage(FileStream(str(image)), BlockCache(1 << 24))
    assert disk.describe()["chunk_size"] == CHUNK and disk.size % BLOCK == 0


def write_asif(path: Path, size: int, chunks: dict[int, tuple[int, bytes, bytes]], tables: int = 1,
               truncate: int = 0) -> None:
    """An ASIF image of ``size`` bytes: ``chunks`` maps a virtual chunk to (state bits, stored bytes, 2-bit
    block states for a partial chunk). Layout: chunk 0 header and directories, chunk 1 the table, chunk 2
    the bitmap, data from chunk 3."""
    max_sectors = 1 << 32
    header = struct.pack(">4sIIIQQ16sQQIHHQ", b"shdw", 1, 0x200, 0, 0x200, 0x200 + 4096, uuid.uuid4().bytes,
                         size // BLOCK, max_sectors, CHUNK, BLOCK, 0, 0xFFFFFFFF)
    count = -(-max_sectors * BLOCK // ((CHUNK // 8 // (PER_GROUP + 1)) * PER_GROUP * CHUNK))
    directory = struct.pack(f">{count + 1}Q", 2, *([1] + [0] * (count - 1))) if tables else bytes(8 * (count + 1))
    stale = struct.pack(f">{count + 1}Q", 1, *([0] * count))
    table, bitmap, data = bytearray(CHUNK), bytearray(CHUNK), bytearray()
    struct.pack_into(">Q", table, 8 * PER_GROUP, 2)  # the first group's bitmap is chunk 2
    for n, (state, stored, states) in sorted(chunks.items()):
        physical = 3 + len(data) // CHUNK
        struct.pack_into(">Q", table, 8 * n, state | physical)
        data += stored.ljust(CHUNK, b"\0")
        for block, value in enumerate(states):
            bitmap[(n * (CHUNK // BLOCK) + block) // 4] |= value << (2 * (block % 4))
    out = bytearray(CHUNK)
    out[: len(header)] = header
    out[0x200 : 0x200 + len(directory)] = directory
    out[0x200 + 4096 : 0x200 + 4096 + len(stale)] = stale
    whole = bytes(out + table + bitmap + data)
    path.write_bytes(whole[: len(whole) - truncate])


def disk(path: Path) -> AsifImage:
    return AsifImage(FileStream(str(path)), BlockCache(1 << 24))


def test_states_of_chunks(tmp_path: Path) -> None:
    full = bytes(range(256)) * (CHUNK // 256)
    partial = b"P" * CHUNK
    states = [1, 0, 2, 1] + [0] * (CHUNK // BLOCK - 4)  # blocks 0 and 3 stored, 1 and 2 zeros
    write_asif(tmp_path / "a.asif", 5 * CHUNK, {0: (FULL, full, b""), 1: (UNMAPPED, b"", b""),
                                                2: (PARTIAL, partial, bytes(states))})
    d = disk(tmp_path / "a.asif")
    assert d.size == 5 * CHUNK
    assert d.pread(0, CHUNK) == full
    assert d.pread(CHUNK, CHUNK) == bytes(CHUNK)
    want = b"P" * BLOCK + bytes(2 * BLOCK) + b"P" * BLOCK + bytes(CHUNK - 4 * BLOCK)
    assert d.pread(2 * CHUNK, CHUNK) == want
    assert d.pread(2 * CHUNK + 300, 1000) == want[300:1300]
    assert d.pread(3 * CHUNK, 2 * CHUNK) == bytes(2 * CHUNK)  # never written
    assert d.pread(CHUNK - 10, 20) == full[-10:] + bytes(10)  # across chunks


def test_no_table_reads_as_zeros_and_a_truncated_chunk_is_padded(tmp_path: Path) -> None:
    write_asif(tmp_path / "empty.asif", 2 * CHUNK, {}, tables=0)
    assert disk(tmp_path / "empty.asif").pread(0, 2 * CHUNK) == bytes(2 * CHUNK)
    write_asif(tmp_path / "short.asif", CHUNK, {0: (FULL, b"x" * CHUNK, b"")}, truncate=CHUNK // 2)
    assert disk(tmp_path / "short.asif").pread(0, CHUNK) == b"x" * (CHUNK // 2) + bytes(CHUNK // 2)


def test_invalid_block_state_is_an_error(tmp_path: Path) -> None:
    write_asif(tmp_path / "bad.asif", CHUNK, {0: (PARTIAL, b"y" * CHUNK, bytes([3] * (CHUNK // BLOCK)))})
    with pytest.raises(CorruptImage, match="invalid state"):
        disk(tmp_path / "bad.asif").pread(0, 10)


@pytest.mark.parametrize(("offset", "value", "error"), [
    (4, struct.pack(">I", 9), UnsupportedFormat),  # version 9
    (0x40, struct.pack(">I", 1000), CorruptImage),  # a chunk size that is no multiple of the block size
    (0x30, struct.pack(">Q", 1 << 40), CorruptImage),  # more blocks than the maximum
])
def test_a_bad_header_is_one_error(tmp_path: Path, offset: int, value: bytes, error: type) -> None:
    write_asif(tmp_path / "h.asif", CHUNK, {})
    raw = bytearray((tmp_path / "h.asif").read_bytes())
    raw[offset : offset + len(value)] = value
    (tmp_path / "h.asif").write_bytes(bytes(raw))
    with pytest.raises(error):
        disk(tmp_path / "h.asif")
