"""A test writer for WOF-compressed files (what ``compact /c /exe:ALG`` makes on Windows 10+), from the
format as ``imgfs/codecs/wof.py`` describes it.

Interface (for the codec tests and for NTFS volume tests):

``wof_stream(content, algorithm, *, engine="test", entry_size=None) -> bytes``
    The bytes of the ``WofCompressedData`` named stream for a file holding ``content``: the chunk offset
    table, then each chunk compressed, or stored as it is when compression does not make it smaller.
    ``algorithm`` is ``XPRESS4K`` (0), ``LZX`` (1), ``XPRESS8K`` (2) or ``XPRESS16K`` (3) from
    ``imgfs.codecs.wof``. ``engine="test"`` compresses with this project's test encoders
    (``msencoders.py``, ``lzxencoder.py``); ``engine="wimlib"`` has ``wimlib-imagex`` (package wimtools)
    compress it, a third-party compressor, and takes its WIM resource, which has the same layout.
    ``entry_size`` forces 4- or 8-byte table entries (the format uses 8 only for files of 4 GiB or more).

``reparse_point(algorithm) -> bytes``
    The whole 24-byte reparse buffer: tag 0x80000017, data length 16, reserved, then WOF version 1,
    provider 2 (file), file-provider version 1, ``algorithm``. This is the value of ntfs-3g's
    ``system.ntfs_reparse_data`` extended attribute.

``write_wof_file(path, content, algorithm, *, engine="test") -> None``
    Makes ``path``, on an ntfs-3g volume mounted with ``-o streams_interface=windows``, a WOF file as
    Windows leaves one: it creates the file empty, writes ``wof_stream(...)`` to its named stream
    ``path:WofCompressedData``, truncates the file to ``len(content)`` (the unnamed stream is then
    sparse, of the full size) and sets the reparse point last (``system.ntfs_reparse_data``); ntfs-3g
    sets SPARSE_FILE and REPARSE_POINT in the file's attributes. ntfs-3g without its WOF plugin cannot
    open or stat the file after that (EIO); ``ntfscat -a 0x80 -n WofCompressedData IMAGE /path`` still
    reads the stream.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import tempfile
from pathlib import Path
from typing import Callable

from lzxencoder import lzx_compress
from msencoders import xpress_huffman_compress
from wimreader import RES_COMPRESSED, Wim

from imgfs.codecs.wof import ALGORITHMS, LZX, PROVIDER_FILE, REPARSE_TAG_WOF

Compressor = Callable[[bytes], bytes]


def reparse_point(algorithm: int) -> bytes:
    data = (1).to_bytes(4, "little") + PROVIDER_FILE.to_bytes(4, "little") + (1).to_bytes(4, "little")
    data += algorithm.to_bytes(4, "little")
    return REPARSE_TAG_WOF.to_bytes(4, "little") + len(data).to_bytes(2, "little") + b"\0\0" + data


def wof_stream(content: bytes, algorithm: int, *, engine: str = "test", entry_size: int | None = None) -> bytes:
    chunk_size = ALGORITHMS[algorithm].chunk_size
    if engine == "wimlib":
        chunks = _wimlib_chunks(content, algorithm)
    else:
        compress: Compressor = lzx_compress if algorithm == LZX else xpress_huffman_compress
        chunks = [content[at : at + chunk_size] for at in range(0, len(content), chunk_size)]
        chunks = [_smaller(compress(chunk), chunk) for chunk in chunks]
    return assemble(chunks, len(content), entry_size)


def _smaller(compressed: bytes, chunk: bytes) -> bytes:
    return compressed if len(compressed) < len(chunk) else chunk


def assemble(chunks: list[bytes], size: int, entry_size: int | None = None) -> bytes:
    """The stream from each chunk's stored bytes: the table of where chunks 1..n-1 start, then them."""
    entry_size = entry_size or (8 if size > 0xFFFFFFFF else 4)
    table, at = bytearray(), 0
    for chunk in chunks[:-1]:
        at += len(chunk)
        table += at.to_bytes(entry_size, "little")
    return bytes(table) + b"".join(chunks)


def _wimlib_chunks(content: bytes, algorithm: int) -> list[bytes]:
    """``content`` compressed by wimlib-imagex into a WIM of the algorithm's chunk size, chunk by chunk."""
    chunk_size = ALGORITHMS[algorithm].chunk_size
    method = "LZX" if algorithm == LZX else "XPRESS"
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp, "src")
        src.mkdir()
        (src / "file").write_bytes(content)
        wim_path = Path(tmp, "file.wim")
        subprocess.run(["wimlib-imagex", "capture", str(src), str(wim_path), f"--compress={method}",
                        f"--chunk-size={chunk_size}"], check=True, capture_output=True)
        wim = Wim(wim_path.read_bytes())
    digest = hashlib.sha1(content).digest()
    res = next(r for r in wim.resources() if r.sha1 == digest)
    if not res.flags & RES_COMPRESSED:  # wimlib stores an incompressible file whole: every chunk as it is
        return [content[at : at + chunk_size] for at in range(0, len(content), chunk_size)]
    return [stored for stored, _ in wim.chunks(res)]


def write_wof_file(path: Path, content: bytes, algorithm: int, *, engine: str = "test") -> None:
    path.write_bytes(b"")
    Path(f"{path}:WofCompressedData").write_bytes(wof_stream(content, algorithm, engine=engine))
    os.truncate(path, len(content))
    os.setxattr(path, "system.ntfs_reparse_data", reparse_point(algorithm))
