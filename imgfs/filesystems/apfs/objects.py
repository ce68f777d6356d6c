"""APFS objects: the 32-byte header every block starts with, its Fletcher-64 checksum, and block reads.

Every APFS metadata object starts with ``obj_phys_t``: the checksum (8 bytes), the object id, the
transaction id (xid) of its last change, its type and subtype. The checksum is Fletcher-64 over the
rest of the object, taken as little-endian 32-bit words (Apple File System Reference, "Object
Checksums").

``Blocks`` reads whole blocks of a container: physical block ``n`` is at byte ``n * block_size`` of
the container's stream. A block past the container's declared block count, or past the end of the
image, is a ``CorruptImage``. An encrypted volume reads its blocks through a ``decrypt`` function (see
``crypto``), which the object reader applies before checking the checksum.
"""

from __future__ import annotations

import struct
from functools import lru_cache
from typing import Callable, NamedTuple, Optional

from imgfs.errors import CorruptImage
from imgfs.io.stream import Stream

LAYER = "apfs"
HEADER = struct.Struct("<QQQII")  # checksum, oid, xid, type, subtype
MOD32 = 0xFFFFFFFF
MOD64 = MOD32 * MOD32

# object types (the low 16 bits of o_type) and storage flags (the high bits)
NX_SUPERBLOCK, BTREE, BTREE_NODE, OMAP, CHECKPOINT_MAP, FS = 0x01, 0x02, 0x03, 0x0B, 0x0C, 0x0D
FSTREE, SNAPMETATREE, OMAP_SNAPSHOT, FEXT_TREE = 0x0E, 0x10, 0x13, 0x1F
TYPE_MASK = 0x0000FFFF
OBJ_VIRTUAL, OBJ_EPHEMERAL, OBJ_PHYSICAL = 0x00000000, 0x80000000, 0x40000000
STORAGE_MASK = 0xC0000000
OBJ_NOHEADER, OBJ_ENCRYPTED = 0x20000000, 0x10000000
CONTAINER_KEYBAG, VOLUME_KEYBAG = 0x6B657973, 0x72656373  # 'keys', 'recs' (as little-endian u32)

MIN_BLOCK_SIZE, MAX_BLOCK_SIZE = 4096, 65536


class Header(NamedTuple):
    checksum: int
    oid: int
    xid: int
    type: int
    subtype: int

    @property
    def kind(self) -> int:
        return self.type & TYPE_MASK


def fletcher64(data: bytes) -> int:
    """The checksum an object stores in its first 8 bytes, computed over the bytes after them.

    Fletcher-64 over the n 32-bit little-endian words w_i of the body needs, modulo M = 2**32 - 1, the
    word sum S0 and the sum of running sums, which is n*S0 - S1 with S1 the sum of i * w_i. Both come from
    the body read as one big number X, without a Python loop over the words (2 times faster on a 4 KiB
    node, and every node read is checked):

    * 2**32 = 1 + M, so modulo M**2 each 2**(32*i) is 1 + i*M, and X = S0 + M*S1 (mod M**2);
    * S0 mod M is then X mod M, and S0 itself (below n * 2**32) needs only its quotient q by M, which is
      below n: S0 = a + M*q is a - q modulo 2**16, and S0 mod 2**16 is the sum of the words' low halves,
      which the low halves alone, added as base-2**32 digits, give exactly (they cannot carry);
    * the remainders come from folding: the top half of a number moves down onto the bottom half,
      times 1 for a digit sum, times 1 + k*M modulo M**2 (k words down).
    """
    end = 8 + (len(data) - 8) // 4 * 4
    count = (end - 8) // 4
    if count >= 1 << 16:
        raise ValueError(f"{len(data)} bytes: an object is at most {MAX_BLOCK_SIZE} bytes")  # q would not fit
    body = int.from_bytes(data[8:end], "little")
    both = _fold_mod_m2(body, count)  # S0 + M*S1 (mod M**2)
    sum_mod_m = both % MOD32
    low_halves = _digit_sum(body & _low_halves_mask(count), count) & 0xFFFF
    total = sum_mod_m + MOD32 * ((sum_mod_m - low_halves) & 0xFFFF)  # S0, exactly (count < 2**16)
    weighted = ((both - total) % MOD64) // MOD32  # S1 mod M
    low = total % MOD32
    high = (count * total - weighted) % MOD32
    check_low = MOD32 - ((low + high) % MOD32)
    check_high = MOD32 - ((low + check_low) % MOD32)
    return (check_high << 32) | check_low


def _fold_mod_m2(x: int, words: int) -> int:
    """x mod M**2 for x below 2**(32*words): 2**(32*k) = 1 + k*M (mod M**2)."""
    while words > 8:
        k = words // 2
        x = (x & ((1 << (32 * k)) - 1)) + (x >> (32 * k)) * (1 + k * MOD32)
        words = words - k + 3  # the product is at most 3 words longer than the top half
    return x % MOD64


def _digit_sum(x: int, words: int) -> int:
    """The sum of x's base-2**32 digits (x below 2**(32*words)), when no digit sum can carry."""
    while words > 1:
        half = (words + 1) // 2
        x = (x & ((1 << (32 * half)) - 1)) + (x >> (32 * half))
        words = half
    return x


@lru_cache(maxsize=8)
def _low_halves_mask(words: int) -> int:
    return int.from_bytes(b"\xff\xff\x00\x00" * words, "little")


def checksum_ok(data: bytes) -> bool:
    return int.from_bytes(data[:8], "little") == fletcher64(data)


def parse_header(data: bytes) -> Header:
    return Header(*HEADER.unpack_from(data))


Decrypt = Callable[[int, bytes], bytes]  # (physical block, ciphertext of the blocks from it) -> plaintext


class Blocks:
    """The container's blocks, read from its stream; ``block_count`` is what the superblock declares."""

    def __init__(self, stream: Stream, block_size: int, block_count: int) -> None:
        self.stream = stream
        self.block_size = block_size
        self.block_count = block_count
        self.name = stream.name

    def offset(self, block: int) -> int:
        return block * self.block_size

    def check_range(self, block: int, count: int, what: str) -> None:
        if block < 0 or count < 0 or block + count > self.block_count:
            raise CorruptImage(f"{what}: blocks {block} to {block + count - 1} are outside the container's "
                               f"{self.block_count} blocks", layer=LAYER, offset=max(0, block) * self.block_size)

    def read(self, block: int, count: int = 1, what: str = "block") -> bytes:
        """``count`` whole blocks from ``block``; ``CorruptImage`` when they lie outside the container."""
        self.check_range(block, count, what)
        length = count * self.block_size
        data = self.stream.pread(block * self.block_size, length)
        if len(data) < length:
            raise CorruptImage(f"{what}: block {block} lies past the end of the image ({self.stream.size} bytes)",
                               layer=LAYER, offset=block * self.block_size + len(data))
        return data

    def read_object(self, block: int, what: str, decrypt: Optional[Decrypt] = None,
                    expect_type: Optional[int] = None, verify: bool = True) -> bytes:
        """One object block: decrypted when ``decrypt`` is given, its checksum and type checked."""
        data = self.read(block, 1, what)
        if decrypt is not None:
            data = decrypt(block, data)
        if verify and not checksum_ok(data):
            raise CorruptImage(f"{what}: the object's checksum does not match (block {block})", layer=LAYER,
                               offset=self.offset(block))
        if expect_type is not None:
            kind = parse_header(data).kind
            if kind != expect_type:
                raise CorruptImage(f"{what}: expected object type {expect_type:#x}, got {kind:#x} (block {block})",
                                   layer=LAYER, offset=self.offset(block) + 24)
        return data
