"""Bad input never crashes the daemon or prints a traceback: at mount time one clear line and a
non-zero exit; after mounting, EIO for the damaged file and a log line, the rest still readable."""

from __future__ import annotations

import errno
import os
import subprocess
from pathlib import Path

import pytest
from conftest import run_imgfs
from isotools import (
    ce_entry,
    find_record,
    patch_record,
    pseudo_random,
    record_fields,
    root_names,
    susp_entries,
    write_file,
    xorriso,
)


def assert_one_clear_line(done, *fragments: str) -> None:
    assert done.returncode != 0, f"expected a failure, got exit 0: {done.stdout[:200]}"
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got: {done.stderr!r}"
    assert lines[0].startswith("imgfs: ") and "Traceback" not in done.stderr
    for fragment in fragments:
        assert fragment.lower() in lines[0].lower(), f"{fragment!r} not in {lines[0]!r}"


def try_mount(image: Path, tmp_path: Path, *options: str):
    mnt = tmp_path / "mnt"
    mnt.mkdir(exist_ok=True)
    done = run_imgfs(str(image), str(mnt), *(["-o", ",".join(options)] if options else []))
    if done.returncode == 0:
        run_imgfs("umount", str(mnt))
    return done


@pytest.fixture
def good_iso(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    write_file(src / "readme.txt", b"readable\n")
    write_file(src / "victim.bin", pseudo_random(100_000, 7))
    write_file(src / ("n" * 200 + ".txt"), b"long name with a continuation area\n")
    for i in range(40):
        write_file(src / f"dir{i:02d}" / "inner" / "file.txt", f"{i}\n".encode())
    return xorriso(tmp_path / "good.iso", src)


def test_missing_file(tmp_path):
    assert_one_clear_line(try_mount(tmp_path / "nope.iso", tmp_path), "no such file", "nope.iso")


def test_a_directory(tmp_path):
    (tmp_path / "adir").mkdir()
    assert_one_clear_line(try_mount(tmp_path / "adir", tmp_path), "is a directory")


def test_empty_file(tmp_path):
    (tmp_path / "empty.iso").write_bytes(b"")
    assert_one_clear_line(try_mount(tmp_path / "empty.iso", tmp_path), "empty")


def test_random_bytes(tmp_path):
    """One short line: the file, its size, and where to see what was tried; ``info -v`` lists it, readably."""
    image = tmp_path / "random.iso"
    image.write_bytes(pseudo_random(1 << 20, 8))
    done = try_mount(image, tmp_path)
    assert_one_clear_line(done, f"no known image format in {image} (1,048,576 bytes)", f"`imgfs info -v {image}`")
    assert len(done.stderr) < 120 + 2 * len(str(image)), done.stderr
    verbose = run_imgfs("info", "-v", str(image))
    assert verbose.returncode == 1 and verbose.stderr.count("\n") == 1
    tried = verbose.stdout[verbose.stdout.index("What was tried"):].splitlines()[1:]
    assert [line.split()[0] for line in tried][:3] == ["encrcdsa", "cdsaencr", "sparseimage"]
    assert any(line.split()[0] == "iso9660" and line.endswith("'CD001' at byte 32769 not found") for line in tried)
    assert any(line.split()[0] == "mbr" and line.endswith("'U\\xaa' at byte 510 not found") for line in tried)
    assert verbose.stdout.isascii()  # magic bytes escaped, not printed as Latin-1 garbage


def test_missing_mount_point(good_iso, tmp_path):
    done = run_imgfs(str(good_iso), str(tmp_path / "no-such-dir"))
    assert_one_clear_line(done, "does not exist")


def test_unknown_option(good_iso, tmp_path):
    assert_one_clear_line(try_mount(good_iso, tmp_path, "frobnicate=1"), "unknown option")


def test_iso_truncated_in_the_middle_of_its_directory_tree(good_iso, tmp_path):
    image = good_iso.read_bytes()
    extent, _ = record_fields(image, find_record(image, b"DIR20"))
    truncated = tmp_path / "truncated.iso"
    truncated.write_bytes(image[: extent * 2048 + 100])
    assert_one_clear_line(try_mount(truncated, tmp_path), "truncated", "iso9660")


def test_iso_truncated_before_its_root_directory(tmp_path):
    """genisoimage writes the path tables before the directories: cut there, the root is named as such."""
    src = tmp_path / "src"
    write_file(src / "a" / "f.txt", b"hi\n")
    full = tmp_path / "full.iso"
    subprocess.run(["genisoimage", "-quiet", "-R", "-J", "-o", str(full), str(src)], check=True, capture_output=True)
    data = full.read_bytes()
    root_extent, _ = record_fields(data, 16 * 2048 + 156)
    truncated = tmp_path / "truncated.iso"
    truncated.write_bytes(data[: root_extent * 2048])
    done = run_imgfs("ls", str(truncated))
    assert_one_clear_line(done, f"iso9660: the image is truncated: it ends at byte {root_extent * 2048}, before the "
                          "root directory")
    assert "\\x00" not in done.stderr


def patch_root_records(image: Path, **fields: int) -> None:
    """The root record of every volume descriptor (primary and Joliet) and the "." record it points to,
    so that no intact copy can stand in."""
    sector = 16
    while (header := image.read_bytes()[sector * 2048 : sector * 2048 + 6])[1:6] == b"CD001" and header[0] != 255:
        if header[0] in (1, 2):
            extent, _ = record_fields(image.read_bytes(), sector * 2048 + 156)
            patch_record(image, extent * 2048, **fields)
            patch_record(image, sector * 2048 + 156, **fields)
        sector += 1


def test_root_directory_record_pointing_past_the_end(good_iso, tmp_path):
    patch_root_records(good_iso, extent=10**8)
    assert_one_clear_line(try_mount(good_iso, tmp_path), "past the end")


def test_directory_record_with_a_huge_size_allocates_nothing(good_iso, tmp_path):
    patch_root_records(good_iso, size=0xFFFFF000)
    assert_one_clear_line(try_mount(good_iso, tmp_path), "iso9660")


def test_subdirectory_record_pointing_past_the_end(good_iso, tmp_path, mount):
    image = good_iso.read_bytes()
    patch_record(good_iso, find_record(image, b"DIR05"), extent=10**7)
    with mount(good_iso) as root:
        with pytest.raises(OSError) as caught:
            os.listdir(root / "dir05")
        assert caught.value.errno == errno.EIO
        assert (root / "dir06" / "inner" / "file.txt").read_bytes() == b"6\n"
    done = run_imgfs("ls", "-R", str(good_iso))
    assert_one_clear_line(done, "/dir05", "past the end")
    assert "/dir06/inner/file.txt" in done.stdout


def test_looping_continuation_area_chain(good_iso, tmp_path):
    image = good_iso.read_bytes()
    pos = find_record(image, next(name for name in root_names(image) if name.startswith(b"NNNN")))
    ce = [e for e in susp_entries(image, pos) if e[1] == b"CE"]
    assert ce, "xorriso wrote no CE entry for the long name: the test proves nothing"
    entry = ce[0][2]
    block, offset, length = (int.from_bytes(entry[i : i + 4], "little") for i in (4, 12, 20))
    with open(good_iso, "r+b") as f:  # the continuation area now continues into itself
        f.seek(block * 2048 + offset)
        f.write(ce_entry(block, offset, length))
    assert_one_clear_line(try_mount(good_iso, tmp_path), "continuation", "loop")


def test_damaged_file_extent_gives_eio_on_that_file_only(good_iso, tmp_path, mount):
    image = good_iso.read_bytes()
    size = len(image)
    patch_record(good_iso, find_record(image, b"VICTIM.BIN;1"), extent=size // 2048 - 10)
    log = tmp_path / "imgfs.log"
    with mount(good_iso, f"logfile={log}") as root:
        assert os.stat(root / "victim.bin").st_size == 100_000
        with pytest.raises(OSError) as caught:
            (root / "victim.bin").read_bytes()
        assert caught.value.errno == errno.EIO
        assert (root / "readme.txt").read_bytes() == b"readable\n"
        assert (root / "dir39" / "inner" / "file.txt").read_bytes() == b"39\n"
    text = log.read_text()
    assert "victim.bin" in text and "past the end" in text and "Traceback" not in text


def test_damaged_zisofs_block_gives_eio(tmp_path, mount):
    src = tmp_path / "src"
    data = b"".join(b"row %08d\n" % i for i in range(100_000))
    write_file(src / "packed.txt", data)
    write_file(src / "plain.txt", b"plain\n")
    iso = xorriso(tmp_path / "z.iso", src, "-zisofs", "block_size=32k", "-set_filter_r", "--zisofs",
                  "/packed.txt", "--")
    image = bytearray(iso.read_bytes())
    extent, stored = record_fields(image, find_record(image, b"PACKED.TXT;1"))
    middle = extent * 2048 + stored // 2
    image[middle : middle + 64] = b"\xff" * 64  # garbage in the middle of one zlib block
    iso.write_bytes(bytes(image))
    with mount(iso) as root:
        with open(root / "packed.txt", "rb") as f:
            assert f.read(32768) == data[:32768]  # the first block is intact
            with pytest.raises(OSError) as caught:
                f.read()
        assert caught.value.errno == errno.EIO
        assert (root / "plain.txt").read_bytes() == b"plain\n"


@pytest.mark.parametrize("command", ["info", "ls", "cat"])
def test_commands_on_bad_input_give_one_line(tmp_path, command):
    (tmp_path / "random.bin").write_bytes(pseudo_random(100_000, 9))
    args = [command, str(tmp_path / "random.bin")] + (["/x"] if command == "cat" else [])
    assert_one_clear_line(run_imgfs(*args), "no known image format")


def test_not_an_iso_filesystems_are_named(tmp_path):
    hfs = bytearray(64 * 1024)
    hfs[1024:1028] = b"H+\x00\x04"
    (tmp_path / "hfs.img").write_bytes(bytes(hfs))
    assert_one_clear_line(try_mount(tmp_path / "hfs.img", tmp_path), "hfs+", "block size")
    compressed = tmp_path / "disc.iso.xz"
    compressed.write_bytes(b"\xfd7zXZ\x00" + bytes(100))
    assert_one_clear_line(try_mount(compressed, tmp_path), "xz", "decompress")


def test_device_numbers_of_any_32_bits_are_encoded_as_glibc_does():
    """Rock Ridge PN, UDF device attributes and NTFS/WSL records hold 32-bit majors and minors; os.makedev
    refuses those over 2**31 - 1 (a fuzzed ISO crashed the listing), the readers' one makedev does not."""
    import random

    from imgfs.filesystems.base import makedev

    rng = random.Random(5)
    for _ in range(2000):
        major, minor = rng.randrange(1 << 31), rng.randrange(1 << 31)
        assert makedev(major, minor) == os.makedev(major, minor)
    assert makedev(0xFFFFFFFF, 0xFFFFFFFF) == 0xFFFFFFFF_FFFFFFFF
    assert os.major(makedev(0x80000000, 7)) == 0x80000000 and os.minor(makedev(0x80000000, 7)) == 7
