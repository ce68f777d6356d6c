"""Where the CLI finds the FUSE adapter: ``imgfs.fuse`` (a package of its own, speaking the kernel protocol)."""

from __future__ import annotations

from imgfs.fuse import ImgfsOperations, serve

__all__ = ["ImgfsOperations", "serve"]
