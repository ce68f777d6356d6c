"""Writers of Apple's encrypted and sparse disk images, from the format notes, independent of imgfs's readers.

* ``write_encrcdsa``: an encrcdsa v2 image (hdiutil -encryption): header, one or more passphrase
  entries whose key blob (AES key, HMAC-SHA1 key, "CKIE") is 3DES- or AES-CBC-encrypted with a
  PBKDF2-HMAC-SHA1 key, then the data in AES-CBC blocks with IV = HMAC-SHA1(hmac key, block no.)[:16].
* ``write_cdsaencr``: a cdsaencr v1 image: the data, then the 1276-byte trailer whose keys are wrapped
  with the CMS 3DES key wrap (RFC 3217 with PKCS#7 padding and the fixed IV 0x4adda22c79e82105).
* ``write_sparseimage``: a .sparseimage (``sprs`` header node, index nodes when the bands outgrow it).
* ``write_sparsebundle``: a .sparsebundle folder (Info.plist, bands/N in hex, token).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import plistlib
import struct
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Optional

from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

FIXED_IV = bytes.fromhex("4adda22c79e82105")
ALG_3DES, ALG_AES = 17, 0x80000001


def _pkcs7(data: bytes, block: int) -> bytes:
    padder = padding.PKCS7(block * 8).padder()
    return padder.update(data) + padder.finalize()


def _cbc_encrypt(cipher, iv: bytes, data: bytes) -> bytes:
    encryptor = Cipher(cipher, modes.CBC(iv)).encryptor()
    return encryptor.update(data) + encryptor.finalize()


def encrypt_blocks(data: bytes, aes_key: bytes, hmac_key: bytes, block_size: int) -> bytes:
    """The data padded with zeros to whole blocks, each AES-CBC-encrypted with its HMAC-SHA1 IV."""
    data = data + bytes(-len(data) % block_size)
    out = []
    for number in range(len(data) // block_size):
        iv = hmac.new(hmac_key, struct.pack(">I", number), hashlib.sha1).digest()[:16]
        out.append(_cbc_encrypt(algorithms.AES(aes_key), iv, data[number * block_size : (number + 1) * block_size]))
    return b"".join(out)


def passphrase_entry(passphrase: str, keys: bytes, *, salt: bytes, iterations: int, blob_cipher: str = "3des",
                     iv: Optional[bytes] = None) -> bytes:
    """A type-1 key entry: PBKDF2 parameters, then ``keys`` (+ "CKIE\\0") encrypted in CBC mode, PKCS#7-padded."""
    if blob_cipher == "3des":
        kek = hashlib.pbkdf2_hmac("sha1", passphrase.encode(), salt, iterations, 24)
        iv = iv or os.urandom(8)
        blob = _cbc_encrypt(TripleDES(kek), iv, _pkcs7(keys + b"CKIE\0", 8))
        algorithm, key_bits = ALG_3DES, 192
    else:
        kek = hashlib.pbkdf2_hmac("sha1", passphrase.encode(), salt, iterations, 16)
        iv = iv or os.urandom(16)
        blob = _cbc_encrypt(algorithms.AES(kek), iv, _pkcs7(keys + b"CKIE\0", 16))
        algorithm, key_bits = ALG_AES, 128
    head = struct.pack(">4I32sI32s5I", 103, 0, iterations, len(salt), salt.ljust(32, b"\0"), len(iv),
                       iv.ljust(32, b"\0"), key_bits, algorithm, 7, 6, len(blob))
    return head + blob


def write_encrcdsa(path: Path, plaintext: bytes, passphrase: str, *, key_bits: int = 256, iterations: int = 1000,
                   block_size: int = 4096, salt: Optional[bytes] = None, blob_cipher: str = "3des",
                   extra_entries: Sequence[tuple[int, bytes]] = (), other_passphrases: Iterable[str] = (),
                   aes_key: Optional[bytes] = None, hmac_key: Optional[bytes] = None) -> tuple[bytes, bytes]:
    """An encrcdsa v2 image of ``plaintext``; returns the (AES, HMAC) keys. ``extra_entries`` are (type, bytes)
    key entries written first (a certificate entry, say); ``other_passphrases`` add passphrase entries before
    the one for ``passphrase``, all wrapping the same keys."""
    aes_key = aes_key or os.urandom(key_bits // 8)
    hmac_key = hmac_key or os.urandom(20)
    entries = list(extra_entries)
    for secret in [*other_passphrases, passphrase]:
        entries.append((1, passphrase_entry(secret, aes_key + hmac_key, salt=salt or os.urandom(20),
                                            iterations=iterations, blob_cipher=blob_cipher)))
    table_end = 76 + 20 * len(entries)
    offsets, pos = [], -(-table_end // 16) * 16
    for _, body in entries:
        offsets.append(pos)
        pos += -(-len(body) // 16) * 16
    data_offset = -(-pos // block_size) * block_size
    header = struct.pack(">8s7I16sIQQI", b"encrcdsa", 2, 16, 5, ALG_AES, key_bits, 0x5B, 160, os.urandom(16),
                         block_size, len(plaintext), data_offset, len(entries))
    header += b"".join(struct.pack(">IQQ", kind, off, len(body)) for (kind, body), off in zip(entries, offsets))
    image = bytearray(header.ljust(data_offset, b"\0"))
    for (_, body), off in zip(entries, offsets):
        image[off : off + len(body)] = body
    image += encrypt_blocks(plaintext, aes_key, hmac_key, block_size)
    Path(path).write_bytes(bytes(image))
    return aes_key, hmac_key


def cms_wrap(kek: bytes, key: bytes, iv: Optional[bytes] = None) -> bytes:
    """Apple's CMS 3DES key wrap: (0-length descriptor, key) in CBC with a random IV, IV in front, reversed,
    then CBC again with the fixed IV; PKCS#7 padding at both steps."""
    iv = iv or os.urandom(8)
    inner = iv + _cbc_encrypt(TripleDES(kek), iv, _pkcs7(struct.pack(">I", 0) + key, 8))
    return _cbc_encrypt(TripleDES(kek), FIXED_IV, _pkcs7(inner[::-1], 8))


def write_cdsaencr(path: Path, plaintext: bytes, passphrase: str, *, iterations: int = 1000,
                   salt: Optional[bytes] = None) -> tuple[bytes, bytes]:
    """A cdsaencr v1 image: AES-128 blocks of 4096 bytes from byte 0, then the 1276-byte trailer."""
    aes_key, hmac_key = os.urandom(16), os.urandom(20)
    salt = salt or os.urandom(20)
    kek = hashlib.pbkdf2_hmac("sha1", passphrase.encode(), salt, iterations, 24)
    wrapped_aes, wrapped_hmac = cms_wrap(kek, aes_key), cms_wrap(kek, hmac_key)
    trailer = bytearray(1276)
    struct.pack_into(">II", trailer, 48, iterations, len(salt))
    trailer[56 : 56 + len(salt)] = salt
    struct.pack_into(">I", trailer, 136, len(wrapped_aes))
    trailer[140 : 140 + len(wrapped_aes)] = wrapped_aes
    struct.pack_into(">I", trailer, 436, len(wrapped_hmac))
    trailer[440 : 440 + len(wrapped_hmac)] = wrapped_hmac
    trailer[-8:] = b"cdsaencr"
    Path(path).write_bytes(encrypt_blocks(plaintext, aes_key, hmac_key, 4096) + bytes(trailer))
    return aes_key, hmac_key


def _nonzero_bands(disk: bytes, band_size: int) -> list[int]:
    return [b for b in range(-(-len(disk) // band_size)) if any(disk[b * band_size : (b + 1) * band_size])]


def write_sparseimage(path: Path, disk: bytes, *, sectors_per_band: int = 2048, order: Optional[list[int]] = None,
                      header_slots: int = 1008, index_slots: int = 1010) -> list[int]:
    """A .sparseimage of ``disk`` (a multiple of 512 bytes). Bands that hold only zeros are left out; the
    others are stored in ``order`` (default: reversed, so that the map matters). ``header_slots`` and
    ``index_slots`` below the real 1008 and 1010 force index nodes for small disks. Returns the order."""
    band_size = sectors_per_band * 512
    bands = order if order is not None else _nonzero_bands(disk, band_size)[::-1]
    out = bytearray()
    chunks = [bands[:header_slots]]
    rest = bands[header_slots:]
    while rest:
        chunks.append(rest[:index_slots])
        rest = rest[index_slots:]
    node_offsets = []
    for chunk in chunks:
        node_offsets.append(len(out))
        out += bytes(4096)
        for band in chunk:
            out += disk[band * band_size : (band + 1) * band_size].ljust(band_size, b"\0")
    sectors = len(disk) // 512
    for i, chunk in enumerate(chunks):
        following = node_offsets[i + 1] if i + 1 < len(chunks) else 0
        if i == 0:
            node = struct.pack(">4s4IQQ28x", b"sprs", 3, sectors_per_band, 1, sectors & 0xFFFFFFFF, following, sectors)
        else:
            node = struct.pack(">4sIIQ36x", b"sprs", i, 1, following)
        node += b"".join(struct.pack(">I", band + 1) for band in chunk)
        out[node_offsets[i] : node_offsets[i] + len(node)] = node
    Path(path).write_bytes(bytes(out))
    return bands


def write_sparsebundle(path: Path, disk: bytes, *, band_size: int = 1 << 20, trim: bool = True,
                       info: Optional[dict] = None, band_bytes: Optional[dict[int, bytes]] = None,
                       token: bytes = b"") -> Path:
    """A .sparsebundle folder of ``disk``: all-zero bands left out, trailing zeros of a band cut off when
    ``trim`` (hdiutil's short bands). ``band_bytes`` replaces what is written (encrypted bands);
    ``info`` overrides Info.plist keys."""
    path = Path(path)
    (path / "bands").mkdir(parents=True, exist_ok=True)
    plist = {"CFBundleInfoDictionaryVersion": "6.0", "band-size": band_size, "bundle-backingstore-version": 1,
             "diskimage-bundle-type": "com.apple.diskimage.sparsebundle", "size": len(disk)}
    plist.update(info or {})
    (path / "Info.plist").write_bytes(plistlib.dumps(plist))
    (path / "Info.bckup").write_bytes(plistlib.dumps(plist))
    (path / "token").write_bytes(token)
    contents = band_bytes if band_bytes is not None else {
        b: disk[b * band_size : (b + 1) * band_size] for b in _nonzero_bands(disk, band_size)}
    for band, data in contents.items():
        (path / "bands" / f"{band:x}").write_bytes(data.rstrip(b"\0") if trim else data)
    return path


def encrcdsa_bundle_token(passphrase: str, size: int, *, key_bits: int = 256, block_size: int = 4096,
                          iterations: int = 1000) -> tuple[bytes, bytes, bytes]:
    """The ``token`` of an encrypted sparse bundle (an encrcdsa header, no data) and its (AES, HMAC) keys."""
    aes_key, hmac_key = os.urandom(key_bits // 8), os.urandom(20)
    entry = passphrase_entry(passphrase, aes_key + hmac_key, salt=os.urandom(20), iterations=iterations)
    header = struct.pack(">8s7I16sIQQI", b"encrcdsa", 2, 16, 5, ALG_AES, key_bits, 0x5B, 160, os.urandom(16),
                         block_size, size, 0, 1) + struct.pack(">IQQ", 1, 128, len(entry))
    return header.ljust(128, b"\0") + entry, aes_key, hmac_key
