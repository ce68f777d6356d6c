"""The one error hierarchy of imgfs.

Every problem with an image is an ``ImageError``. At mount time it becomes one line on stderr and a
non-zero exit; after mounting, ``imgfs.fuse`` turns it into EIO and a log line.
"""

from __future__ import annotations

from typing import Any, Optional


class ImageError(Exception):
    """A problem with the image; ``layer`` and ``offset`` say where it was found."""

    def __init__(self, message: str, *, layer: Optional[str] = None, offset: Optional[int] = None) -> None:
        super().__init__(message)
        self.message = message
        self.layer = layer
        self.offset = offset
        # what the assembler had opened when this was raised, outermost first, and the layer that failed
        # (``imgfs info`` shows them: an encrypted image's outer layers before the passphrase is needed)
        self.described: list[dict[str, Any]] = []

    def __str__(self) -> str:
        text = f"{self.layer}: {self.message}" if self.layer else self.message
        if self.offset is not None:
            text += f" (at byte offset {self.offset})"
        return text


class UnsupportedFormat(ImageError):
    """No reader recognises the data, or it is a format imgfs does not read (yet).

    ``tried`` lists, when nothing matched, each format looked for and why it did not match (``imgfs info -v``)."""

    def __init__(self, message: str, *, layer: Optional[str] = None, offset: Optional[int] = None,
                 tried: tuple[str, ...] = ()) -> None:
        super().__init__(message, layer=layer, offset=offset)
        self.tried = tried


class CorruptImage(ImageError):
    """The data contradicts its format: a bad structure, a loop, a pointer past the end."""


class EncryptedImage(ImageError):
    """The image is encrypted and no (or a wrong) passphrase was given."""


class MissingFile(ImageError):
    """A file that the image names (a sidecar's data file) does not exist."""
