"""Key derivation from an image's own numbers: bounded, interruptible, with progress (``imgfs.codecs.kdf``),
and the encrypted DMG's key entries checked before any key is derived for them."""

from __future__ import annotations

import hashlib
import os
import signal
import struct
import subprocess
import time
from pathlib import Path

import pytest
from applewriter import passphrase_entry, write_encrcdsa
from conftest import IMGFS

from imgfs.codecs import kdf
from imgfs.containers.dmg.encrypted import open_encrypted
from imgfs.errors import CorruptImage, EncryptedImage, UnsupportedFormat
from imgfs.io.cache import BlockCache
from imgfs.io.stream import FileStream
from imgfs.layer import OpenContext

PASSPHRASE = "open sesame"


def test_pbkdf2_is_openssls_with_progress():
    seen: list[tuple[str, int, int]] = []
    key = kdf.pbkdf2("sha1", b"pw", b"salt", 200_000, 24, what="derivation", layer="test",
                     progress=lambda *a: seen.append(a))
    assert key == hashlib.pbkdf2_hmac("sha1", b"pw", b"salt", 200_000, 24)
    assert seen[0] == ("derivation", 0, 1000) and seen[-1] == ("derivation", 1000, 1000)
    assert [done for _, done, _ in seen] == sorted(done for _, done, _ in seen)
    assert kdf.pbkdf2("sha256", b"", b"", 1, 32, what="w", layer="t") == hashlib.pbkdf2_hmac("sha256", b"", b"", 1)


@pytest.mark.parametrize("iterations, length, message", [
    (0, 24, "w: PBKDF2 iteration count 0"),
    (kdf.MAX_ITERATIONS + 1, 24, "w: PBKDF2 with 10,000,001 iterations is refused"),
    (1000, 0, "w: a derived key of 0 bytes"),
])
def test_pbkdf2_refuses_before_any_work(iterations, length, message):
    started = time.monotonic()
    with pytest.raises(CorruptImage, match=message):
        kdf.pbkdf2("sha1", b"pw", b"salt", iterations, length, what="w", layer="t")
    assert time.monotonic() - started < 0.5


def context(path: Path, passphrase: str = PASSPHRASE, progress=None) -> OpenContext:
    return OpenContext(str(path), BlockCache(1 << 20), passphrase=lambda: passphrase,
                       **({"progress": progress} if progress else {}))


def test_encrypted_dmg_reports_its_key_derivation(tmp_path):
    image = tmp_path / "e.dmg"
    write_encrcdsa(image, bytes(range(256)) * 64, PASSPHRASE, iterations=50_000)
    seen: list[tuple[str, int, int]] = []
    stream = open_encrypted(FileStream(str(image)), context(image, progress=lambda *a: seen.append(a)))
    assert stream.pread(0, 256) == bytes(range(256))
    assert seen[-1] == (f"key derivation for {image}", 1000, 1000)


def _with_entries(path: Path, count: int, iterations: int, **entry_options) -> Path:
    """An encrcdsa image with ``count`` passphrase entries (the same one repeated: none is for PASSPHRASE)."""
    entry = passphrase_entry("another", bytes(52), salt=b"s" * 20, iterations=1000, **entry_options)
    entry = entry[:8] + struct.pack(">I", iterations) + entry[12:]
    write_encrcdsa(path, bytes(4096), PASSPHRASE, extra_entries=[(1, entry)] * count)
    data = bytearray(path.read_bytes())
    struct.pack_into(">I", data, 72, count)  # only the repeated entries: the good one is dropped
    path.write_bytes(bytes(data))
    return path


def test_many_key_entries_are_refused_before_any_work(tmp_path):
    image = _with_entries(tmp_path / "many.dmg", 64, 2_000_000)
    started = time.monotonic()
    with pytest.raises(CorruptImage, match=r"64 PBKDF2 derivations of 128,000,000 iterations in all are refused"):
        open_encrypted(FileStream(str(image)), context(image))
    assert time.monotonic() - started < 0.5


def test_key_blob_of_an_unknown_cipher_or_key_size_is_one_line(tmp_path):
    image = _with_entries(tmp_path / "bits.dmg", 1, 1000)
    data = bytearray(image.read_bytes())
    entry = struct.unpack_from(">Q", data, 80)[0]
    for where, value, error in ((entry + 84, 0, "3DES key blob with 0-bit key"),  # key bits 0: no key to derive
                                (entry + 88, 99, "key blob cipher 0x63 is not supported")):
        patched = bytearray(data)
        struct.pack_into(">I", patched, where, value)
        image.write_bytes(bytes(patched))
        with pytest.raises(UnsupportedFormat, match=error):
            open_encrypted(FileStream(str(image)), context(image))


def test_a_key_blob_without_an_aes_key_is_a_wrong_passphrase(tmp_path):
    """The blob unwraps, but holds the HMAC key alone: the data key it gives would be 0 bytes long."""
    image = tmp_path / "nokey.dmg"
    write_encrcdsa(image, bytes(4096), PASSPHRASE)
    data = bytearray(image.read_bytes())
    entry = struct.unpack_from(">Q", data, 80)[0]
    body = passphrase_entry(PASSPHRASE, b"h" * 20, salt=b"s" * 20, iterations=1000)
    data[entry : entry + len(body)] = body
    struct.pack_into(">Q", data, 88, len(body))
    struct.pack_into(">I", data, 24, 0)  # and the header's data key: 0 bits
    image.write_bytes(bytes(data))
    with pytest.raises(EncryptedImage, match="wrong passphrase"):
        open_encrypted(FileStream(str(image)), context(image))


@pytest.fixture(scope="module")
def slow_image(tmp_path_factory) -> Path:
    """An encrypted image whose one key entry asks for 9 million iterations (under the limit: about half a
    minute here), and a wrong passphrase to try."""
    return _with_entries(tmp_path_factory.mktemp("slow") / "slow.dmg", 1, 9_000_000)


@pytest.mark.parametrize("how", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
@pytest.mark.parametrize("command", ["ls", "mount"])
def test_a_long_key_derivation_stops_within_a_second(slow_image, tmp_path, how, command):
    args = ["ls", str(slow_image)] if command == "ls" else [str(slow_image), str(tmp_path)]
    proc = subprocess.Popen([IMGFS, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, IMGFS_PASSPHRASE="wrong"))
    time.sleep(1.5)  # python, imports, the header: the derivation is under way
    assert proc.poll() is None, proc.communicate()
    sent = time.monotonic()
    proc.send_signal(how)
    _, err = proc.communicate(timeout=30)
    assert time.monotonic() - sent < 1.0
    assert proc.returncode in (130, -signal.SIGTERM) and "Traceback" not in err, (proc.returncode, err)
