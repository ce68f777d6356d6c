"""ASIF, the Apple Sparse Image Format of macOS 26 (``diskutil image create``, virtual machines' disks).

Apple publishes no specification; this follows the community's reverse engineering (huven's
"asif-format" notes, Schamper's "Dissecting Apple's Sparse Image Format"). Integers are big-endian.

* The header (``shdw``, version 1, 512 bytes): two directory offsets, the image's UUID, the disk's size
  and its maximum size in blocks, the chunk size (1 MiB) and the block size (512), the metadata's
  virtual chunk.
* Each directory: a sequence number (the greater is the current one), then the physical chunk number
  of each table (0: no table, its whole range reads as zeros).
* A table fills one chunk with groups of ``N = 4 * block size`` 8-byte data entries and one bitmap
  entry; ``C = (chunk size / 8) // (N + 1)`` groups fit, so one table maps ``C * N`` chunks.
* A data entry's top two bits give its state: 00 never written and 10 unmapped read as zeros, 01 the
  whole chunk is stored at the entry's physical chunk number (the low 55 bits), 11 only some blocks
  are: the group's bitmap chunk has 2 bits per block (least significant first), 01 for a stored block
  (at the chunk's place plus its offset), 00 and 10 for zeros.

Reads touch only the tables and bitmaps they need, kept in the mount's cache; stored chunks are read
straight from the file (the page cache holds them). A chunk past the end of a truncated file reads as
zeros for the part that is missing, as macOS does.
"""

from __future__ import annotations

import struct
import uuid
from typing import Any, Optional

from imgfs.errors import CorruptImage, UnsupportedFormat
from imgfs.io.cache import BlockCache, new_cache_id
from imgfs.io.stream import Stream, read_exact
from imgfs.layer import Layer, OpenContext

LAYER = "asif"
MAGIC = b"shdw"
HEADER = struct.Struct(">4sIIIQQ16sQQIHHQ")
HEADER_SIZE = 0x200
STATE_SHIFT, NUMBER_MASK = 62, (1 << 55) - 1
NONE, FULL, UNMAPPED, PARTIAL = 0, 1, 2, 3
MAX_TABLES = 1 << 22  # 4 PiB of 1 MiB chunks takes 33,289
MAX_CHUNK_SIZE = 1 << 30


class AsifImage(Stream, Layer):
    """The disk inside an ASIF file."""

    kind = "asif"

    def __init__(self, base: Stream, cache: BlockCache) -> None:
        self.base = base
        self.cache = cache
        self.name = base.name
        self._cache_id = new_cache_id()
        head = read_exact(base, 0, HEADER.size, LAYER, "the header")
        (magic, version, header_size, _flags, dir_a, dir_b, guid, sectors, max_sectors, chunk_size, block_size,
         segments, self.metadata_chunk) = HEADER.unpack(head)
        if magic != MAGIC:
            raise UnsupportedFormat(f"expected 'shdw', got {magic!r}", layer=LAYER, offset=0)
        if version != 1 or header_size != HEADER_SIZE or segments:
            raise UnsupportedFormat(f"version {version}, header size {header_size}, {segments} segments: only "
                                    "version 1 with one segment is known", layer=LAYER, offset=4)
        if not block_size or block_size % 512 or not chunk_size or chunk_size % block_size \
                or chunk_size > MAX_CHUNK_SIZE:
            raise CorruptImage(f"chunk size {chunk_size} and block size {block_size}", layer=LAYER, offset=0x40)
        if sectors > max_sectors:
            raise CorruptImage(f"{sectors} blocks, more than the maximum {max_sectors}", layer=LAYER, offset=0x30)
        self.chunk_size, self.block_size = chunk_size, block_size
        self.size = sectors * block_size
        self.uuid = str(uuid.UUID(bytes=guid))
        self.per_group = 4 * block_size
        self.groups = (chunk_size // 8) // (self.per_group + 1)
        if self.groups < 1:
            raise CorruptImage(f"a {chunk_size}-byte chunk cannot hold a table", layer=LAYER, offset=0x40)
        self.per_table = self.groups * self.per_group
        tables = -(-max_sectors * block_size // (self.per_table * chunk_size))
        if tables > MAX_TABLES:
            raise CorruptImage(f"{tables} tables for {max_sectors} blocks", layer=LAYER, offset=0x38)
        self.sequence, self.tables = self._directory(dir_a, dir_b, tables)

    def _directory(self, a: int, b: int, count: int) -> tuple[int, tuple[int, ...]]:
        """The directory with the greater sequence number."""
        best: Optional[tuple[int, tuple[int, ...]]] = None
        for offset in (a, b):
            raw = read_exact(self.base, offset, 8 * (count + 1), LAYER, "a directory")
            sequence, *tables = struct.unpack(f">{count + 1}Q", raw)
            if best is None or sequence > best[0]:
                best = (sequence, tuple(tables))
        assert best is not None
        return best

    # -- the chunk map -------------------------------------------------------------------------------

    def _chunk_bytes(self, number: int, what: str) -> bytes:
        """A physical chunk (a table or a bitmap), through the cache."""
        def load() -> bytes:
            data = self.base.pread(number * self.chunk_size, self.chunk_size)
            return data.ljust(self.chunk_size, b"\0")  # a truncated last chunk: zeros, as macOS reads it

        if number * self.chunk_size >= self.base.size:
            raise CorruptImage(f"{what} in chunk {number}, past the end of the file", layer=LAYER,
                               offset=number * self.chunk_size)
        return self.cache.get((self._cache_id, number), load)

    def entry(self, chunk: int) -> tuple[int, int, int]:
        """(state, physical chunk, bitmap chunk) of virtual chunk ``chunk``."""
        table_index, inner = divmod(chunk, self.per_table)
        table = self.tables[table_index] if table_index < len(self.tables) else 0
        if not table:
            return NONE, 0, 0
        raw = self._chunk_bytes(table, f"table {table_index}")
        group, slot = divmod(inner, self.per_group)
        base = group * 8 * (self.per_group + 1)
        value = int.from_bytes(raw[base + 8 * slot : base + 8 * slot + 8], "big")
        bitmap = int.from_bytes(raw[base + 8 * self.per_group : base + 8 * self.per_group + 8], "big")
        return value >> STATE_SHIFT, value & NUMBER_MASK, bitmap & NUMBER_MASK

    def _partial_states(self, chunk: int, bitmap: int) -> bytes:
        """The 2-bit state of each block of a partly stored chunk, one byte per block."""
        per_chunk = self.chunk_size // self.block_size
        raw = self._chunk_bytes(bitmap, f"the bitmap of chunk {chunk}")
        first = (chunk % self.per_group) * per_chunk * 2 // 8
        packed = raw[first : first + per_chunk // 4]
        return bytes((byte >> shift) & 3 for byte in packed for shift in (0, 2, 4, 6))

    # -- reading -------------------------------------------------------------------------------------

    def readinto(self, offset: int, buf: memoryview) -> int:
        n = self._clamp(offset, len(buf))
        view = memoryview(buf)
        done = 0
        while done < n:
            chunk, inner = divmod(offset + done, self.chunk_size)
            count = min(n - done, self.chunk_size - inner)
            self._chunk_into(chunk, inner, view[done : done + count])
            done += count
        return n

    def pread(self, offset: int, length: int) -> bytes:
        buf = bytearray(self._clamp(offset, length))
        self.readinto(offset, memoryview(buf))
        return bytes(buf)

    def _chunk_into(self, chunk: int, inner: int, out: memoryview) -> None:
        state, number, bitmap = self.entry(chunk)
        if state in (NONE, UNMAPPED):
            out[:] = bytes(len(out))
        elif state == FULL:
            self._stored_into(number * self.chunk_size + inner, out)
        else:
            states = self._partial_states(chunk, bitmap)
            pos = 0
            while pos < len(out):
                block, skip = divmod(inner + pos, self.block_size)
                count = min(len(out) - pos, self.block_size - skip)
                if states[block] == 3:
                    raise CorruptImage(f"chunk {chunk}: block {block} has the invalid state 11", layer=LAYER,
                                       offset=bitmap * self.chunk_size)
                if states[block] == 1:
                    self._stored_into(number * self.chunk_size + inner + pos, out[pos : pos + count])
                else:
                    out[pos : pos + count] = bytes(count)
                pos += count

    def _stored_into(self, where: int, out: memoryview) -> None:
        got = self.base.readinto(where, out) if where < self.base.size else 0
        if got < len(out):
            out[got:] = bytes(len(out) - got)  # the file ends inside its last chunk

    def describe(self) -> dict[str, Any]:
        return {"layer": "asif", "uuid": self.uuid, "size": self.size, "chunk_size": self.chunk_size,
                "block_size": self.block_size, "directory_sequence": self.sequence,
                "tables": sum(1 for t in self.tables if t)}


def open_asif(stream: Stream, ctx: OpenContext) -> AsifImage:
    """The registry's opener: the disk inside an ASIF image."""
    return AsifImage(stream, ctx.cache)
