"""HFS+ and HFSX (Apple's Mac OS Extended), read lazily: catalog, extents overflow, attributes, decmpfs."""

from imgfs.filesystems.hfsplus.reader import HfsPlusFilesystem
from imgfs.filesystems.hfsplus.volume import probe

__all__ = ["HfsPlusFilesystem", "probe"]
