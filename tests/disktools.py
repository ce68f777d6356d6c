"""Building partitioned disk images with real tools (sfdisk, sgdisk, fdisk), no root or loop devices."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path


def blank(path: Path, size: int) -> Path:
    with open(path, "wb") as f:
        f.truncate(size)
    return path


def sfdisk(path: Path, script: str) -> list[dict]:
    """Partition with an sfdisk script; returns sfdisk's own view of the partitions (512-byte sectors)."""
    subprocess.run(["sfdisk", "--no-reread", "--no-tell-kernel", "-q", str(path)], input=script, text=True,
                   check=True, capture_output=True)
    return partitions(path)


def partitions(path: Path) -> list[dict]:
    done = subprocess.run(["sfdisk", "--json", str(path)], capture_output=True, text=True, check=True)
    return json.loads(done.stdout)["partitiontable"]["partitions"]


def fdisk(path: Path, commands: str, sector_size: int = 512) -> None:
    subprocess.run(["fdisk", "-b", str(sector_size), str(path)], input=commands, text=True, check=True,
                   capture_output=True)


def put(disk: Path, offset: int, data: bytes) -> None:
    """What ``dd conv=notrunc seek=...`` does: write ``data`` into the disk image at ``offset``."""
    with open(disk, "r+b") as f:
        f.seek(offset)
        f.write(data)


def write_mbr(disk: Path, entries: list[tuple[int, int, int]]) -> None:
    """A hand-made MBR, for layouts sfdisk refuses to write: (type, first LBA, sectors) per entry."""
    table = b"".join(bytes([0, 0, 0, 0, kind, 0, 0, 0]) + first.to_bytes(4, "little") + count.to_bytes(4, "little")
                     for kind, first, count in entries)
    put(disk, 446, table.ljust(64, b"\0") + b"\x55\xaa")


def fat_image(path: Path, source: Path, size_mib: int, label: str) -> bytes:
    blank(path, size_mib << 20)
    subprocess.run(["mkfs.fat", "-F", "16" if size_mib < 64 else "32", "-n", label, str(path)], check=True,
                   capture_output=True)
    env = {**os.environ, "MTOOLS_SKIP_CHECK": "1"}
    subprocess.run(["mcopy", "-s", "-p", "-m", "-i", str(path), *map(str, sorted(source.iterdir())), "::/"],
                   check=True, capture_output=True, env=env)
    return path.read_bytes()


def ext4_image(path: Path, source: Path, size_mib: int, label: str) -> bytes:
    blank(path, size_mib << 20)
    subprocess.run(["mkfs.ext4", "-q", "-F", "-L", label, "-d", str(source), str(path)], check=True,
                   capture_output=True)
    return path.read_bytes()
