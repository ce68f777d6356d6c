"""Partition maps: each turns a disk stream into a ``PartitionTable`` of byte ranges, a volume set.

A partition is a ``SliceStream`` of its disk. One that runs past the end of the image is clipped,
with a warning, and is not refused. Every partition with data is a volume, shown as a folder ``N LABEL``
when it holds a filesystem imgfs reads, else as a raw file ``N.img``; the map's own entries and the
partitions wholly outside the image are listed by ``imgfs info`` only.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Optional

from imgfs.io.stream import SliceStream, Stream
from imgfs.layer import Volume, VolumeSet

log = logging.getLogger(__name__)


@dataclass
class Partition:
    number: int  # as the table numbers it (MBR logical partitions from 5)
    start: int  # byte offset in the disk
    size: int  # bytes, as the table says
    type: str  # a readable type name
    type_id: str  # "0x83", a GUID, "Apple_HFS"
    name: str = ""  # GPT and APM names
    details: dict[str, Any] = field(default_factory=dict)
    available: int = -1  # bytes that are in the image (after clipping); set by ``clip``

    def clip(self, disk_size: int, scheme: str) -> None:
        self.available = max(0, min(self.size, disk_size - self.start)) if self.start >= 0 else 0
        if 0 < self.available < self.size:
            log.warning("%s: partition %d runs past the end of the image (%d of %d bytes present); clipped",
                        scheme, self.number, self.available, self.size)

    def stream(self, disk: Stream) -> SliceStream:
        return SliceStream(disk, self.start, max(self.available, 0), name=f"{disk.name}:partition {self.number}")

    def describe(self) -> dict[str, Any]:
        info: dict[str, Any] = {"number": self.number, "start": self.start, "size": self.size, "type": self.type,
                                "type_id": self.type_id}
        if self.name:
            info["name"] = self.name
        if self.available != self.size:
            info["available"] = self.available
        info.update(self.details)
        return info


@dataclass
class PartitionTable(VolumeSet):
    scheme: str  # "mbr", "gpt", "apm"
    sector_size: int
    partitions: list[Partition]
    details: dict[str, Any] = field(default_factory=dict)
    disk: Optional[Stream] = None  # the stream the map was read from

    def __post_init__(self) -> None:
        self._warn_overlaps()

    def _warn_overlaps(self) -> None:
        """Overlapping partitions are each shown whole, with a warning: which one is wrong is not knowable."""
        spans = sorted((p.start, p.start + p.size, p.number) for p in self.partitions
                       if p.size and p.details.get("volume", True))
        for (_, end, number), (start, _, other) in zip(spans, spans[1:]):
            if start < end:
                log.warning("%s: partitions %d and %d overlap", self.scheme, number, other)

    def describe(self) -> dict[str, Any]:
        disk = {"disk_size": self.disk.size} if self.disk is not None else {}  # the layout bar's extent
        return {"layer": self.scheme, "sector_size": self.sector_size, **disk, **self.details,
                "partitions": [p.describe() for p in self.partitions]}

    def volumes(self) -> Sequence[Volume]:
        assert self.disk is not None
        return [Volume(str(p.number), p.stream(self.disk), label=p.name, raw=f"{p.number}.img",
                       view=f"partitions/{p.number}.img", details={"partition": p.number})
                for p in self.partitions if holds_data(p)]

    def empty_reason(self) -> str:
        size = self.disk.size if self.disk is not None else 0
        return (f"{self.scheme}: no partition has data in this image ({size} bytes): the {len(self.partitions)} "
                "listed lie beyond its end or are the map's own entries; a partition table without its "
                "partitions (imgfs info lists them)")


def holds_data(part: Partition) -> bool:
    """A partition to show: one with bytes in the image that is not a map's own bookkeeping."""
    return part.available > 0 and part.details.get("volume", True) and part.type_id != "0xee"
