"""Positional, stateless byte streams and the mount's cache: the bottom of every data path."""

from imgfs.io.cache import BlockCache
from imgfs.io.chunked import ChunkedStream
from imgfs.io.stream import BytesStream, ConcatStream, Extent, ExtentStream, FileStream, SliceStream, Stream

__all__ = [
    "BlockCache",
    "BytesStream",
    "ChunkedStream",
    "ConcatStream",
    "Extent",
    "ExtentStream",
    "FileStream",
    "SliceStream",
    "Stream",
]
