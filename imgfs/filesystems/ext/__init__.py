"""ext2, ext3 and ext4, read lazily one directory at a time: extents, block maps, inline data, xattrs."""

from imgfs.filesystems.ext.reader import ExtFilesystem
from imgfs.filesystems.ext.superblock import probe

__all__ = ["ExtFilesystem", "probe"]
