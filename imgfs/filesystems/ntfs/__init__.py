"""NTFS, read lazily one directory at a time: MFT records with fixups and attribute lists, run lists,
$I30 indexes, hard links, named streams as xattrs, symbolic links in their Windows, WSL and Interix forms,
LZNT1 compression and WOF (CompactOS) compression."""

from imgfs.filesystems.ntfs.reader import NtfsFilesystem

__all__ = ["NtfsFilesystem"]
