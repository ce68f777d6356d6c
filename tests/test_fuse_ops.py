"""The FUSE adapter in-process: the fast paths (zero-copy read, packed struct stat, READDIRPLUS)
give what the plain paths give, and errors map to the right errno."""

from __future__ import annotations

import ctypes
import errno
import os
import stat

import pytest
from isotools import pseudo_random, write_file, xorriso

from imgfs import fuse_ops
from imgfs.image import open_image
from imgfs.options import MountOptions


@pytest.fixture(scope="module")
def operations(tmp_path_factory):
    base = tmp_path_factory.mktemp("ops")
    write_file(base / "src" / "data.bin", pseudo_random(300_000, 60))
    write_file(base / "src" / "dir" / "inner.txt", b"inner\n", 0o640)
    (base / "src" / "link").symlink_to("dir/inner.txt")
    options = MountOptions(umask=0o022)
    image = open_image(str(xorriso(base / "ops.iso", base / "src")), options)
    yield fuse_ops.ImgfsOperations(image, options)
    image.close()


def test_the_fast_paths_are_wired_into_libfuse():
    for name in ("read", "fgetattr", "readdir_fuse_3", "_wrapper"):
        assert getattr(fuse_ops._Fuse, name) is not getattr(fuse_ops.mfusepy.FUSE, name), name


def test_read_into_fills_libfuse_buffer(operations):
    fh = operations.open("/data.bin", os.O_RDONLY)
    buffer = (ctypes.c_char * 70_000)()
    count = operations.read_into("/data.bin", ctypes.addressof(buffer), 70_000, 250_000, fh)
    assert count == 50_000 and buffer.raw[:count] == pseudo_random(300_000, 60)[250_000:]
    assert operations.read("/data.bin", 10, 5, fh) == pseudo_random(300_000, 60)[5:15]
    operations.release("/data.bin", fh)


def test_packed_stat_equals_the_plain_one(operations):
    for path in ("/", "/data.bin", "/dir", "/dir/inner.txt", "/link"):
        st = fuse_ops.mfusepy.c_stat()
        operations.fill_stat(path, st)
        plain = operations.getattr(path)
        assert (st.st_mode, st.st_ino, st.st_nlink, st.st_size, st.st_uid, st.st_gid) == (
            plain["st_mode"], plain["st_ino"], plain["st_nlink"], plain["st_size"], plain["st_uid"], plain["st_gid"])
        assert st.st_mtimespec.tv_sec * 10**9 + st.st_mtimespec.tv_nsec == plain["st_mtime"]
        assert st.st_blocks == plain["st_blocks"]
    assert stat.S_IMODE(operations.getattr("/dir/inner.txt")["st_mode"]) == 0o640 & ~0o022


def test_listing_has_dot_entries_and_errors_map_to_errno(operations):
    assert [name for name, *_ in operations.listing("/")] == [".", "..", "data.bin", "dir", "link"]
    cases = {"/nope": errno.ENOENT, "/data.bin/x": errno.ENOTDIR}
    for path, code in cases.items():
        with pytest.raises(OSError) as caught:
            operations.getattr(path)
        assert caught.value.errno == code
    with pytest.raises(OSError) as caught:
        operations.open("/data.bin", os.O_WRONLY)
    assert caught.value.errno == errno.EROFS
    assert operations.readlink("/link") == "dir/inner.txt"
