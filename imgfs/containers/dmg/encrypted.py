"""Encrypted Apple disk images (hdiutil ``-encryption``): ``encrcdsa`` (v2) and ``cdsaencr`` (v1).

Both wrap any other image (a UDIF .dmg, a sparse image, a raw disk) in AES-CBC, one IV per block:
``IV = HMAC-SHA1(hmac_key, block number as 32-bit big-endian)[:16]``. The AES and HMAC keys are stored
wrapped by a key that PBKDF2-HMAC-SHA1 derives from the passphrase.

* v2 (``encrcdsa`` at byte 0): a header with the block size, the plaintext size and the data offset,
  then a table of key entries. A passphrase entry (type 1) holds the PBKDF2 salt and iteration count
  and a key blob encrypted in CBC mode (3DES-EDE, or AES on newer images) with the entry's IV and
  PKCS#7 padding. The blob holds the AES key, the HMAC key and, on hdiutil's images, ``CKIE``.
* v1 (``cdsaencr`` in the last 8 bytes): a 1276-byte trailer. The AES and HMAC keys are wrapped
  apart, each by the CMS 3DES key wrap (RFC 3217: decrypt with the fixed IV 0x4adda22c79e82105, reverse,
  decrypt again with the IV in front); data starts at byte 0 in 4096-byte blocks.

Blocks are decrypted lazily, a group at a time, into the mount's BlockCache.
"""

from __future__ import annotations

import hmac
import struct
from dataclasses import dataclass, field
from typing import Any, Optional

from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from imgfs.codecs import kdf
from imgfs.errors import CorruptImage, EncryptedImage, UnsupportedFormat
from imgfs.io.cache import BlockCache
from imgfs.io.chunked import ChunkedStream
from imgfs.io.stream import Stream, read_exact
from imgfs.layer import Layer, OpenContext

try:  # cryptography >= 43 keeps 3DES among the "decrepit" ciphers
    from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
except ImportError:  # pragma: no cover - older cryptography
    TripleDES = algorithms.TripleDES  # type: ignore[misc]

V2_MAGIC = b"encrcdsa"
V1_MAGIC = b"cdsaencr"
LAYER = "encrypted dmg"

# v2 header: magic, version, IV size, mode, algorithm, data key bits, PRNG, HMAC key bits, UUID,
# block size, data size, data offset, number of key entries; the key entry pointers follow.
V2_HEADER = struct.Struct(">8s7I16sIQQI")
KEY_POINTER = struct.Struct(">IQQ")  # type, offset, size
# A passphrase entry: KDF algorithm, PRNG, iterations, salt size, salt, blob IV size, blob IV,
# blob key bits, blob algorithm, blob padding, blob mode, blob size; the blob follows.
PASSWORD_ENTRY = struct.Struct(">4I32sI32s5I")
V1_TRAILER_SIZE = 1276
V1_BLOCK_SIZE = 4096
V1_FIXED_IV = bytes.fromhex("4adda22c79e82105")

KDF_PBKDF2_SHA1 = 103
ALG_3DES = 17
ALG_AES = 0x80000001
ENTRY_PASSPHRASE = 1
HMAC_KEY_SIZE = 20

MAX_ENTRIES = 64
MAX_ENTRY_SIZE = 1 << 16
MAX_BLOB_SIZE = 4096
AES_KEY_SIZES = (16, 24, 32)
MIN_BLOCK_SIZE, MAX_BLOCK_SIZE = 16, 1 << 20
GROUP_SIZE = 64 << 10  # bytes decrypted (and cached) at a time


@dataclass(frozen=True)
class PassphraseEntry:
    iterations: int
    salt: bytes
    blob_iv: bytes
    blob_key_bits: int
    blob_algorithm: int
    blob: bytes


@dataclass
class EncryptionHeader:
    version: int
    data_key_bits: int
    block_size: int
    data_size: int
    data_offset: int
    entries: list[PassphraseEntry] = field(default_factory=list)
    other_entries: list[int] = field(default_factory=list)  # types of the entries that need no passphrase
    v1_wrapped: tuple[bytes, bytes] = (b"", b"")  # v1: the wrapped AES key and HMAC key

    def label(self) -> str:
        name = "encrcdsa v2" if self.version == 2 else "cdsaencr v1"
        return f"AES-{self.data_key_bits}, {name}"


# -- headers ------------------------------------------------------------------------------------------


def read_v2_header(stream: Stream) -> EncryptionHeader:
    """The encrcdsa header and its passphrase entries; ``CorruptImage`` for anything impossible."""
    fields = V2_HEADER.unpack(read_exact(stream, 0, V2_HEADER.size, LAYER, "encrcdsa header"))
    magic, version, _iv_size, _mode, _alg, key_bits, _prng, _hmac_bits, _uuid = fields[:9]
    block_size, data_size, data_offset, count = fields[9:]
    if magic != V2_MAGIC:
        raise UnsupportedFormat(f"expected {V2_MAGIC!r} at byte 0, got {magic!r}", layer=LAYER)
    if version != 2:
        raise UnsupportedFormat(f"encrcdsa version {version} is not supported (only 2)", layer=LAYER, offset=8)
    _check_block_size(block_size, 52)
    if count > MAX_ENTRIES:
        raise CorruptImage(f"absurd number of key entries: {count}", layer=LAYER, offset=72)
    header = EncryptionHeader(2, key_bits, block_size, data_size, data_offset)
    for i in range(count):
        where = V2_HEADER.size + i * KEY_POINTER.size
        kind, offset, size = KEY_POINTER.unpack(read_exact(stream, where, KEY_POINTER.size, LAYER, f"key entry {i}"))
        if kind == ENTRY_PASSPHRASE:
            header.entries.append(_read_passphrase_entry(stream, offset, size))
        else:
            header.other_entries.append(kind)
    return header


def _check_block_size(block_size: int, where: int) -> None:
    if not MIN_BLOCK_SIZE <= block_size <= MAX_BLOCK_SIZE or block_size % 16:
        raise CorruptImage(f"absurd block size {block_size} (expected a multiple of 16 up to {MAX_BLOCK_SIZE})",
                           layer=LAYER, offset=where)


def _read_passphrase_entry(stream: Stream, offset: int, size: int) -> PassphraseEntry:
    if not PASSWORD_ENTRY.size <= size <= MAX_ENTRY_SIZE:
        raise CorruptImage(f"absurd passphrase entry size {size}", layer=LAYER, offset=offset)
    data = read_exact(stream, offset, size, LAYER, "passphrase entry")
    kdf_id, _prng, iterations, salt_size, salt, iv_size, iv, key_bits, algorithm, _pad, _mode, blob_size = \
        PASSWORD_ENTRY.unpack_from(data)
    if kdf_id != KDF_PBKDF2_SHA1:
        raise UnsupportedFormat(f"key derivation {kdf_id} is not supported (only PBKDF2-HMAC-SHA1, 103)", layer=LAYER,
                                offset=offset)
    if salt_size > 32 or iv_size > 32:
        raise CorruptImage(f"absurd salt or IV size ({salt_size}, {iv_size}) in a passphrase entry", layer=LAYER,
                           offset=offset)
    kdf.check_iterations(iterations, "passphrase entry", LAYER, offset + 8)
    if not 0 < blob_size <= min(MAX_BLOB_SIZE, size - PASSWORD_ENTRY.size) or blob_size % 8:
        raise CorruptImage(f"absurd key blob length {blob_size} in a {size}-byte passphrase entry", layer=LAYER,
                           offset=offset + PASSWORD_ENTRY.size - 4)
    blob = data[PASSWORD_ENTRY.size : PASSWORD_ENTRY.size + blob_size]
    return PassphraseEntry(iterations, salt[:salt_size], iv[:iv_size], key_bits, algorithm, blob)


def read_v1_trailer(stream: Stream) -> EncryptionHeader:
    """The cdsaencr trailer at the end of the image."""
    start = stream.size - V1_TRAILER_SIZE
    if start < 0:
        raise CorruptImage(f"a cdsaencr image needs a {V1_TRAILER_SIZE}-byte trailer; this one has "
                           f"{stream.size} bytes", layer=LAYER)
    data = read_exact(stream, start, V1_TRAILER_SIZE, LAYER, "cdsaencr trailer")
    if data[-8:] != V1_MAGIC:
        raise UnsupportedFormat(f"expected {V1_MAGIC!r} in the last 8 bytes, got {data[-8:]!r}", layer=LAYER)
    iterations, salt_size = struct.unpack_from(">II", data, 48)
    aes_size, = struct.unpack_from(">I", data, 136)
    hmac_size, = struct.unpack_from(">I", data, 436)
    if salt_size > 48 or aes_size > 296 or hmac_size > 300 or aes_size % 8 or hmac_size % 8:
        raise CorruptImage(f"absurd salt or wrapped key length ({salt_size}, {aes_size}, {hmac_size}) in the "
                           "cdsaencr trailer", layer=LAYER, offset=start + 52)
    iterations = iterations or 1000  # what the first versions wrote, which left the field empty
    kdf.check_iterations(iterations, "cdsaencr trailer", LAYER, start + 48)
    entry = PassphraseEntry(iterations, data[56 : 56 + salt_size], V1_FIXED_IV, 192, ALG_3DES, b"")
    data_size = start // V1_BLOCK_SIZE * V1_BLOCK_SIZE
    header = EncryptionHeader(1, 128, V1_BLOCK_SIZE, data_size, 0, [entry])
    header.v1_wrapped = (data[140 : 140 + aes_size], data[440 : 440 + hmac_size])
    return header


# -- keys ---------------------------------------------------------------------------------------------


def _cbc_decrypt(algorithm: int, key: bytes, iv: bytes, data: bytes) -> Optional[bytes]:
    """CBC-decrypt and strip PKCS#7 padding; None when the padding is wrong (a wrong key, mostly)."""
    cipher: Any
    if algorithm == ALG_3DES:
        cipher, block = TripleDES(key), 64
    elif algorithm == ALG_AES:
        cipher, block = algorithms.AES(key), 128
    else:
        raise UnsupportedFormat(f"key blob cipher {algorithm:#x} is not supported (only 3DES and AES)", layer=LAYER)
    if not data or len(data) % (block // 8):
        return None
    decryptor = Cipher(cipher, modes.CBC(iv.ljust(block // 8, b"\0")[: block // 8])).decryptor()
    plain = decryptor.update(data) + decryptor.finalize()
    unpadder = padding.PKCS7(block).unpadder()
    try:
        return unpadder.update(plain) + unpadder.finalize()
    except ValueError:
        return None


def _derive(passphrase: bytes, entry: PassphraseEntry, ctx: OpenContext) -> bytes:
    return kdf.pbkdf2("sha1", passphrase, entry.salt, entry.iterations, entry.blob_key_bits // 8,
                      what=f"key derivation for {ctx.path}", layer=LAYER, progress=ctx.progress)


def _split_v2_blob(plain: bytes, header_key_size: int) -> Optional[tuple[bytes, bytes]]:
    """The AES and HMAC keys out of an unwrapped v2 blob, if its layout holds (a wrong key breaks it)."""
    for key_size in dict.fromkeys(k for k in (header_key_size, 32, 16) if k in AES_KEY_SIZES):
        end = key_size + HMAC_KEY_SIZE
        if len(plain) == end or plain[end : end + 4] == b"CKIE":
            return plain[:key_size], plain[key_size:end]
    return None


def _check_blob_cipher(entry: PassphraseEntry) -> None:
    """The key blob's cipher and key size, checked before any key is derived for it."""
    if entry.blob_algorithm not in (ALG_3DES, ALG_AES):
        raise UnsupportedFormat(f"key blob cipher {entry.blob_algorithm:#x} is not supported (only 3DES and AES)",
                                layer=LAYER)
    if entry.blob_algorithm == ALG_3DES and entry.blob_key_bits != 192:
        raise UnsupportedFormat(f"3DES key blob with {entry.blob_key_bits}-bit key", layer=LAYER)
    if entry.blob_algorithm == ALG_AES and entry.blob_key_bits not in (128, 192, 256):
        raise UnsupportedFormat(f"AES key blob with {entry.blob_key_bits}-bit key", layer=LAYER)


def _unwrap_v2(entry: PassphraseEntry, passphrase: bytes, key_size: int,
               ctx: OpenContext) -> Optional[tuple[bytes, bytes]]:
    plain = _cbc_decrypt(entry.blob_algorithm, _derive(passphrase, entry, ctx), entry.blob_iv, entry.blob)
    return None if plain is None else _split_v2_blob(plain, key_size)


def _cms_unwrap(kek: bytes, wrapped: bytes) -> Optional[bytes]:
    """Apple's CMS 3DES key unwrap (RFC 3217 with PKCS#7 padding): the key after its descriptor."""
    reversed_inner = _cbc_decrypt(ALG_3DES, kek, V1_FIXED_IV, wrapped)
    if reversed_inner is None or len(reversed_inner) < 16:
        return None
    inner = reversed_inner[::-1]
    plain = _cbc_decrypt(ALG_3DES, kek, inner[:8], inner[8:])
    if plain is None or len(plain) < 4:
        return None
    descriptor_size = int.from_bytes(plain[:4], "big")
    key = plain[4 + descriptor_size :]
    return key if 4 + descriptor_size < len(plain) else None


def _unwrap_v1(header: EncryptionHeader, passphrase: bytes, ctx: OpenContext) -> Optional[tuple[bytes, bytes]]:
    kek = _derive(passphrase, header.entries[0], ctx)
    aes_key = _cms_unwrap(kek, header.v1_wrapped[0])
    hmac_key = _cms_unwrap(kek, header.v1_wrapped[1]) if aes_key else None
    if aes_key is None or hmac_key is None or len(aes_key) not in (16, 32) or len(hmac_key) != HMAC_KEY_SIZE:
        return None
    return aes_key, hmac_key


def unlock(header: EncryptionHeader, name: str, ctx: OpenContext) -> tuple[bytes, bytes]:
    """The AES and HMAC keys, from the passphrase the context gives; ``EncryptedImage`` when it cannot."""
    if not header.entries:
        kinds = ", ".join(str(k) for k in header.other_entries) or "none"
        raise EncryptedImage(f"{name} is encrypted ({header.label()}) with a certificate or key, not a passphrase "
                             f"(key entry types: {kinds}): not supported")
    passphrase = ctx.passphrase()
    if passphrase is None:
        raise EncryptedImage(f"{name} is encrypted ({header.label()}): give the passphrase with -o passfile=FILE "
                             "or the IMGFS_PASSPHRASE environment variable")
    secret = passphrase.encode("utf-8", "surrogateescape")
    if header.version == 1:
        keys = _unwrap_v1(header, secret, ctx)
    else:
        for entry in header.entries:
            _check_blob_cipher(entry)
        kdf.check_total([e.iterations for e in header.entries], f"the key entries of {name}", LAYER)
        key_size = header.data_key_bits // 8
        keys = next((k for e in header.entries if (k := _unwrap_v2(e, secret, key_size, ctx))), None)
    if keys is None:
        raise EncryptedImage(f"wrong passphrase for {name}")
    return keys


# -- data ---------------------------------------------------------------------------------------------


class DecryptedStream(ChunkedStream, Layer):
    """The plaintext of an encrypted image: AES-CBC blocks, each with its HMAC-SHA1 IV."""

    def __init__(self, source: Stream, header: EncryptionHeader, keys: tuple[bytes, bytes], cache: BlockCache,
                 name: str, details: Optional[dict[str, Any]] = None, owns: Optional[Layer] = None) -> None:
        self.source = source
        self._owns = owns  # what this layer opened itself (an encrypted sparse bundle's bands)
        self.header = header
        self._aes_key, self._hmac_key = keys
        self._per_group = max(1, GROUP_SIZE // header.block_size)
        span = self._per_group * header.block_size
        self._details = details or {}
        super().__init__(header.data_size, range(0, header.data_size, span), self._decrypt, cache, name=name)

    def _decrypt(self, group: int) -> bytes:
        block_size = self.header.block_size
        first = group * self._per_group
        want = min(self._per_group * block_size, self.size - first * block_size)
        count = -(-want // block_size)
        where = self.header.data_offset + first * block_size
        data = self.source.pread(where, count * block_size)
        if len(data) < count * block_size:
            raise CorruptImage(f"encrypted block {first + len(data) // block_size} is cut short: the image ends "
                               f"at byte {self.source.size}", layer=LAYER, offset=where + len(data))
        decryptor = Cipher(algorithms.AES(self._aes_key), modes.ECB()).decryptor()
        raw = decryptor.update(data) + decryptor.finalize()
        chain = b"".join(self._iv(first + i) + data[i * block_size : (i + 1) * block_size - 16] for i in range(count))
        plain = (int.from_bytes(raw, "little") ^ int.from_bytes(chain, "little")).to_bytes(len(raw), "little")
        return plain[:want]

    def _iv(self, block: int) -> bytes:
        return hmac.digest(self._hmac_key, struct.pack(">I", block & 0xFFFFFFFF), "sha1")[:16]

    def close(self) -> None:
        if self._owns is not None:
            self._owns.close()

    def describe(self) -> dict[str, Any]:
        h = self.header
        info: dict[str, Any] = {
            "layer": "encrcdsa" if h.version == 2 else "cdsaencr", "version": h.version,
            "cipher": f"AES-{len(self._aes_key) * 8}-CBC", "key_bits": len(self._aes_key) * 8,
            "kdf": "PBKDF2-HMAC-SHA1", "iterations": h.entries[0].iterations, "block_size": h.block_size,
            "data_offset": h.data_offset, "data_size": h.data_size,
            "key_wrap": "3DES-EDE-CBC" if h.entries[0].blob_algorithm == ALG_3DES else "AES-CBC",
        }
        info.update(self._details)
        return info


def open_encrypted(stream: Stream, ctx: OpenContext) -> DecryptedStream:
    """The decrypted image inside an encrcdsa (v2) or cdsaencr (v1) file."""
    head = stream.pread(0, len(V2_MAGIC))
    header = read_v2_header(stream) if head == V2_MAGIC else read_v1_trailer(stream)
    if header.data_offset > stream.size:
        raise CorruptImage(f"the encrypted data starts at byte {header.data_offset}, past the end of the image "
                           f"({stream.size} bytes)", layer=LAYER, offset=64)
    return open_encrypted_parts(header, stream, ctx)


def open_encrypted_parts(header: EncryptionHeader, data: Stream, ctx: OpenContext,
                         details: Optional[dict[str, Any]] = None, owns: Optional[Layer] = None) -> DecryptedStream:
    """Decrypt ``data`` with a header read elsewhere (an encrypted sparse bundle keeps it in ``token``)."""
    keys = unlock(header, ctx.path, ctx)
    return DecryptedStream(data, header, keys, ctx.cache, name=f"{ctx.path} (decrypted)", details=details, owns=owns)
