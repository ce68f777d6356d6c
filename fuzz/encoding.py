"""How a fuzzer's input becomes an image, and how a seed image becomes an input.

Disk images are mostly zeros (a filesystem's free space, an ISO's 32 KiB system area, a UDF anchor at sector
256), and a mutation that lands in the zeros teaches the fuzzer little. So most targets take a *sparse*
input, which holds only the non-zero parts of an image:

    u32 image size, then chunks of: u32 offset, u16 length, that many bytes

Chunks past the size are cut; the rest of the image is zeros. Its custom mutator mutates one chunk's bytes
at a time (libFuzzer's own mutations, through ``atheris.Mutate``), now and then moves a chunk or changes the
size, so that the structures stay where the format expects them.

Targets whose files name other files (a cue sheet and its BIN, split segments) take a *multi-file* input:

    u8 number of files, then per file: u8 name length, the name, u32 size, the bytes

A raw input is the image itself (a UDIF or an encrypted image is compact already).
"""

from __future__ import annotations

import random
import re
import struct
from collections.abc import Iterator
from typing import Callable

HEADER = struct.Struct("<I")
CHUNK = struct.Struct("<IH")
MAX_IMAGE_SIZE = 16 << 20  # a sparse image larger than this is cut (a sparse file on tmpfs costs nothing)
MAX_CHUNK = 0xFFFF
BLOCK = 512  # seeds are cut into chunks at this granularity


# -- sparse -------------------------------------------------------------------------------------------


def decode_sparse(data: bytes) -> tuple[int, list[tuple[int, bytes]]]:
    """(image size, [(offset, bytes)]) of a sparse input; whatever does not parse is left out."""
    if len(data) < HEADER.size:
        return 0, []
    size = min(HEADER.unpack_from(data)[0], MAX_IMAGE_SIZE)
    chunks: list[tuple[int, bytes]] = []
    pos = HEADER.size
    while pos + CHUNK.size <= len(data):
        offset, length = CHUNK.unpack_from(data, pos)
        pos += CHUNK.size
        body = data[pos : pos + length]
        pos += length
        if offset < size and body:
            chunks.append((offset, body[: size - offset]))
    return size, chunks


def encode_sparse(size: int, chunks: list[tuple[int, bytes]]) -> bytes:
    out = bytearray(HEADER.pack(size))
    for offset, body in chunks:
        for start in range(0, len(body), MAX_CHUNK):
            piece = body[start : start + MAX_CHUNK]
            out += CHUNK.pack(offset + start, len(piece)) + piece
    return bytes(out)


def sparse_from_image(image: bytes) -> bytes:
    """A seed: the non-zero blocks of ``image``, neighbours merged into one chunk."""
    chunks: list[tuple[int, bytes]] = []
    start = None
    for offset in range(0, len(image), BLOCK):
        nonzero = image[offset : offset + BLOCK].strip(b"\0") != b""
        if nonzero and start is None:
            start = offset
        elif not nonzero and start is not None:
            chunks.append((start, image[start:offset]))
            start = None
    if start is not None:
        chunks.append((start, image[start:]))
    return encode_sparse(len(image), chunks)


def sparse_runs(size: int, chunks: list[tuple[int, bytes]]) -> Iterator[tuple[int, bytes]]:
    """The chunks in order, later ones winning where they overlap, none past ``size``."""
    placed: dict[int, bytes] = {}
    for offset, body in chunks:
        placed[offset] = body
    end = 0
    for offset in sorted(placed):
        body = placed[offset]
        if offset < end:
            body, offset = body[end - offset :], end
        if body:
            yield offset, body[: size - offset]
            end = offset + len(body)


def mutate_sparse(data: bytes, max_size: int, seed: int, mutate: Callable[[bytes, int], bytes]) -> bytes:
    """One mutation of a sparse input: mostly a chunk's bytes, sometimes where it sits or the image's size."""
    rng = random.Random(seed)
    size, chunks = decode_sparse(data)
    if not chunks:
        return mutate(data, max_size)
    roll = rng.random()
    # A chunk is as likely as the square root of its size: a header block is hit often, a megabyte of table
    # more, but not a thousand times more.
    index = rng.choices(range(len(chunks)), weights=[len(b) ** 0.5 for _, b in chunks])[0]
    offset, body = chunks[index]
    if roll < 0.85:
        chunks[index] = (offset, mutate(body, min(MAX_CHUNK, len(body) + 64)) or body[:1])
    elif roll < 0.93:  # move it, by a sector's worth or anywhere
        step = rng.choice((512, 2048, 4096, 1)) * rng.randint(-4, 4)
        chunks[index] = (max(0, offset + step) if rng.random() < 0.8 else rng.randrange(max(1, size)), body)
    elif roll < 0.97:  # copy a piece of one chunk over another place of the image
        piece_start = rng.randrange(len(body))
        piece = body[piece_start : piece_start + rng.randint(1, 512)]
        chunks.append((rng.randrange(max(1, size)), piece))
    else:
        size = rng.choice((size // 2, size - 512, size + 4096, rng.randrange(1, max(2, size * 2))))
    encoded = encode_sparse(max(0, size), chunks)
    return encoded if len(encoded) <= max_size else mutate(data, max_size)


# -- multi-file ---------------------------------------------------------------------------------------

_SAFE_NAME = re.compile(rb"[^A-Za-z0-9._ -]")  # per path component
MAX_FILES = 8
SPARSE_BODY = 1  # a file's flag: its bytes are a sparse input (a BIN file is mostly zeros too)


def decode_files(data: bytes) -> list[tuple[str, int, bytes]]:
    """[(relative path, flags, bytes)] of a multi-file input; paths are made plain and unique."""
    files: list[tuple[str, int, bytes]] = []
    if not data:
        return files
    count, pos = min(data[0], MAX_FILES), 1
    for _ in range(count):
        if pos >= len(data):
            break
        length = data[pos]
        name = _plain(data[pos + 1 : pos + 1 + length])
        pos += 1 + length
        flags, size = FILE_HEADER.unpack_from(data[pos : pos + FILE_HEADER.size].ljust(FILE_HEADER.size, b"\0"))
        pos += FILE_HEADER.size
        body = data[pos : pos + size]
        pos += size
        while name in {n for n, _, _ in files}:
            name = "x" + name
        files.append((name, flags & SPARSE_BODY, body))
    return files


FILE_HEADER = struct.Struct("<BI")  # flags, size


def _plain(raw: bytes) -> str:
    """A relative path of at most three plain components (a sparse bundle's "b.sparsebundle/bands/0")."""
    parts = [_SAFE_NAME.sub(b"_", part).decode("ascii").strip(". ") for part in raw.split(b"/")]
    return "/".join([part[:40] for part in parts if part][:3]) or "file"


def encode_files(files: list[tuple[str, int, bytes]]) -> bytes:
    out = bytearray([len(files)])
    for name, flags, body in files:
        raw = name.encode("ascii")
        out += bytes([len(raw)]) + raw + FILE_HEADER.pack(flags, len(body)) + body
    return bytes(out)


def files_from(files: list[tuple[str, bytes]]) -> bytes:
    """A seed: the files, each stored sparse when that is smaller."""
    stored = []
    for name, body in files:
        sparse = sparse_from_image(body)
        stored.append((name, SPARSE_BODY, sparse) if len(sparse) < len(body) else (name, 0, body))
    return encode_files(stored)


def mutate_files(data: bytes, max_size: int, seed: int, mutate: Callable[[bytes, int], bytes]) -> bytes:
    """One mutation of a multi-file input: one file's bytes (each file as likely as the others: a sheet is
    small, its data files big)."""
    rng = random.Random(seed)
    files = decode_files(data)
    if not files:
        return mutate(data, max_size)
    index = rng.randrange(len(files))
    name, flags, body = files[index]
    if rng.random() < 0.05:
        body = body[: rng.randrange(len(body) + 1)]
    elif flags & SPARSE_BODY:
        body = mutate_sparse(body, len(body) + 256, rng.getrandbits(32), mutate)
    else:
        body = mutate(body, len(body) + 256)
    files[index] = (name, flags, body)
    encoded = encode_files(files)
    return encoded if len(encoded) <= max_size else mutate(data, max_size)
