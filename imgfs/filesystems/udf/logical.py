"""The logical volume's partitions, by partition reference: physical ones first, then those built on them.

Virtual partitions need the VAT, a file found at the last recorded sector of the disc; metadata
partitions need the metadata file (or its mirror), a file in the physical partition. Both files are
read with only the physical partitions available, so that neither can be read through the partition
it defines.
"""

from __future__ import annotations

from typing import Optional

from imgfs.errors import CorruptImage, ImageError
from imgfs.filesystems.udf.descriptors import (
    EXTENT_RECORDED,
    LAYER,
    TAG_EFE,
    TAG_FE,
    Address,
    PartitionDescriptor,
    PartitionMap,
    tag_ident,
)
from imgfs.filesystems.udf.icb import FileEntry, IcbReader
from imgfs.filesystems.udf.partitions import (
    MAX_SPARING_TABLE,
    PartitionView,
    RunMap,
    SparedStream,
    VatStream,
    parse_sparing_table,
    parse_vat,
    physical_view,
)
from imgfs.filesystems.udf.volume import VolumeSet
from imgfs.io.stream import Stream

VAT_SEARCH_BLOCKS = 320  # how far back from the last sector the VAT's entry is looked for
MAX_VAT_SIZE = 64 << 20
FILE_TYPE_VAT, FILE_TYPE_METADATA, FILE_TYPE_MIRROR = 248, 250, 251
PHYSICAL_KINDS = ("physical", "sparable")
ACCESS_WRITE_ONCE = 2  # a CD-R's partition runs to the end of the disc, past the end of what was recorded


class LogicalVolumeLayout:
    """The partition views of a volume, and what was found setting them up (for ``describe``)."""

    def __init__(self, image: Stream, volume: VolumeSet) -> None:
        assert volume.logical is not None
        self.image = image
        self.volume = volume
        self.block_size = volume.sector_size
        self.maps = volume.logical.maps
        self.details: list[dict[str, object]] = [{"reference": ref, "type": pmap.kind, "partition": pmap.number}
                                                 for ref, pmap in enumerate(self.maps)]
        self.views: list[Optional[PartitionView]] = [None] * len(self.maps)
        self.mirrors: dict[int, PartitionView] = {}  # metadata partition reference -> its mirror's view
        self.warnings: list[str] = []  # logged once the mount is sure to happen: a refusal stays one line
        for ref, pmap in enumerate(self.maps):
            if pmap.kind in PHYSICAL_KINDS:
                self.views[ref] = self._physical(ref, pmap)
        physical = IcbReader(list(self.views), self.block_size)
        for ref, pmap in enumerate(self.maps):
            if pmap.kind == "virtual":
                self.views[ref] = self._virtual(ref, pmap, physical)
        for ref, pmap in enumerate(self.maps):
            if pmap.kind == "metadata":
                self.views[ref] = self._metadata(ref, pmap)

    # -- physical and sparable ---------------------------------------------------------------------

    def _descriptor_for(self, ref: int, pmap: PartitionMap) -> PartitionDescriptor:
        pd = self.volume.partitions.get(pmap.number)
        if pd is None:
            raise CorruptImage(f"partition map {ref} names partition {pmap.number}, which has no partition "
                               "descriptor", layer=LAYER, offset=self.volume.logical.offset if self.volume.logical
                               else None)
        return pd

    def _physical(self, ref: int, pmap: PartitionMap) -> PartitionView:
        pd = self._descriptor_for(ref, pmap)
        bs = self.block_size
        if pd.start * bs >= self.image.size:
            raise CorruptImage(f"partition {pd.number} starts at sector {pd.start}, past the end of the image "
                               f"({self.image.size} bytes)", layer=LAYER, offset=pd.offset)
        if (pd.start + pd.length) * bs > self.image.size and pd.access_type != ACCESS_WRITE_ONCE:
            self.warnings.append(f"UDF partition {pd.number} ends {(pd.start + pd.length) * bs - self.image.size} "
                                 "bytes past the end of the image; files there give EIO")
        view = physical_view(pmap.kind, pd.number, self.image, pd.start * bs, pd.length * bs)
        if pmap.kind == "sparable":
            return self._sparable(ref, view, pmap)
        return view

    def _sparable(self, ref: int, view: PartitionView, pmap: PartitionMap) -> PartitionView:
        best: Optional[tuple[int, dict[int, int]]] = None
        size = min(max(pmap.sparing_table_size, 56), MAX_SPARING_TABLE)
        for sector in pmap.sparing_tables:
            offset = sector * self.block_size
            try:
                table = parse_sparing_table(self.image.pread(offset, size), offset)
            except ImageError as exc:
                self.warnings.append(f"a copy of the UDF sparing table is unreadable: {exc}")
                continue
            if best is None or table[0] > best[0]:
                best = table
        if best is None:
            self.warnings.append("no readable UDF sparing table; reading every packet where it was written")
        if not best or not best[1] or not pmap.packet_length:
            return view
        self.details[ref]["spared_packets"] = len(best[1])
        stream = view.stream
        assert hasattr(stream, "offset")
        spared = SparedStream(stream, self.image, self.block_size, pmap.packet_length, best[1])  # type: ignore[arg-type]
        return PartitionView("sparable", view.number, spared, spared.where)

    # -- virtual -----------------------------------------------------------------------------------

    def _virtual(self, ref: int, pmap: PartitionMap, reader: IcbReader) -> PartitionView:
        physical_ref = self._physical_ref(ref, pmap)
        physical = self.views[physical_ref]
        assert physical is not None
        entries, kind, block = self._find_vat(physical_ref, physical, reader)
        self.details[ref].update(vat=kind, vat_sector=block, vat_entries=len(entries) // 4)
        stream = VatStream(physical, entries, self.block_size, f"{self.image.name}: udf virtual partition")
        return PartitionView("virtual", pmap.number, stream, stream.where)

    def _physical_ref(self, ref: int, pmap: PartitionMap) -> int:
        for other, candidate in enumerate(self.maps):
            if candidate.kind in PHYSICAL_KINDS and candidate.number == pmap.number:
                return other
        raise CorruptImage(f"partition map {ref} ({pmap.kind}) names partition {pmap.number}, which no physical "
                           "partition map describes", layer=LAYER)

    def _find_vat(self, ref: int, physical: PartitionView, reader: IcbReader) -> tuple[memoryview, str, int]:
        """The VAT: its entry is the last recorded block of the disc (or a little before: run-out blocks)."""
        bs = self.block_size
        start = (physical.where(0) or 0) // bs
        last = min(self.image.size // bs, start + physical.stream.size // bs) - 1
        problem: Optional[ImageError] = None
        for sector in range(last, max(start, last - VAT_SEARCH_BLOCKS) - 1, -1):
            data = self.image.pread(sector * bs, bs)
            if tag_ident(data) not in (TAG_FE, TAG_EFE) or data[27] not in (FILE_TYPE_VAT, 0):
                continue
            try:
                return self._read_vat(reader, Address(ref, sector - start), sector)
            except ImageError as exc:
                exc.message = f"the VAT (virtual allocation table) at sector {sector}: {exc.message}"
                problem = problem or exc
        if problem is not None:
            raise problem
        raise CorruptImage(f"virtual partition: no VAT (a file entry of type 248) in the last {VAT_SEARCH_BLOCKS} "
                           "sectors", layer=LAYER, offset=last * bs)

    def _read_vat(self, reader: IcbReader, address: Address, sector: int) -> tuple[memoryview, str, int]:
        entry = reader.entry(address)
        data = reader.read_all(entry, MAX_VAT_SIZE, "the VAT")
        entries, kind = parse_vat(data, entry.file_type, sector * self.block_size)
        return entries, kind, sector

    # -- metadata ----------------------------------------------------------------------------------

    def _metadata(self, ref: int, pmap: PartitionMap) -> PartitionView:
        """The metadata file's data; the mirror's when the metadata file itself cannot be read."""
        physical_ref = self._physical_ref(ref, pmap)
        # Only the physical partitions (and a VAT's virtual one) can hold the metadata files: never a metadata
        # partition, which would then be read through itself.
        reader = IcbReader([v if m.kind != "metadata" else None for v, m in zip(self.views, self.maps)],
                           self.block_size)
        views: list[PartitionView] = []
        problems: list[ImageError] = []
        for block, file_type, what in ((pmap.metadata_file, FILE_TYPE_METADATA, "metadata file"),
                                       (pmap.mirror_file, FILE_TYPE_MIRROR, "metadata mirror file")):
            try:
                views.append(self._metadata_view(reader, physical_ref, block, file_type, what, pmap.number))
            except ImageError as exc:
                exc.message = f"the {what}: {exc.message}"
                problems.append(exc)
        if not views:
            raise problems[0]
        if problems:
            self.warnings.append(f"{problems[0]}; reading the metadata mirror file instead")
        self.details[ref]["metadata_file"] = "main" if not problems else "mirror"
        if len(views) > 1:
            self.mirrors[ref] = views[1]
        return views[0]

    def _metadata_view(self, reader: IcbReader, physical_ref: int, block: int, file_type: int, what: str,
                       number: int) -> PartitionView:
        entry = self._metadata_entry(reader, physical_ref, block, file_type)
        runs: list[tuple[int, int, Optional[int]]] = []
        pos = 0
        for extent in reader.extents(entry):
            target = reader.where(extent.where) if extent.kind == EXTENT_RECORDED else None
            runs.append((pos, extent.length, target))
            pos += extent.length
        stream = reader.stream(entry, f"{self.image.name}: udf {what}")
        return PartitionView("metadata", number, stream, RunMap(runs).where)

    def _metadata_entry(self, reader: IcbReader, physical_ref: int, block: int, file_type: int) -> FileEntry:
        """The metadata file's entry: in the physical partition, else (a write-once disc) in the virtual one on it."""
        problem: Optional[ImageError] = None
        refs = [physical_ref] + [ref for ref, pmap in enumerate(self.maps) if pmap.kind == "virtual" and
                                 self.views[ref] is not None and pmap.number == self.maps[physical_ref].number]
        for ref in refs:
            try:
                entry = reader.entry(Address(ref, block))
            except ImageError as exc:
                problem = problem or exc
                continue
            if entry.file_type == file_type:
                return entry
            problem = problem or CorruptImage(f"expected file type {file_type}, got {entry.file_type}", layer=LAYER,
                                              offset=entry.offset)
        assert problem is not None
        raise problem
