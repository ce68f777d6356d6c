"""A fuzzing campaign: every target (or those named) for a number of inputs or seconds, a few at a time, and a
report of inputs, executions per second, coverage and findings per target.

    python fuzz/campaign.py [--runs N | --seconds S] [--jobs J] [--dir DIR] [TARGET ...]

Work goes to ``DIR`` (``$IMGFS_FUZZ_DIR``, else ``/var/tmp/imgfs-fuzz``): ``seeds/`` (made by ``seeds.py`` when
missing), ``corpus/TARGET`` (what libFuzzer keeps), ``findings/TARGET`` (crash-, timeout- and oom- inputs),
``logs/TARGET.log`` and ``report.md``. libFuzzer stops at its first finding; the campaign then starts the
target again from its corpus until the target's budget is spent, so one finding does not end the run.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from targets import TARGETS  # noqa: E402

PYTHON = sys.executable
MAX_RESTARTS = 50


@dataclass
class Result:
    target: str
    inputs: int = 0
    seconds: float = 0.0
    cov: int = 0
    ft: int = 0
    corpus: int = 0
    restarts: int = 0
    findings: list[str] = field(default_factory=list)

    @property
    def per_second(self) -> float:
        return self.inputs / self.seconds if self.seconds else 0.0


def _stats(log: str) -> tuple[int, int, int, int]:
    """(inputs, cov, ft, corpus) from one libFuzzer run's output."""
    inputs = max([int(n) for n in re.findall(r"stat::number_of_executed_units:\s*(\d+)", log)] or
                 [int(n) for n in re.findall(r"^#(\d+)\s", log, re.M)] or [0])
    status = re.findall(r"cov: (\d+) ft: (\d+) corp: (\d+)", log)
    cov, ft, corp = (int(v) for v in status[-1]) if status else (0, 0, 0)
    return inputs, cov, ft, corp


def run_target(name: str, work: Path, runs: int, seconds: float) -> Result:
    result = Result(name)
    corpus, findings, logs = work / "corpus" / name, work / "findings" / name, work / "logs"
    for folder in (corpus, findings, logs):
        folder.mkdir(parents=True, exist_ok=True)
    seeds = work / "seeds" / name
    started, wall_start = time.monotonic(), time.time() - 1
    with open(logs / f"{name}.log", "w") as log_file:
        while result.restarts <= MAX_RESTARTS:
            left_runs = runs - result.inputs if runs else 0
            left_seconds = seconds - (time.monotonic() - started) if seconds else 0
            if (runs and left_runs <= 0) or (seconds and left_seconds <= 1):
                break
            budget = [f"-runs={left_runs}"] if runs else [f"-max_total_time={int(left_seconds)}"]
            command = [PYTHON, str(HERE / "run.py"), name, *budget, "-print_final_stats=1",
                       f"-artifact_prefix={findings}/", str(corpus), *([str(seeds)] if seeds.is_dir() else [])]
            done = subprocess.run(command, capture_output=True, text=True)
            log_file.write(done.stdout + done.stderr)
            inputs, cov, ft, corp = _stats(done.stderr)
            result.inputs += inputs
            result.cov, result.ft, result.corpus = max(result.cov, cov), max(result.ft, ft), max(result.corpus, corp)
            if done.returncode == 0:
                break
            result.restarts += 1
    result.seconds = time.monotonic() - started
    result.findings = sorted(p.name for p in findings.iterdir() if p.stat().st_mtime >= wall_start)
    return result


def report(results: list[Result], work: Path) -> str:
    lines = ["| target | inputs | inputs/s | coverage (cov / ft) | corpus | findings |", "|---|---|---|---|---|---|"]
    for r in results:
        found = ", ".join(r.findings) if r.findings else "none"
        lines.append(f"| {r.target} | {r.inputs:,} | {r.per_second:.0f} | {r.cov:,} / {r.ft:,} | {r.corpus:,} | "
                     f"{found} |")
    text = "\n".join(lines) + "\n"
    (work / "report.md").write_text(text)
    (work / "report.json").write_text(json.dumps([asdict(r) | {"per_second": r.per_second} for r in results],
                                                 indent=2))
    return text


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("targets", nargs="*", default=list(TARGETS))
    parser.add_argument("--runs", type=int, default=0, help="inputs per target")
    parser.add_argument("--seconds", type=float, default=0, help="seconds per target")
    parser.add_argument("--jobs", type=int, default=1, help="targets run at once")
    parser.add_argument("--dir", default=os.environ.get("IMGFS_FUZZ_DIR", "/var/tmp/imgfs-fuzz"))
    args = parser.parse_args(argv[1:])
    if not args.runs and not args.seconds:
        args.runs = 100_000
    unknown = [t for t in args.targets if t not in TARGETS]
    if unknown:
        parser.error(f"unknown targets {unknown}; targets: {', '.join(TARGETS)}")
    work = Path(args.dir)
    if not (work / "seeds").is_dir():
        subprocess.run([PYTHON, str(HERE / "seeds.py"), str(work / "seeds")], check=True)
    with ThreadPoolExecutor(args.jobs) as pool:
        results = list(pool.map(lambda t: run_target(t, work, args.runs, args.seconds), args.targets))
    print(report(results, work), end="")
    return 1 if any(r.findings for r in results) else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
