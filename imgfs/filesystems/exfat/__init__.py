"""exFAT, read lazily one directory at a time."""

from __future__ import annotations

from imgfs.errors import ImageError
from imgfs.filesystems.exfat.bootsector import ExfatBoot, read_boot
from imgfs.filesystems.exfat.reader import ExfatFilesystem
from imgfs.io.stream import Stream

__all__ = ["ExfatBoot", "ExfatFilesystem", "probe"]


def probe(stream: Stream) -> bool:
    """True when the stream starts with a usable exFAT boot region."""
    try:
        read_boot(stream)
    except ImageError:
        return False
    return True
