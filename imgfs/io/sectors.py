"""Sector views: the user bytes of fixed-size stored sectors (raw CD sectors), and byte-swapped samples.

A raw CD data sector is 2352 bytes (2448 with subchannel) of which 2048 are user data at a fixed place
(16 for Mode 1, 24 for Mode 2 Form 1). ``SectorStream`` shows only those bytes, back to back. A read of
whole sectors is one vectored read on the base stream (``Stream.readv``): the user bytes go straight
into the caller's buffer, everything else into scratch buffers, so that a file's bytes reach libfuse's
buffer with one ``preadv`` and no copy.
"""

from __future__ import annotations

import operator
from typing import Callable, Optional

from imgfs.errors import CorruptImage
from imgfs.io.stream import Stream

USER = 2048  # the user data of a Mode 1 or Mode 2 Form 1 sector
RAW = 2352  # a whole CD sector
_MAX_SCATTER = 511  # sectors per vectored read: two buffers each, plus the first header, within IOV_MAX (1024)

SectorCheck = Callable[[bytes], str]  # a whole raw sector -> "" when good, else what failed ("EDC")


class SectorStream(Stream):
    """``count`` stored sectors of ``sector_size`` bytes, seen as ``user_size`` bytes each from ``user_offset``.

    One read of the raw sectors a request covers, then memoryview slices: never one call per sector. With
    ``check`` (``-o verify``), every raw sector read is checked once (its EDC/ECC) and a bad one fails the
    reads that touch it.
    """

    def __init__(self, base: Stream, offset: int, count: int, sector_size: int, user_offset: int,
                 user_size: int = USER, check: Optional[SectorCheck] = None, first_lba: int = 0,
                 name: str = "sectors") -> None:
        if user_offset + user_size > sector_size:
            user_size = sector_size - user_offset  # 2324-byte Form 2 storage seen through the 2048 view
        self.base, self.offset, self.count = base, offset, count
        self.sector_size, self.user_offset, self.user_size = sector_size, user_offset, user_size
        self.size = count * USER if user_size < USER else count * user_size
        self._stride = USER if user_size < USER else user_size
        self.check, self.first_lba, self.name = check, first_lba, name
        self._checked = bytearray((count + 7) // 8 if check else 0)  # one bit per sector checked

    def _raw(self, first: int, last: int) -> bytes:
        want = (last - first) * self.sector_size
        raw = self.base.pread(self.offset + first * self.sector_size, want)
        if len(raw) < want:
            where = self.offset + first * self.sector_size + len(raw)
            raise self._past_end(first + len(raw) // self.sector_size, where)
        if self.check is not None:
            self._check(raw, first, last)
        return raw

    def _past_end(self, sector: int, where: int) -> CorruptImage:
        return CorruptImage(f"{self.name}: sector {sector} is past the end of {self.base.name}", layer="sectors",
                            offset=where)

    def _check(self, raw: bytes, first: int, last: int) -> None:
        assert self.check is not None
        for i in range(first, last):
            if self._checked[i >> 3] & (1 << (i & 7)):
                continue
            sector = raw[(i - first) * self.sector_size : (i - first) * self.sector_size + RAW]
            problem = self.check(sector)
            if problem:
                raise CorruptImage(f"{self.name}: sector LBA {self.first_lba + i} fails its {problem} check",
                                   layer="verify", offset=self.offset + i * self.sector_size)
            self._checked[i >> 3] |= 1 << (i & 7)

    def readinto(self, offset: int, buf: memoryview) -> int:
        n = self._clamp(offset, len(buf))
        if n == 0:
            return 0
        stride = self._stride
        if self.check is None and self.user_size == stride and offset % stride == 0 and n >= stride:
            return self._scatter(offset, n, memoryview(buf))
        first, last = offset // stride, (offset + n - 1) // stride + 1
        raw = memoryview(self._raw(first, last))
        out = memoryview(buf)
        size, uo, us = self.sector_size, self.user_offset, self.user_size
        pos = 0
        skip = offset - first * stride
        for i in range(last - first):
            begin = skip if i == 0 else 0
            take = min(stride - begin, n - pos)
            if take <= 0:
                break
            base = i * size + uo + begin
            have = max(0, min(take, us - begin))
            out[pos : pos + have] = raw[base : base + have]
            if have < take:
                out[pos + have : pos + take] = bytes(take - have)
            pos += take
        return n

    def _scatter(self, offset: int, n: int, out: memoryview) -> int:
        """Whole sectors, 511 at a time, with one vectored read each: the first header, then each sector's
        user bytes into ``out`` and what lies between them (trailer and next header) into scratch."""
        stride, size, first = self._stride, self.sector_size, offset // self._stride
        whole = n // stride
        done = 0
        while done < whole:
            count = min(whole - done, _MAX_SCATTER)
            views = _slicer(count, stride)(out[done * stride : (done + count) * stride])
            iov: list[memoryview] = [_scratch(size - stride)] * (2 * count)
            iov[0] = _scratch(self.user_offset)
            iov[1::2] = views if count > 1 else (views,)
            pos = self.offset + (first + done) * size
            got = self.base.readv(pos, iov) - self.user_offset - (count - 1) * (size - stride)
            if got < count * stride:
                raise self._past_end(first + done + max(0, got) // stride, pos)
            done += count
        if n > whole * stride:
            self.readinto(offset + whole * stride, out[whole * stride : n])
        return n

    def pread(self, offset: int, length: int) -> bytes:
        buf = bytearray(self._clamp(offset, length))
        n = self.readinto(offset, memoryview(buf))
        return bytes(buf[:n])


_SLICERS: dict[tuple[int, int], operator.itemgetter] = {}
_SCRATCH: dict[int, memoryview] = {}


def _slicer(count: int, stride: int) -> operator.itemgetter:
    """Cut a buffer into ``count`` views of ``stride`` bytes with one call."""
    getter = _SLICERS.get((count, stride))
    if getter is None:
        getter = _SLICERS[(count, stride)] = operator.itemgetter(*[slice(i * stride, (i + 1) * stride)
                                                                    for i in range(count)])
    return getter


def _scratch(size: int) -> memoryview:
    """A buffer that reads of bytes nobody wants go into (shared: its contents never matter)."""
    view = _SCRATCH.get(size)
    if view is None:
        view = _SCRATCH[size] = memoryview(bytearray(size))
    return view


class SwappedStream(Stream):
    """16-bit samples stored big-endian (cue ``MOTOROLA``), read little-endian."""

    def __init__(self, base: Stream) -> None:
        self.base, self.size, self.name = base, base.size, base.name

    def pread(self, offset: int, length: int) -> bytes:
        n = self._clamp(offset, length)
        start, end = offset & ~1, min(self.size, (offset + n + 1) & ~1)
        data = bytearray(self.base.pread(start, end - start))
        data[0::2], data[1::2] = data[1::2], data[0::2]
        return bytes(data[offset - start : offset - start + n])
