"""MacBinary I, II and III: one file that holds a Mac file's two forks (``.bin``, ``.smi.bin``, often just
``.smi`` or ``.dmg.bin``).

A 128-byte header (MacBinary II and III notes): byte 0 is 0, then the name (a Pascal string of 1 to 63
MacRoman bytes), type and creator (65-72), the Finder flags' high byte (73), 0 at 74 and 82, the data and
resource fork lengths (83, 87), the creation and modification dates (91, 95), the Get Info comment's
length (99), the Finder flags' low byte (101), 'mBIN' for MacBinary III (102), a secondary header's length
(120), the writer's and the needed version (122, 123: 129 for II, 130 for III), and a CRC-16/XMODEM of
bytes 0-123 (124). The data fork follows the header (and the secondary header), the resource fork follows
the data fork, each padded to a multiple of 128 bytes; the comment comes last.

There is no magic number (but III's 'mBIN'), so detection checks the fixed zeros, the name and that the
forks' lengths account for the file's size. A header that claims MacBinary II or III must carry a good
CRC: a bad one is refused in one line rather than guessed at.
"""

from __future__ import annotations

import binascii
import struct
from typing import Any, Optional

from imgfs.containers.forks import ForkedFile
from imgfs.errors import CorruptImage
from imgfs.io.stream import SliceStream, Stream
from imgfs.layer import OpenContext

LAYER = "macbinary"
HEADER_SIZE = 128
# 0, name, type, creator, flags (high), 0, v, h, folder id, protected, 0, data length, resource length, created,
# modified, comment length, flags (low), 'mBIN', script, extended flags, 8 unused, unpacked length,
# secondary header length, version, minimum version, CRC
HEADER = struct.Struct(">B64s4s4sBBHHHBBIIIIHB4sBB8sIHBBH2x")
MAX_FORK_SIZE = 0x7FFFFFFF
VERSION_II, VERSION_III = 129, 130


def _padded(size: int) -> int:
    return size + (-size % HEADER_SIZE)


class Header:
    def __init__(self, raw: bytes) -> None:
        (self.zero0, name, self.type, self.creator, flags_high, self.zero74, _v, _h, _folder, _protected, self.zero82,
         self.data_size, self.rsrc_size, self.created, self.modified, self.comment_size, flags_low, self.signature,
         _script, _xflags, _unused, _unpacked, secondary, self.version, self.min_version, self.crc) = HEADER.unpack(raw)
        self.name_size = name[0]
        self.name = name[1 : 1 + min(name[0], 63)]
        self.flags = flags_high << 8 | flags_low
        self.crc_computed = binascii.crc_hqx(raw[:124], 0)
        self.claims_crc = self.min_version >= VERSION_II or self.version >= VERSION_II or self.signature == b"mBIN"
        self.data_offset = HEADER_SIZE + (_padded(secondary) if self.claims_crc else 0)

    @property
    def rsrc_offset(self) -> int:
        return self.data_offset + _padded(self.data_size)

    def structure_problem(self, file_size: int) -> Optional[str]:
        """Why this is not a MacBinary header of a file of ``file_size`` bytes (None: it is one)."""
        if self.zero0 or self.zero74 or self.zero82:
            return "bytes 0, 74 and 82 are not zero"
        if not 1 <= self.name_size <= 63:
            return f"a name of {self.name_size} bytes (1 to 63)"
        if max(self.data_size, self.rsrc_size) > MAX_FORK_SIZE:
            return f"fork lengths {self.data_size} and {self.rsrc_size}"
        shortest = self.rsrc_offset + self.rsrc_size if self.rsrc_size else self.data_offset + self.data_size
        longest = self.rsrc_offset + _padded(self.rsrc_size) + (_padded(self.comment_size) if self.claims_crc else 0)
        if not shortest <= file_size <= max(longest, shortest):
            return f"forks of {self.data_size} and {self.rsrc_size} bytes in a file of {file_size} bytes"
        return None

    def version_name(self) -> str:
        if self.signature == b"mBIN" or self.version == VERSION_III:
            return "MacBinary III"
        return "MacBinary II" if self.claims_crc else "MacBinary I"


def _header(stream: Stream) -> Optional[Header]:
    raw = stream.pread(0, HEADER_SIZE)
    return Header(raw) if len(raw) == HEADER_SIZE else None


def probe(stream: Stream) -> bool:
    """The header's fixed zeros, a name, and fork lengths that account for the file's size."""
    header = _header(stream)
    return header is not None and header.structure_problem(stream.size) is None


def open_macbinary(stream: Stream, ctx: OpenContext) -> ForkedFile:
    header = _header(stream)
    problem = "the file is shorter than its header" if header is None else header.structure_problem(stream.size)
    if header is None or problem:
        raise CorruptImage(f"not a MacBinary file: {problem}", layer=LAYER, offset=0)
    if header.claims_crc and header.crc != header.crc_computed:
        raise CorruptImage(f"{header.version_name()} header CRC mismatch: the header says 0x{header.crc:04x}, "
                           f"its bytes give 0x{header.crc_computed:04x}", layer=LAYER, offset=124)
    forks = {"rsrc": SliceStream(stream, header.rsrc_offset, header.rsrc_size, name=f"{stream.name}:rsrc")}
    return ForkedFile(stream, header.data_offset, header.data_size, forks, LAYER, _details(header),
                      header.name.decode("mac_roman"))


def _details(header: Header) -> dict[str, Any]:
    return {"version": header.version_name(), "name": header.name.decode("mac_roman"),
            "type": header.type.decode("mac_roman"), "creator": header.creator.decode("mac_roman"),
            "finder_flags": f"0x{header.flags:04x}"}
