"""Which imgfs is measured: the installed `imgfs` by default, or another command given with --imgfs.

Every mount, `imgfs ls` and in-process parse goes through ``COMMAND`` and ``PACKAGE_DIR``, so that one
run never mixes two versions (a working-tree wrapper such as tests/imgfs-dev runs the checkout's code,
while a plain `python -c "import imgfs"` would import the installed copy). A package outside
site-packages is a working tree that others may edit during the run: it is copied once into a snapshot
and measured from there.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Optional

COMMAND = ["imgfs"]
PACKAGE_DIR: Optional[Path] = None  # the imgfs package that COMMAND runs
ORIGIN = ""  # what was asked for, when COMMAND runs a snapshot of it

WRAPPER = """#!/bin/sh
# imgfs from a snapshot of {origin}; -P: the working directory must not shadow it
PYTHONPATH="{path}${{PYTHONPATH:+:$PYTHONPATH}}" exec {python} -P -m imgfs "$@"
"""


def select(command: str, python: str, snapshot_root: Path) -> None:
    """Measure ``command`` (a name on PATH or a path); a working tree is measured from a snapshot."""
    global PACKAGE_DIR, ORIGIN
    ORIGIN = ""
    found = shutil.which(command)
    if not found:
        raise SystemExit(f"bench: {command} not found; run `make install` or pass --imgfs PATH")
    COMMAND[:] = [os.path.abspath(found)]
    PACKAGE_DIR = package_dir(COMMAND[0])
    if "site-packages" not in PACKAGE_DIR.parts:
        ORIGIN = f"`{COMMAND[0]}` running {PACKAGE_DIR}"
        COMMAND[:] = [snapshot(PACKAGE_DIR, python, snapshot_root)]
        PACKAGE_DIR = package_dir(COMMAND[0])


def package_dir(command: str) -> Path:
    """The imgfs package ``command`` runs: Python's verbose import log names the file it loaded."""
    done = subprocess.run([command, "--version"], capture_output=True, text=True, cwd="/",
                          env={**os.environ, "PYTHONVERBOSE": "1"})
    # "# code object from /x/imgfs/__init__.py" or "# /x/imgfs/__pycache__/....pyc matches /x/imgfs/__init__.py"
    match = re.search(r"(?:from|matches) '?(/\S+/imgfs)/__init__\.py", done.stderr)
    if done.returncode or not match:
        raise SystemExit(f"bench: cannot tell which imgfs package {command} runs:\n{done.stderr[-500:]}")
    return Path(match.group(1))


def snapshot(package: Path, python: str, root: Path) -> str:
    """A copy of ``package`` under ``root`` (one per code digest) and a command that runs it."""
    root.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="imgfs-snapshot-", dir=root))
    shutil.copytree(package, work / "imgfs", ignore=shutil.ignore_patterns("__pycache__"))
    base = root / f"imgfs-snapshot-{code_digest(work / 'imgfs')}"
    if base.exists():
        shutil.rmtree(work)
    else:
        (work / "run-imgfs").write_text(WRAPPER.format(origin=package, path=base, python=python))
        (work / "run-imgfs").chmod(0o755)
        work.rename(base)
    # bytecode, as an installed package has it (pip compiles at install): without it every start compiles
    # every module, 0.1-0.2 s of each mount here, and none is written when PYTHONDONTWRITEBYTECODE is set
    subprocess.run([python, "-m", "compileall", "-q", str(base / "imgfs")], check=True, stdout=subprocess.DEVNULL)
    return str(base / "run-imgfs")


def code_digest(package: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(package.rglob("*.py")):
        digest.update(str(path.relative_to(package)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:12]


def describe() -> str:
    """The command, the package it runs and its code's digest: the installed one may change meanwhile."""
    assert PACKAGE_DIR is not None
    measured = f"`{COMMAND[0]}` running {PACKAGE_DIR} (code sha256 {code_digest(PACKAGE_DIR)})"
    return f"{ORIGIN}, measured from a copy taken at the start: {measured}" if ORIGIN else measured


def python_env() -> dict[str, str]:
    """The environment in which `python -c "import imgfs"` imports the measured package."""
    assert PACKAGE_DIR is not None
    return {**os.environ, "PYTHONPATH": str(PACKAGE_DIR.parent)}
