"""Was the volume closed cleanly? The $Volume dirty flag and the $LogFile restart area say.

imgfs does not replay $LogFile: a volume closed in the middle of work is read as it stands, with a warning,
as an HFS+ journal or an ext journal is. The restart page ("RSTR", fixups over its system page) holds the
restart area: its list of clients in use is empty (0xFFFF), or its flags say clean (0x0002), when nothing
waits to be replayed. ntfs-3g resets the log to all 0xFF bytes, which is clean too. ("CHKD": chkdsk stopped
half-way.)
"""

from __future__ import annotations

import struct
from typing import Optional

from imgfs.errors import CorruptImage
from imgfs.filesystems.ntfs.record import apply_fixups
from imgfs.io.stream import Stream

VOLUME_IS_DIRTY = 0x0001
NO_CLIENT = 0xFFFF
RESTART_CLEAN = 0x0002
_PAGE = struct.Struct("<4sHHQIIH")  # signature, fixups, chkdsk LSN, system page size, log page size, restart offset
_AREA = struct.Struct("<QHHHH")  # current LSN, clients, free list, in-use list, flags


def unclean_reason(volume_flags: int, log: Optional[Stream]) -> str:
    """Why the volume was not closed cleanly, or "" when it was."""
    if volume_flags & VOLUME_IS_DIRTY:
        return "its dirty flag is set"
    if log is None or log.size < 512:
        return ""
    head = log.pread(0, _PAGE.size)
    if head[:4] == b"\xff\xff\xff\xff":
        return ""  # an emptied log
    signature, _, _, _, page_size, _, restart = _PAGE.unpack_from(head)
    if signature == b"CHKD":
        return "$LogFile says chkdsk did not finish"
    if signature != b"RSTR" or page_size not in (512, 1024, 2048, 4096, 8192, 16384, 32768, 65536):
        return ""  # not a restart page we know: nothing to say
    page = bytearray(log.pread(0, page_size))
    try:
        apply_fixups(page, b"RSTR", "$LogFile restart page", 0)
    except CorruptImage as exc:
        return str(exc)
    if restart + _AREA.size > len(page):
        return ""
    _, _, _, in_use, flags = _AREA.unpack_from(page, restart)
    if in_use != NO_CLIENT and not flags & RESTART_CLEAN:
        return "$LogFile has changes that were never replayed"
    return ""
