"""A progress line on stderr while long work runs, and only on a terminal: ``imgfs verify``, ``-o verify``
before a mount, and ``imgfs extract`` (under ``script``, which gives the command a pseudo-terminal)."""

from __future__ import annotations

import functools
import io
import re
import shlex
import subprocess
from pathlib import Path

import pytest
import udifwriter
from conftest import IMGFS, is_mounted, run_imgfs, unmount

from imgfs.cli.progress import ProgressLine, terminal_progress
from imgfs.layer import no_progress

PERIOD = 1 << 20  # the file repeats every MiB, so that the writer compresses each distinct chunk once


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_the_line_shows_percent_rate_and_time_left() -> None:
    out, clock = io.StringIO(), Clock()
    line = ProgressLine(out, clock)
    line("checking", 0, 4 << 20)
    clock.now = 0.1
    line("checking", 1 << 20, 4 << 20)  # too early: quick work shows nothing
    assert out.getvalue() == ""
    clock.now = 1.0
    line("checking", 1 << 20, 4 << 20)
    assert out.getvalue() == "\rchecking:  25% 1 MiB of 4 MiB, 1 MiB/s, 0:03 left\x1b[K"
    clock.now = 1.05
    line("checking", 2 << 20, 4 << 20)  # redrawn at most ten times a second
    assert out.getvalue().count("\r") == 1
    clock.now = 2.0
    line("checking", 4 << 20, 4 << 20)  # done: the line is wiped
    assert out.getvalue().endswith("\r\x1b[K")


def test_silent_when_stderr_is_not_a_terminal() -> None:
    assert terminal_progress(io.StringIO()) is no_progress


@pytest.fixture(scope="module")
def slow_dmg(tmp_path_factory) -> Path:
    """A FAT disk holding 12 MiB of text, as an ADC DMG: ADC decodes in Python, at a few tens of MB/s."""
    work = tmp_path_factory.mktemp("progress")
    pattern = b"".join(b"row %07d: the quick brown fox\n" % i for i in range(PERIOD // 32))[:PERIOD]
    (work / "rows.txt").write_bytes(pattern * 12)
    disk = work / "fat.img"
    subprocess.run(["mkfs.fat", "-C", str(disk), str(14 << 10)], check=True, capture_output=True)
    subprocess.run(["mcopy", "-i", str(disk), str(work / "rows.txt"), "::rows.txt"], check=True,
                   capture_output=True, env={"MTOOLS_SKIP_CHECK": "1", "PATH": "/usr/bin:/bin"})
    compressors = dict(udifwriter.COMPRESSORS, adc=functools.lru_cache(maxsize=None)(udifwriter.adc_compress))
    saved, udifwriter.COMPRESSORS = udifwriter.COMPRESSORS, compressors
    try:
        return udifwriter.write_udif(work / "rows.dmg", disk, codec="adc").path
    finally:
        udifwriter.COMPRESSORS = saved


def on_a_terminal(*args: str) -> str:
    """What a terminal shows of ``imgfs ARGS``: stdout and stderr, as ``script`` records them."""
    command = shlex.join([IMGFS, *args])
    done = subprocess.run(["script", "-qec", command, "/dev/null"], capture_output=True, timeout=120)
    shown = done.stdout.decode()  # not text=True: that would turn each \r into \n
    assert done.returncode == 0, shown
    return shown


LINE = r"\r{what}: +\d+% [\d.]+ (KiB|MiB) of 1\d MiB, [\d.]+ (KiB|MiB)/s, \d+:\d\d left\x1b\[K"


def test_verify_shows_progress_on_a_terminal(slow_dmg):
    shown = on_a_terminal("verify", str(slow_dmg))
    assert re.search(LINE.format(what="checking the checksums"), shown), repr(shown[:300])
    assert shown.rstrip().endswith("OK (udif: CRC32 checksums of the data fork, each partition and the master "
                                   "checksum)")
    quiet = run_imgfs("verify", str(slow_dmg))  # no terminal: nothing but the verdict
    assert quiet.returncode == 0 and quiet.stderr == ""


def test_mount_with_verify_shows_progress_before_mounting(slow_dmg, tmp_path):
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    try:
        shown = on_a_terminal(str(slow_dmg), str(mnt), "-o", "verify")
        assert is_mounted(mnt)
    finally:
        unmount(mnt)
    assert re.search(LINE.format(what="checking the checksums"), shown), repr(shown[:300])
    assert shown.endswith("\r\x1b[K")  # wiped once done: nothing is left on the terminal


def test_extract_shows_progress_on_a_terminal(slow_dmg, tmp_path):
    shown = on_a_terminal("extract", str(slow_dmg), str(tmp_path / "out"))
    assert re.search(LINE.format(what="extracting"), shown), repr(shown[:300])
    assert (tmp_path / "out" / "rows.txt").read_bytes() == (slow_dmg.parent / "rows.txt").read_bytes()
