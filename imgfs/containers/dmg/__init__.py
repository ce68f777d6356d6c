"""Apple disk images (UDIF, .dmg): every chunk codec, decoded lazily through the mount's cache.

``open_udif(stream, ctx)`` is the registry's opener; ``verify(stream)`` checks an image's checksums.
"""

from __future__ import annotations

from imgfs.containers.dmg.udif import UdifImage, open_udif, probe
from imgfs.containers.dmg.verify import verify_image
from imgfs.errors import ImageError
from imgfs.io.cache import BlockCache
from imgfs.io.stream import Stream
from imgfs.layer import OpenContext

__all__ = ["UdifImage", "open_udif", "probe", "verify"]


def verify(stream: Stream) -> list[str]:
    """The problems found in a UDIF image (an empty list when every checksum matches).

    ``stream`` is what ``open_udif`` returned, or the image file itself as a stream."""
    if isinstance(stream, UdifImage):
        return verify_image(stream)
    try:
        image = open_udif(stream, OpenContext(stream.name, BlockCache(0)))
    except ImageError as exc:
        return [str(exc)]
    return verify_image(image)
