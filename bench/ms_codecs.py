#!/usr/bin/env python3
"""Decode speed of imgfs's pure-Python XPRESS Huffman, LZX and LZNT1 decoders (imgfs/codecs), against
the C decoders of wimlib-imagex and ntfs-3g on the same data in the same run.

    PYTHONPATH=. bench/ms_codecs.py            # about 6 MiB: executables from /usr/bin, then text

XPRESS and LZX chunks are made by ``wimlib-imagex capture`` at WOF's chunk sizes; imgfs decodes every
compressed chunk of the file (MB/s of output, best of 3); the peer is ``wimlib-imagex extract
--to-stdout`` of the same file (process start included). LZNT1 units are written by ntfs-3g into a
compressed folder; imgfs decodes them from the clusters, the peer is ``cat`` through a fresh ntfs-3g
mount. zlib (C, level 6) on 64 KiB pieces of the same data is a yardstick.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))
sys.path.insert(0, str(HERE.parent))

from ntfs3gruns import CLUSTER, units  # noqa: E402
from wimreader import Wim  # noqa: E402

from imgfs.codecs import lznt1  # noqa: E402

KINDS = [("XPRESS4K", "XPRESS", 4096), ("XPRESS8K", "XPRESS", 8192), ("XPRESS16K", "XPRESS", 16384),
         ("LZX", "LZX", 32768)]


def corpus(size: int) -> bytes:
    """Executables (what CompactOS compresses most), then plain text."""
    out = bytearray()
    for path in sorted(Path("/usr/bin").iterdir()):
        if len(out) >= size * 2 // 3:
            break
        if path.is_file() and not path.is_symlink():
            out += path.read_bytes()[: 1 << 20]
    for path in sorted(Path("/usr/share/common-licenses").iterdir()):
        out += path.read_bytes()
    while len(out) < size:
        out += out[size * 2 // 3 :][: size - len(out)]
    return bytes(out[:size])


def best_of(runs: int, work) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        work()
        times.append(time.perf_counter() - started)
    return min(times)


def wim_row(tmp: Path, data: bytes, label: str, method: str, chunk_size: int) -> str:
    wim_path = tmp / f"{label}.wim"
    subprocess.run(["wimlib-imagex", "capture", str(tmp / "src"), str(wim_path), f"--compress={method}",
                    f"--chunk-size={chunk_size}"], check=True, capture_output=True)
    wim = Wim(wim_path.read_bytes())
    res = max(wim.resources(), key=lambda r: r.size)
    chunks = [(c, n) for c, n in wim.chunks(res) if len(c) < n]
    assert b"".join(wim.decoder(c, n) for c, n in wim.chunks(res) if len(c) < n)  # warm and check it runs
    ours = best_of(3, lambda: [wim.decoder(c, n) for c, n in chunks])
    total = sum(n for _, n in chunks)
    peer = best_of(3, lambda: subprocess.run(["wimlib-imagex", "extract", str(wim_path), "1", "/data",
                                               "--to-stdout"], check=True, stdout=subprocess.DEVNULL))
    ratio = sum(len(c) for c, _ in chunks) / total
    return (f"| {label} | {ratio:.2f} | {total / ours / 1e6:.1f} | {len(data) / peer / 1e6:.0f} "
            f"(wimlib-imagex extract) |")


def lznt1_row(tmp: Path, data: bytes) -> str:
    image, mnt = tmp / "ntfs.img", tmp / "mnt"
    with open(image, "wb") as f:
        f.truncate(len(data) * 2 + (16 << 20))
    subprocess.run(["mkntfs", "-q", "-F", "-f", "-c", str(CLUSTER), str(image)], check=True, capture_output=True)
    mnt.mkdir()
    subprocess.run(["ntfs-3g", "-o", "compression", str(image), str(mnt)], check=True)
    (mnt / "c").mkdir()
    subprocess.run(["setfattr", "-h", "-n", "system.ntfs_attrib_be", "-v", "0x00000810", str(mnt / "c")], check=True)
    (mnt / "c" / "data").write_bytes(data)
    subprocess.run(["umount", str(mnt)], check=True)
    raw = image.read_bytes()
    work = [(b"".join(raw[lcn * CLUSTER : (lcn + 1) * CLUSTER] for lcn in lcns if lcn is not None), length)
            for kind, lcns, length in units(image, "/c/data") if kind == "compressed"]
    ours = best_of(3, lambda: [lznt1.decompress(unit, length) for unit, length in work])
    total = sum(length for _, length in work)

    def peer() -> None:
        subprocess.run(["ntfs-3g", "-o", "ro", str(image), str(mnt)], check=True)
        try:
            subprocess.run(["cat", str(mnt / "c" / "data")], check=True, stdout=subprocess.DEVNULL)
        finally:
            subprocess.run(["umount", str(mnt)], check=True)

    peer_time = best_of(3, peer)
    ratio = sum(len(u) for u, _ in work) / total
    peer_speed = len(data) / peer_time / 1e6
    return f"| LZNT1 | {ratio:.2f} | {total / ours / 1e6:.1f} | {peer_speed:.0f} (ntfs-3g mount + cat) |"


def main() -> None:
    data = corpus(6 << 20)
    pieces = [zlib.compress(data[at : at + 65536], 6) for at in range(0, len(data), 65536)]
    zlib_time = best_of(3, lambda: [zlib.decompress(p) for p in pieces])
    print(f"{len(data) >> 20} MiB; MB/s of decoded output, best of 3; zlib (C) on the same data: "
          f"{len(data) / zlib_time / 1e6:.0f} MB/s\n")
    print("| codec | compressed/original | imgfs MB/s | peer MB/s |\n|---|---|---|---|")
    with tempfile.TemporaryDirectory(dir="/var/tmp") as name:
        tmp = Path(name)
        (tmp / "src").mkdir()
        (tmp / "src" / "data").write_bytes(data)
        for label, method, chunk_size in KINDS:
            print(wim_row(tmp, data, label, method, chunk_size), flush=True)
        print(lznt1_row(tmp, data), flush=True)


if __name__ == "__main__":
    main()
