"""The volume recognition sequence (ECMA-167 part 2) at byte 32768 of a disc's session: which standards the
disc holds. ISO 9660's descriptors (CD001) may come first; a UDF volume is a BEA01, then NSR02 (UDF 1.0x and
1.50) or NSR03 (2.00 and later), then TEA01.

Apart from the UDF reader, so that choosing a disc's filesystem (``imgfs.filesystems.optical``) can ask
whether there is a UDF side without importing the UDF reader for every ISO image.
"""

from __future__ import annotations

from imgfs.errors import UnsupportedFormat
from imgfs.io.stream import Stream

LAYER = "udf"
CD_SECTOR = 2048
VRS_OFFSET = 32768
MAX_VRS_DESCRIPTORS = 64
VRS_IDENTIFIERS = (b"BEA01", b"NSR02", b"NSR03", b"TEA01", b"CD001", b"CDW02", b"BOOT2")


def recognition_sequence(stream: Stream, session: int) -> str:
    """NSR02 or NSR03 from the volume recognition sequence at byte 32768 of the session."""
    pos = session + VRS_OFFSET
    seen_bea = False
    for _ in range(MAX_VRS_DESCRIPTORS):
        ident = stream.pread(pos + 1, 5)
        if ident not in VRS_IDENTIFIERS:
            break
        if ident == b"BEA01":
            seen_bea = True
        elif ident in (b"NSR02", b"NSR03") and seen_bea:
            return ident.decode()
        elif ident == b"TEA01":
            seen_bea = False
        # each descriptor is 2048 bytes; on 4096-byte sectors each starts a sector of its own
        pos += CD_SECTOR if stream.pread(pos + CD_SECTOR + 1, 5) in VRS_IDENTIFIERS else 2 * CD_SECTOR
    raise UnsupportedFormat(f"no UDF volume recognition sequence (BEA01 then NSR02 or NSR03) at byte "
                            f"{session + VRS_OFFSET}", layer=LAYER, offset=session + VRS_OFFSET)
