"""Building test ISOs with real tools (xorriso, genisoimage, pycdlib's writer), and patching them.

The patcher reads ISO 9660 structures itself, independently of imgfs, so that a fixture never
depends on the code it tests.
"""

from __future__ import annotations

import io
import os
import random
import struct
import subprocess
from pathlib import Path


def xorriso(out: Path, source: Path, *commands: str, rockridge: bool = True, joliet: bool = True) -> Path:
    """A native xorriso run: ``-map source /`` plus extra commands (filters, options)."""
    args = ["xorriso", "-outdev", str(out), "-rockridge", "on" if rockridge else "off",
            "-joliet", "on" if joliet else "off", "-hardlinks", "on", "-map", str(source), "/", *commands,
            "-commit"]
    subprocess.run(args, check=True, capture_output=True)
    return out


def genisoimage(out: Path, source: Path, *flags: str) -> Path:
    subprocess.run(["genisoimage", "-quiet", *flags, "-o", str(out), str(source)], check=True,
                   capture_output=True)
    return out


def write_file(path: Path, data: bytes, mode: int = 0o644, mtime: float = 1_600_000_000) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    os.chmod(path, mode)
    os.utime(path, (mtime, mtime))


def pseudo_random(size: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(size)


# -- a minimal independent ISO 9660 reader for locating records to patch --------------------------------

def _records(image: bytes, extent: int, size: int):
    pos = extent * 2048
    end = pos + size
    while pos < end:
        length = image[pos]
        if length == 0:
            pos = (pos // 2048 + 1) * 2048
            continue
        yield pos, image[pos : pos + length]
        pos += length


def root_names(image: bytes) -> list[bytes]:
    root = image[16 * 2048 + 156 : 16 * 2048 + 190]
    extent, size = struct.unpack_from("<I", root, 2)[0], struct.unpack_from("<I", root, 10)[0]
    return [rec[33 : 33 + rec[32]] for _, rec in _records(image, extent, size)]


def find_record(image: bytes, *names: bytes) -> int:
    """Byte offset of the record reached from the primary root by raw ISO names (``b"DIR"``, ``b"F.;1"``)."""
    root = image[16 * 2048 + 156 : 16 * 2048 + 190]
    extent, size = struct.unpack_from("<I", root, 2)[0], struct.unpack_from("<I", root, 10)[0]
    offset = None
    for name in names:
        for pos, rec in _records(image, extent, size):
            if rec[33 : 33 + rec[32]] == name:
                offset = pos
                extent, size = struct.unpack_from("<I", rec, 2)[0], struct.unpack_from("<I", rec, 10)[0]
                break
        else:
            raise KeyError(name)
    assert offset is not None
    return offset


def split_into_extents(image_path: Path, names: tuple[bytes, ...], piece_size: int) -> int:
    """Rewrite one file's directory record as a chain of multi-extent records of ``piece_size`` bytes.

    The record's directory block must have room for the extra records. Returns the piece count.
    """
    image = bytearray(image_path.read_bytes())
    pos = find_record(image, *names)
    record = bytes(image[pos : pos + image[pos]])
    extent, size = struct.unpack_from("<I", record, 2)[0], struct.unpack_from("<I", record, 10)[0]
    assert piece_size % 2048 == 0 and size > piece_size
    pieces = []
    for start in range(0, size, piece_size):
        rec = bytearray(record)
        length = min(piece_size, size - start)
        block = extent + start // 2048
        rec[2:10] = struct.pack("<I", block) + struct.pack(">I", block)
        rec[10:18] = struct.pack("<I", length) + struct.pack(">I", length)
        if start + piece_size < size:
            rec[25] |= 0x80
        pieces.append(bytes(rec))
    block_start = pos // 2048 * 2048
    block = image[block_start : block_start + 2048]
    inner = pos - block_start
    new_block = block[:inner] + b"".join(pieces) + block[inner + len(record) :]
    used = len(new_block.rstrip(b"\0"))
    assert used <= 2048, "no room in the directory block for the extra records"
    image[block_start : block_start + 2048] = new_block[:2048].ljust(2048, b"\0")
    image_path.write_bytes(bytes(image))
    return len(pieces)


def pycdlib_iso(out: Path, files: dict[str, bytes], *, rock_ridge: bool, joliet: bool,
                interchange_level: int = 1, symlinks: dict[str, str] | None = None,
                hardlinks: dict[str, str] | None = None) -> Path:
    """An ISO from pycdlib's writer. ``files`` maps ISO paths (``/DIR/FILE.TXT;1``) to bytes; with Rock
    Ridge and Joliet the lowercase of each component is used as its long name."""
    import pycdlib

    iso = pycdlib.PyCdlib()
    iso.new(interchange_level=interchange_level, rock_ridge="1.09" if rock_ridge else None,
            joliet=3 if joliet else None, vol_ident="PYCDLIB")

    def long_name(iso_path: str) -> str:
        return iso_path.split(";")[0].rstrip(".").lower()

    made = set()
    for iso_path in sorted(files):
        parts = iso_path.strip("/").split("/")
        for depth in range(1, len(parts)):
            directory = "/" + "/".join(parts[:depth])
            if directory not in made:
                made.add(directory)
                iso.add_directory(directory, rr_name=parts[depth - 1].lower() if rock_ridge else None,
                                  joliet_path=long_name(directory) if joliet else None)
        data = files[iso_path]
        iso.add_fp(io.BytesIO(data), len(data), iso_path,
                   rr_name=long_name(parts[-1]) if rock_ridge else None,
                   joliet_path=long_name(iso_path) if joliet else None)
    for link_path, target in (symlinks or {}).items():
        iso.add_symlink(link_path, rr_symlink_name=long_name(link_path.split("/")[-1]), rr_path=target)
    for new_path, old_path in (hardlinks or {}).items():
        iso.add_hard_link(iso_old_path=old_path, iso_new_path=new_path,
                          rr_name=long_name(new_path.split("/")[-1]) if rock_ridge else None)
    iso.write(str(out))
    iso.close()
    return out


def record_fields(image: bytes, pos: int) -> tuple[int, int]:
    """(extent, size) of the record at ``pos``."""
    return struct.unpack_from("<I", image, pos + 2)[0], struct.unpack_from("<I", image, pos + 10)[0]


def patch_record(image_path: Path, pos: int, *, extent: int | None = None, size: int | None = None) -> None:
    """Overwrite both-endian extent and/or size fields of the directory record at ``pos``."""
    with open(image_path, "r+b") as f:
        if extent is not None:
            f.seek(pos + 2)
            f.write(struct.pack("<I", extent) + struct.pack(">I", extent))
        if size is not None:
            f.seek(pos + 10)
            f.write(struct.pack("<I", size) + struct.pack(">I", size))


def susp_entries(image: bytes, pos: int):
    """(offset in image, signature, entry bytes) of the SUSP entries in the record at ``pos``."""
    length, name_len = image[pos], image[pos + 32]
    start = pos + 33 + name_len + (1 - name_len % 2)
    end = pos + length
    while start + 4 <= end:
        sig, entry_len = image[start : start + 2], image[start + 2]
        if entry_len < 4:
            return
        yield start, bytes(sig), bytes(image[start : start + entry_len])
        start += entry_len


def both_endian(value: int) -> bytes:
    return struct.pack("<I", value) + struct.pack(">I", value)


def ce_entry(block: int, offset: int, length: int) -> bytes:
    return b"CE\x1c\x01" + both_endian(block) + both_endian(offset) + both_endian(length)
