"""A progress line on stderr while long work runs (whole-image checks, key derivation, extraction):
percent, rate and time left, redrawn at most ten times a second, and only when stderr is a terminal.

Layers report through ``ctx.progress(what, done, total)`` (``imgfs.layer.Progress``), in bytes; the
command line passes ``terminal_progress()`` in, and nothing is printed when no one is watching.
"""

from __future__ import annotations

import sys
import time
from typing import Optional, TextIO

from imgfs.cli.text import duration, human_size
from imgfs.layer import Progress, no_progress

REDRAW_SECONDS = 0.1
WARM_UP_SECONDS = 0.25  # quick work shows no line at all: a progress bar that flashes is noise


def terminal_progress(stream: Optional[TextIO] = None) -> Progress:
    """A progress callback that draws on ``stream`` (stderr) when it is a terminal, else one that is silent."""
    out = stream or sys.stderr
    try:
        if not out.isatty():
            return no_progress
    except ValueError:  # closed
        return no_progress
    return ProgressLine(out)


class ProgressLine:
    """``checking track 1:  42% 300 MiB of 700 MiB, 12.5 MiB/s, 0:32 left``, redrawn in place."""

    def __init__(self, out: TextIO, clock=time.monotonic) -> None:
        self.out = out
        self.clock = clock
        self.what = ""
        self.started = 0.0
        self.drawn = 0.0
        self.visible = False

    def __call__(self, what: str, done: int, total: int) -> None:
        now = self.clock()
        if what != self.what:
            self.clear()
            self.what, self.started, self.drawn = what, now, 0.0
        finished = total > 0 and done >= total
        if finished:
            self.clear()
            return
        if now - self.started < WARM_UP_SECONDS or now - self.drawn < REDRAW_SECONDS:
            return
        self.drawn = now
        self.out.write("\r" + self.line(done, total, now - self.started) + "\x1b[K")
        self.out.flush()
        self.visible = True

    def line(self, done: int, total: int, elapsed: float) -> str:
        rate = done / elapsed if elapsed > 0 else 0.0
        text = f"{self.what}: "
        if total > 0:
            text += f"{100 * done // total:3d}% {human_size(done)} of {human_size(total)}"
        else:
            text += human_size(done)
        if rate > 0:
            text += f", {human_size(int(rate))}/s"
            if total > done:
                text += f", {duration((total - done) / rate)} left"
        return text

    def clear(self) -> None:
        if self.visible:
            self.out.write("\r\x1b[K")
            self.out.flush()
            self.visible = False

