"""Apple disk images (UDIF, .dmg): every chunk codec, lazy decoding, checksums, damaged images.

Images are written by ``udifwriter.py`` from raw disks and checked three ways: byte for byte through
imgfs's reader (library level), against 7-Zip's extraction of the same image (``7zz``, when installed),
and mounted through FUSE, where the filesystems inside are compared with the trees they were made from.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest
from conftest import compare_trees, read_errno, run_imgfs
from disktools import blank, ext4_image, fat_image, put, sfdisk
from isotools import pseudo_random, write_file
from udifwriter import CODECS, TYPES, write_udif

from imgfs.codecs import adc
from imgfs.containers.dmg import open_udif, verify
from imgfs.containers.dmg.codecs import DecodeError, decode, lzfse_raw_size
from imgfs.errors import CorruptImage, ImageError, UnsupportedFormat
from imgfs.io.cache import BlockCache
from imgfs.io.readahead import ReadAhead
from imgfs.io.stream import BytesStream, FileStream, Stream
from imgfs.layer import OpenContext
from imgfs.registry import detect

MIB = 1 << 20
SEVEN_ZIP = shutil.which("7zz") or shutil.which("7z")
DMG2IMG = shutil.which("dmg2img")
needs_7z = pytest.mark.skipif(SEVEN_ZIP is None, reason="7-Zip (7zz) is not installed")


def sample_disk(size: int = 3 * MIB, seed: int = 1) -> bytes:
    """Zeros, random bytes and text, in stretches that do not line up with chunks: every kind of run."""
    rnd = random.Random(seed)
    out = bytearray()
    while len(out) < size:
        kind = len(out) // 100_000 % 3
        n = rnd.randrange(20_000, 300_000)
        out += bytes(n) if kind == 0 else rnd.randbytes(n) if kind == 1 else b"line %d of text\n" % len(out) * (n // 20)
    return bytes(out[:size])


def open_dmg(path: Path, cache_size: int = 64 * MIB) -> Stream:
    return open_udif(FileStream(str(path)), OpenContext(str(path), BlockCache(cache_size)))


def read_all(image: Stream, step: int = 128 * 1024) -> bytes:
    return b"".join(image.pread(at, step) for at in range(0, image.size, step))


def seven_zip_partitions(dmg: Path, out: Path) -> list[bytes]:
    """The partitions 7-Zip extracts from ``dmg`` (``-tdmg``: not the filesystem inside), in order."""
    done = subprocess.run([SEVEN_ZIP, "x", "-tdmg", "-y", f"-o{out}", str(dmg)], capture_output=True, text=True)
    assert done.returncode == 0, f"7-Zip failed on {dmg.name}: {done.stdout[-500:]}"
    return [(out / name).read_bytes() for name in sorted(os.listdir(out), key=lambda n: int(n.split(".")[0]))]


# -- every codec, through the library ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def disk() -> bytes:
    return sample_disk()


@pytest.mark.parametrize("codec", [*CODECS, "mixed"])
def test_codec_round_trips_byte_exact(codec, disk, tmp_path):
    size = MIB if codec in ("adc", "mixed") else len(disk)  # the ADC encoder here is slow Python
    source = disk[:size]
    dmg = write_udif(tmp_path / "x.dmg", source, codec=CODECS if codec == "mixed" else codec,
                     chunk_sectors=256, raw_fallback=False).path
    image = open_dmg(dmg)
    assert image.size == size
    assert read_all(image, 100_000) == source
    rnd = random.Random(5)
    for _ in range(200):
        at = rnd.randrange(size)
        n = rnd.randrange(1, 400_000)
        assert image.pread(at, n) == source[at : at + n]
    buf = bytearray(300_000)
    assert image.readinto(size - 1000, memoryview(buf)) == 1000 and bytes(buf[:1000]) == source[-1000:]
    assert verify(image) == []


@pytest.mark.parametrize("metadata", ["xml", "rsrc", "both"])
@pytest.mark.parametrize("zeros", ["zero", "ignore"])
def test_metadata_kinds_and_zero_runs(metadata, zeros, disk, tmp_path):
    """Block tables in an XML plist, or (old images) only in a binary resource fork; comment runs."""
    dmg = write_udif(tmp_path / "x.dmg", disk, codec="zlib", metadata=metadata, zeros=zeros, comments=True,
                     partitions=[("Driver Descriptor Map (DDM : 0)", 0, 1), ("disk (Apple_HFS : 1)", 1, 4000),
                                 ("rest (Apple_Free : 2)", 4001, len(disk) // 512 - 4001)]).path
    image = open_dmg(dmg)
    assert read_all(image) == disk
    info = image.describe()
    assert info["metadata"] == ("resource fork" if metadata == "rsrc" else "XML plist")
    assert [b["name"] for b in info["blkx"]] == ["Driver Descriptor Map (DDM : 0)", "disk (Apple_HFS : 1)",
                                                 "rest (Apple_Free : 2)"]
    assert verify(image) == []


def test_holes_cost_nothing_and_raw_runs_are_not_cached(tmp_path):
    source = bytes(2 * MIB) + pseudo_random(MIB, 3) + b"text " * (MIB // 5) + bytes(4)
    source += bytes(-len(source) % 512)
    dmg = write_udif(tmp_path / "x.dmg", source, codec=["raw", "zlib"], chunk_sectors=2048).path
    image = open_dmg(dmg)
    cache = image.cache
    assert image.pread(0, 2 * MIB) == source[: 2 * MIB]  # zero runs
    assert (cache.misses, len(cache)) == (0, 0)
    assert image.pread(2 * MIB + 5, 1000) == source[2 * MIB + 5 : 2 * MIB + 1005]  # a raw run
    assert (cache.misses, len(cache)) == (0, 0)
    assert image.pread(3 * MIB + 7, 10) == source[3 * MIB + 7 : 3 * MIB + 17]  # one zlib chunk, decoded once
    assert image.pread(3 * MIB + 70, 10) == source[3 * MIB + 70 : 3 * MIB + 80]
    assert (cache.misses, len(cache)) == (1, 1)


def test_describe(tmp_path, disk):
    dmg = write_udif(tmp_path / "x.dmg", disk, codec="bzip2", chunk_sectors=256).path
    info = open_dmg(dmg).describe()
    assert info["layer"] == "udif" and info["format"] == "UDBZ"
    assert info["codecs"][0] == "bzip2" and "zero" in info["codecs"]
    assert info["size"] == len(disk) and info["sectors"] == len(disk) // 512
    assert info["compressed_chunks"] >= 1 and info["chunks"] > info["compressed_chunks"]
    assert info["data_fork_offset"] == 0 and info["checksums"]["data_fork"].startswith("crc32 ")
    assert info["blkx"][0]["name"] == "whole disk (Apple_HFS : 0)"
    json.dumps(info)


# -- layouts: offsets, old and odd images, segments ----------------------------------------------------------


LAYOUTS = {
    "appended to other data": {"prefix": b"MZ" + bytes(70_000)},
    "data fork at an offset": {"data_fork_offset": 4096},
    "koly block first": {"leading_koly": True},
    "resource fork only": {"metadata": "rsrc"},
}


@pytest.mark.parametrize("layout", LAYOUTS)
def test_layouts(layout, disk, tmp_path):
    written = write_udif(tmp_path / "x.dmg", disk, codec="zlib", **LAYOUTS[layout])
    image = open_dmg(written.path)
    assert read_all(image) == disk
    assert verify(image) == []
    if written.image_offset:
        assert image.describe()["image_offset"] == written.image_offset


@needs_7z
@pytest.mark.parametrize("layout", LAYOUTS)
def test_layouts_agree_with_seven_zip(layout, disk, tmp_path):
    written = write_udif(tmp_path / "x.dmg", disk, codec="zlib", **LAYOUTS[layout])
    assert b"".join(seven_zip_partitions(written.path, tmp_path / "7z")) == disk


def test_segmented_image(disk, tmp_path):
    """X.dmg + X.002.dmgpart + ...: the data forks joined at their running offsets. (No independent reader
    here: 7-Zip and dmg2img do not read segments; the writer follows the trailer's field descriptions.)"""
    written = write_udif(tmp_path / "seg.dmg", disk, codec="zlib", chunk_sectors=128, segment_size=150_000)
    assert len(written.segments) >= 2
    image = open_dmg(written.path)
    assert read_all(image) == disk
    assert image.describe()["segments"] == len(written.segments) + 1
    with pytest.raises(UnsupportedFormat, match="segment 2 of"):
        open_dmg(written.segments[0])
    written.segments[-1].unlink()
    with pytest.raises(ImageError, match="missing"):
        open_dmg(written.path)


# -- independent readers ------------------------------------------------------------------------------------


@needs_7z
@pytest.mark.parametrize("codec", [c for c in CODECS if c != "lzma-alone"])
def test_seven_zip_extracts_the_same_partitions(codec, tmp_path):
    source = sample_disk(MIB if codec == "adc" else 2 * MIB, seed=9)
    blocks = len(source) // 512
    parts = [("Protective Master Boot Record (MBR : 0)", 0, 1), ("GPT Header (Primary GPT Header : 1)", 1, 1),
             ("disk image (Apple_HFS : 2)", 2, blocks - 3), ("GPT Header (Backup GPT Header : 3)", blocks - 1, 1)]
    dmg = write_udif(tmp_path / "x.dmg", source, codec=codec, chunk_sectors=512, partitions=parts).path
    image = open_dmg(dmg)
    extracted = seven_zip_partitions(dmg, tmp_path / "7z")
    assert [len(p) for p in extracted] == [count * 512 for _, _, count in parts]
    for (_, first, count), data in zip(parts, extracted):
        assert image.pread(first * 512, count * 512) == data


@needs_7z
def test_seven_zip_reads_xz_but_not_lzma_alone(tmp_path, disk):
    """ULMO chunks in the wild are xz streams; imgfs also reads bare LZMA ("alone") chunks, 7-Zip does not."""
    dmg = write_udif(tmp_path / "x.dmg", disk, codec="lzma-alone").path
    assert read_all(open_dmg(dmg)) == disk
    done = subprocess.run([SEVEN_ZIP, "t", "-tdmg", str(dmg)], capture_output=True, text=True)
    assert done.returncode != 0


@pytest.mark.skipif(DMG2IMG is None, reason="dmg2img is not installed")
@pytest.mark.parametrize("codec", ["raw", "zlib", "bzip2", "adc", "lzfse", "xz"])
def test_dmg2img(codec, tmp_path):
    """dmg2img agrees for raw, zlib, bzip2 and ADC; it has no LZFSE or LZMA decoder and writes a short
    image for those while exiting 0 (it is wrong there, not imgfs)."""
    source = sample_disk(MIB, seed=4)
    dmg = write_udif(tmp_path / "x.dmg", source, codec=codec, chunk_sectors=512).path
    subprocess.run([DMG2IMG, "-s", str(dmg), str(tmp_path / "out.img")], capture_output=True, check=True)
    theirs = (tmp_path / "out.img").read_bytes()
    assert read_all(open_dmg(dmg)) == source
    assert (theirs == source) == (codec in ("raw", "zlib", "bzip2", "adc"))


# -- codecs in isolation -------------------------------------------------------------------------------------


def test_adc_codes():
    # a literal run, a short match (distance 0: repeat the last byte), a long match 3 back, overlapping
    stream = bytes([0x82]) + b"abc" + bytes([(5 - 3) << 2, 0]) + bytes([0x40 | (6 - 4), 0, 2])
    assert adc.decode(stream, 3 + 5 + 6) == b"abc" + b"ccccc" + b"cccccc"
    with pytest.raises(ValueError, match="more than"):
        adc.decode(stream, 10)
    with pytest.raises(ValueError, match="ends after"):
        adc.decode(stream, 20)
    with pytest.raises(ValueError, match="back"):
        adc.decode(bytes([0x00, 0x05]), 3)


def test_lzfse_sizes_are_read_from_block_headers():
    import lzfse

    for data in (b"", b"a" * 100, pseudo_random(70_000, 1), b"abc" * 300_000):
        assert lzfse_raw_size(lzfse.compress(data)) == len(data)


def test_lzfse_output_is_bounded_by_the_stated_size():
    """A block header that under-states its size: the decoder stops one byte past the stated size."""
    import lzfse

    text = b"".join(b"line %d\n" % i for i in range(20_000))
    packed = bytearray(lzfse.compress(text))
    packed[4:8] = (1000).to_bytes(4, "little")  # the first block's n_raw_bytes
    promised = lzfse_raw_size(bytes(packed))
    assert promised < len(text)
    with pytest.raises(DecodeError, match="more than the stated"):
        decode(TYPES["lzfse"], bytes(packed), promised)


# -- concurrency, read-ahead, memory --------------------------------------------------------------------------


def test_eight_threads_read_random_ranges(tmp_path):
    source = sample_disk(12 * MIB, seed=3)
    dmg = write_udif(tmp_path / "x.dmg", source, codec="zlib", chunk_sectors=1024).path
    image = open_dmg(dmg, cache_size=3 * MIB)  # small: chunks are evicted and decoded again meanwhile
    wrong, errors = [0], []

    def reader(seed: int) -> None:
        rnd = random.Random(seed)
        try:
            for _ in range(150):
                at, n = rnd.randrange(len(source)), rnd.randrange(1, 700_000)
                got, want = image.pread(at, n), source[at : at + n]
                if got != want:
                    wrong[0] += sum(a != b for a, b in zip(got, want)) + abs(len(got) - len(want))
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=reader, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and wrong[0] == 0


def test_each_chunk_is_decoded_once_under_concurrent_reads(tmp_path):
    source = sample_disk(4 * MIB, seed=8)
    dmg = write_udif(tmp_path / "x.dmg", source, codec="bzip2", chunk_sectors=2048, zeros="data").path
    image = open_dmg(dmg)
    image.read_ahead.worth = lambda _chunk: False  # no decoding ahead: every decode counted is a reader's
    barrier = threading.Barrier(6)

    def reader() -> None:
        barrier.wait()
        assert read_all(image, 64 * 1024) == source

    threads = [threading.Thread(target=reader) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert image.cache.misses == 4


def test_sequential_reads_decode_ahead(tmp_path):
    source = sample_disk(8 * MIB, seed=2)
    dmg = write_udif(tmp_path / "x.dmg", source, codec="zlib", chunk_sectors=2048, zeros="data").path
    image = open_dmg(dmg)
    ahead = ReadAhead(workers=1, max_queued=2)
    image.read_ahead.pool = ahead
    image.pread(0, 4096)
    image.pread(4096, 4096)  # sequential: chunks 1 and 2 are decoded in the background
    for _ in range(200):
        if ahead.pending() == 0 and len(image.cache) >= 3:
            break
        threading.Event().wait(0.01)
    assert len(image.cache) == 3
    image.pread(7 * MIB, 10)  # a jump: nothing ahead of it
    threading.Event().wait(0.05)
    assert ahead.pending() == 0 and len(image.cache) == 4


def test_read_ahead_survives_fork(tmp_path):
    """imgfs opens the image and forks: the child reads with fresh workers, never waiting on a decode that
    was half done in the parent."""
    source = sample_disk(6 * MIB, seed=6)
    dmg = write_udif(tmp_path / "x.dmg", source, codec="bzip2", chunk_sectors=1024, zeros="data").path
    image = open_dmg(dmg)
    image.pread(0, 100)
    image.pread(100, 100)  # starts decoding ahead
    pid = os.fork()
    if pid == 0:  # the child: exit status says whether it read everything right
        ok = read_all(image) == source
        os._exit(0 if ok else 1)
    assert read_all(image) == source
    waited = os.waitpid(pid, 0)[1]
    assert os.waitstatus_to_exitcode(waited) == 0


MEMORY_SCRIPT = textwrap.dedent("""
    import sys
    from imgfs.layer import OpenContext
    from imgfs.containers.dmg import open_udif
    from imgfs.io.cache import BlockCache
    from imgfs.io.stream import FileStream

    def peak_kib():  # VmHWM: this process's peak RSS (ru_maxrss would include the parent's, kept across exec)
        with open("/proc/self/status") as status:
            return int(next(line for line in status if line.startswith("VmHWM")).split()[1])

    path = sys.argv[1]
    image = open_udif(FileStream(path), OpenContext(path, BlockCache(64 << 20)))
    before = peak_kib()
    buf = memoryview(bytearray(128 << 10))
    for at in range(0, image.size, len(buf)):
        image.readinto(at, buf)
    for at in range(image.size - len(buf), 0, -(7 << 20)):
        image.pread(at, len(buf))
    print(before, peak_kib())
""")


def test_memory_stays_within_the_cache(tmp_path):
    """Reading a 512 MiB UDZO image whole: the peak RSS grows by at most the cache (64 MiB) + 64 MB."""
    disk_path = tmp_path / "big.img"
    line = b"".join(b"block %08d line %04d: some compressible text\n" % (0, i) for i in range(24_000))[:MIB]
    with open(disk_path, "wb") as out:
        for i in range(512):
            out.write(line[i % 97 :] + line[: i % 97] if i % 2 else bytes(MIB))
    dmg = write_udif(tmp_path / "big.dmg", disk_path, codec="zlib").path
    disk_path.unlink()
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    done = subprocess.run([sys.executable, "-c", MEMORY_SCRIPT, str(dmg)], capture_output=True, text=True,
                          env=env, timeout=120, check=True)
    before, after = (int(v) for v in done.stdout.split())
    print(f"peak RSS {before // 1024} MB after opening, {after // 1024} MB after reading")
    assert (after - before) * 1024 < (64 << 20) + 64 * 1000 * 1000, f"RSS grew {(after - before) // 1024} MB"


# -- damaged images ----------------------------------------------------------------------------------------


def damaged(tmp_path: Path, source: bytes, edit, **options) -> Path:
    return write_udif(tmp_path / "bad.dmg", source, codec=options.pop("codec", "zlib"), chunk_sectors=512,
                      edit=edit, **options).path


def set_run(part_index: int, run_index: int, **fields):
    names = ("kind", "comment", "sector", "sectors", "offset", "length")

    def edit(parts, fork):
        run = list(parts[part_index].runs[run_index])
        for name, value in fields.items():
            run[names.index(name)] = value(run[names.index(name)]) if callable(value) else value
        parts[part_index].runs[run_index] = tuple(run)

    return edit


def compressed_run(parts, kind=TYPES["zlib"]) -> int:
    return next(i for i, run in enumerate(parts[0].runs) if run[0] == kind)


@pytest.fixture(scope="module")
def text_disk() -> bytes:
    return b"".join(b"line %06d of a text that compresses\n" % i for i in range(60_000))[: 2 * MIB]


def test_chunk_past_the_end_fails_only_its_reads(tmp_path, text_disk):
    dmg = damaged(tmp_path, text_disk, set_run(0, 1, offset=lambda o: o + 10 * MIB))
    image = open_dmg(dmg)
    assert image.pread(0, 1000) == text_disk[:1000]
    with pytest.raises(CorruptImage, match="runs past the end") as caught:
        image.pread(256 * 1024 + 5, 10)
    assert caught.value.layer == "udif" and caught.value.offset is not None
    assert image.pread(2 * 256 * 1024, 1000) == text_disk[512 * 1024 : 512 * 1024 + 1000]
    assert any("chunk 1" in p for p in verify(image))


def test_chunk_that_decodes_to_more_than_stated(tmp_path, text_disk):
    def edit(parts, fork):  # chunk 0 says it holds half its sectors; a zero run fills the rest
        kind, comment, sector, sectors, offset, length = parts[0].runs[0]
        parts[0].runs[0:1] = [(kind, comment, sector, sectors // 2, offset, length),
                              (0, 0, sector + sectors // 2, sectors - sectors // 2, offset + length, 0)]

    for codec in ("zlib", "bzip2", "xz", "lzma-alone", "lzfse", "adc"):
        image = open_dmg(damaged(tmp_path, text_disk[: MIB // 2], edit, codec=codec))
        with pytest.raises(CorruptImage, match="more than"):
            image.pread(0, 10)
        assert image.pread(300_000, 10) == text_disk[300_000:300_010], codec


def test_chunk_that_decodes_to_less_than_stated(tmp_path, text_disk):
    image = open_dmg(damaged(tmp_path, text_disk, set_run(0, 0, sectors=lambda s: s + 8),
                             partitions=[("a", 0, 512)]))
    with pytest.raises(CorruptImage, match="ends after|decodes to"):
        image.pread(0, 10)


@pytest.mark.parametrize("codec", ["zlib", "bzip2", "xz", "lzfse", "adc"])
def test_garbage_in_a_chunk(codec, tmp_path, text_disk):
    def edit(parts, fork):
        run = parts[0].runs[1]
        fork[run[4] + 4 : run[4] + 40] = bytes(range(7, 43))

    image = open_dmg(damaged(tmp_path, text_disk[:MIB], edit, codec=codec))
    with pytest.raises(CorruptImage, match="chunk 1"):
        image.pread(300_000, 10)
    assert image.pread(600_000, 10) == text_disk[600_000:600_010]


def test_raw_run_shorter_than_its_sectors(tmp_path, text_disk):
    image = open_dmg(damaged(tmp_path, text_disk, set_run(0, 1, length=lambda n: n - 512), codec="raw"))
    assert image.pread(256 * 1024, 1000) == text_disk[256 * 1024 : 256 * 1024 + 1000]
    with pytest.raises(CorruptImage, match="stores"):
        image.pread(512 * 1024 - 10, 10)
    with pytest.raises(CorruptImage, match="stores"):
        image.readinto(512 * 1024 - 10, memoryview(bytearray(10)))


def test_unknown_run_type_is_refused_by_name(tmp_path, text_disk):
    dmg = damaged(tmp_path, text_disk, set_run(0, 2, kind=0x80000009))
    with pytest.raises(UnsupportedFormat, match=r"0x80000009.*not a UDIF chunk type") as caught:
        open_dmg(dmg)
    assert "whole disk (Apple_HFS : 0)" in str(caught.value)


def test_overlapping_partitions_are_refused(tmp_path, text_disk):
    dmg = write_udif(tmp_path / "x.dmg", text_disk, partitions=[("a", 0, 2000), ("b", 1000, 3096)]).path
    with pytest.raises(CorruptImage, match="both claim"):
        open_dmg(dmg)


def test_plist_that_is_not_xml(tmp_path, text_disk):
    dmg = write_udif(tmp_path / "x.dmg", text_disk).path
    data = bytearray(dmg.read_bytes())
    at = data.index(b"<?xml")
    data[at : at + 40] = b"this is not XML at all, just some bytes!"
    dmg.write_bytes(bytes(data))
    with pytest.raises(CorruptImage, match="not a property list") as caught:
        open_dmg(dmg)
    assert caught.value.offset == at


def test_koly_with_a_wrong_signature_or_size(tmp_path, text_disk):
    dmg = write_udif(tmp_path / "x.dmg", text_disk).path
    data = bytearray(dmg.read_bytes())
    data[-512:-508] = b"kolx"
    with pytest.raises(UnsupportedFormat, match="koly"):
        open_udif(BytesStream(bytes(data)), OpenContext("x", BlockCache(MIB)))
    data[-512:-508] = b"koly"
    data[-504:-500] = (1024).to_bytes(4, "big")
    with pytest.raises(CorruptImage, match="1024"):
        open_udif(BytesStream(bytes(data)), OpenContext("x", BlockCache(MIB)))


def test_truncated_image(tmp_path, text_disk):
    """Cut anywhere, the trailer is gone: not a UDIF image any more. A trailer whose parts lie beyond it
    (the data fork and plist cut out) is refused by name."""
    data = write_udif(tmp_path / "x.dmg", text_disk).path.read_bytes()
    with pytest.raises(UnsupportedFormat):
        open_udif(BytesStream(data[: len(data) // 2]), OpenContext("x", BlockCache(MIB)))
    with pytest.raises(CorruptImage, match="past the trailer"):
        open_udif(BytesStream(data[:1000] + data[-512:]), OpenContext("x", BlockCache(MIB)))


def test_verify_reports_checksum_mismatches(tmp_path, text_disk):
    dmg = write_udif(tmp_path / "x.dmg", text_disk, codec="raw").path
    data = bytearray(dmg.read_bytes())
    data[1000] ^= 0xFF  # a raw run: decodes fine, but its data and the data fork no longer match their CRCs
    dmg.write_bytes(bytes(data))
    problems = verify(FileStream(str(dmg)))
    assert any("data fork" in p for p in problems)
    assert any("whole disk" in p and "CRC32" in p for p in problems)
    assert verify(BytesStream(b"not a dmg" * 100)) != []


# -- mounted --------------------------------------------------------------------------------------------------


def assert_detected_as_udif(dmg: Path) -> None:
    """An uncompressed DMG starts with the disk's own sectors: the registry must try UDIF before the
    partition maps and filesystems that would claim them."""
    assert detect(FileStream(str(dmg))).name == "udif"


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("tree")
    write_file(root / "readme.txt", b"inside a disk image\n")
    write_file(root / "docs" / "notes.txt", b"note " * 3000)
    write_file(root / "data" / "random.bin", pseudo_random(3 * MIB + 123, 11))
    write_file(root / "data" / "zeros.bin", bytes(2 * MIB))
    for i in range(30):
        write_file(root / "many" / f"file{i:02d}.txt", f"file {i}\n".encode() * (i + 1))
    return root


@pytest.mark.parametrize("codec", ["zlib", "lzfse", "bzip2"])
def test_fat_inside_a_dmg_matches_its_source(codec, tree, tmp_path, mount):
    dmg = write_udif(tmp_path / "fat.dmg", fat_image(tmp_path / "fat.img", tree, 16, "DMGFAT"), codec=codec).path
    with mount(dmg) as root:
        assert compare_trees(tree, root, modes=False, owners=False, nlink=False, mtime=False, hardlinks=False) > 30


def test_ext4_inside_a_dmg_of_mixed_codecs_matches_its_source(tree, tmp_path, mount):
    image = ext4_image(tmp_path / "ext.img", tree, 16, "dmgext")
    dmg = write_udif(tmp_path / "ext.dmg", image, codec=["zlib", "xz", "lzfse", "raw", "bzip2"],
                     chunk_sectors=256).path
    with mount(dmg) as root:
        compare_trees(tree, root, ignore=frozenset({"lost+found"}), owners=False, mtime=False)


def test_partitioned_disk_inside_a_dmg(tree, tmp_path, mount):
    """An MBR disk with a FAT and an ext4 partition, one blkx entry per partition as hdiutil makes them."""
    disk = blank(tmp_path / "disk.img", 40 * MIB)
    layout = sfdisk(disk, "label: dos\n2048,36864,6\n38912,,83\n")
    put(disk, layout[0]["start"] * 512, fat_image(tmp_path / "p1.img", tree, 18, "FATPART"))
    put(disk, layout[1]["start"] * 512, ext4_image(tmp_path / "p2.img", tree, 20, "extpart"))
    starts = [p["start"] for p in layout]
    parts = [("Master Boot Record (MBR : 0)", 0, 1), ("(Apple_Free : 1)", 1, starts[0] - 1),
             ("(DOS_FAT_16 : 2)", starts[0], starts[1] - starts[0]),
             ("(Linux : 3)", starts[1], 40 * MIB // 512 - starts[1])]
    dmg = write_udif(tmp_path / "disk.dmg", disk.read_bytes(), codec="bzip2", partitions=parts, zeros="ignore").path
    with mount(dmg) as root:
        assert sorted(os.listdir(root)) == ["1 FATPART", "2 extpart"]
        compare_trees(tree, root / "1 FATPART", modes=False, owners=False, nlink=False, mtime=False, hardlinks=False)
        compare_trees(tree, root / "2 extpart", ignore=frozenset({"lost+found"}), owners=False, mtime=False)
    layers = json.loads(run_imgfs("info", "--json", str(dmg), check=True).stdout)["layers"]
    assert [layer["layer"] for layer in layers] == ["file", "udif", "mbr", "fat", "ext"]
    assert layers[1]["format"] == "UDBZ" and len(layers[1]["blkx"]) == 4


@pytest.fixture(scope="module")
def hybrid_iso(tree, tmp_path_factory) -> bytes:
    """A CD master as hdiutil makes one: ISO 9660 + Rock Ridge + an Apple partition map with HFS+ (xorriso)."""
    iso = tmp_path_factory.mktemp("hybrid") / "hybrid.iso"
    subprocess.run(["xorriso", "-as", "mkisofs", "-R", "-hfsplus", "-V", "HYBRID", "-o", str(iso), str(tree)],
                   check=True, capture_output=True)
    return iso.read_bytes()


@pytest.mark.parametrize("codec", CODECS)
def test_hybrid_iso_with_hfsplus_inside_a_dmg(codec, hybrid_iso, tree, tmp_path, mount):
    """Both sides of the hybrid through every codec: the ISO side by default, the HFS+ volume (xorriso's, a
    third-party HFS+ writer) with namespace=hfsplus."""
    dmg = write_udif(tmp_path / "hybrid.dmg", hybrid_iso, codec=codec).path
    with mount(dmg) as root:
        compare_trees(tree, root, owners=False, nlink=False, hardlinks=False)
    with mount(dmg, "namespace=hfsplus") as root:
        compare_trees(tree, root, owners=False, nlink=False, hardlinks=False, mtime=False)
    layers = json.loads(run_imgfs("info", "--json", "-o", "namespace=hfsplus", str(dmg), check=True).stdout)["layers"]
    assert [layer["layer"] for layer in layers][:3] == ["file", "udif", "apm"]
    assert any(layer.get("filesystem") == "hfs+" and layer.get("label") == "HYBRID" for layer in layers), layers


def test_uncompressed_dmg_of_a_gpt_disk(tree, tmp_path, mount):
    """UDRO: the disk's own sectors are stored raw, so a partition map is at its usual place in the file."""
    disk = blank(tmp_path / "gpt.img", 24 * MIB)
    subprocess.run(["sgdisk", "-n", "1:2048:-2048", "-c", "1:data", str(disk)], check=True, capture_output=True)
    put(disk, 2048 * 512, fat_image(tmp_path / "p.img", tree, 20, "RAWGPT"))
    dmg = write_udif(tmp_path / "gpt.dmg", disk.read_bytes(), codec="raw").path
    assert_detected_as_udif(dmg)
    with mount(dmg) as root:
        compare_trees(tree, root, modes=False, owners=False, nlink=False, mtime=False, hardlinks=False)


def test_damaged_chunk_is_eio_for_its_file_only(tree, tmp_path, mount):
    image = ext4_image(tmp_path / "ext.img", tree, 16, "victim")
    marker = (tree / "data" / "random.bin").read_bytes()[MIB : MIB + 4096]
    chunk = image.index(marker) // (256 * 512)

    def edit(parts, fork):
        index = next(i for i, run in enumerate(parts[0].runs) if run[2] == chunk * 256)
        kind, comment, sector, sectors, offset, length = parts[0].runs[index]
        parts[0].runs[index] = (kind, comment, sector, sectors, offset + 50 * MIB, length)

    dmg = write_udif(tmp_path / "victim.dmg", image, codec="zlib", chunk_sectors=256, edit=edit).path
    with mount(dmg) as root:
        assert read_errno(root / "data" / "random.bin") == 5  # EIO
        assert (root / "docs" / "notes.txt").read_bytes() == (tree / "docs" / "notes.txt").read_bytes()
        assert (root / "many" / "file07.txt").read_bytes() == b"file 7\n" * 8


def assert_one_line(done: subprocess.CompletedProcess, *fragments: str) -> str:
    assert done.returncode != 0 and "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def test_bad_images_are_one_line_at_mount(tmp_path, text_disk):
    (tmp_path / "mnt").mkdir()
    bad = write_udif(tmp_path / "bad.dmg", text_disk).path
    data = bytearray(bad.read_bytes())
    at = data.index(b"<?xml")
    data[at : at + 5] = b"<?xmX"
    bad.write_bytes(bytes(data))
    assert_one_line(run_imgfs(str(bad), str(tmp_path / "mnt")), "udif", f"offset {at}")
    unknown = damaged(tmp_path, text_disk, set_run(0, 0, kind=0x7F000001))
    assert_one_line(run_imgfs(str(unknown), str(tmp_path / "mnt")), "udif", "0x7f000001")
    cut = tmp_path / "cut.dmg"
    cut.write_bytes(bytes(data[: len(data) // 2]))
    assert_one_line(run_imgfs(str(cut), str(tmp_path / "mnt")))


def test_info_names_the_codecs(tree, tmp_path):
    dmg = write_udif(tmp_path / "x.dmg", fat_image(tmp_path / "fat.img", tree, 16, "INFO"), codec="lzfse").path
    layers = json.loads(run_imgfs("info", "--json", str(dmg), check=True).stdout)["layers"]
    assert [layer["layer"] for layer in layers] == ["file", "udif", "fat"]
    assert layers[1]["format"] == "ULFO" and layers[1]["codecs"][0] == "lzfse"
    assert layers[1]["blkx"][0]["checksum"].startswith("crc32 ")
