"""Where ntfs-3g put a file's data, from ``ntfsinfo -v``: the runs of its unnamed $DATA attribute, cut
into compression units (for tests and benchmarks of LZNT1 against ntfs-3g-made volumes)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import NamedTuple, Optional

CLUSTER = 4096  # the volumes are made with mkntfs -c 4096


class Run(NamedTuple):
    vcn: int
    lcn: Optional[int]  # None: a hole
    length: int


def data_runs(image: Path, path: str) -> tuple[int, int, list[Run]]:
    """Compression unit (log2 clusters), data size and runs of the file's unnamed $DATA, from ntfsinfo."""
    text = subprocess.run(["ntfsinfo", "-v", "-F", path, str(image)], check=True, capture_output=True,
                          text=True).stdout
    section = text[text.index("Dumping attribute $DATA") :]
    unit = int(re.search(r"Compression unit:\s+(\d+)", section).group(1))
    size = int(re.search(r"Data size:\s+(\d+)", section).group(1))
    runs = [Run(int(v, 16), None if lcn == "<HOLE>" else int(lcn, 16), int(n, 16))
            for v, lcn, n in re.findall(r"^\s+(0x[0-9a-f]+)\s+(<HOLE>|0x[0-9a-f]+)\s+(0x[0-9a-f]+)$", section, re.M)]
    return unit, size, runs


def unit_clusters(runs: list[Run], first_vcn: int, count: int) -> list[Optional[int]]:
    """The LCN (or None for a hole) of each of ``count`` clusters from ``first_vcn``."""
    lcns: list[Optional[int]] = []
    for vcn in range(first_vcn, first_vcn + count):
        run = next((r for r in runs if r.vcn <= vcn < r.vcn + r.length), None)
        lcns.append(None if run is None or run.lcn is None else run.lcn + vcn - run.vcn)
    return lcns


def units(image: Path, path: str) -> list[tuple[str, list[Optional[int]], int]]:
    """Each compression unit of a file: its kind, its clusters, its uncompressed length."""
    unit_log, size, runs = data_runs(image, path)
    per_unit = 1 << unit_log
    out = []
    for first in range(0, -(-size // CLUSTER), per_unit):
        lcns = unit_clusters(runs, first, per_unit)
        length = min(per_unit * CLUSTER, size - first * CLUSTER)
        kind = "hole" if all(c is None for c in lcns) else "stored" if None not in lcns else "compressed"
        out.append((kind, lcns, length))
    return out


def raw_chunk_count(data: bytes) -> int:
    """How many chunks of an LZNT1 unit are stored as they are (compressed flag clear)."""
    at, count = 0, 0
    while at + 2 <= len(data) and (header := int.from_bytes(data[at : at + 2], "little")):
        count += not header & 0x8000
        at += 3 + (header & 0xFFF)
    return count


