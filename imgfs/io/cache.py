"""The mount's one cache: decoded bytes in a byte-bounded LRU, each block decoded once.

Plain extents of an uncompressed image are not cached here: the OS page cache already holds them.
What goes in is what costs work to make: decompressed chunks, decrypted blocks.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Hashable
from typing import Callable, Optional

from cachetools import LRUCache

_ids = itertools.count(1)


def new_cache_id() -> int:
    """A key prefix unique to one stream, so that streams sharing the cache never collide."""
    return next(_ids)


class _Pending:
    __slots__ = ("done", "value", "error")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.value: Optional[bytes] = None
        self.error: Optional[BaseException] = None


class BlockCache:
    """A read-through LRU bounded in bytes, with single-flight loading and hit/miss counters."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max(0, int(max_bytes))
        self._lru: LRUCache = LRUCache(maxsize=max(1, self.max_bytes), getsizeof=len)
        self._lock = threading.Lock()
        self._pending: dict[Hashable, _Pending] = {}
        self.hits = 0
        self.misses = 0

    @property
    def current_bytes(self) -> int:
        with self._lock:
            return int(self._lru.currsize)

    def __len__(self) -> int:
        with self._lock:
            return len(self._lru)

    def __contains__(self, key: Hashable) -> bool:
        with self._lock:
            return key in self._lru

    def get(self, key: Hashable, load: Callable[[], bytes]) -> bytes:
        """The block for ``key``; ``load`` runs once even when several threads ask at the same time."""
        with self._lock:
            value = self._lru.get(key)
            if value is not None:
                self.hits += 1
                return value
            pending = self._pending.get(key)
            owner = pending is None
            if owner:
                pending = self._pending[key] = _Pending()
                self.misses += 1
            else:
                self.hits += 1
        assert pending is not None
        if not owner:
            pending.done.wait()
            if pending.error is not None:
                raise pending.error
            assert pending.value is not None
            return pending.value
        try:
            value = load()
            pending.value = value
        except BaseException as exc:
            pending.error = exc
            raise
        finally:
            with self._lock:
                del self._pending[key]
                if pending.error is None and pending.value is not None and 0 < len(pending.value) <= self.max_bytes:
                    self._lru[key] = pending.value
            pending.done.set()
        return value

    def stats(self) -> dict[str, int]:
        with self._lock:
            return {"hits": self.hits, "misses": self.misses, "bytes": int(self._lru.currsize),
                    "entries": len(self._lru), "max_bytes": self.max_bytes}
