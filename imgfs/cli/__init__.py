"""The command line: ``imgfs IMAGE MOUNTPOINT`` and its commands (``imgfs --help``).

``main`` and ``mount_helper_main`` are the console scripts ``imgfs`` and ``mount.imgfs``.
"""

from typing import Any

from imgfs.cli.main import main, mount_helper_main

__all__ = ["main", "mount_helper_main", "_tune_malloc"]


def __getattr__(name: str) -> Any:
    """``_tune_malloc`` (the benchmark uses it) from the mount module, imported only when asked for."""
    if name == "_tune_malloc":
        from imgfs.cli.mount import _tune_malloc

        return _tune_malloc
    raise AttributeError(name)
