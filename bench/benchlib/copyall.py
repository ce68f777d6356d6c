"""Copying a whole image out: through a mount (`cp -r`, `tar -cf - | cat`) and with the extractors.

The workload users feel most is "copy everything off this disc". Each copy goes into a fresh folder on
tmpfs (/dev/shm), so that the destination costs the same for everyone and the disk plays no part; each
mounting reader gets a fresh mount. The extractors (`7zz x`, `bsdtar -x`, `imgfs extract` once it exists)
read the image file themselves, with no FUSE: they are what a mount is measured against.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Optional

from benchlib import subject

COPY_ROOT = Path("/dev/shm")
Mounter = Callable[[str, Path], AbstractContextManager]  # (reader, image) -> context giving a mount with .path


def extractors() -> dict[str, Callable[[Path, Path], list[str]]]:
    """The extractors installed here, by name: each gives the command that extracts IMAGE into DEST."""
    found: dict[str, Callable[[Path, Path], list[str]]] = {}
    if shutil.which("7zz"):
        found["7zz x"] = lambda image, dest: ["7zz", "x", "-y", "-bd", f"-o{dest}", str(image)]
    if shutil.which("bsdtar"):
        found["bsdtar -x"] = lambda image, dest: ["bsdtar", "-xf", str(image), "-C", str(dest)]
    if has_extract():
        found["imgfs extract"] = lambda image, dest: [*subject.COMMAND, "extract", str(image), str(dest)]
    return found


def has_extract() -> bool:
    """Does the measured imgfs have an `extract` command (issue 12)?"""
    done = subprocess.run([*subject.COMMAND, "extract", "--help"], capture_output=True, text=True)
    return done.returncode == 0 and "extract" in done.stdout + done.stderr


@contextmanager
def fresh_destination() -> Iterator[Path]:
    dest = Path(tempfile.mkdtemp(prefix="imgfs-bench-copy-", dir=COPY_ROOT))
    try:
        yield dest
    finally:
        shutil.rmtree(dest, ignore_errors=True)


def timed(cmd: list[str], problems: list[str]) -> float:
    start = time.perf_counter()
    done = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    elapsed = time.perf_counter() - start
    if done.returncode:
        problems.append(f"`{' '.join(cmd)}` exited {done.returncode}: {done.stderr.strip()[:300]}")
    return elapsed


def copy_through_mount(mnt: Path, problems: list[str]) -> float:
    """`cp -r` of everything under ``mnt`` into a fresh tmpfs folder; wall seconds."""
    with fresh_destination() as dest:
        return timed(["cp", "-r", f"{mnt}/.", str(dest)], problems)


def tar_through_mount(mnt: Path, problems: list[str]) -> float:
    """`tar -cf - -C MNT . | cat > /dev/null`: every file read once, nothing written."""
    return timed(["bash", "-c", 'set -o pipefail; tar -cf - -C "$1" . | cat > /dev/null', "tar", str(mnt)],
                 problems)


def extract(command: Callable[[Path, Path], list[str]], image: Path, problems: list[str]) -> float:
    with fresh_destination() as dest:
        return timed(command(image, dest), problems)


def copy_round(image: Path, readers: tuple[str, ...], mounted: Mounter, problems: list[str],
               warm: Callable[[], None], extract_with: Optional[tuple[str, ...]] = None) -> dict[str, dict[str, float]]:
    """One round: {"copy_all": {who: s}, "tar_all": {who: s}} for the mounting readers and the extractors
    (those named in ``extract_with`` that can read this kind of image; all installed ones by default)."""
    copies: dict[str, float] = {}
    tars: dict[str, float] = {}
    for reader in readers:
        for work, into in ((copy_through_mount, copies), (tar_through_mount, tars)):
            warm()
            with mounted(reader, image) as mount:
                into[reader] = work(mount.path, problems)
    for name, command in extractors().items():
        if extract_with is not None and name not in extract_with:
            continue
        warm()
        copies[name] = extract(command, image, problems)
    return {"copy_all": copies, "tar_all": tars}


def table(medians: dict[str, dict[str, float]], ratios: dict[str, dict[str, float]], reference: str,
          limit: float, prefix: str = "") -> list[str]:
    """Markdown rows: every reader's median seconds and imgfs's time against each (``reference``: the goal);
    the rows are ``{prefix}copy_all`` and ``{prefix}tar_all``."""
    medians = {key[len(prefix):]: value for key, value in medians.items() if key.startswith(prefix)}
    ratios = {key[len(prefix):]: value for key, value in ratios.items() if key.startswith(prefix)}
    lines = ["| workload | who | seconds | imgfs's time against it |", "|---|---|---|---|"]
    labels = {"copy_all": "copy everything to tmpfs (`cp -r`, or the extractor)",
              "tar_all": "`tar -cf - MNT \\| cat > /dev/null`"}
    for key in ("copy_all", "tar_all"):
        for who, seconds in medians.get(key, {}).items():
            ratio = "–" if who == "imgfs" else f"{ratios[key][who]:.2f}×"
            if key == "copy_all" and who == reference:
                ratio += f" (goal ≤ {limit:g}×: {'met' if ratios[key][who] <= limit else '**MISSED**'})"
            lines.append(f"| {labels[key]} | {who} | {seconds:.3f} | {ratio} |")
    return lines
