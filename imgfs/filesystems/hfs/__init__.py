"""Classic HFS (Mac OS Standard), read lazily: master directory block, catalog and extents overflow B-trees."""

from imgfs.filesystems.hfs.mdb import probe
from imgfs.filesystems.hfs.reader import HfsFilesystem

__all__ = ["HfsFilesystem", "probe"]
