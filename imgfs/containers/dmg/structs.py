"""UDIF on-disk structures: the koly trailer, the mish block table and its runs, checksums.

Everything is big-endian. A UDIF image is a data fork (the chunks), metadata (an XML plist, or in old
images a binary resource fork) holding one ``blkx`` resource per partition, and the 512-byte ``koly``
trailer that says where each of them is. Each ``blkx`` resource is a ``mish`` table: the partition's
first sector and length, and a list of runs, each mapping sectors of the disk to a chunk of the data
fork (zero fill, raw bytes, or compressed with one codec).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import NamedTuple

from imgfs.errors import CorruptImage, UnsupportedFormat

LAYER = "udif"
SECTOR = 512
KOLY_SIZE = 512
KOLY_MAGIC = b"koly"
MISH_MAGIC = b"mish"

# Run (chunk) types
ZERO = 0x00000000  # zero fill
RAW = 0x00000001  # stored bytes
IGNORE = 0x00000002  # free space: reads as zeros, left out of the checksum
ADC = 0x80000004
ZLIB = 0x80000005
BZIP2 = 0x80000006
LZFSE = 0x80000007
LZMA = 0x80000008  # xz, or LZMA "alone"
COMMENT = 0x7FFFFFFE  # "+beg" / "+end" markers: no data
TERMINATOR = 0xFFFFFFFF

CODEC_NAMES = {ZERO: "zero", RAW: "raw", IGNORE: "ignore", ADC: "adc", ZLIB: "zlib", BZIP2: "bzip2",
               LZFSE: "lzfse", LZMA: "lzma"}
COMPRESSED = frozenset({ADC, ZLIB, BZIP2, LZFSE, LZMA})
HOLES = frozenset({ZERO, IGNORE})

CHECKSUM_CRC32 = 2


@dataclass(frozen=True)
class Checksum:
    """A UDIF checksum: a type (2 = CRC32), its size in bits, and up to 128 bytes of value."""

    kind: int
    bits: int
    value: bytes

    @classmethod
    def parse(cls, buf: bytes) -> Checksum:
        kind, bits = struct.unpack_from(">II", buf)
        return cls(kind, bits, bytes(buf[8:136]))

    @property
    def is_crc32(self) -> bool:
        return self.kind == CHECKSUM_CRC32 and self.bits == 32

    @property
    def crc32(self) -> int:
        return int.from_bytes(self.value[:4], "big")

    def digest(self) -> bytes:
        """The bytes that count: the first ``bits / 8`` of the value (what the master checksum covers)."""
        return self.value[: min(128, self.bits // 8)]

    def describe(self) -> str:
        if self.kind == 0:
            return "none"
        return f"crc32 {self.crc32:08x}" if self.is_crc32 else f"type {self.kind} ({self.bits} bits)"


_KOLY = struct.Struct(">4sIIIQQQQQII16s136sQQ120s136sIQ12s")
assert _KOLY.size == KOLY_SIZE


@dataclass(frozen=True)
class Koly:
    """The 512-byte trailer (UDIFResourceFile). Offsets count from the start of the UDIF image."""

    version: int
    flags: int
    running_data_fork_offset: int
    data_fork_offset: int
    data_fork_length: int
    rsrc_offset: int
    rsrc_length: int
    segment_number: int
    segment_count: int
    segment_id: bytes
    data_checksum: Checksum
    xml_offset: int
    xml_length: int
    master_checksum: Checksum
    image_variant: int
    sector_count: int

    @classmethod
    def parse(cls, buf: bytes, offset: int) -> Koly:
        """The trailer in ``buf`` (512 bytes read at ``offset``, which the errors name)."""
        if len(buf) < KOLY_SIZE:
            raise CorruptImage(f"the koly trailer is cut short ({len(buf)} of 512 bytes)", layer=LAYER, offset=offset)
        (magic, version, header_size, flags, running, df_off, df_len, rs_off, rs_len, seg_no, seg_count, seg_id,
         data_sum, xml_off, xml_len, _reserved, master_sum, variant, sectors, _rest) = _KOLY.unpack_from(buf)
        if magic != KOLY_MAGIC:
            raise UnsupportedFormat(f"no UDIF trailer: expected 'koly', got {magic!r}", layer=LAYER, offset=offset)
        if header_size != KOLY_SIZE:
            raise CorruptImage(f"the koly trailer gives its size as {header_size}, expected 512", layer=LAYER,
                               offset=offset + 8)
        return cls(version, flags, running, df_off, df_len, rs_off, rs_len, seg_no, seg_count, seg_id,
                   Checksum.parse(data_sum), xml_off, xml_len, Checksum.parse(master_sum), variant, sectors)

    def forks(self) -> dict[str, tuple[int, int]]:
        """The parts the trailer points to that are present: name -> (offset, length)."""
        parts = {"data fork": (self.data_fork_offset, self.data_fork_length),
                 "XML plist": (self.xml_offset, self.xml_length),
                 "resource fork": (self.rsrc_offset, self.rsrc_length)}
        return {name: span for name, span in parts.items() if span[1] > 0}


class Run(NamedTuple):
    """One entry of a mish table: ``sector_count`` sectors from ``sector`` (relative to the table's first
    sector), stored as ``comp_length`` bytes at ``comp_offset`` (relative to the data fork) with ``kind``."""

    kind: int
    comment: int
    sector: int
    sector_count: int
    comp_offset: int
    comp_length: int


_MISH = struct.Struct(">4sIQQQII24s136sI")
_RUN = struct.Struct(">IIQQQQ")
MISH_HEADER_SIZE = _MISH.size  # 204
assert MISH_HEADER_SIZE == 0xCC and _RUN.size == 40


@dataclass(frozen=True)
class BlkxTable:
    """A partition's block table (BLKXTable, signature 'mish') with its runs up to the terminator."""

    name: str
    resource_id: int
    first_sector: int
    sector_count: int
    data_offset: int  # added to every run's comp_offset
    checksum: Checksum
    runs: tuple[Run, ...]

    @classmethod
    def parse(cls, data: bytes, name: str, resource_id: int) -> BlkxTable:
        where = f"blkx {name!r}"
        if len(data) < MISH_HEADER_SIZE:
            raise CorruptImage(f"{where}: block table of {len(data)} bytes, shorter than its 204-byte header",
                               layer=LAYER)
        magic, version, first, count, data_offset, _buffers, _descriptors, _reserved, checksum, n_runs = \
            _MISH.unpack_from(data)
        if magic != MISH_MAGIC:
            raise CorruptImage(f"{where}: expected a 'mish' block table, got {magic!r}", layer=LAYER)
        if version != 1:
            raise UnsupportedFormat(f"{where}: block table version {version}, expected 1", layer=LAYER)
        fits = (len(data) - MISH_HEADER_SIZE) // _RUN.size
        if n_runs > fits:
            raise CorruptImage(f"{where}: the table lists {n_runs} runs but holds only {fits}", layer=LAYER)
        runs = []
        for i in range(n_runs):
            run = Run(*_RUN.unpack_from(data, MISH_HEADER_SIZE + i * _RUN.size))
            if run.kind == TERMINATOR:
                break
            if run.kind != COMMENT and run.sector_count:
                runs.append(run)
        return cls(name, resource_id, first, count, data_offset, Checksum.parse(checksum), tuple(runs))


def codec_name(kind: int) -> str:
    return CODEC_NAMES.get(kind, f"0x{kind:08x}")
