"""A file object over a stream, for libraries that want one (pycdlib, in the cross-check).

One per user: it has a position."""

from __future__ import annotations

import io

from imgfs.io.stream import Stream


class StreamIO(io.RawIOBase):
    def __init__(self, stream: Stream) -> None:
        super().__init__()
        self._stream = stream
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        bases = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._stream.size}
        if whence not in bases:
            raise ValueError(f"invalid whence {whence}")
        base = bases[whence]
        if base + offset < 0:
            raise ValueError("negative seek position")
        self._pos = base + offset
        return self._pos

    def readinto(self, buf) -> int:
        view = memoryview(buf).cast("B")
        n = self._stream.readinto(self._pos, view) if self._pos < self._stream.size else 0
        self._pos += n
        return n
