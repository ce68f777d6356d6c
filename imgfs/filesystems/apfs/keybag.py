"""APFS key bags: from a passphrase to a volume's encryption key (software encryption only).

The container's key bag (``nx_keylocker``) is encrypted with AES-XTS whose two keys are both the
container's UUID; its entries name volumes by UUID. A volume's ``KB_TAG_VOLUME_KEY`` entry holds its
volume encryption key (VEK), wrapped with a key-encryption key (KEK); its ``KB_TAG_VOLUME_UNLOCK_RECORDS``
entry points at the volume's own key bag, encrypted the same way with the volume's UUID. There, each
``KB_TAG_VOLUME_UNLOCK_RECORDS`` entry is one way to unlock it (a user's password, the personal recovery
key): a KEK wrapped with a key derived from that secret by PBKDF2-HMAC-SHA256. Wrapping is RFC 3394
AES key wrap, so a wrong passphrase fails the unwrap's integrity check.

Both wrapped keys are small DER-like blobs: tag, length (long form when its high bit is set), value;
a 0x30 (KEK) or the outer blob holds a 0xA3 with the wrapping flags (0x82), the wrapped key (0x83), and
for a KEK the iteration count (0x84) and salt (0x85).

A key bag that does not decrypt to one (a Mac with a T2 chip or Apple silicon keeps the container's
key in its Secure Enclave) is refused as hardware-bound; so is a volume without ``APFS_FS_ONEKEY``,
whose files have keys of their own in the keys of a device's data protection classes.
"""

from __future__ import annotations

import hashlib
import struct
import uuid
from dataclasses import dataclass
from typing import Callable, Optional

from cryptography.hazmat.primitives.keywrap import InvalidUnwrap, aes_key_unwrap

from imgfs.codecs import kdf
from imgfs.errors import CorruptImage, EncryptedImage, UnsupportedFormat
from imgfs.filesystems.apfs.crypto import xts_decrypt
from imgfs.filesystems.apfs.objects import CONTAINER_KEYBAG, LAYER, VOLUME_KEYBAG, Blocks, checksum_ok, parse_header
from imgfs.layer import Progress

TAG_VOLUME_KEY, TAG_UNLOCK_RECORDS, TAG_PASSPHRASE_HINT = 2, 3, 4
LOCKER = struct.Struct("<HHI8x")  # version, number of entries, bytes
ENTRY = struct.Struct("<16sHH4x")  # uuid, tag, key length
KEYBAG_VERSION = 2
MAX_KEYBAG_BLOCKS = 16
RECOVERY_KEY_UUID = uuid.UUID("EBC6C064-0000-11AA-AA11-00306543ECAC").bytes
# macOS's tools calibrate PBKDF2 to about a tenth of a second on the Mac that encrypts: the images seen
# carry tens to a few hundred thousand iterations. The shared limit (ten million) would take most of a minute.
MAX_ITERATIONS = kdf.MAX_ITERATIONS
CORESTORAGE_AES128 = 2  # wrapping flags of a 128-bit VEK (a volume converted from CoreStorage)


@dataclass(frozen=True)
class Entry:
    uuid: bytes
    tag: int
    data: bytes


def read_keybag(blocks: Blocks, start: int, count: int, key_uuid: bytes, kind: int, what: str) -> list[Entry]:
    """The entries of a key bag at ``count`` blocks from ``start``, decrypted with ``key_uuid``."""
    if not 0 < count <= MAX_KEYBAG_BLOCKS:
        raise CorruptImage(f"{what}: {count} blocks", layer=LAYER, offset=blocks.offset(start))
    raw = blocks.read(start, count, what)
    plain = xts_decrypt(key_uuid + key_uuid, start * (blocks.block_size // 512), raw)
    first = plain[: blocks.block_size]
    if parse_header(first).type != kind or not checksum_ok(first):
        raise UnsupportedFormat(f"{what} does not decrypt with its UUID: it is damaged, or its key is held by "
                                "the Mac's hardware (T2 or Apple silicon Secure Enclave), which imgfs cannot use",
                                layer=LAYER, offset=blocks.offset(start))
    version, nkeys, nbytes = LOCKER.unpack_from(plain, 32)
    if version != KEYBAG_VERSION or nbytes > len(plain) - 32:
        raise CorruptImage(f"{what}: version {version}, {nbytes} bytes", layer=LAYER, offset=blocks.offset(start))
    entries, pos = [], 32 + LOCKER.size
    for _ in range(nkeys):
        if pos + ENTRY.size > 32 + nbytes:
            raise CorruptImage(f"{what}: entries run past its {nbytes} bytes", layer=LAYER, offset=blocks.offset(start))
        ident, tag, length = ENTRY.unpack_from(plain, pos)
        data = plain[pos + ENTRY.size : pos + ENTRY.size + length]
        if len(data) < length:
            raise CorruptImage(f"{what}: an entry of {length} bytes runs past it", layer=LAYER,
                               offset=blocks.offset(start))
        entries.append(Entry(ident, tag, data))
        pos = (pos + ENTRY.size + length + 15) & ~15
    return entries


def der(data: bytes) -> dict[int, bytes]:
    """The tag -> value pairs of one level of a DER-like blob (a repeated tag keeps its first value)."""
    found: dict[int, bytes] = {}
    pos = 0
    while pos + 2 <= len(data):
        tag, length = data[pos], data[pos + 1]
        pos += 2
        if length & 0x80:
            width = length & 0x7F
            if width > 4 or pos + width > len(data):
                raise ValueError("a length field is damaged")
            length = int.from_bytes(data[pos : pos + width], "big")
            pos += width
        if pos + length > len(data):
            raise ValueError(f"tag {tag:#x}: {length} bytes run past the blob")
        found.setdefault(tag, data[pos : pos + length])
        pos += length
    return found


@dataclass(frozen=True)
class WrappedKey:
    wrapped: bytes
    flags: int
    iterations: int = 0
    salt: bytes = b""


def parse_wrapped(blob: bytes, what: str) -> WrappedKey:
    try:
        outer = der(blob)
        inner = der(der(outer[0x30])[0xA3] if 0x30 in outer else outer[0xA3])
        flags = int.from_bytes(inner.get(0x82, b"")[:4], "little")
        iterations = int.from_bytes(inner.get(0x84, b""), "big")
        return WrappedKey(inner[0x83], flags, iterations, inner.get(0x85, b""))
    except (KeyError, ValueError) as exc:
        raise CorruptImage(f"{what}: the wrapped key blob is damaged ({exc})", layer=LAYER) from None


def derive(passphrase: bytes, kek: WrappedKey, progress: Progress, what: str) -> bytes:
    """PBKDF2-HMAC-SHA256 through ``imgfs.codecs.kdf``: bounded, and stopped by Ctrl-C or SIGTERM within a
    second (the derivation runs in a worker thread the caller waits for in short steps)."""
    if not 0 < kek.iterations <= MAX_ITERATIONS:
        raise EncryptedImage(f"{what}: PBKDF2 with {kek.iterations} iterations (more than the "
                             f"{MAX_ITERATIONS} any real key bag uses) is refused", layer=LAYER)
    length = 16 if len(kek.wrapped) == 24 else 32
    return kdf.pbkdf2("sha256", passphrase, kek.salt, kek.iterations, length, what=what, layer=LAYER,
                      progress=progress)


def unwrap(key: bytes, wrapped: bytes) -> Optional[bytes]:
    try:
        return aes_key_unwrap(key, wrapped)
    except (InvalidUnwrap, ValueError):
        return None


def volume_key(container_bag: list[Entry], volume_bag: Callable[[int, int], list[Entry]], volume_uuid: bytes,
               passphrase: Optional[str], name: str, progress: Progress) -> bytes:
    """The 32-byte XTS key of the volume ``volume_uuid``; ``EncryptedImage`` without the right passphrase."""
    mine = {e.tag: e.data for e in container_bag if e.uuid == volume_uuid}
    if TAG_VOLUME_KEY not in mine or TAG_UNLOCK_RECORDS not in mine:
        raise UnsupportedFormat(f"volume {name!r} is encrypted, and the container's key bag has no key for it "
                                "(a hardware-bound key?)", layer=LAYER)
    vek = parse_wrapped(mine[TAG_VOLUME_KEY], f"volume {name!r}'s key")
    bag_start, bag_blocks = struct.unpack_from("<QQ", mine[TAG_UNLOCK_RECORDS].ljust(16, b"\0"))
    records = [e for e in volume_bag(bag_start, bag_blocks) if e.tag == TAG_UNLOCK_RECORDS]
    if passphrase is None:
        hint = next((e.data.decode("utf-8", "replace") for e in volume_bag(bag_start, bag_blocks)
                     if e.tag == TAG_PASSPHRASE_HINT), "")
        raise EncryptedImage(f"APFS volume {name!r} is encrypted: give its passphrase (or personal recovery key) "
                             "with -o passfile=FILE or the IMGFS_PASSPHRASE environment variable"
                             + (f" (hint: {hint})" if hint else ""))
    secret = passphrase.encode("utf-8")
    looks_like_recovery = len(passphrase) == 29 and passphrase.count("-") == 5
    records.sort(key=lambda e: (e.uuid == RECOVERY_KEY_UUID) != looks_like_recovery)
    blobs = [parse_wrapped(record.data, f"volume {name!r}'s unlock record") for record in records]
    kdf.check_total([blob.iterations for blob in blobs], f"the unlock records of volume {name!r}", LAYER)
    for kek_blob in blobs:
        kek = unwrap(derive(secret, kek_blob, progress, f"key derivation for {name}"), kek_blob.wrapped)
        if kek is None:
            continue
        key = unwrap(kek, vek.wrapped)
        if key is None:
            continue
        if len(key) == 16:  # a 128-bit VEK: the XTS tweak key is derived from it and the volume's UUID
            key += hashlib.sha256(key + volume_uuid).digest()[:16]
        return key
    raise EncryptedImage(f"wrong passphrase for APFS volume {name!r}")


def container_keybag(blocks: Blocks, start: int, count: int, container_uuid: bytes) -> list[Entry]:
    return read_keybag(blocks, start, count, container_uuid, CONTAINER_KEYBAG, "the container's key bag")


def volume_keybag(blocks: Blocks, volume_uuid: bytes) -> Callable[[int, int], list[Entry]]:
    def read(start: int, count: int) -> list[Entry]:
        return read_keybag(blocks, start, count, volume_uuid, VOLUME_KEYBAG, "the volume's key bag")

    return read
