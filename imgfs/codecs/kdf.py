"""PBKDF2 for the formats that derive keys from a passphrase (encrypted DMGs, APFS key bags): bounded,
interruptible, and reporting its progress.

* **Bounded.** The iteration count comes from the image, so a crafted image could ask for hours of work.
  Apple's tools calibrate PBKDF2 to a fraction of a second on the Mac that encrypts: hdiutil's encrypted
  images carry from 1,000 (Mac OS X 10.4) to a few hundred thousand iterations (232,558 in the corpus's
  AES-256 image), APFS key bags tens to a few hundred thousand. ``MAX_ITERATIONS`` leaves a wide margin
  above that; a derivation that asks for more is refused in one line, before any work.
* **Interruptible.** OpenSSL's PBKDF2 holds the calling thread until it is done, and Python runs a signal
  handler only between bytecodes: Ctrl-C during a long derivation would wait for its end. So the work runs
  in a worker thread while the caller waits in short steps; Ctrl-C (``KeyboardInterrupt``) or a SIGTERM
  handler reaches the caller within ``POLL_SECONDS``, and the abandoned worker ends with the process.
* **Progress.** ``progress(what, done, total)`` is called while it runs, in per mille of the time it is
  expected to take here (from a short calibration run of the same hash).
"""

from __future__ import annotations

import hashlib
import threading
import time
from typing import Optional

from imgfs.errors import CorruptImage
from imgfs.layer import Progress, no_progress

MAX_ITERATIONS = 10_000_000  # about a minute here for PBKDF2-HMAC-SHA1 with a 3DES key: the most ever waited for
POLL_SECONDS = 0.1
_CALIBRATION_ITERATIONS = 4096
_speeds: dict[str, float] = {}  # hash name -> hash blocks per second, measured once


def check_iterations(iterations: int, what: str, layer: str, offset: Optional[int] = None) -> None:
    """Refuse, in one line, an iteration count no real tool writes (or none at all)."""
    if iterations <= 0:
        raise CorruptImage(f"{what}: PBKDF2 iteration count {iterations}", layer=layer, offset=offset)
    if iterations > MAX_ITERATIONS:
        raise CorruptImage(f"{what}: PBKDF2 with {iterations:,} iterations is refused (real images use at most a "
                           f"few hundred thousand; the limit is {MAX_ITERATIONS:,})", layer=layer, offset=offset)


def pbkdf2(hash_name: str, passphrase: bytes, salt: bytes, iterations: int, length: int, *, what: str, layer: str,
           progress: Progress = no_progress) -> bytes:
    """PBKDF2-HMAC-``hash_name`` of ``length`` bytes (``length`` > 0), after ``check_iterations``."""
    check_iterations(iterations, what, layer)
    if length <= 0:
        raise CorruptImage(f"{what}: a derived key of {length} bytes", layer=layer)
    blocks = -(-length // hashlib.new(hash_name).digest_size)
    expected_seconds = iterations * blocks / _speed(hash_name)
    result: list[bytes] = []
    failed: list[BaseException] = []

    def derive() -> None:
        try:
            result.append(hashlib.pbkdf2_hmac(hash_name, passphrase, salt, iterations, length))
        except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
            failed.append(exc)

    worker = threading.Thread(target=derive, name="imgfs-pbkdf2", daemon=True)
    started = time.monotonic()
    worker.start()
    progress(what, 0, 1000)
    while True:
        worker.join(POLL_SECONDS)  # a signal handler (KeyboardInterrupt) runs here
        if not worker.is_alive():
            break
        done = int(1000 * (time.monotonic() - started) / max(expected_seconds, 1e-3))
        progress(what, min(999, done), 1000)
    progress(what, 1000, 1000)
    if failed:
        raise failed[0]
    return result[0]


def check_total(iterations: list[int], what: str, layer: str) -> None:
    """Refuse, before any work, derivations that together ask for more than one derivation may (an image with
    64 key entries of a few million iterations each, each tried with a wrong passphrase)."""
    total = sum(iterations)
    if total > MAX_ITERATIONS:
        raise CorruptImage(f"{what}: {len(iterations)} PBKDF2 derivations of {total:,} iterations in all are refused "
                           f"(the limit is {MAX_ITERATIONS:,})", layer=layer)


def _speed(hash_name: str) -> float:
    speed = _speeds.get(hash_name)
    if speed is None:
        started = time.perf_counter()
        hashlib.pbkdf2_hmac(hash_name, b"calibration", b"salt", _CALIBRATION_ITERATIONS, 1)
        speed = _speeds[hash_name] = _CALIBRATION_ITERATIONS / max(time.perf_counter() - started, 1e-6)
    return speed
