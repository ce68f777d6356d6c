"""ISO 9660 with Joliet, Rock Ridge (RRIP) and zisofs, read lazily one directory at a time."""

from imgfs.filesystems.iso9660.reader import NAMESPACES, IsoFilesystem

__all__ = ["NAMESPACES", "IsoFilesystem"]
