"""An instrumented imgfs daemon: ``python -P dmgprobe.py IMAGE MNT [imgfs mount args]``, the package that
``PYTHONPATH`` names, with what the DMG part needs to see inside a running mount written to the JSON file
``$IMGFS_BENCH_PROBE`` when the mount ends.

imgfs itself has no way to report its cache from a running mount (``imgfs info`` opens the image anew, the
daemon logs nothing about its cache at unmount, ``-d`` logs only the FUSE requests). So this wrapper runs
the very same ``imgfs.cli.main`` after wrapping, in memory only:

* ``Worker.reply_read`` (every FUSE READ, in the thread that answers it): thread, offset, size, start and end
  times;
* ``ChunkedStream.chunk`` (every request for a decoded chunk, from a read or from a read-ahead job): thread,
  chunk, whether the chunk was in the cache already, how long the call took, whether this thread decoded;
* ``UdifDisk.decode`` (every decode): thread, chunk, wall and CPU time (``time.thread_time``);
* ``imgfs.fuse.serve``: when it returns (the mount has ended) the events, the mount's
  ``BlockCache.stats()`` and the daemon's rusage are written out.

The wrappers cost a few microseconds per call (a FUSE READ takes 100 µs or more): the timed
measurements use the plain daemon all the same, and this one only for the counts.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import threading
import time

_events: dict[str, list] = {"reads": [], "chunks": [], "decodes": []}
_local = threading.local()
_caches: dict = {}
_clock = time.perf_counter


def _thread_label() -> str:
    name = threading.current_thread().name
    return name if name.startswith("imgfs-") else f"fuse-{threading.get_ident() % 100_000}"


def install() -> None:
    from imgfs import fuse as adapter
    from imgfs.containers.dmg import disk
    from imgfs.fuse import session
    from imgfs.io import chunked

    reply_read = session.Worker.reply_read
    chunk = chunked.ChunkedStream.chunk
    decode = disk.UdifDisk.decode
    serve = adapter.serve

    def probed_reply_read(self, unique, stream, offset: int, size: int, pieces) -> None:  # noqa: ANN001
        start = _clock()
        try:
            reply_read(self, unique, stream, offset, size, pieces)
        finally:
            _events["reads"].append((_thread_label(), offset, size, start, _clock()))

    def probed_chunk(self, i: int) -> bytes:
        _caches[id(self._cache)] = self._cache  # the mount's BlockCache (the image no longer names it)
        cached = (self._key, i) in self._cache
        _local.decoded = False
        start = _clock()
        try:
            return chunk(self, i)
        finally:
            _events["chunks"].append((_thread_label(), i, cached, start, _clock(), _local.decoded))

    def probed_decode(self, i: int) -> bytes:
        start, cpu = _clock(), time.thread_time()
        try:
            return decode(self, i)
        finally:
            _local.decoded = True
            _events["decodes"].append((_thread_label(), i, start, _clock(), time.thread_time() - cpu))

    def probed_serve(image, mountpoint, options, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003
        try:
            serve(image, mountpoint, options, *args, **kwargs)
        finally:
            _write(image)

    session.Worker.reply_read = probed_reply_read
    chunked.ChunkedStream.chunk = probed_chunk
    disk.UdifDisk.decode = probed_decode
    adapter.serve = probed_serve


def _write(image) -> None:  # noqa: ANN001
    target = os.environ.get("IMGFS_BENCH_PROBE")
    if not target:
        return
    usage = resource.getrusage(resource.RUSAGE_SELF)
    stats = next(iter(_caches.values())).stats() if _caches else {"hits": 0, "misses": 0}
    out = {"cache": stats, "user_s": usage.ru_utime, "sys_s": usage.ru_stime,
           "maxrss_mib": usage.ru_maxrss / 1024, **_events}
    partial = f"{target}.partial"
    with open(partial, "w") as f:
        json.dump(out, f)
    os.rename(partial, target)


if __name__ == "__main__":
    install()
    from imgfs.cli import main

    sys.exit(main(sys.argv[1:]))
