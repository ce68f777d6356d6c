"""A second process for work that is mostly Python and system calls per item (writing thousands of small
files): forked with everything already open, it does its share while the first process does the rest, and
reports through a pipe how far it has got and, at the end, what it has to say.

Forked only when no other thread runs: a thread holding a lock at fork time would leave it locked forever in
the copy.
"""

from __future__ import annotations

import json
import os
import sys
import threading
from typing import Any, Callable, Optional

Work = Callable[[Callable[[int], None]], dict[str, Any]]  # work(report(done)) -> a JSON-able result


class Helper:
    def __init__(self, pid: int, pipe: int) -> None:
        self.pid = pid
        self.pipe = pipe
        self.done = 0  # the last amount the helper reported
        self._buffer = b""
        self.result: Optional[dict[str, Any]] = None

    @classmethod
    def start(cls, work: Work) -> Optional[Helper]:
        """Fork a process running ``work``; None when forking is not safe (other threads) or not possible."""
        if threading.active_count() > 1 or not hasattr(os, "fork"):
            return None
        sys.stdout.flush()
        sys.stderr.flush()
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:  # the helper: it never returns
            os.close(read_end)
            _serve(work, write_end)
        os.close(write_end)
        os.set_blocking(read_end, False)
        return cls(pid, read_end)

    def poll(self) -> int:
        """How far the helper has got, as it last said; never waits."""
        try:
            while chunk := os.read(self.pipe, 65536):
                self._take(chunk)
        except BlockingIOError:
            pass
        return self.done

    def join(self) -> dict[str, Any]:
        """Wait for the helper to end; its result (``{"error": ...}`` when it failed)."""
        os.set_blocking(self.pipe, True)
        while chunk := os.read(self.pipe, 65536):
            self._take(chunk)
        os.close(self.pipe)
        _, status = os.waitpid(self.pid, 0)
        if self.result is None:
            return {"error": f"the helper process ended without a result (status {status})"}
        return self.result

    def _take(self, chunk: bytes) -> None:
        self._buffer += chunk
        *lines, self._buffer = self._buffer.split(b"\n")
        for line in lines:
            kind, _, value = line.partition(b" ")
            if kind == b"p":
                self.done = int(value)
            elif kind == b"r":
                self.result = json.loads(value)


def _serve(work: Work, pipe: int) -> None:
    code = 0

    def report(done: int) -> None:
        os.write(pipe, b"p %d\n" % done)

    try:
        result = work(report)
    except BaseException as exc:  # noqa: BLE001 - said through the pipe; the process ends here either way
        result, code = {"error": f"{type(exc).__name__}: {exc}"}, 1
    try:
        os.write(pipe, b"r " + json.dumps(result).encode() + b"\n")
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
