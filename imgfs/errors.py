"""The one error hierarchy of imgfs.

Every problem with an image is an ``ImageError``. At mount time it becomes one line on stderr and a
non-zero exit; after mounting, ``fuse_ops`` turns it into EIO and a log line.
"""

from __future__ import annotations

from typing import Optional


class ImageError(Exception):
    """A problem with the image; ``layer`` and ``offset`` say where it was found."""

    def __init__(self, message: str, *, layer: Optional[str] = None, offset: Optional[int] = None) -> None:
        super().__init__(message)
        self.message = message
        self.layer = layer
        self.offset = offset

    def __str__(self) -> str:
        text = f"{self.layer}: {self.message}" if self.layer else self.message
        if self.offset is not None:
            text += f" (at byte offset {self.offset})"
        return text


class UnsupportedFormat(ImageError):
    """No reader recognises the data, or it is a format imgfs does not read (yet)."""


class CorruptImage(ImageError):
    """The data contradicts its format: a bad structure, a loop, a pointer past the end."""


class EncryptedImage(ImageError):
    """The image is encrypted and no (or a wrong) passphrase was given."""


class MissingFile(ImageError):
    """A file that the image names (a sidecar's data file) does not exist."""
