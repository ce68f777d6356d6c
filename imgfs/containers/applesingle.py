"""AppleSingle and AppleDouble (RFC 1740, versions 1 and 2): a Mac file's forks and metadata as entries.

The header is a magic number (0x00051600 AppleSingle, 0x00051607 AppleDouble), a version, 16 filler bytes
and a count of entry descriptors, each an (id, offset, length) triple: 1 the data fork, 2 the resource
fork, 3 the real name, 8 the dates, 9 the Finder info, ... An AppleSingle file holds every entry; an
AppleDouble *header file* holds all but the data fork, which stays a plain file beside it: ``._NAME``
(macOS, and ``__MACOSX/._NAME`` in a zip), or ``.AppleDouble/NAME`` (netatalk).

An AppleSingle file is a container: its data fork is detected again, its resource fork travels with it.
An AppleDouble header file alone is refused with the name of the file it belongs to; the source that opens
that file (``imgfs.containers.companions``) reads the resource fork from it.
"""

from __future__ import annotations

import os
import struct
from typing import Any, NamedTuple

from imgfs.containers.forks import ForkedFile
from imgfs.errors import CorruptImage, UnsupportedFormat
from imgfs.io.stream import SliceStream, Stream, read_exact
from imgfs.layer import OpenContext

SINGLE_MAGIC, DOUBLE_MAGIC = 0x00051600, 0x00051607
VERSIONS = (0x00010000, 0x00020000)
HEADER = struct.Struct(">II16sH")
ENTRY = struct.Struct(">III")
MAX_ENTRIES = 1024
DATA_FORK, RESOURCE_FORK, REAL_NAME, FINDER_INFO = 1, 2, 3, 9
ENTRY_NAMES = {1: "data fork", 2: "resource fork", 3: "real name", 4: "comment", 5: "icon", 6: "color icon",
               7: "file info", 8: "dates", 9: "Finder info", 10: "Macintosh info", 11: "ProDOS info",
               12: "MS-DOS info", 13: "AFP short name", 14: "AFP info", 15: "AFP directory id"}


class Entry(NamedTuple):
    id: int
    offset: int
    length: int


class AppleFile(NamedTuple):
    magic: int
    version: int
    entries: dict[int, Entry]

    @property
    def layer(self) -> str:
        return "applesingle" if self.magic == SINGLE_MAGIC else "appledouble"

    def stream(self, file: Stream, entry_id: int) -> SliceStream:
        """The bytes of an entry (empty when there is none)."""
        entry = self.entries.get(entry_id, Entry(entry_id, 0, 0))
        return SliceStream(file, entry.offset, entry.length, name=f"{file.name}:{ENTRY_NAMES.get(entry_id, entry_id)}")


def probe(stream: Stream) -> bool:
    head = stream.pread(0, HEADER.size)
    if len(head) < HEADER.size:
        return False
    magic, version, _filler, _count = HEADER.unpack(head)
    return magic in (SINGLE_MAGIC, DOUBLE_MAGIC) and version in VERSIONS


def parse(file: Stream) -> AppleFile:
    """The header and entry table; every entry must lie inside the file."""
    head = read_exact(file, 0, HEADER.size, "applesingle", "AppleSingle/AppleDouble header")
    magic, version, _filler, count = HEADER.unpack(head)
    layer = "applesingle" if magic == SINGLE_MAGIC else "appledouble"
    if magic not in (SINGLE_MAGIC, DOUBLE_MAGIC) or version not in VERSIONS:
        raise UnsupportedFormat(f"magic 0x{magic:08x} version 0x{version:08x}: not AppleSingle or AppleDouble",
                                layer=layer, offset=0)
    if count > MAX_ENTRIES:
        raise CorruptImage(f"{count} entries (at most {MAX_ENTRIES})", layer=layer, offset=24)
    table = read_exact(file, HEADER.size, count * ENTRY.size, layer, f"the table of {count} entries")
    entries: dict[int, Entry] = {}
    for i in range(count):
        entry = Entry(*ENTRY.unpack_from(table, i * ENTRY.size))
        if entry.offset + entry.length > file.size:
            what = ENTRY_NAMES.get(entry.id, f"entry {entry.id}")
            raise CorruptImage(f"the {what} ({entry.length} bytes at byte {entry.offset}) runs past the end of the "
                               f"file ({file.size} bytes)", layer=layer, offset=HEADER.size + i * ENTRY.size)
        entries.setdefault(entry.id, entry)
    return AppleFile(magic, version, entries)


def real_name(file: Stream, parsed: AppleFile) -> str:
    entry = parsed.entries.get(REAL_NAME)
    return file.pread(entry.offset, min(entry.length, 255)).decode("mac_roman") if entry else ""


def open_applesingle(stream: Stream, ctx: OpenContext) -> ForkedFile:
    parsed = parse(stream)
    if parsed.magic == DOUBLE_MAGIC:
        raise UnsupportedFormat(f"an AppleDouble header file holds no data fork: mount the file it belongs to"
                                f"{_owner_hint(ctx.path)}", layer="appledouble")
    data = parsed.entries.get(DATA_FORK, Entry(DATA_FORK, 0, 0))
    forks = {"rsrc": parsed.stream(stream, RESOURCE_FORK)}
    name = real_name(stream, parsed)
    details: dict[str, Any] = {"version": parsed.version >> 16, "name": name, "entries": sorted(
        ENTRY_NAMES.get(i, str(i)) for i in parsed.entries)}
    return ForkedFile(stream, data.offset, data.length, forks, "applesingle", details, name)


def _owner_hint(path: str) -> str:
    """' (NAME)' for a header file named like its data file's companion, else ''."""
    folder, base = os.path.split(path)
    if base.startswith("._"):
        owner = os.path.join(os.path.dirname(folder) if os.path.basename(folder) == "__MACOSX" else folder, base[2:])
        return f" ({owner})"
    if os.path.basename(folder) == ".AppleDouble":
        return f" ({os.path.join(os.path.dirname(folder), base)})"
    return ""
