"""Memory is never a function of an unchecked field: decoders are bounded before they allocate, checked under
a 2 GiB address space (``ulimit -v``) as a 32-bit machine or a small container would have."""

from __future__ import annotations

import resource
import struct

from conftest import run_imgfs
from isotools import pseudo_random
from udifwriter import write_udif

ADDRESS_SPACE = 2 << 30


def _limited() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE, ADDRESS_SPACE))


def test_an_lzma_chunk_asking_for_a_4_gib_dictionary_is_one_line_under_ulimit(tmp_path):
    disk = bytearray(pseudo_random(1 << 20, 5))
    image = tmp_path / "dict.dmg"
    write_udif(image, bytes(disk), codec="lzma-alone", chunk_sectors=2048, raw_fallback=False)
    data = bytearray(image.read_bytes())
    assert data[0] == 0x5D, "the first chunk is not an LZMA 'alone' stream at byte 0"
    struct.pack_into("<I", data, 1, 0xFFFFFFFF)  # the header's dictionary size: 4 GiB
    image.write_bytes(bytes(data))
    done = run_imgfs("info", str(image), preexec_fn=_limited)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "lzma" in lines[0] and "memory" in lines[0].lower(), lines
