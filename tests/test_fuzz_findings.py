"""Every input the fuzzing campaigns found (``fuzz/``, README "Reliability") stays fixed.

Each reproducer in ``tests/fuzz_findings`` is named ``TARGET-what-it-did``. It is run the way its target
runs inputs (``fuzz/targets.py``: the same opening, walking, stat-ing and reading), where only an
``ImageError`` may come out, within a time limit and 1 GiB of memory; then the image it makes is given to
the command line under a 2 GiB address space (``ulimit -v``), which must answer with exit 0 or 1 and
nothing but one-line ``imgfs:`` messages: never a traceback, "internal error" or a MemoryError.
"""

from __future__ import annotations

import logging
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import IMGFS

FUZZ = Path(__file__).resolve().parents[1] / "fuzz"
sys.path.insert(0, str(FUZZ))

import targets  # noqa: E402

FINDINGS = sorted((Path(__file__).parent / "fuzz_findings").iterdir())
TIME_LIMIT = 5  # seconds, as in the campaign
ADDRESS_SPACE = 2 << 30
MEMORY_HEADROOM = 1 << 30  # what one input may allocate, as in the campaign


@pytest.fixture(scope="module")
def workdir():
    """The fuzzing process's settings (PBKDF2 held low, no logging) for this module only: the other tests
    check the real limit and the log lines."""
    limit = targets.kdf.MAX_ITERATIONS
    targets.setup()
    try:
        yield targets.new_workdir()
    finally:
        targets.kdf.MAX_ITERATIONS = limit
        logging.disable(logging.NOTSET)


def _target(path: Path) -> targets.Target:
    return targets.TARGETS[path.name.split("-")[0]]


@pytest.mark.parametrize("finding", FINDINGS, ids=lambda p: p.name)
def test_finding_is_handled_in_time(finding, workdir):
    def too_slow(*_):
        raise TimeoutError(f"{finding.name} took over {TIME_LIMIT} s")

    previous = signal.signal(signal.SIGALRM, too_slow)
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    resource.setrlimit(resource.RLIMIT_AS, (_mapped() + MEMORY_HEADROOM, hard))  # as in the campaign
    signal.alarm(TIME_LIMIT)
    started = time.monotonic()
    try:
        targets.run(_target(finding), finding.read_bytes(), workdir)
    finally:
        signal.alarm(0)
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))
        signal.signal(signal.SIGALRM, previous)
    assert time.monotonic() - started < TIME_LIMIT


def _mapped() -> int:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmSize:")) * 1024


def _limited() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE, ADDRESS_SPACE))


@pytest.mark.parametrize("finding", FINDINGS, ids=lambda p: p.name)
def test_finding_gets_clean_lines_from_the_command_line(finding, tmp_path):
    target = _target(finding)
    data = finding.read_bytes()
    if target.mode == "filesystem":  # the same bytes as a file of their own
        path = targets.materialize(targets.Target("file", "image", "sparse", (), fixup=target.fixup), data,
                                   str(tmp_path))
    else:
        path = targets.materialize(target, data, str(tmp_path))
    if path is None:
        pytest.skip("an empty input")
    env = dict(os.environ, IMGFS_PASSPHRASE=targets.PASSPHRASE)
    done = subprocess.run([IMGFS, "ls", "-R", path], capture_output=True, timeout=120, env=env, preexec_fn=_limited)
    stderr = done.stderr.decode("utf-8", "replace")  # names from a damaged image need not be UTF-8
    assert done.returncode in (0, 1), stderr
    for line in stderr.splitlines():
        assert line.startswith("imgfs: ") and "internal error" not in line, line
    assert "Traceback" not in stderr
