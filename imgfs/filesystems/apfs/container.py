"""An APFS container: its newest sound checkpoint, its object map, and its volumes.

Block 0 holds a copy of the container superblock; the checkpoint descriptor area holds the superblocks
of the last few checkpoints, each after its checkpoint map blocks. The newest checkpoint whose objects
all check out is used: its superblock, its checkpoint maps, the container object map and every volume
superblock it names, each with a good Fletcher-64 checksum. When the newest fails, the previous one is
tried and a warning logged (what macOS does after a crash). A container that needs a second device
(Fusion, tier2) is refused by name.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Optional

from imgfs.errors import CorruptImage, ImageError, UnsupportedFormat
from imgfs.filesystems.apfs.objects import (
    CHECKPOINT_MAP,
    FS,
    LAYER,
    NX_SUPERBLOCK,
    OBJ_PHYSICAL,
    STORAGE_MASK,
    Blocks,
    checksum_ok,
    parse_header,
)
from imgfs.filesystems.apfs.omap import ObjectMap
from imgfs.filesystems.apfs.records import ROOT_DIR_INO
from imgfs.filesystems.apfs.superblock import (
    CHECKPOINT_NONCONTIGUOUS,
    NX_INCOMPAT_VERSION1,
    NX_MAGIC,
    ContainerSuperblock,
    VolumeSuperblock,
)
from imgfs.filesystems.apfs.volume import VolumeTree
from imgfs.io.cache import BlockCache
from imgfs.io.stream import Stream, read_exact

log = logging.getLogger(__name__)

MAX_DESCRIPTOR_BLOCKS = 1 << 16  # the area is a few hundred blocks; anything near this is damage


def probe(stream: Stream) -> bool:
    """An APFS container superblock at byte 0 (the registry already found 'NXSB' at byte 32)."""
    head = stream.pread(0, 40)
    return len(head) == 40 and head[32:36] == NX_MAGIC and parse_header(head).kind == NX_SUPERBLOCK


@dataclass(frozen=True)
class VolumeEntry:
    index: int  # the volume's place in nx_fs_oid, from 0
    oid: int
    paddr: int
    superblock: VolumeSuperblock


class Container:
    """The container in ``stream`` (an APFS partition, or a bare container), at its newest sound checkpoint."""

    def __init__(self, stream: Stream, cache: BlockCache, verify: bool = True) -> None:
        self.stream = stream
        self.cache = cache
        self.verify = verify
        first = read_exact(stream, 0, 4096, LAYER, "the container superblock")
        block0 = ContainerSuperblock.parse(first, 0)
        if block0.incompat & NX_INCOMPAT_VERSION1:
            raise UnsupportedFormat("this is a pre-release (version 1) APFS container, which macOS 10.12 made; "
                                    "it is not supported", layer=LAYER, offset=64)
        if block0.fusion:
            raise UnsupportedFormat("this APFS container is half of a Fusion Drive: its other device (tier2) "
                                    "is needed and not supported", layer=LAYER, offset=64)
        self.blocks = Blocks(stream, block0.block_size, block0.block_count)
        self.warnings: list[str] = []
        self.superblock, self.omap, self.volumes = self._newest_sound(block0)

    # -- checkpoints ---------------------------------------------------------------------------------

    def _candidates(self, block0: ContainerSuperblock) -> list[tuple[int, int, bytes]]:
        """(xid, block, bytes) of every intact superblock of the descriptor area, and of block 0; a damaged
        one is remembered in ``self._damaged`` (xid, block) to be warned about if it was the newest."""
        found: dict[int, tuple[int, int, bytes]] = {}
        self._damaged: list[tuple[int, int]] = []
        count = block0.desc_blocks & ~CHECKPOINT_NONCONTIGUOUS
        if block0.desc_blocks & CHECKPOINT_NONCONTIGUOUS:
            self._warn("the checkpoint descriptor area is not contiguous; using the superblock in block 0")
            count = 0
        if count > MAX_DESCRIPTOR_BLOCKS:
            raise CorruptImage(f"checkpoint descriptor area of {count} blocks", layer=LAYER, offset=104)
        if count:
            self.blocks.check_range(block0.desc_base, count, "the checkpoint descriptor area")
            area = self.blocks.read(block0.desc_base, count, "the checkpoint descriptor area")
            size = self.blocks.block_size
            for i in range(count):
                self._consider(area[i * size : (i + 1) * size], block0.desc_base + i, found)
        self._consider(self.blocks.read(0, 1, "the container superblock"), 0, found)
        return sorted(found.values(), reverse=True)

    def _consider(self, data: bytes, block: int, found: dict[int, tuple[int, int, bytes]]) -> None:
        if data[32:36] != NX_MAGIC or parse_header(data).kind != NX_SUPERBLOCK:
            return
        xid = parse_header(data).xid
        if checksum_ok(data):
            found.setdefault(xid, (xid, block, data))
        else:
            self._damaged.append((xid, block))

    def _newest_sound(self, block0: ContainerSuperblock
                      ) -> tuple[ContainerSuperblock, ObjectMap, list[VolumeEntry]]:
        candidates = self._candidates(block0)
        if not candidates:
            raise CorruptImage("no container superblock with a good checksum, in block 0 or in the checkpoint "
                               "area", layer=LAYER, offset=0)
        first_error: Optional[ImageError] = None
        # told only when an older checkpoint is used: a refusal stays one line
        skipped = [f"the superblock of checkpoint {xid} (block {block}) fails its checksum"
                   for xid, block in self._damaged if xid > candidates[0][0]]
        for xid, block, data in candidates:
            try:
                superblock = ContainerSuperblock.parse(data, self.blocks.offset(block))
                self._check_maps(superblock, block)
                omap = ObjectMap(self.blocks, self.cache, superblock.omap_oid, "container", self.verify)
                volumes = self._volumes(superblock, omap)
            except ImageError as exc:
                first_error = first_error or exc
                skipped.append(f"checkpoint {xid} is damaged ({exc})")
                continue
            for problem in skipped:
                self._warn(f"{problem}; using the older checkpoint {xid}")
            return superblock, omap, volumes
        assert first_error is not None
        raise first_error

    def _check_maps(self, superblock: ContainerSuperblock, block: int) -> None:
        """The checkpoint map blocks written just before a descriptor-area superblock."""
        if block == 0 or not superblock.desc_len:
            return
        count = superblock.desc_blocks & ~CHECKPOINT_NONCONTIGUOUS
        for j in range(min(superblock.desc_len - 1, count)):
            where = superblock.desc_base + (superblock.desc_index + j) % count
            data = self.blocks.read(where, 1, "a checkpoint map")
            header = parse_header(data)
            if header.kind != CHECKPOINT_MAP or header.xid != superblock.xid or not checksum_ok(data):
                raise CorruptImage(f"checkpoint map of transaction {superblock.xid} at block {where} is damaged",
                                   layer=LAYER, offset=self.blocks.offset(where))

    def _volumes(self, superblock: ContainerSuperblock, omap: ObjectMap) -> list[VolumeEntry]:
        volumes = []
        for index, oid in enumerate(superblock.fs_oids):
            if oid == 0:
                continue
            mapping = omap.resolve(oid, superblock.xid, f"volume {index + 1}")
            data = self.blocks.read_object(mapping.paddr, f"volume {index + 1}'s superblock", expect_type=FS,
                                           verify=self.verify)
            parsed = VolumeSuperblock.parse(data, self.blocks.offset(mapping.paddr))
            entry = VolumeEntry(index, oid, mapping.paddr, parsed)
            self._check_volume(entry, superblock.xid)
            volumes.append(entry)
        return volumes

    def _check_volume(self, entry: VolumeEntry, xid: int) -> None:
        """The volume's object map, and its tree down to the root folder's inode, as of the checkpoint: a
        checkpoint whose writes did not all reach the disk fails here, and an older one is used."""
        sb = entry.superblock
        omap = ObjectMap(self.blocks, self.cache, sb.omap_oid, f"volume {entry.index + 1}", self.verify)
        if sb.root_tree_type & STORAGE_MASK == OBJ_PHYSICAL:
            return
        mapping = omap.resolve(sb.root_tree_oid, xid, f"volume {entry.index + 1}'s filesystem tree")
        if not mapping.encrypted:  # an encrypted tree can only be checked once its key is known
            tree = VolumeTree(self.blocks, self.cache, sb, omap, xid, f"volume {entry.index + 1}", verify=self.verify)
            tree.inode(ROOT_DIR_INO)

    def _warn(self, message: str) -> None:
        self.warnings.append(message)
        log.warning("apfs: %s", message)
