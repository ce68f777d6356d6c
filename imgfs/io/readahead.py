"""Decoding chunks ahead of a sequential reader, in background threads, bounded.

``ReadAheadStream`` wraps a ``ChunkedStream``: a read goes through unchanged, and when it looks
sequential the next chunks are queued for the workers. Whether it does is read off the cache, not off
state kept between reads: a read whose first chunk, or the chunk before it, is already decoded is a
reader moving forward through the file; a random read lands among cold chunks.

zlib, bzip2, LZMA and LZFSE release the GIL, so a chunk decoded in a worker while the reader copies
the previous one uses the second core. The queue is short and a job that finds its chunk already in
the cache does nothing; a job's error is dropped here and met again by the reader that needs the chunk.

The workers are process-wide and fork-safe: ``imgfs IMAGE MNT`` opens the image (reading chunks) and
then forks. Before a fork the running jobs are waited for, so that no decode is half done in the child
(whose cache would then wait forever for it); after it the child starts with no workers and makes new
ones on demand.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
from collections import deque
from collections.abc import Hashable
from typing import Callable, Optional

from imgfs.io import background
from imgfs.io.chunked import ChunkedStream
from imgfs.io.stream import Stream

log = logging.getLogger(__name__)

WORKERS = max(1, min(2, os.cpu_count() or 1))
MAX_QUEUED = 4


class ReadAhead:
    def __init__(self, workers: int = WORKERS, max_queued: int = MAX_QUEUED) -> None:
        self.workers = workers
        self.max_queued = max_queued
        self._reset()

    def _reset(self) -> None:
        self._cond = threading.Condition()
        self._jobs: deque[tuple[Hashable, Callable[[], object]]] = deque()
        self._keys: set[Hashable] = set()
        self._threads: list[threading.Thread] = []
        self._running = [threading.Lock() for _ in range(self.workers)]

    def submit(self, key: Hashable, job: Callable[[], object]) -> bool:
        """Queue ``job`` unless ``key`` is already queued or running, the queue is full, or an image is being
        opened (``imgfs.io.background``)."""
        if not background.allowed():
            return False
        with self._cond:
            if key in self._keys or len(self._jobs) >= self.max_queued:
                return False
            self._keys.add(key)
            self._jobs.append((key, job))
            if len(self._threads) < self.workers:
                self._start(len(self._threads))
            self._cond.notify()
            return True

    def pending(self) -> int:
        with self._cond:
            return len(self._keys)

    def _start(self, index: int) -> None:
        thread = threading.Thread(target=self._work, args=(self._running[index],), name=f"imgfs-udif-{index}",
                                  daemon=True)
        self._threads.append(thread)
        thread.start()

    def _work(self, running: threading.Lock) -> None:
        while True:
            with self._cond:
                while not self._jobs:
                    self._cond.wait()
                key, job = self._jobs.popleft()
            with running:
                try:
                    job()
                except Exception as exc:  # noqa: BLE001 - the reader that needs this chunk meets it again
                    log.debug("read-ahead of %r failed: %s", key, exc)
            with self._cond:
                self._keys.discard(key)

    # -- fork safety --------------------------------------------------------------------------------

    def before_fork(self) -> None:
        for lock in self._running:
            lock.acquire()

    def after_fork_in_parent(self) -> None:
        for lock in self._running:
            lock.release()

    def after_fork_in_child(self) -> None:
        self._reset()


READ_AHEAD = ReadAhead()
AHEAD = 2  # chunks decoded ahead of a sequential reader


class ReadAheadStream(Stream):
    """``chunks`` read through; after a sequential read, the next ``AHEAD`` chunks that ``worth(i)`` allows
    (those whose codec releases the GIL) are decoded by ``pool``'s workers."""

    def __init__(self, chunks: ChunkedStream, worth: Callable[[int], bool],
                 pool: Optional[ReadAhead] = None) -> None:
        self.chunks, self.worth = chunks, worth
        self.pool = pool or READ_AHEAD
        self.size, self.name = chunks.size, chunks.name

    def pread(self, offset: int, length: int) -> bytes:
        warm = self._warm(offset)
        data = self.chunks.pread(offset, length)
        if warm and data:
            self._ahead(offset + len(data) - 1)
        return data

    def readinto(self, offset: int, buf: memoryview) -> int:
        warm = self._warm(offset)
        n = self.chunks.readinto(offset, buf)
        if warm and n:
            self._ahead(offset + n - 1)
        return n

    def _warm(self, offset: int) -> bool:
        if offset >= self.size:
            return False
        first = self.chunks.index(offset)
        return self.chunks.cached(first) or (first > 0 and self.chunks.cached(first - 1))

    def _ahead(self, last_offset: int) -> None:
        last = self.chunks.index(last_offset)
        for i in range(last + 1, min(last + 1 + AHEAD, self.chunks.chunk_count())):
            if not self.worth(i):
                return  # a pure-Python decoder in another thread only slows the reader
            if not self.chunks.cached(i):
                self.pool.submit((id(self.chunks), i), functools.partial(self.chunks.chunk, i))
if hasattr(os, "register_at_fork"):
    os.register_at_fork(before=READ_AHEAD.before_fork, after_in_parent=READ_AHEAD.after_fork_in_parent,
                        after_in_child=READ_AHEAD.after_fork_in_child)
