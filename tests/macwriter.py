"""Writers of old Mac file and image formats, made from the published descriptions, not from imgfs's readers.

* Resource forks: Inside Macintosh: More Macintosh Toolbox, "Resource Manager" (header, data, map).
* MacBinary I/II/III: the MacBinary II and III notes (128-byte header, CRC-16/XMODEM of bytes 0-123).
* AppleSingle / AppleDouble version 2: RFC 1740 (magic, version, 16 filler bytes, entry descriptors).
* Disk Copy 4.2: the 84-byte header (Str63 name, data and tag sizes and checksums, format bytes, 0x0100)
  and its checksum (add each big-endian 16-bit word, rotate right by one; the first 12 tag bytes are left
  out).
* NDIF (Disk Copy 6): the 'bcem' resource: a 128-byte header (version, driver, Str63 name, sectors,
  largest chunk, data offset, CRC, segmented, ..., chunk count) and 12-byte chunk entries (24-bit first
  sector, type, offset, length), closed by an 0xFF entry at the sector count.
* Apple Partition Map: a driver descriptor ('ER') and 'PM' entries (Inside Macintosh: Devices).

Each is cross-checked in the tests against an independent reader where one exists (hfsutils for
MacBinary, macresources for resource forks, unar for MacBinary/AppleSingle/AppleDouble).
"""

from __future__ import annotations

import binascii
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Optional

from udifwriter import adc_compress

MAC_EPOCH_OFFSET = 2_082_844_800  # seconds from 1904-01-01 to 1970-01-01
APPLE_2000_OFFSET = 946_684_800  # seconds from 1970-01-01 to 2000-01-01 (AppleSingle dates)


def pad(data: bytes, unit: int = 128) -> bytes:
    return data + bytes(-len(data) % unit)


def pascal(text: bytes, size: int) -> bytes:
    """A Pascal string in a field of ``size`` bytes (length byte included)."""
    assert len(text) < size
    return bytes([len(text)]) + text.ljust(size - 1, b"\0")


# -- resource forks -----------------------------------------------------------------------------------

@dataclass
class Resource:
    type: bytes
    id: int
    data: bytes
    name: Optional[bytes] = None
    attributes: int = 0


def resource_fork(resources: Sequence[Resource]) -> bytes:
    """A resource fork: 16-byte header, 240 reserved bytes, the data, then the map (types, references, names)."""
    types: dict[bytes, list[Resource]] = {}
    for res in resources:
        types.setdefault(res.type, []).append(res)
    data = b""
    offsets = {}
    for res in resources:
        offsets[id(res)] = len(data)
        data += struct.pack(">I", len(res.data)) + res.data
    type_list_size = 2 + 8 * len(types)
    refs, names, ref_at = b"", b"", type_list_size
    type_entries = b""
    for code, members in types.items():
        type_entries += struct.pack(">4sHH", code, len(members) - 1, ref_at)
        for res in members:
            name_at = 0xFFFF
            if res.name is not None:
                name_at = len(names)
                names += bytes([len(res.name)]) + res.name
            refs += struct.pack(">hHI4x", res.id, name_at, (res.attributes << 24) | offsets[id(res)])
            ref_at += 12
    type_list = struct.pack(">H", (len(types) - 1) & 0xFFFF) + type_entries + refs
    map_length = 28 + len(type_list) + len(names)
    header = struct.pack(">IIII", 256, 256 + len(data), len(data), map_length)
    resource_map = header + bytes(8) + struct.pack(">HH", 28, 28 + len(type_list)) + type_list + names
    return header.ljust(256, b"\0") + data + resource_map


# -- MacBinary ----------------------------------------------------------------------------------------

@dataclass
class MacFile:
    name: bytes  # MacRoman
    data: bytes = b""
    rsrc: bytes = b""
    type: bytes = b"TEXT"
    creator: bytes = b"ttxt"
    flags: int = 0  # Finder flags (16 bits)
    created: int = 0  # Mac dates: seconds since 1904
    modified: int = 0
    comment: bytes = b""
    extra: dict = field(default_factory=dict)

    def finder_info(self) -> bytes:
        """The 32 bytes of FInfo (type, creator, flags, location, folder) + FXInfo (zeros)."""
        return struct.pack(">4s4sH4xH", self.type, self.creator, self.flags, 0) + bytes(16)


def macbinary(f: MacFile, version: int = 2, crc: Optional[int] = None) -> bytes:
    """A MacBinary I (no CRC), II or III file: header, data fork, resource fork, each padded to 128 bytes."""
    head = bytearray(128)
    head[1:65] = pascal(f.name, 64)
    head[65:69], head[69:73] = f.type, f.creator
    head[73] = f.flags >> 8
    struct.pack_into(">II", head, 83, len(f.data), len(f.rsrc))
    struct.pack_into(">II", head, 91, f.created, f.modified)
    if version >= 2:
        struct.pack_into(">H", head, 99, len(f.comment))
        head[101] = f.flags & 0xFF
        if version == 3:
            head[102:106] = b"mBIN"
        head[122], head[123] = 129 + (version == 3), 129
        struct.pack_into(">H", head, 124, binascii.crc_hqx(bytes(head[:124]), 0) if crc is None else crc)
    out = bytes(head) + pad(f.data) + pad(f.rsrc)
    return out + pad(f.comment) if version >= 2 and f.comment else out


# -- AppleSingle / AppleDouble ------------------------------------------------------------------------

SINGLE_MAGIC, DOUBLE_MAGIC = 0x00051600, 0x00051607
DATA_FORK, RESOURCE_FORK, REAL_NAME, FILE_DATES, FINDER_INFO = 1, 2, 3, 8, 9


def apple_entries(magic: int, entries: Sequence[tuple[int, bytes]], filler: bytes = b"Mac OS X        ",
                  lengths: Optional[dict[int, int]] = None) -> bytes:
    """An AppleSingle/AppleDouble v2 file with ``entries`` (id, bytes) laid out in order after the table;
    ``lengths`` overrides an entry's stated length (to make bad input)."""
    head = struct.pack(">II16sH", magic, 0x00020000, filler, len(entries))
    at = len(head) + 12 * len(entries)
    table, body = b"", b""
    for entry_id, data in entries:
        table += struct.pack(">III", entry_id, at + len(body), (lengths or {}).get(entry_id, len(data)))
        body += data
    return head + table + body


def file_dates(f: MacFile) -> bytes:
    """Entry 8: create, modify, backup, access, signed seconds since 2000-01-01 GMT (Mac dates read as UTC)."""
    def shift(mac: int) -> int:
        return max(-0x80000000, mac - MAC_EPOCH_OFFSET - APPLE_2000_OFFSET)

    return struct.pack(">iiii", shift(f.created), shift(f.modified), -0x80000000, shift(f.modified))


def applesingle(f: MacFile) -> bytes:
    return apple_entries(SINGLE_MAGIC, [(REAL_NAME, f.name), (FILE_DATES, file_dates(f)),
                                        (FINDER_INFO, f.finder_info()), (RESOURCE_FORK, f.rsrc),
                                        (DATA_FORK, f.data)])


def appledouble(f: MacFile) -> bytes:
    """The header file of an AppleDouble pair (``._NAME``): everything but the data fork, as macOS writes it
    (Finder info first, the resource fork last)."""
    return apple_entries(DOUBLE_MAGIC, [(FINDER_INFO, f.finder_info()), (RESOURCE_FORK, f.rsrc)])


# -- Disk Copy 4.2 ------------------------------------------------------------------------------------

def dc42_checksum(data: bytes) -> int:
    total = 0
    for (word,) in struct.iter_unpack(">H", data[: len(data) & ~1]):
        total = (total + word) & 0xFFFFFFFF
        total = ((total >> 1) | (total << 31)) & 0xFFFFFFFF
    return total


def dc42(disk: bytes, name: bytes = b"-not a Macintosh disk-", tags: bytes = b"", disk_format: int = 1,
         format_byte: int = 0x22, data_size: Optional[int] = None) -> bytes:
    header = pascal(name, 64) + struct.pack(">IIIIBBH", len(disk) if data_size is None else data_size, len(tags),
                                            dc42_checksum(disk), dc42_checksum(tags[12:]), disk_format,
                                            format_byte, 0x0100)
    return header + disk + tags


# -- NDIF ---------------------------------------------------------------------------------------------

NDIF_ZERO, NDIF_RAW, NDIF_KENCODE, NDIF_ADC, NDIF_END = 0x00, 0x02, 0x80, 0x83, 0xFF


def ndif(disk: bytes, kinds: Sequence[int], chunk_sectors: int = 64, name: bytes = b"Test Image",
         data_offset: int = 0, zeros: bool = True) -> tuple[bytes, bytes]:
    """(chunk data, 'bcem' resource) of an NDIF image of ``disk``: an all-zero chunk is a zero chunk (with
    ``zeros``), the others take the types of ``kinds`` in turn. Chunk offsets count from ``data_offset`` of the
    data fork: the caller puts the chunk data there (after an application's code, in a .smi)."""
    assert len(disk) % 512 == 0
    sectors = len(disk) // 512
    data = b""
    entries = b""
    turn = 0
    for first in range(0, sectors, chunk_sectors):
        piece = disk[first * 512 : (first + chunk_sectors) * 512]
        if zeros and not any(piece):
            kind, stored = NDIF_ZERO, b""
        else:
            kind = kinds[turn % len(kinds)]
            turn += 1
            stored = adc_compress(piece) if kind == NDIF_ADC else piece
        entries += struct.pack(">III", (first << 8) | kind, len(data), len(stored))
        data += stored
    entries += struct.pack(">III", (sectors << 8) | NDIF_END, len(data), 0)
    count = len(entries) // 12
    header = struct.pack(">hh64sIIIIIII20sIII", 11, 0, pascal(name, 64), sectors, chunk_sectors, data_offset, 0, 0,
                         0, 0, bytes(20), 0, 0, count)
    assert len(header) == 128
    return data, header + entries


def pef_code(size: int) -> bytes:
    """A PowerPC code fragment (PEF container) of about ``size`` bytes: header, one code section, its bytes."""
    header = struct.pack(">4s4s4sIIIIIHHI", b"Joy!", b"peff", b"pwpc", 1, 0, 0, 0, 0, 1, 1, 0)
    section_at = len(header) + 28
    section = struct.pack(">iIIIIIBBBB", -1, 0, size, size, size, section_at, 0, 4, 4, 0)
    return header + section + bytes((i * 7) & 0xFF for i in range(size))


def ndif_resource_fork(bcem: bytes, name: bytes = b"Test Image", extra: Sequence[Resource] = ()) -> bytes:
    return resource_fork([*extra, Resource(b"bcem", 128, bcem, name)])


# -- Apple Partition Map ------------------------------------------------------------------------------

def apm_disk(volume: bytes, name: bytes = b"MacOS", kind: bytes = b"Apple_HFS", block_size: int = 512,
             first_block: int = 64) -> bytes:
    """A disk with a driver descriptor, a two-entry map (the map itself, one partition) and ``volume``."""
    assert len(volume) % block_size == 0
    blocks = first_block + len(volume) // block_size
    ddm = struct.pack(">2sHI", b"ER", block_size, blocks).ljust(block_size, b"\0")

    def entry(start: int, count: int, entry_name: bytes, entry_type: bytes) -> bytes:
        return struct.pack(">2s2xIII32s32sIII", b"PM", 2, start, count, entry_name, entry_type, 0, count,
                           0x33 if entry_type != b"Apple_partition_map" else 0x3).ljust(block_size, b"\0")

    table = entry(1, first_block - 1, b"Apple", b"Apple_partition_map") + entry(first_block, len(volume) //
                                                                                 block_size, name, kind)
    return (ddm + table).ljust(first_block * block_size, b"\0") + volume
