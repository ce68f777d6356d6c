"""What every command shares: the one-line failure, human sizes, and opening an image for the user
(the passphrase from where the user keeps it, progress on a terminal)."""

from __future__ import annotations

import os
import shlex
import sys
from typing import Callable, Optional

from imgfs.cli.progress import terminal_progress
from imgfs.errors import EncryptedImage, ImageError
from imgfs.image import OpenedImage, open_image
from imgfs.options import MountOptions


class UsageError(Exception):
    """Arguments that do not make a command: the line, then the usage."""


def fail(message: str, code: int = 1) -> int:
    print(f"imgfs: {message}", file=sys.stderr)
    return code


def warn(message: str) -> None:
    print(f"imgfs: warning: {message}", file=sys.stderr)


def error_line(exc: ImageError, image: Optional[str]) -> str:
    """The one line for a failure to open ``image``: when nothing was recognised, where to see what was tried."""
    if getattr(exc, "tried", ()) and image:
        return f"{exc}; `imgfs info -v {shlex.quote(image)}` lists what was tried"
    return str(exc)


def open_for_user(path: str, options: MountOptions) -> OpenedImage:
    """``open_image`` with the user's passphrase sources and, on a terminal, a progress line."""
    return open_image(path, options, passphrase=passphrase_source(path, options.passfile),
                      progress=terminal_progress())


def passphrase_source(path: str, passfile: Optional[str]) -> Callable[[], Optional[str]]:
    """Where an encrypted image's passphrase comes from: -o passfile, $IMGFS_PASSPHRASE, or a prompt on a TTY.

    Asked only when an image needs one, and at most once."""
    asked: list[Optional[str]] = []

    def get() -> Optional[str]:
        if asked:
            return asked[0]
        value: Optional[str] = None
        if passfile:
            try:
                with open(passfile, encoding="utf-8") as handle:
                    value = handle.readline().rstrip("\r\n")
            except OSError as exc:
                raise EncryptedImage(f"cannot read the passphrase file {passfile}: {exc.strerror}") from None
        elif "IMGFS_PASSPHRASE" in os.environ:
            value = os.environ["IMGFS_PASSPHRASE"]
        elif sys.stdin.isatty() and sys.stderr.isatty():
            import getpass

            value = getpass.getpass(f"passphrase for {os.path.basename(path)}: ", stream=sys.stderr)
        asked.append(value)
        return value

    return get
