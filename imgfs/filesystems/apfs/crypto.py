"""AES-XTS decryption of an encrypted APFS volume's blocks.

Software encryption (FileVault on a Mac without a T2 chip, an encrypted disk image, ``diskutil apfs
encryptVolume``) encrypts with AES-XTS and one volume key (256 bits: two AES-128 keys) in data units of
512 bytes. A metadata block's tweak is the number of its first 512-byte unit in the container; a file
extent's starts from its crypto id (the block where the extent was first written, so that moving it
keeps its tweaks), counting up one per unit through the extent. Decrypted bytes go into the mount's
cache: the page cache holds only ciphertext.
"""

from __future__ import annotations

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from imgfs.filesystems.apfs.objects import Blocks
from imgfs.io.cache import BlockCache, new_cache_id
from imgfs.io.chunked import ChunkedStream
from imgfs.io.stream import Stream

UNIT = 512
CHUNK_BLOCKS = 16  # a file's blocks are decrypted and cached this many at a time


def xts_decrypt(key: bytes, first_unit: int, data: bytes) -> bytes:
    """``data`` decrypted in 512-byte units, the first with tweak ``first_unit``."""
    algorithm = algorithms.AES(key)
    out = bytearray(len(data))
    view = memoryview(data)
    for start in range(0, len(data), UNIT):
        tweak = (first_unit + start // UNIT).to_bytes(16, "little")
        out[start : start + UNIT] = Cipher(algorithm, modes.XTS(tweak)).decryptor().update(view[start : start + UNIT])
    return bytes(out)


class VolumeCipher:
    """Decrypts one volume's blocks with its volume key (``key``: 32 bytes, the two XTS keys)."""

    def __init__(self, blocks: Blocks, cache: BlockCache, key: bytes) -> None:
        self.blocks = blocks
        self.cache = cache
        self.key = key
        self.units_per_block = blocks.block_size // UNIT
        self._cache_id = new_cache_id()

    def decrypt_metadata(self, block: int, data: bytes) -> bytes:
        return xts_decrypt(self.key, block * self.units_per_block, data)

    def extent_stream(self, block: int, count: int, crypto_id: int) -> Stream:
        """The decrypted bytes of ``count`` blocks from ``block``, whose first unit's tweak is ``crypto_id``."""
        block_size = self.blocks.block_size
        chunk = CHUNK_BLOCKS * block_size
        tweak = (crypto_id or block) * self.units_per_block

        def decode(i: int) -> bytes:
            first = i * CHUNK_BLOCKS
            n = min(CHUNK_BLOCKS, count - first)
            data = self.blocks.read(block + first, n, "an encrypted extent")
            return xts_decrypt(self.key, tweak + first * self.units_per_block, data)

        return ChunkedStream(count * block_size, range(0, count * block_size, chunk), decode, self.cache,
                             name=f"{self.blocks.name}:encrypted extent")
