"""The Mac metadata that HFS and HFS+ show alike as extended attributes: the Finder info and the
resource fork, named as macOS names them, in the ``user.`` namespace that Linux lets everyone read."""

from __future__ import annotations

FINDER_INFO, RESOURCE_FORK = "com.apple.FinderInfo", "com.apple.ResourceFork"
XATTR_SIZE_MAX = 65536  # what getxattr can return on Linux
# bytes of the 32-byte Finder info that macOS keeps to itself (document id, date added, write generation)
FINDER_INFO_PRIVATE = (slice(16, 24), slice(28, 32))


def shown_finder_info(raw: bytes) -> bytes:
    """A record's 32 bytes of Finder info as macOS shows them in com.apple.FinderInfo (its private fields
    cleared); empty when that is all zeros."""
    shown_info = bytearray(raw)
    for private in FINDER_INFO_PRIVATE:
        shown_info[private] = bytes(private.stop - private.start)
    return bytes(shown_info) if any(shown_info) else b""
