"""Run lists: where a non-resident attribute's clusters lie.

Each run is a header byte (low nibble: bytes of the cluster count, high nibble: bytes of the signed LCN
delta), the count, then the delta from the previous run's LCN; no LCN bytes means a sparse run. A zero
header byte ends the list (libfsntfs notes, "Data runs").
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple, Optional

from imgfs.errors import CorruptImage
from imgfs.filesystems.ntfs.record import LAYER, Attribute


class Run(NamedTuple):
    vcn: int  # first virtual cluster of the attribute it covers
    lcn: Optional[int]  # first cluster on the volume; None: sparse (zeros, or a compression unit's tail)
    length: int  # clusters


def decode_runs(attr: Attribute, total_clusters: int) -> list[Run]:
    """The runs of one attribute segment, each checked to lie inside the volume."""
    raw, runs = attr.runs, []
    vcn, lcn, pos = attr.first_vcn, 0, 0
    while pos < len(raw) and raw[pos]:
        count_size, delta_size = raw[pos] & 0x0F, raw[pos] >> 4
        if not 1 <= count_size <= 8 or delta_size > 8 or pos + 1 + count_size + delta_size > len(raw):
            raise CorruptImage(f"MFT record {attr.record}: a run of attribute 0x{attr.type:x} has header byte "
                               f"0x{raw[pos]:02x} or runs past its attribute", layer=LAYER, offset=attr.offset)
        count = int.from_bytes(raw[pos + 1 : pos + 1 + count_size], "little", signed=True)
        start = pos + 1 + count_size
        if count <= 0:
            raise CorruptImage(f"MFT record {attr.record}: a run of attribute 0x{attr.type:x} has {count} clusters",
                               layer=LAYER, offset=attr.offset)
        if delta_size:
            lcn += int.from_bytes(raw[start : start + delta_size], "little", signed=True)
            if lcn < 0 or lcn + count > total_clusters:
                raise CorruptImage(f"MFT record {attr.record}: attribute 0x{attr.type:x} has a run of {count} "
                                   f"clusters at cluster {lcn}, past the volume's {total_clusters} clusters",
                                   layer=LAYER, offset=attr.offset)
            runs.append(Run(vcn, lcn, count))
        else:
            runs.append(Run(vcn, None, count))
        vcn += count
        pos = start + delta_size
    if vcn != attr.last_vcn + 1:
        raise CorruptImage(f"MFT record {attr.record}: attribute 0x{attr.type:x}'s runs cover VCNs "
                           f"{attr.first_vcn}..{vcn - 1}, its header says {attr.first_vcn}..{attr.last_vcn}",
                           layer=LAYER, offset=attr.offset)
    return runs


def chain_runs(segments: Sequence[Attribute], total_clusters: int) -> list[Run]:
    """The runs of an attribute stored in several segments (an attribute list), in VCN order, gap-free."""
    runs: list[Run] = []
    vcn = 0
    for segment in sorted(segments, key=lambda a: a.first_vcn):
        if segment.first_vcn != vcn:
            raise CorruptImage(f"MFT record {segment.record}: attribute 0x{segment.type:x} segment starts at VCN "
                               f"{segment.first_vcn}, expected {vcn}", layer=LAYER, offset=segment.offset)
        more = decode_runs(segment, total_clusters)
        runs += more
        vcn = segment.last_vcn + 1 if more else vcn
    return runs


def byte_runs(runs: Sequence[Run], cluster_size: int, size: int) -> list[tuple[Optional[int], int]]:
    """(volume byte offset or None for a hole, length) covering the first ``size`` bytes (which the runs
    must cover: see ``covered``)."""
    out: list[tuple[Optional[int], int]] = []
    left = size
    for run in runs:
        if left <= 0:
            break
        length = min(run.length * cluster_size, left)
        out.append((None if run.lcn is None else run.lcn * cluster_size, length))
        left -= length
    return out


def covered(runs: Sequence[Run], cluster_size: int) -> int:
    """How many bytes the runs hold."""
    return sum(run.length for run in runs) * cluster_size
