"""Encrypted Apple images (encrcdsa v2, cdsaencr v1), .sparseimage and .sparsebundle.

Images come from the writers in ``applewriter.py`` (made from the format notes, not from imgfs's readers):
every one is read back byte for byte, then mounted with a FAT or ext4 filesystem inside and compared
with the tree it was built from. The real encrypted DMG of the corpus (hdiutil, AES-256, passphrase
``test123``) must decrypt to the UDIF its oracle names, which 7-Zip then reads.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import plistlib
import random
import shutil
import struct
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Optional

import pytest
from applewriter import (
    encrcdsa_bundle_token,
    encrypt_blocks,
    write_cdsaencr,
    write_encrcdsa,
    write_sparsebundle,
    write_sparseimage,
)
from conftest import compare_trees, is_mounted, run_imgfs, unmount
from corpuslib import corpus_dir
from isotools import pseudo_random, write_file

from imgfs.containers.dmg import open_udif
from imgfs.containers.dmg.encrypted import open_encrypted
from imgfs.containers.sparse import is_sparsebundle, open_sparsebundle, open_sparseimage
from imgfs.errors import CorruptImage, EncryptedImage, ImageError
from imgfs.io.cache import BlockCache
from imgfs.io.stream import FileStream, Stream
from imgfs.layer import OpenContext
from imgfs.registry import detect

PASSPHRASE = "correct horse ☃ battery"
AES_DMG = corpus_dir() / "dmg" / "dmgwiz" / "input_aes256.dmg"
ROOT = Path(__file__).resolve().parents[1]


def context(path, passphrase: Optional[str] = None, calls: Optional[list] = None) -> OpenContext:
    def ask() -> Optional[str]:
        if calls is not None:
            calls.append(1)
        return passphrase

    return OpenContext(str(path), BlockCache(8 << 20), passphrase=ask)


def assert_reads_like(stream: Stream, expected: bytes, seed: int = 1) -> None:
    """The whole stream, then random pieces (across block and band edges), equal ``expected``."""
    assert stream.size == len(expected)
    assert stream.pread(0, stream.size + 100) == expected
    rng = random.Random(seed)
    for _ in range(200):
        offset = rng.randrange(0, len(expected) + 1)
        length = rng.choice([1, 15, 16, 17, 511, 512, 513, 4096, 70000, 300000])
        assert stream.pread(offset, length) == expected[offset : offset + length], (offset, length)


def disk_with_holes(size: int, band_size: int, seed: int = 3) -> bytes:
    """Random bytes, but every third band all zeros (never stored) and a few bands half empty."""
    disk = bytearray(pseudo_random(size, seed))
    for band in range(0, -(-size // band_size), 3):
        disk[band * band_size : (band + 1) * band_size] = bytes(len(disk[band * band_size : (band + 1) * band_size]))
    for band in range(1, -(-size // band_size), 4):
        end = (band + 1) * band_size
        disk[end - band_size // 2 : end] = bytes(len(disk[end - band_size // 2 : end]))
    return bytes(disk)


# -- encrcdsa v2 ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("key_bits,block_size,blob", [(256, 4096, "3des"), (128, 4096, "3des"), (256, 512, "3des"),
                                                      (128, 512, "aes"), (256, 16384, "aes")])
def test_encrcdsa_round_trip(tmp_path, key_bits, block_size, blob):
    plain = pseudo_random(300_000 + 123, key_bits + block_size)
    image = tmp_path / "e.dmg"
    write_encrcdsa(image, plain, PASSPHRASE, key_bits=key_bits, block_size=block_size, blob_cipher=blob)
    stream = open_encrypted(FileStream(str(image)), context(image, PASSPHRASE))
    assert_reads_like(stream, plain)
    info = stream.describe()
    assert (info["layer"], info["version"], info["key_bits"], info["block_size"]) == \
           ("encrcdsa", 2, key_bits, block_size)
    assert info["cipher"] == f"AES-{key_bits}-CBC" and info["data_size"] == len(plain)
    assert info["key_wrap"] == ("3DES-EDE-CBC" if blob == "3des" else "AES-CBC")


def test_decrypted_blocks_go_through_the_mount_cache(tmp_path):
    plain = pseudo_random(200_000, 5)
    image = tmp_path / "e.dmg"
    write_encrcdsa(image, plain, PASSPHRASE, block_size=512)
    ctx = context(image, PASSPHRASE)
    stream = open_encrypted(FileStream(str(image)), ctx)
    stream.pread(1000, 10)
    stream.pread(2000, 10)
    assert ctx.cache.stats()["misses"] == 1 and ctx.cache.stats()["hits"] == 1
    assert stream.pread(0, len(plain)) == plain


def test_every_passphrase_entry_is_tried_and_other_entries_are_skipped(tmp_path):
    plain = pseudo_random(10_000, 6)
    image = tmp_path / "e.dmg"
    certificate = (2, b"\x30\x82" + bytes(200))  # a public-key entry: no passphrase opens it
    write_encrcdsa(image, plain, PASSPHRASE, extra_entries=[certificate], other_passphrases=["first one"])
    for secret in ("first one", PASSPHRASE):
        assert open_encrypted(FileStream(str(image)), context(image, secret)).pread(0, len(plain)) == plain


def test_missing_and_wrong_passphrase(tmp_path):
    image = tmp_path / "secret.dmg"
    write_encrcdsa(image, b"x" * 5000, PASSPHRASE, key_bits=128)
    with pytest.raises(EncryptedImage) as missing:
        open_encrypted(FileStream(str(image)), context(image))
    assert str(missing.value) == (f"{image} is encrypted (AES-128, encrcdsa v2): give the passphrase with "
                                  "-o passfile=FILE or the IMGFS_PASSPHRASE environment variable")
    calls: list = []
    with pytest.raises(EncryptedImage) as wrong:
        open_encrypted(FileStream(str(image)), context(image, "correct horse", calls))
    assert str(wrong.value) == f"wrong passphrase for {image}"
    assert calls == [1]


def test_no_passphrase_entry_at_all(tmp_path):
    image = tmp_path / "cert.dmg"
    write_encrcdsa(image, b"x" * 5000, PASSPHRASE)
    data = bytearray(image.read_bytes())
    struct.pack_into(">I", data, 76, 2)  # the only entry becomes a certificate entry
    image.write_bytes(bytes(data))
    with pytest.raises(EncryptedImage, match=r"with a certificate or key, not a passphrase \(key entry types: 2\)"):
        open_encrypted(FileStream(str(image)), context(image, PASSPHRASE))


# -- cdsaencr v1 ---------------------------------------------------------------------------------------


def test_cdsaencr_round_trip_and_wrong_passphrase(tmp_path):
    plain = pseudo_random(5 * 4096, 7)
    image = tmp_path / "v1.dmg"
    write_cdsaencr(image, plain, PASSPHRASE, iterations=2000)
    stream = open_encrypted(FileStream(str(image)), context(image, PASSPHRASE))
    assert_reads_like(stream, plain)
    assert (stream.describe()["layer"], stream.describe()["version"], stream.describe()["iterations"]) == \
           ("cdsaencr", 1, 2000)
    with pytest.raises(EncryptedImage, match="^wrong passphrase for "):
        open_encrypted(FileStream(str(image)), context(image, "nope"))
    with pytest.raises(EncryptedImage, match=r"encrypted \(AES-128, cdsaencr v1\): give the passphrase"):
        open_encrypted(FileStream(str(image)), context(image))


def test_detection_by_content(tmp_path):
    write_encrcdsa(tmp_path / "a", b"a" * 5000, PASSPHRASE)
    write_cdsaencr(tmp_path / "b", b"b" * 8192, PASSPHRASE)
    write_sparseimage(tmp_path / "c", pseudo_random(1 << 20, 1), sectors_per_band=256)
    gpt_disk = bytearray(8 << 20)  # bands 0 and 7 stored in that order: the file ends with the backup GPT header
    gpt_disk[512:520] = gpt_disk[-512:-504] = b"EFI PART"
    write_sparseimage(tmp_path / "d", bytes(gpt_disk), sectors_per_band=2048, order=[0, 7])
    found = [detect(FileStream(str(tmp_path / name))).name for name in "abcd"]
    assert found == ["encrcdsa", "cdsaencr", "sparseimage", "sparseimage"]


# -- the real encrypted DMG ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def aes_dmg_plaintext(tmp_path_factory) -> Path:
    if not AES_DMG.is_file():
        pytest.skip(f"{AES_DMG} is not here")
    stream = open_encrypted(FileStream(str(AES_DMG)), context(AES_DMG, "test123"))
    out = tmp_path_factory.mktemp("aes") / "plain.dmg"
    out.write_bytes(stream.pread(0, stream.size))
    return out


def test_real_aes256_dmg_decrypts_to_the_oracles_udif(aes_dmg_plaintext):
    oracle = json.loads(AES_DMG.with_name(AES_DMG.name + ".json").read_text())
    plain = aes_dmg_plaintext.read_bytes()
    assert len(plain) == oracle["decrypted_payload"]["size"] == 13654
    assert hashlib.sha256(plain).hexdigest() == oracle["decrypted_payload"]["sha256"]
    koly = plain[-512:]
    assert koly[:4] == b"koly"
    xml_offset, xml_length = struct.unpack_from(">QQ", koly, 216)
    assert (xml_offset, xml_length) == (oracle["container_details"]["koly"]["xml_offset"],
                                        oracle["container_details"]["koly"]["xml_length"])
    plist = plistlib.loads(plain[xml_offset : xml_offset + xml_length])
    assert len(plist["resource-fork"]["blkx"]) == 8
    info = open_encrypted(FileStream(str(AES_DMG)), context(AES_DMG, "test123")).describe()
    assert (info["iterations"], info["block_size"], info["data_offset"], info["key_bits"]) == (232558, 512, 122368, 256)


def seven_zip_media(dmg: Path, workdir: Path) -> bytes:
    """The disk inside a UDIF as 7-Zip extracts it: its partitions, in order, back to back."""
    subprocess.run(["7zz", "x", "-y", "-tdmg", f"-o{workdir}", str(dmg)], check=True, capture_output=True)
    parts = sorted(workdir.iterdir(), key=lambda p: int(p.name.split(".")[0]))
    return b"".join(p.read_bytes() for p in parts)


@pytest.mark.skipif(not shutil.which("7zz"), reason="7-Zip (7zz) is not installed")
def test_real_aes256_dmg_plaintext_is_what_7zip_reads(aes_dmg_plaintext, tmp_path):
    media = seven_zip_media(aes_dmg_plaintext, tmp_path / "7z")
    assert hashlib.sha256(media).hexdigest() == "1407509ff44696aab011815d84951ad2c53cb7345a71d9803b73817c2d2d83cf"
    ctx = context(AES_DMG, "test123")
    disk = open_udif(open_encrypted(FileStream(str(AES_DMG)), ctx), ctx)
    assert disk.size == len(media)
    assert hashlib.sha256(disk.pread(0, disk.size)).digest() == hashlib.sha256(media).digest()


# -- .sparseimage --------------------------------------------------------------------------------------


@pytest.mark.parametrize("sectors_per_band,slots", [(256, (1008, 1010)), (8, (5, 7)), (2048, (1008, 1010))])
def test_sparseimage_round_trip(tmp_path, sectors_per_band, slots):
    band_size = sectors_per_band * 512
    disk = disk_with_holes(64 * band_size + 7 * 512, band_size)
    image = tmp_path / "s.sparseimage"
    order = write_sparseimage(image, disk, sectors_per_band=sectors_per_band, header_slots=slots[0],
                              index_slots=slots[1])
    stream = open_sparseimage(FileStream(str(image)), context(image))
    assert_reads_like(stream, disk)
    info = stream.describe()
    assert (info["layer"], info["band_size"], info["size"], info["bands"], info["bands_stored"]) == \
           ("sparseimage", band_size, len(disk), 65, len(order))


def test_sparseimage_with_more_bands_than_the_header_holds(tmp_path):
    disk = disk_with_holes(3000 * 4096, 4096, seed=9)  # bands of 8 sectors: 2,000 stored, 3 nodes
    image = tmp_path / "many.sparseimage"
    order = write_sparseimage(image, disk, sectors_per_band=8)
    assert len(order) > 1008 + 1010 // 2
    assert_reads_like(open_sparseimage(FileStream(str(image)), context(image)), disk)


def test_sparseimage_does_not_ask_for_a_passphrase(tmp_path):
    image = tmp_path / "s.sparseimage"
    write_sparseimage(image, pseudo_random(1 << 20, 2), sectors_per_band=256)
    calls: list = []
    open_sparseimage(FileStream(str(image)), context(image, "x", calls)).pread(0, 1 << 20)
    assert calls == []


# -- .sparsebundle -------------------------------------------------------------------------------------


@pytest.mark.parametrize("as_strings", [False, True])
def test_sparsebundle_round_trip(tmp_path, as_strings):
    band_size = 64 << 10
    disk = disk_with_holes(40 * band_size + 3 * 512, band_size)
    info = {"band-size": str(band_size), "size": str(len(disk))} if as_strings else None
    bundle = write_sparsebundle(tmp_path / "b.sparsebundle", disk, band_size=band_size, info=info)
    (bundle / "bands" / ".DS_Store").write_bytes(b"junk")  # not a band name: ignored
    assert is_sparsebundle(str(bundle)) and not is_sparsebundle(str(tmp_path))
    stream = open_sparsebundle(str(bundle), context(bundle))
    assert_reads_like(stream, disk)
    stored = len(list((bundle / "bands").glob("[0-9a-f]*")))
    assert stream.describe() == {"layer": "sparsebundle", "path": str(bundle), "band_size": band_size,
                                 "size": len(disk), "bands": 41, "bands_stored": stored, "backingstore_version": 1}
    assert any((bundle / "bands" / f"{b:x}").stat().st_size < band_size for b in range(41)
               if (bundle / "bands" / f"{b:x}").exists())


def test_sparsebundle_keeps_few_band_files_open(tmp_path):
    band_size = 4096
    disk = pseudo_random(300 * band_size, 4)
    bundle = write_sparsebundle(tmp_path / "many.sparsebundle", disk, band_size=band_size)
    stream = open_sparsebundle(str(bundle), context(bundle))
    before = len(os.listdir("/proc/self/fd"))
    assert_reads_like(stream, disk)
    assert len(os.listdir("/proc/self/fd")) - before <= 64
    stream.close()


def test_encrypted_sparsebundle(tmp_path):
    band_size = 32 << 10
    plain = disk_with_holes(20 * band_size, band_size)
    token, aes_key, hmac_key = encrcdsa_bundle_token(PASSPHRASE, len(plain))
    cipher = encrypt_blocks(plain, aes_key, hmac_key, 4096)
    bands = {b: cipher[b * band_size : (b + 1) * band_size] for b in range(20) if b % 5}  # some bands never written
    bundle = write_sparsebundle(tmp_path / "e.sparsebundle", plain, band_size=band_size, band_bytes=bands,
                                trim=False, token=token)
    expected = bytearray(plain)
    for b in range(0, 20, 5):  # a band never written reads as zeros, so it decrypts to noise: what hdiutil sees
        expected[b * band_size : (b + 1) * band_size] = open_sparsebundle(str(bundle), context(bundle, PASSPHRASE)) \
            .pread(b * band_size, band_size)
    stream = open_sparsebundle(str(bundle), context(bundle, PASSPHRASE))
    assert stream.pread(0, stream.size) == bytes(expected)
    assert stream.describe()["layer"] == "encrcdsa" and stream.describe()["inside"]["layer"] == "sparsebundle"
    with pytest.raises(EncryptedImage, match="wrong passphrase"):
        open_sparsebundle(str(bundle), context(bundle, "nope"))


# -- bad input: one clear ImageError each --------------------------------------------------------------


def _patched(tmp_path: Path, data: bytes, *patches: tuple[int, bytes]) -> Path:
    buf = bytearray(data)
    for offset, value in patches:
        buf[offset : offset + len(value)] = value
    out = tmp_path / "bad.img"
    out.write_bytes(bytes(buf))
    return out


@pytest.fixture
def good_encrcdsa(tmp_path) -> bytes:
    write_encrcdsa(tmp_path / "good.dmg", pseudo_random(20_000, 8), PASSPHRASE)
    return (tmp_path / "good.dmg").read_bytes()


@pytest.mark.parametrize("case,expected", [
    ("truncated", "encrcdsa header: the image ends at byte 40, inside it"),
    ("block size", "absurd block size 7 (expected a multiple of 16 up to 1048576)"),
    ("blob length", "absurd key blob length 1000000 in a"),
    ("entry count", "absurd number of key entries: 100000"),
    ("entry size", "absurd passphrase entry size 4000000000"),
    ("iterations", "passphrase entry: PBKDF2 with 4,294,967,295 iterations is refused"),
    ("entry past the end", "passphrase entry: the image ends at byte"),
    ("data past the end", "the encrypted data starts at byte 1099511627776, past the end of the image"),
    ("version", "encrcdsa version 3 is not supported (only 2)"),
])
def test_bad_encrcdsa_header(tmp_path, good_encrcdsa, case, expected):
    entry = struct.unpack_from(">Q", good_encrcdsa, 80)[0]
    patches = {
        "truncated": None,
        "block size": [(52, struct.pack(">I", 7))],
        "blob length": [(entry + 100, struct.pack(">I", 1_000_000))],
        "entry count": [(72, struct.pack(">I", 100_000))],
        "entry size": [(88, struct.pack(">Q", 4_000_000_000))],
        "iterations": [(entry + 8, struct.pack(">I", 0xFFFFFFFF))],
        "entry past the end": [(80, struct.pack(">Q", len(good_encrcdsa) - 50))],
        "data past the end": [(64, struct.pack(">Q", 1 << 40))],
        "version": [(8, struct.pack(">I", 3))],
    }[case]
    image = _patched(tmp_path, good_encrcdsa[:40] if patches is None else good_encrcdsa, *(patches or []))
    with pytest.raises(ImageError) as caught:
        open_encrypted(FileStream(str(image)), context(image, PASSPHRASE))
    assert expected in str(caught.value)
    assert "encrypted dmg" in str(caught.value)


def test_truncated_encrcdsa_data_is_an_error_where_it_is_read(tmp_path):
    plain = pseudo_random(300_000, 12)
    write_encrcdsa(tmp_path / "good.dmg", plain, PASSPHRASE)
    image = _patched(tmp_path, (tmp_path / "good.dmg").read_bytes()[:-10_000])
    stream = open_encrypted(FileStream(str(image)), context(image, PASSPHRASE))
    assert stream.pread(0, 200_000) == plain[:200_000]
    with pytest.raises(CorruptImage, match="is cut short: the image ends at byte"):
        stream.pread(stream.size - 100, 100)


def test_bad_cdsaencr_trailer(tmp_path):
    image = tmp_path / "v1.dmg"
    write_cdsaencr(image, bytes(8192), PASSPHRASE)
    data = image.read_bytes()
    bad = _patched(tmp_path, data, (len(data) - 1276 + 136, struct.pack(">I", 5000)))
    with pytest.raises(CorruptImage, match=r"absurd salt or wrapped key length \(20, 5000, 48\)"):
        open_encrypted(FileStream(str(bad)), context(bad, PASSPHRASE))
    short = _patched(tmp_path, data[-1000:])
    with pytest.raises(CorruptImage, match="a cdsaencr image needs a 1276-byte trailer; this one has 1000 bytes"):
        open_encrypted(FileStream(str(short)), context(short, PASSPHRASE))


@pytest.fixture
def good_sparseimage(tmp_path) -> bytes:
    write_sparseimage(tmp_path / "good.sparseimage", pseudo_random(8 << 20, 11), sectors_per_band=2048)
    return (tmp_path / "good.sparseimage").read_bytes()


@pytest.mark.parametrize("case,expected", [
    ("past the end", "band map slot 7 puts band 1 at byte 7344128, past the end of the file (7344128 bytes)"),
    ("band too big", "band map slot 0 names band 99, but the disk has 8 bands"),
    ("twice", "band 8 is stored twice"),
    ("band size", "absurd band size: 0 sectors"),
    ("truncated", "sparse image header: the image ends at byte 100, inside it"),
    ("loop", "the index nodes loop back on themselves"),
    ("not a node", "expected an index node (b'sprs'), got"),
])
def test_bad_sparseimage(tmp_path, good_sparseimage, case, expected):
    data = good_sparseimage
    patches = {
        "past the end": [],
        "band too big": [(64, struct.pack(">I", 99))],
        "twice": [(68, struct.pack(">I", 8))],
        "band size": [(8, struct.pack(">I", 0))],
        "loop": [(20, struct.pack(">Q", 4096 + 1048576))],
        "not a node": [(20, struct.pack(">Q", 4096 + 100))],
        "truncated": [],
    }[case]
    if case == "past the end":  # the last stored band (disk band 1, reversed order) is cut off the file
        data = data[: 4096 + 7 * 1048576]
    if case == "truncated":
        data = data[:100]
    if case == "loop":  # an index node at the second band's place that points at itself
        node = struct.pack(">4sIIQ", b"sprs", 1, 1, 4096 + 1048576).ljust(4096, b"\0")
        patches.append((4096 + 1048576, node))
    image = _patched(tmp_path, data, *patches)
    with pytest.raises(ImageError) as caught:
        open_sparseimage(FileStream(str(image)), context(image))
    assert expected in str(caught.value) and str(caught.value).startswith("sparseimage: ")


@pytest.mark.parametrize("info,expected", [
    ({"band-size": "eight megabytes"}, "Info.plist: band-size is not a number: 'eight megabytes'"),
    ({"band-size": 0}, "Info.plist: absurd band-size 0"),
    ({"size": -5}, "Info.plist: size is negative: -5"),
    ({"size": 2.5}, "Info.plist: size is not a number: 2.5"),
    ({"diskimage-bundle-type": "com.apple.diskimage.other"}, "bundle type 'com.apple.diskimage.other' is not"),
])
def test_bad_sparsebundle_info(tmp_path, info, expected):
    bundle = write_sparsebundle(tmp_path / "bad.sparsebundle", pseudo_random(1 << 20, 1), info=info)
    with pytest.raises(ImageError) as caught:
        open_sparsebundle(str(bundle), context(bundle))
    assert expected in str(caught.value) and str(caught.value).startswith("sparsebundle: ")


def test_sparsebundle_without_a_plist(tmp_path):
    bundle = write_sparsebundle(tmp_path / "bad.sparsebundle", pseudo_random(1 << 20, 1))
    (bundle / "Info.plist").write_bytes(b"not a plist at all")
    with pytest.raises(CorruptImage, match="^sparsebundle: Info.plist is not a property list"):
        open_sparsebundle(str(bundle), context(bundle))
    (bundle / "Info.plist").unlink()
    with pytest.raises(ImageError, match="without Info.plist and bands/, not a sparse bundle"):
        open_sparsebundle(str(bundle), context(bundle))


# -- mounted through FUSE ------------------------------------------------------------------------------


@contextlib.contextmanager
def mounted(image: Path, mountpoint: Path, *options: str, env: Optional[dict] = None) -> Iterator[Path]:
    mountpoint.mkdir(parents=True, exist_ok=True)
    args = [str(image), str(mountpoint), *(["-o", ",".join(options)] if options else [])]
    run_imgfs(*args, check=True, env={**os.environ, **(env or {})}, stdin=subprocess.DEVNULL)
    try:
        assert is_mounted(mountpoint)
        yield mountpoint
    finally:
        unmount(mountpoint)


@pytest.fixture(scope="module")
def ext4_disk(tmp_path_factory) -> tuple[Path, bytes]:
    if not shutil.which("mkfs.ext4"):
        pytest.skip("mkfs.ext4 is not installed")
    src = tmp_path_factory.mktemp("ext4-src") / "src"
    (src / "lost+found").mkdir(parents=True)
    write_file(src / "hello.txt", b"hello from inside a sparse image\n")
    write_file(src / "big.bin", pseudo_random(3 << 20, 21))
    for i in range(50):
        write_file(src / "dir" / f"f{i:02d}.txt", f"file {i}\n".encode())
    os.symlink("hello.txt", src / "link")
    image = tmp_path_factory.mktemp("ext4") / "disk.img"
    subprocess.run(["mkfs.ext4", "-q", "-F", "-L", "APPLE", "-d", str(src), str(image), "16M"], check=True,
                   capture_output=True)
    return src, image.read_bytes()


@pytest.fixture(scope="module")
def fat_disk(tmp_path_factory) -> tuple[Path, bytes]:
    if not shutil.which("mkfs.fat") or not shutil.which("mcopy"):
        pytest.skip("mkfs.fat or mtools is not installed")
    src = tmp_path_factory.mktemp("fat-src") / "src"
    write_file(src / "readme.txt", b"FAT inside\n")
    write_file(src / "data" / "random.bin", pseudo_random(1 << 20, 22))
    image = tmp_path_factory.mktemp("fat") / "fat.img"
    subprocess.run(["mkfs.fat", "-F", "16", "-C", str(image), str(16 * 1024)], check=True, capture_output=True)
    env = {**os.environ, "MTOOLS_SKIP_CHECK": "1", "LC_ALL": "C.UTF-8"}
    subprocess.run(["mcopy", "-s", "-m", "-i", str(image), *map(str, sorted(src.iterdir())), "::/"], env=env,
                   check=True, capture_output=True)
    return src, image.read_bytes()


def test_mount_sparseimage_with_ext4(tmp_path, ext4_disk):
    src, disk = ext4_disk
    image = tmp_path / "disk.sparseimage"
    write_sparseimage(image, disk, sectors_per_band=256)
    with mounted(image, tmp_path / "mnt") as root:
        compare_trees(src, root)


def test_mount_sparseimage_with_fat(tmp_path, fat_disk):
    src, disk = fat_disk
    image = tmp_path / "fat.sparseimage"
    write_sparseimage(image, disk, sectors_per_band=64)
    with mounted(image, tmp_path / "mnt") as root:
        compare_trees(src, root, modes=False, owners=False, nlink=False)


def test_mount_sparsebundle_with_ext4(tmp_path, ext4_disk):
    src, disk = ext4_disk
    bundle = write_sparsebundle(tmp_path / "disk.sparsebundle", disk, band_size=1 << 20)
    with mounted(bundle, tmp_path / "mnt") as root:
        compare_trees(src, root)


def test_mount_encrypted_image_with_the_passphrase_from_env_or_file(tmp_path, ext4_disk):
    src, disk = ext4_disk
    image = tmp_path / "secret.dmg"
    write_encrcdsa(image, disk, PASSPHRASE, iterations=5000)
    with mounted(image, tmp_path / "mnt1", env={"IMGFS_PASSPHRASE": PASSPHRASE}) as root:
        compare_trees(src, root)
    passfile = tmp_path / "pass.txt"
    passfile.write_text(PASSPHRASE + "\n", encoding="utf-8")
    with mounted(image, tmp_path / "mnt2", f"passfile={passfile}") as root:
        compare_trees(src, root)


def test_mount_encrypted_sparseimage(tmp_path, fat_disk):
    src, disk = fat_disk
    sparse = tmp_path / "inner.sparseimage"
    write_sparseimage(sparse, disk, sectors_per_band=128)
    image = tmp_path / "secret.sparseimage"
    write_encrcdsa(image, sparse.read_bytes(), PASSPHRASE, key_bits=128)
    with mounted(image, tmp_path / "mnt", env={"IMGFS_PASSPHRASE": PASSPHRASE}) as root:
        compare_trees(src, root, modes=False, owners=False, nlink=False)
    layers = json.loads(run_imgfs("info", "--json", str(image), check=True,
                                  env={**os.environ, "IMGFS_PASSPHRASE": PASSPHRASE}).stdout)
    names = [layer["layer"] for layer in (layers["layers"] if isinstance(layers, dict) else layers)]
    assert names[1:4] == ["encrcdsa", "sparseimage", "fat"]


@pytest.mark.skipif(not shutil.which("7zz"), reason="7-Zip (7zz) is not installed")
def test_mount_the_real_aes256_dmg(tmp_path, aes_dmg_plaintext):
    """encrcdsa → UDIF (zlib) → GPT → an APFS partition: its empty volume at the root, and among the raw
    views the partition's bytes, the ones 7-Zip extracts."""
    subprocess.run(["7zz", "x", "-y", "-tdmg", f"-o{tmp_path / '7z'}", str(aes_dmg_plaintext)], check=True,
                   capture_output=True)
    apfs = next((tmp_path / "7z").glob("*.apfs")).read_bytes()
    passfile = tmp_path / "pass"
    passfile.write_text("test123\n")
    with mounted(AES_DMG, tmp_path / "mnt", f"passfile={passfile}", "rawviews") as root:
        assert sorted(os.listdir(root)) == [".imgfs"]  # the APFS volume "empty" holds nothing
        raw = root / ".imgfs" / "partitions" / "1.img"
        assert hashlib.sha256(raw.read_bytes()).digest() == hashlib.sha256(apfs).digest()


@pytest.mark.parametrize("how", ["missing", "wrong"])
def test_mount_refuses_without_the_right_passphrase(tmp_path, ext4_disk, how):
    image = tmp_path / "secret.dmg"
    write_encrcdsa(image, ext4_disk[1], PASSPHRASE)
    env = {k: v for k, v in os.environ.items() if k != "IMGFS_PASSPHRASE"}
    if how == "wrong":
        env["IMGFS_PASSPHRASE"] = "not it"
    (tmp_path / "mnt").mkdir()
    done = run_imgfs(str(image), str(tmp_path / "mnt"), env=env, stdin=subprocess.DEVNULL)
    assert done.returncode != 0 and not is_mounted(tmp_path / "mnt")
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    if how == "missing":
        assert "is encrypted (AES-256, encrcdsa v2): give the passphrase with -o passfile=FILE" in lines[0]
    else:
        assert f"wrong passphrase for {image}" in lines[0]
