"""Apple disk images (UDIF, .dmg): every chunk codec, decoded lazily through the mount's cache.

``open_udif(stream, ctx)`` is the registry's opener; ``verify(stream)`` checks the image's checksums.
"""

from imgfs.containers.dmg.udif import UdifImage, open_udif, probe
from imgfs.containers.dmg.verify import verify

__all__ = ["UdifImage", "open_udif", "probe", "verify"]
