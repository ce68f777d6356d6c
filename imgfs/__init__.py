"""imgfs: mount disk images read-only as folders."""

__version__ = "0.1.0"
