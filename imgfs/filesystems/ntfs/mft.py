"""The Master File Table: records by number, each with all its attributes, however many records hold them.

The MFT is itself a file (record 0) whose $DATA may be fragmented; its first records are found from the
boot sector, the rest through record 0's run list. Records 0-3 have a copy in $MFTMirr: when one of them is
damaged, the copy is read instead, with a warning. A file whose attributes do not fit one record keeps an
$ATTRIBUTE_LIST naming the extension records that hold the rest; each must point back to its base record.
Records are read when asked for, from the page cache: a file's record is wanted once for ``stat`` and once
per ``open``, and fixing one up costs less than keeping it.
"""

from __future__ import annotations

import bisect
import itertools
import logging
from collections.abc import Sequence
from typing import Optional, Union

from imgfs.errors import CorruptImage
from imgfs.filesystems.ntfs.boot import BootSector
from imgfs.filesystems.ntfs.record import (
    ATTRIBUTE_LIST,
    DATA,
    LAYER,
    Attribute,
    Record,
    apply_fixups,
)
from imgfs.filesystems.ntfs.runs import byte_runs, chain_runs, covered
from imgfs.filesystems.ntfs.streams import plain_stream
from imgfs.filesystems.ntfs.values import list_entries
from imgfs.io.stream import ExtentStream, Stream, read_exact

log = logging.getLogger(__name__)

MIRRORED_RECORDS = 4  # $MFT, $MFTMirr, $LogFile, $Volume
MAX_ATTRIBUTE_LIST_SIZE = 8 << 20  # a list this long would name ~300,000 attribute segments
BATCH_GAP = 8  # records between two wanted ones that are read along rather than left out
MAX_RECORDS = 1 << 40  # what a 48-bit file reference can name, with room for the tree's volume bits


class Mft:
    def __init__(self, volume: Stream, boot: BootSector) -> None:
        self.volume = volume
        self.boot = boot
        self.name = volume.name
        self.record_size = boot.record_size
        self._runs: list[tuple[int, int]] = [(boot.mft_cluster * boot.cluster_size, boot.record_size)]
        self._starts = [0]
        self.stream: Stream = ExtentStream.over(volume, self._runs)
        self.record_count = 1
        base = self.record(0)
        segments = [a for a in base.attributes() if a.type == DATA and not a.name]
        self.stream = self._data_stream(segments)  # enough to reach the extension records, if any
        self.record_count = self.stream.size // self.record_size
        if any(a.type == ATTRIBUTE_LIST for a in base.attributes()):
            segments = [a for a in self.attributes(base) if a.type == DATA and not a.name]
            self.stream = self._data_stream(segments)
            self.record_count = self.stream.size // self.record_size
        if self.record_count <= 11:
            raise CorruptImage(f"$MFT holds {self.record_count} records, fewer than the system files need",
                               layer=LAYER, offset=base.offset)

    def _data_stream(self, segments: Sequence[Attribute]) -> Stream:
        first = next((a for a in segments if a.first_vcn == 0 and not a.resident), None)
        if first is None:
            raise CorruptImage("$MFT has no non-resident $DATA starting at VCN 0", layer=LAYER,
                               offset=self.boot.mft_cluster * self.boot.cluster_size)
        runs = chain_runs(segments, self.boot.total_clusters)
        size = min(first.data_size, covered(runs, self.boot.cluster_size), MAX_RECORDS * self.record_size)
        if any(run.lcn is None for run in runs):
            raise CorruptImage("$MFT's run list has a sparse run", layer=LAYER, offset=first.offset)
        self._runs = [(offset or 0, length) for offset, length in byte_runs(runs, self.boot.cluster_size, size)]
        self._starts = list(itertools.accumulate((length for _, length in self._runs[:-1]), initial=0))
        return ExtentStream.over(self.volume, self._runs, name=f"{self.name}:$MFT")

    # -- records -------------------------------------------------------------------------------------

    def record(self, number: int) -> Record:
        """Record ``number``, fixed up and checked; ``CorruptImage`` if it cannot be read."""
        if not 0 <= number < self.record_count:
            raise CorruptImage(f"MFT record number: expected below {self.record_count}, got {number}", layer=LAYER)
        offset, run_end = self._place(number)
        return Record(number, self._load(number, offset, offset + self.record_size <= run_end), offset)

    def records(self, numbers: Sequence[int]) -> dict[int, Union[Record, CorruptImage]]:
        """Several records, each run of nearby ones read at once: a record, or why it cannot be read."""
        wanted = sorted(set(numbers))
        found: dict[int, Union[Record, CorruptImage]] = {}
        start = 0
        while start < len(wanted):
            end = start + 1
            while end < len(wanted) and wanted[end] - wanted[end - 1] <= BATCH_GAP:
                end += 1
            self._read_group(wanted[start:end], found)
            start = end
        return found

    def _read_group(self, group: list[int], found: dict[int, Union[Record, CorruptImage]]) -> None:
        first, last = group[0], group[-1]
        size = self.record_size
        if MIRRORED_RECORDS <= first and last < self.record_count:
            offset, run_end = self._place(first)
            data = self.volume.pread(offset, (last - first + 1) * size) if offset + (last - first + 1) * size \
                <= run_end else b""
            if len(data) == (last - first + 1) * size:
                for number in group:
                    at = (number - first) * size
                    try:
                        fixed = self._fix(bytearray(data[at : at + size]), number, offset + at)
                        found[number] = Record(number, fixed, offset + at)
                    except CorruptImage as exc:
                        found[number] = exc
                return
        for number in group:  # across runs, near the end of the image, or a mirrored record: one at a time
            try:
                found[number] = self.record(number)
            except CorruptImage as exc:
                found[number] = exc

    def _place(self, number: int) -> tuple[int, int]:
        """Where record ``number`` starts in the volume, and where the run holding its start ends."""
        position = number * self.record_size
        i = bisect.bisect_right(self._starts, position) - 1
        start = self._runs[i][0] + position - self._starts[i]
        return start, self._runs[i][0] + self._runs[i][1]

    def _load(self, number: int, offset: int, whole: bool) -> bytes:
        try:
            # most records lie whole in one run: read them from the volume, not through the run list
            source, position = (self.volume, offset) if whole else (self.stream, number * self.record_size)
            return self._fixed(source, position, number, offset)
        except CorruptImage as exc:
            if number >= MIRRORED_RECORDS:
                raise
            mirror = self.boot.mirror_cluster * self.boot.cluster_size + number * self.record_size
            data = self._fixed(self.volume, mirror, number, mirror)
            log.warning("%s: %s; using its copy in $MFTMirr", self.name, exc)
            return data

    def _fixed(self, stream: Stream, position: int, number: int, offset: int) -> bytes:
        buf = bytearray(read_exact(stream, position, self.record_size, LAYER, f"MFT record {number}"))
        return self._fix(buf, number, offset)

    @staticmethod
    def _fix(buf: bytearray, number: int, offset: int) -> bytes:
        apply_fixups(buf, b"FILE", f"MFT record {number}", offset)
        usa_offset = int.from_bytes(buf[4:6], "little")
        if usa_offset >= 48 and int.from_bytes(buf[44:48], "little") not in (number, 0):
            raise CorruptImage(f"MFT record {number} calls itself record {int.from_bytes(buf[44:48], 'little')}",
                               layer=LAYER, offset=offset + 44)
        return bytes(buf)

    # -- attributes across records -------------------------------------------------------------------

    def attributes(self, base: Record) -> list[Attribute]:
        """Every attribute of the file whose base record is ``base``, from its extension records too."""
        own = base.attributes()
        listing = next((a for a in own if a.type == ATTRIBUTE_LIST), None)
        if listing is None:
            return own
        found = [a for a in own if a.type != ATTRIBUTE_LIST]
        seen = {base.number}
        entries = list(list_entries(self._list_value(listing), base.number))
        for entry in entries:
            if entry.record in seen:
                continue  # the base itself, or an extension record already taken whole
            seen.add(entry.record)
            extension = self.record(entry.record)
            header = extension.header
            if not header.in_use or header.base != base.number:
                raise CorruptImage(f"MFT record {base.number}'s attribute list names record {entry.record}, which "
                                   f"belongs to record {header.base}" if header.in_use else
                                   f"MFT record {base.number}'s attribute list names record {entry.record}, which "
                                   f"is not in use", layer=LAYER, offset=extension.offset)
            # an extension record's own attribute list would be a loop: it is never followed
            found += [a for a in extension.attributes() if a.type != ATTRIBUTE_LIST]
        held = {(a.record, a.type, a.name, a.first_vcn, a.instance) for a in found}
        for entry in entries:
            key = (entry.record, entry.type, entry.name, entry.first_vcn, entry.instance)
            if key not in held and entry.type != ATTRIBUTE_LIST:
                raise CorruptImage(f"MFT record {base.number}'s attribute list names attribute 0x{entry.type:x} "
                                   f"{entry.name!r} from VCN {entry.first_vcn} in record {entry.record}, which does "
                                   f"not hold it", layer=LAYER, offset=base.offset)
        return found

    def _list_value(self, listing: Attribute) -> bytes:
        if listing.value is not None:
            return listing.value
        if listing.data_size > MAX_ATTRIBUTE_LIST_SIZE:
            raise CorruptImage(f"MFT record {listing.record}: an attribute list of {listing.data_size} bytes",
                               layer=LAYER, offset=listing.offset)
        stream = self.attribute_stream([listing])
        return read_exact(stream, 0, stream.size, LAYER, f"MFT record {listing.record}'s attribute list")

    def attribute_stream(self, segments: Sequence[Attribute], name: Optional[str] = None) -> Stream:
        """The bytes of a plain (not compressed) attribute: its runs up to the initialized size, zeros after."""
        return plain_stream(self.volume, self.boot, segments, name or self.name)
