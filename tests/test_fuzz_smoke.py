"""Each fuzz target runs for two seconds from its generated seeds (the CI smoke test of ``fuzz/``): the
harness works for every layer family, and a fixed seed finds nothing. Campaigns are ``make fuzz``."""

from __future__ import annotations

import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

pytest.importorskip("atheris")  # a dev dependency: make test installs it

FUZZ = Path(__file__).resolve().parents[1] / "fuzz"
sys.path.insert(0, str(FUZZ))

from targets import TARGETS  # noqa: E402

SECONDS = 2


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, subprocess.CompletedProcess]:
    work = tmp_path_factory.mktemp("fuzz")
    subprocess.run([sys.executable, str(FUZZ / "seeds.py"), str(work / "seeds"), "--generated-only"], check=True,
                   capture_output=True)

    def run(name: str) -> subprocess.CompletedProcess:
        corpus = work / "corpus" / name
        corpus.mkdir(parents=True)
        seeds = work / "seeds" / name
        return subprocess.run([sys.executable, str(FUZZ / "run.py"), name, f"-max_total_time={SECONDS}", "-seed=1",
                               "-print_final_stats=1", f"-artifact_prefix={work}/", str(corpus),
                               *([str(seeds)] if seeds.is_dir() else [])], capture_output=True, text=True,
                              timeout=300)

    with ThreadPoolExecutor(2) as pool:
        return dict(zip(TARGETS, pool.map(run, TARGETS)))


@pytest.mark.parametrize("name", list(TARGETS))
def test_target_runs_and_finds_nothing(runs, name):
    done = runs[name]
    assert done.returncode == 0, done.stderr[-3000:]
    executed = int(re.search(r"stat::number_of_executed_units:\s*(\d+)", done.stderr).group(1))
    assert executed > 0, done.stderr[-2000:]
