"""The one primitive: a positional, stateless, thread-safe stream.

``pread(offset, length)`` returns ``min(length, size - offset)`` bytes: it is short only at the end of
the stream. Data that the stream's size promises but its source cannot deliver (a truncated image, an
extent past the end) raises ``CorruptImage`` naming the layer and the offset, so that a damaged region
becomes EIO for the files that touch it and nothing else.

``readinto(offset, buf)`` is the same read into a caller's buffer; the plain-file path goes straight
from ``os.preadv`` into libfuse's buffer without a Python ``bytes`` in between.
"""

from __future__ import annotations

import bisect
import os
import stat
from collections.abc import Iterable, Mapping, Sequence
from types import MappingProxyType
from typing import NamedTuple, Optional

from imgfs.errors import CorruptImage, MissingFile, UnsupportedFormat

FileRange = tuple[int, int, int]  # (descriptor, offset in the file, count)


class Stream:
    """Base class: subclasses set ``size`` and implement ``pread``; ``readinto`` may be faster."""

    size: int = 0
    name: str = "stream"
    # Other forks of the same file, by name ("rsrc": a Mac resource fork), when a container knows them
    # (MacBinary, AppleDouble): the layer that needs one (NDIF) finds it here.
    forks: Mapping[str, Stream] = MappingProxyType({})

    def pread(self, offset: int, length: int) -> bytes:
        raise NotImplementedError

    def readinto(self, offset: int, buf: memoryview) -> int:
        """Fill ``buf`` (a memoryview: a slice of a bytearray would be a copy) like ``pread``."""
        data = self.pread(offset, len(buf))
        buf[: len(data)] = data
        return len(data)

    def readv(self, offset: int, bufs: Sequence[memoryview]) -> int:
        """Fill ``bufs`` one after the other from ``offset``, as one read of their total length (a vectored
        read: raw CD sectors scatter their user bytes and their headers into different buffers). A file
        does it with one ``os.preadv``; the default reads once and copies."""
        total = sum(len(b) for b in bufs)
        data = memoryview(self.pread(offset, total))
        done = 0
        for buf in bufs:
            take = min(len(buf), len(data) - done)
            if take <= 0:
                break
            buf[:take] = data[done : done + take]
            done += take
        return done

    def file_ranges(self, offset: int, length: int) -> Optional[list[FileRange]]:
        """Where the bytes of a read at ``offset`` of ``length`` lie in open files, as (descriptor, offset in
        it, count) in order, when they are stored there as they are; None when they must be decoded, zeroed or
        assembled. The FUSE adapter splices such bytes from the page cache into its reply unread."""
        return None

    def origin(self) -> tuple[Stream, int]:
        """The stream whose offsets the structures inside this one use, and where this one starts in it: itself
        at 0, but for a ``SessionView``."""
        return self, 0

    def _clamp(self, offset: int, length: int) -> int:
        """How many bytes a read at ``offset`` of ``length`` may return."""
        if offset < 0 or length < 0:
            raise ValueError(f"negative offset or length: {offset}, {length}")
        return max(0, min(length, self.size - offset))


def read_exact(stream: Stream, offset: int, length: int, layer: str, what: str) -> bytes:
    """``length`` bytes at ``offset``, or ``CorruptImage`` saying that ``what`` runs past the end."""
    data = stream.pread(offset, length)
    if len(data) < length:
        raise CorruptImage(f"{what}: the image ends at byte {stream.size}, inside it", layer=layer,
                           offset=offset + len(data))
    return data


class FileStream(Stream):
    """A file or block device read with ``os.pread``; the descriptor is shared, never seeked."""

    def __init__(self, path: str) -> None:
        self.name = path
        try:
            self._fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        except FileNotFoundError:
            raise MissingFile(f"no such file: {path}") from None
        except IsADirectoryError:
            raise UnsupportedFormat(f"{path} is a directory, not an image file") from None
        except OSError as exc:
            raise MissingFile(f"cannot open {path}: {exc.strerror}") from None
        st = os.fstat(self._fd)
        if stat.S_ISDIR(st.st_mode):
            os.close(self._fd)
            raise UnsupportedFormat(f"{path} is a directory, not an image file")
        self.size = st.st_size if stat.S_ISREG(st.st_mode) else os.lseek(self._fd, 0, os.SEEK_END)

    def fileno(self) -> int:
        return self._fd

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def pread(self, offset: int, length: int) -> bytes:
        want = self._clamp(offset, length)
        if not want:  # at or past the end: a crafted offset may not even fit os.pread's off_t
            return b""
        data = os.pread(self._fd, want, offset)
        while len(data) < want:  # pread may legally return short; retry until EOF
            more = os.pread(self._fd, want - len(data), offset + len(data))
            if not more:
                raise CorruptImage("file shrank while mounted", layer=self.name, offset=offset + len(data))
            data += more
        return data

    def readinto(self, offset: int, buf: memoryview) -> int:
        buf = memoryview(buf)
        want = self._clamp(offset, len(buf))
        done = 0
        while done < want:
            got = os.preadv(self._fd, [buf[done:want]], offset + done)
            if got <= 0:
                raise CorruptImage("file shrank while mounted", layer=self.name, offset=offset + done)
            done += got
        return done

    def file_ranges(self, offset: int, length: int) -> Optional[list[FileRange]]:
        n = self._clamp(offset, length)
        return [(self._fd, offset, n)] if n else []

    def readv(self, offset: int, bufs: Sequence[memoryview]) -> int:
        want = self._clamp(offset, sum(len(b) for b in bufs))
        got = os.preadv(self._fd, bufs, offset) if want else 0
        if got < want:  # a short preadv (rare): finish buffer by buffer
            return got + super().readv(offset + got, _skip(bufs, got))
        return got


class BytesStream(Stream):
    """Bytes held in memory: decoded metadata, test data."""

    def __init__(self, data: bytes, name: str = "memory") -> None:
        self._data = bytes(data)
        self.size = len(self._data)
        self.name = name

    def pread(self, offset: int, length: int) -> bytes:
        n = self._clamp(offset, length)
        return self._data[offset : offset + n]


class SliceStream(Stream):
    """``size`` bytes of ``base`` from ``offset``: a partition, a track, a file extent."""

    def __init__(self, base: Stream, offset: int, size: int, name: Optional[str] = None) -> None:
        if offset < 0 or size < 0:
            raise ValueError(f"bad slice {offset}+{size}")
        self.base = base
        self.offset = offset
        self.size = size
        self.name = name or base.name

    def pread(self, offset: int, length: int) -> bytes:
        n = self._clamp(offset, length)
        data = self.base.pread(self.offset + offset, n)
        if len(data) < n:
            raise CorruptImage("data runs past the end of the image", layer=self.name,
                               offset=self.offset + offset + len(data))
        return data

    def readinto(self, offset: int, buf: memoryview) -> int:
        n = self._clamp(offset, len(buf))
        got = self.base.readinto(self.offset + offset, memoryview(buf)[:n])
        if got < n:
            raise CorruptImage("data runs past the end of the image", layer=self.name,
                               offset=self.offset + offset + got)
        return got

    def file_ranges(self, offset: int, length: int) -> Optional[list[FileRange]]:
        n = self._clamp(offset, length)
        ranges = self.base.file_ranges(self.offset + offset, n)
        return ranges if ranges is not None and sum(r[2] for r in ranges) == n else None

    def readv(self, offset: int, bufs: Sequence[memoryview]) -> int:
        n = self._clamp(offset, sum(len(b) for b in bufs))
        got = self.base.readv(self.offset + offset, _take(bufs, n))
        if got < n:
            raise CorruptImage("data runs past the end of the image", layer=self.name,
                               offset=self.offset + offset + got)
        return got


class SessionView(SliceStream):
    """A stream from ``offset`` to the end of ``base`` whose structures address all of ``base``: a later
    session of a disc, whose directory records hold LBAs counted from the start of the disc. Detection
    reads it from its start; a reader that knows (ISO 9660, UDF) asks ``origin()`` for the whole disc."""

    def __init__(self, base: Stream, offset: int, name: Optional[str] = None) -> None:
        super().__init__(base, offset, max(0, base.size - offset), name=name)

    def origin(self) -> tuple[Stream, int]:
        return self.base, self.offset


class Unreadable(Stream):
    """``size`` bytes that cannot be read: every read raises the ``CorruptImage`` given (the part of a run
    that its image does not store, a file whose data cannot be decoded)."""

    def __init__(self, size: int, error: CorruptImage, name: str = "unreadable") -> None:
        self.size, self.error, self.name = size, error, name

    def pread(self, offset: int, length: int) -> bytes:
        if self._clamp(offset, length):
            raise self.error
        return b""


_ZEROS = memoryview(bytes(1 << 20))


def fill_zeros(target: memoryview) -> None:
    """Zero ``target`` without making a ``bytes`` of its size (holes are often large)."""
    for at in range(0, len(target), len(_ZEROS)):
        piece = target[at : at + len(_ZEROS)]
        piece[:] = _ZEROS[: len(piece)]


def _take(bufs: Sequence[memoryview], n: int) -> list[memoryview]:
    """The first ``n`` bytes of ``bufs``."""
    out: list[memoryview] = []
    for buf in bufs:
        if n <= 0:
            break
        out.append(buf[:n] if len(buf) > n else buf)
        n -= len(buf)
    return out


def _skip(bufs: Sequence[memoryview], n: int) -> list[memoryview]:
    """``bufs`` without their first ``n`` bytes."""
    out: list[memoryview] = []
    for buf in bufs:
        if n >= len(buf):
            n -= len(buf)
            continue
        out.append(buf[n:])
        n = 0
    return out


class Extent(NamedTuple):
    """``length`` bytes taken from ``source`` at ``source_offset``; no source means a hole of zeros."""

    length: int
    source: Optional[Stream]
    source_offset: int = 0


class ExtentStream(Stream):
    """A run list: extents laid end to end, holes reading as zeros (multi-extent and sparse files)."""

    def __init__(self, extents: Iterable[Extent], name: str = "extents") -> None:
        self._extents: list[Extent] = []
        self._starts: list[int] = []
        pos = 0
        for ext in extents:
            if ext.length < 0 or ext.source_offset < 0:
                raise ValueError(f"negative extent length or offset: {ext}")
            if ext.length == 0:
                continue
            self._extents.append(ext)
            self._starts.append(pos)
            pos += ext.length
        self.size = pos
        self.name = name

    @classmethod
    def over(cls, base: Stream, runs: Iterable[tuple[Optional[int], int]], name: Optional[str] = None
             ) -> ExtentStream:
        """Runs of ``(base_offset or None for a hole, length)`` over one base stream."""
        return cls((Extent(n, None if off is None else base, off or 0) for off, n in runs),
                   name=name or base.name)

    def _pieces(self, offset: int, n: int) -> Iterable[tuple[int, Extent, int, int]]:
        """(position in the request, extent, offset inside the extent, count) for a clamped read."""
        i = bisect.bisect_right(self._starts, offset) - 1
        done = 0
        while done < n:
            ext = self._extents[i]
            inner = offset + done - self._starts[i]
            count = min(ext.length - inner, n - done)
            yield done, ext, inner, count
            done += count
            i += 1

    def pread(self, offset: int, length: int) -> bytes:
        n = self._clamp(offset, length)
        parts = []
        for _, ext, inner, count in self._pieces(offset, n):
            if ext.source is None:
                parts.append(bytes(count))
                continue
            data = ext.source.pread(ext.source_offset + inner, count)
            if len(data) < count:
                raise CorruptImage("extent runs past the end of the image", layer=self.name,
                                   offset=ext.source_offset + inner + len(data))
            parts.append(data)
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def readinto(self, offset: int, buf: memoryview) -> int:
        n = self._clamp(offset, len(buf))
        buf = memoryview(buf)
        for pos, ext, inner, count in self._pieces(offset, n):
            if ext.source is None:
                fill_zeros(buf[pos : pos + count])
                continue
            got = ext.source.readinto(ext.source_offset + inner, buf[pos : pos + count])
            if got < count:
                raise CorruptImage("extent runs past the end of the image", layer=self.name,
                                   offset=ext.source_offset + inner + got)
        return n

    def file_ranges(self, offset: int, length: int) -> Optional[list[FileRange]]:
        ranges: list[FileRange] = []
        for _, ext, inner, count in self._pieces(offset, self._clamp(offset, length)):
            found = None if ext.source is None else ext.source.file_ranges(ext.source_offset + inner, count)
            if found is None or sum(r[2] for r in found) != count:
                return None  # a hole, decoded bytes, or a short source: the buffer path says which
            for fd, at, n in found:
                if ranges and ranges[-1][0] == fd and ranges[-1][1] + ranges[-1][2] == at:
                    ranges[-1] = (fd, ranges[-1][1], ranges[-1][2] + n)
                else:
                    ranges.append((fd, at, n))
        return ranges

    def readv(self, offset: int, bufs: Sequence[memoryview]) -> int:
        n = self._clamp(offset, sum(len(b) for b in bufs))
        pieces = list(self._pieces(offset, n))
        if len(pieces) == 1 and pieces[0][1].source is not None:  # within one extent: its source reads it
            _, ext, inner, count = pieces[0]
            assert ext.source is not None
            got = ext.source.readv(ext.source_offset + inner, _take(bufs, n))
            if got < count:
                raise CorruptImage("extent runs past the end of the image", layer=self.name,
                                   offset=ext.source_offset + inner + got)
            return got
        return super().readv(offset, bufs)


class ConcatStream(ExtentStream):
    """Streams back to back: split raw images, multi-FILE cue sheets."""

    def __init__(self, parts: Sequence[Stream], name: str = "concat") -> None:
        super().__init__((Extent(p.size, p, 0) for p in parts), name=name)
        self.parts = list(parts)
