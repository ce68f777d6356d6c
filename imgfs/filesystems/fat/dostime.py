"""MS-DOS dates and times, as FAT and exFAT store them, to nanoseconds since 1970.

A date is 16 bits (day 0-4, month 5-8, years since 1980 9-15), a time 16 bits (two-second units 0-4,
minute 5-10, hour 11-15). FAT has no time zone: the specification says the time is local, so it is read
in the local time zone of the machine that mounts it (``time.mktime``), the way Windows and Linux show it.
exFAT may record the offset from UTC; when it does, that offset is used instead.

Conversions are cached: a volume has few distinct timestamps compared to its files, and ``mktime`` is
the slowest step of a directory listing.
"""

from __future__ import annotations

import calendar
import functools
import time
from typing import Optional

NS = 1_000_000_000


def _fields(date: int, clock: int) -> Optional[tuple[int, int, int, int, int, int]]:
    day, month, year = date & 0x1F, (date >> 5) & 0x0F, 1980 + (date >> 9)
    seconds, minute, hour = (clock & 0x1F) * 2, (clock >> 5) & 0x3F, clock >> 11
    if not (1 <= month <= 12 and 1 <= day <= 31) or hour > 23 or minute > 59 or seconds > 59:
        return None  # zero (never set) or damaged: shown as 1970, not guessed at
    return year, month, day, hour, minute, seconds


@functools.lru_cache(maxsize=16384)
def local_ns(date: int, clock: int = 0) -> int:
    """A FAT date and time in the local time zone, as ns since 1970 (0 when invalid)."""
    fields = _fields(date, clock)
    if fields is None:
        return 0
    try:
        return int(time.mktime((*fields, 0, 0, -1))) * NS  # -1: let the C library decide whether DST applies
    except (OverflowError, ValueError):
        return 0


@functools.lru_cache(maxsize=16384)
def utc_ns(date: int, clock: int = 0) -> int:
    """A FAT date and time taken as UTC, as ns since 1970 (0 when invalid)."""
    fields = _fields(date, clock)
    return 0 if fields is None else calendar.timegm((*fields, 0, 0, 0)) * NS


@functools.lru_cache(maxsize=16384)
def exfat_ns(stamp: int, centiseconds: int, utc_offset: int) -> int:
    """An exFAT timestamp: date in the high 16 bits, 10 ms increments (0-199), and the UTC offset byte
    (bit 7: valid; bits 0-6: signed quarter hours). Without a valid offset the time is local."""
    date, clock = stamp >> 16, stamp & 0xFFFF
    if utc_offset & 0x80:
        quarters = utc_offset & 0x7F
        if quarters & 0x40:
            quarters -= 0x80
        base = utc_ns(date, clock)
        if base:
            base -= quarters * 900 * NS
    else:
        base = local_ns(date, clock)
    if base and centiseconds < 200:
        base += centiseconds * 10_000_000
    return base
