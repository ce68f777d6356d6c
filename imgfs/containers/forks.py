"""A Mac file carried by a format that keeps both of its forks (MacBinary, AppleSingle, an AppleDouble pair):
its data fork is the stream detection goes on in, and its other forks travel with it as ``forks``
(``{"rsrc": the resource fork}``), where the layer that needs them (NDIF) finds them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any

from imgfs.io.stream import SliceStream, Stream
from imgfs.layer import Layer


class ForkedFile(SliceStream, Layer):
    """``size`` bytes of ``base`` at ``offset`` (the data fork), with the file's other forks."""

    def __init__(self, base: Stream, offset: int, size: int, forks: Mapping[str, Stream], kind: str,
                 details: dict[str, Any], label: str = "", owned: Sequence[Any] = ()) -> None:
        super().__init__(base, offset, size, name=base.name)
        self._owned = owned  # files this layer opened itself (a companion source's), closed with it
        self.forks = MappingProxyType(dict(forks))
        self.kind = kind
        self.label = label
        self._details = details

    def describe(self) -> dict[str, Any]:
        return {"layer": self.kind, **self._details, "data_fork_size": self.size,
                **{f"{name}_fork_size": fork.size for name, fork in self.forks.items()}}

    def close(self) -> None:
        for stream in self._owned:
            stream.close()
