"""Whether background work (decoding ahead of a reader) may start now.

While an image is being opened, background work would only delay the mount: ``imgfs IMAGE MNT`` opens
the image, then forks, and a fork waits for decodes under way (see ``imgfs.containers.dmg.readahead``).
``open_image`` holds background work back until the image is open; readers after that get it.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

_held = 0
_lock = threading.Lock()


def allowed() -> bool:
    return _held == 0


@contextmanager
def held() -> Iterator[None]:
    global _held
    with _lock:
        _held += 1
    try:
        yield
    finally:
        with _lock:
            _held -= 1
