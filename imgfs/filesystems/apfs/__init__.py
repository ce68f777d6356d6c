"""APFS (Apple File System), read lazily: container checkpoints, object maps, B-trees, volumes,
decmpfs compression, software encryption and snapshots."""

from imgfs.filesystems.apfs.container import probe
from imgfs.filesystems.apfs.volumes import ApfsContainer, open_apfs

__all__ = ["ApfsContainer", "open_apfs", "probe"]
