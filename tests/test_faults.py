"""Faults from outside, with real mounts: the image truncated or deleted under a mount, the daemon stopped by
SIGTERM while it is busy, killed by SIGKILL and mounted again on the same folder. (Ctrl-C and SIGTERM during a long key
derivation: ``test_kdf.py``.)

Every read here runs in a subprocess with a timeout: a hang is a failure, not a stuck suite.
"""

from __future__ import annotations

import errno
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
from conftest import daemon_pid, is_mounted, run_imgfs, unmount
from isotools import find_record, pseudo_random, record_fields, write_file, xorriso
from udifwriter import write_udif

HEAD = pseudo_random(300_000, 21)
TAIL = pseudo_random(6 << 20, 22)
SMALL = {f"small{i:02d}.txt": f"small file {i}\n".encode() * 50 for i in range(20)}


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> dict[str, Path]:
    """An ISO whose last file is TAIL (6 MiB), and a zlib DMG of the same ISO."""
    work = tmp_path_factory.mktemp("faults")
    src = work / "src"
    write_file(src / "aaa-head.bin", HEAD)
    for name, data in SMALL.items():
        write_file(src / "dir" / name, data)
    write_file(src / "zzz-tail.bin", TAIL)
    iso = xorriso(work / "faults.iso", src)
    image = iso.read_bytes()
    extents = {name: record_fields(image, find_record(image, name))[0] for name in (b"AAA_HEAD.BIN;1",
                                                                                      b"ZZZ_TAIL.BIN;1")}
    assert extents[b"ZZZ_TAIL.BIN;1"] > extents[b"AAA_HEAD.BIN;1"], "the tail file is not last: the test proves nothing"
    dmg = work / "faults.dmg"
    write_udif(dmg, image, codec="zlib")
    return {"iso": iso, "dmg": dmg}


def _cat(path: Path, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(["cat", str(path)], capture_output=True, timeout=timeout)


def _mount(image: Path, mnt: Path, *options: str) -> None:
    mnt.mkdir(exist_ok=True)
    run_imgfs(str(image), str(mnt), *(["-o", ",".join(options)] if options else []), check=True)


@pytest.mark.parametrize("kind", ["iso", "dmg"])
def test_image_truncated_then_deleted_while_mounted(images, tmp_path, kind):
    image = tmp_path / images[kind].name
    shutil.copy(images[kind], image)
    mnt, log = tmp_path / "mnt", tmp_path / "imgfs.log"
    _mount(image, mnt, f"logfile={log}")
    try:
        os.truncate(image, image.stat().st_size - (3 << 20))  # the tail file's second half is gone
        cut = _cat(mnt / "zzz-tail.bin")
        assert cut.returncode != 0 and b"Input/output error" in cut.stderr
        assert _cat(mnt / "aaa-head.bin").stdout == HEAD  # what is still there reads
        for name, data in SMALL.items():
            assert (mnt / "dir" / name).read_bytes() == data
        image.unlink()  # the daemon's descriptor keeps what is left readable
        assert _cat(mnt / "dir" / "small07.txt").stdout == SMALL["small07.txt"]
        again = _cat(mnt / "zzz-tail.bin")
        assert again.returncode != 0 and b"Input/output error" in again.stderr
        with pytest.raises(OSError) as caught:  # in the middle of what is gone (a DMG's last chunk, decoded
            with open(mnt / "zzz-tail.bin", "rb") as f:  # when the image was opened, is still in the cache)
                f.seek(5 << 20)
                f.read(4096)
        assert caught.value.errno == errno.EIO
    finally:
        unmount(mnt)
    assert not is_mounted(mnt)
    text = log.read_text()
    assert "zzz-tail.bin" in text and "Traceback" not in text


@pytest.mark.parametrize("kind", ["iso", "dmg"])
def test_sigterm_while_readers_are_busy_unmounts_cleanly(images, tmp_path, kind):
    mnt = tmp_path / "mnt"
    _mount(images[kind], mnt)
    readers = []
    try:
        pid = daemon_pid(str(mnt))
        readers = [subprocess.Popen(["sh", "-c", f"while cat {mnt}/zzz-tail.bin {mnt}/dir/*; do :; done"],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for _ in range(4)]
        time.sleep(1.0)  # the readers are under way, the DMG's chunks decoding
        assert all(r.poll() is None for r in readers)
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        while (is_mounted(mnt) or Path(f"/proc/{pid}").exists()) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not is_mounted(mnt), "still mounted 10 s after SIGTERM"
        assert not Path(f"/proc/{pid}").exists(), "the daemon outlived SIGTERM by 10 s"
        for reader in readers:  # each loop ends: its cat fails on the unmounted folder
            reader.wait(timeout=20)
    finally:
        for reader in readers:
            if reader.poll() is None:
                reader.kill()
        unmount(mnt)


def test_mount_again_after_sigkill(images, tmp_path):
    """The stale mount point is the command line's to clear (imgfs/cli/mounts.py, issue 11 item 6)."""
    mnt = tmp_path / "mnt"
    _mount(images["iso"], mnt)
    try:
        os.kill(daemon_pid(str(mnt)), signal.SIGKILL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                os.stat(mnt)
            except OSError as exc:
                if exc.errno == errno.ENOTCONN:
                    break
            time.sleep(0.05)
        done = run_imgfs(str(images["iso"]), str(mnt))
        lines = done.stderr.strip().splitlines()
        if done.returncode == 0:
            assert (mnt / "aaa-head.bin").read_bytes() == HEAD
        else:  # one clear line that says what the folder is and how to clear it
            assert len(lines) == 1 and ("not connected" in lines[0] or "stale" in lines[0]), lines
    finally:
        unmount(mnt)
        subprocess.run(["fusermount3", "-uz", str(mnt)], capture_output=True)
