"""The command line: ``imgfs IMAGE MOUNTPOINT`` and its commands (``imgfs --help``).

``main`` and ``mount_helper_main`` are the console scripts ``imgfs`` and ``mount.imgfs``.
"""

from imgfs.cli.main import main, mount_helper_main
from imgfs.cli.mount import _tune_malloc

__all__ = ["main", "mount_helper_main", "_tune_malloc"]
