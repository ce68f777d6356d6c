"""One APFS volume as of one transaction: its object map, its filesystem tree, and its records.

The live volume reads its tree as of the checkpoint's transaction; a snapshot reads the same object
map as of the snapshot's transaction, from the snapshot's own volume superblock. A volume whose
metadata is encrypted decrypts the tree nodes the object map flags as encrypted, and its files' blocks,
with the volume key (see ``crypto``).
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from typing import TYPE_CHECKING, Optional

from imgfs.errors import CorruptImage
from imgfs.filesystems.apfs import records as rec
from imgfs.filesystems.apfs.btree import BTree
from imgfs.filesystems.apfs.objects import LAYER, OBJ_PHYSICAL, STORAGE_MASK, Blocks
from imgfs.filesystems.apfs.omap import ObjectMap
from imgfs.filesystems.apfs.superblock import VolumeSuperblock
from imgfs.io.cache import BlockCache, new_cache_id
from imgfs.io.stream import BytesStream, Extent, ExtentStream, SliceStream, Stream

if TYPE_CHECKING:  # cryptography is imported only when a volume is encrypted: it costs every mount 40 ms
    from imgfs.filesystems.apfs.crypto import VolumeCipher

MAX_EXTENTS = 1 << 20  # a file this fragmented is damage (or far past what a mount can list)
XATTR_AFTER_INODE = rec.XATTR - rec.INODE  # an inode's key, plus this: the key of its extended attributes


def _fext_key(data: bytes) -> tuple[int, int]:
    """A sealed volume's file-extent key: (data stream id, logical address)."""
    stream_id, logical = struct.unpack_from("<QQ", data)
    return stream_id, logical


class VolumeTree:
    """The records of one volume's filesystem tree at transaction ``xid``."""

    def __init__(self, blocks: Blocks, cache: BlockCache, superblock: VolumeSuperblock, omap: ObjectMap,
                 xid: int, name: str, cipher: Optional[VolumeCipher] = None, verify: bool = True,
                 node_cache_id: Optional[int] = None) -> None:
        self.blocks = blocks
        self.cache = cache
        self.superblock = superblock
        self.omap = omap
        self.xid = xid
        self.name = name
        self.cipher = cipher
        physical = superblock.root_tree_type & STORAGE_MASK == OBJ_PHYSICAL
        self.tree = BTree(blocks, cache, node_cache_id or new_cache_id(), superblock.root_tree_oid,
                          f"{name} filesystem", rec.fs_key, resolve=None if physical else self._resolve,
                          decrypt=cipher.decrypt_metadata if cipher else None, verify=verify, keys_of=rec.fs_keys)
        self.stream_cache_id = new_cache_id()
        # a sealed volume (a Mac's signed system volume) keeps its files' extents in a tree of their own
        self.fext: Optional[BTree] = None
        if superblock.sealed and superblock.fext_tree_oid:
            self.fext = BTree(blocks, cache, new_cache_id(), superblock.fext_tree_oid, f"{name} file extents",
                              _fext_key, verify=verify)

    def _resolve(self, oid: int) -> tuple[int, bool]:
        mapping = self.omap.resolve(oid, self.xid, f"{self.name} filesystem tree")
        return mapping.paddr, mapping.encrypted

    # -- records -------------------------------------------------------------------------------------

    def inode(self, ino: int) -> rec.Inode:
        found = self.tree.find(rec.key(ino, rec.INODE))
        if found is None:
            raise CorruptImage(f"{self.name}: inode {ino} is missing from the filesystem tree", layer=LAYER)
        return rec.Inode.parse(ino, found.value)

    def inodes(self, inos: list[int]) -> dict[int, tuple[rec.Inode, Optional[bool]]]:
        """The inodes of ``inos`` (a folder's children: mostly neighbours in the tree) that exist, each with
        whether it has extended attributes: their records sort right after the inode's, so the next key in
        its leaf tells (None when the inode ends its leaf). Searched for leaf by leaf, never by a pass over
        the records between: a subfolder's thousands of entries may lie between two of its siblings."""
        found: dict[int, tuple[rec.Inode, Optional[bool]]] = {}
        parse = rec.parse_inode
        for key, leaf, index in self.tree.find_many(sorted(rec.key(ino, rec.INODE) for ino in set(inos))):
            keys = leaf.keys
            assert keys is not None  # find_many parsed them
            _, _, v0, v1 = leaf.entry(index)
            has_xattrs = keys[index + 1] == key + XATTR_AFTER_INODE if index + 1 < len(keys) else None
            ino = key >> rec.KIND_BITS  # rec.split_key, inline: once per child of every folder listed
            found[ino] = parse(ino, leaf, v0, v1), has_xattrs
        return found

    def entries(self, ino: int) -> Iterator[rec.DirEntry]:
        hashed = self.superblock.hashed_names
        for leaf, start, stop in self.tree.ranges(*rec.span(ino, rec.DIR_REC)):
            yield from rec.parse_drecs(leaf, start, stop, hashed)

    def xattrs(self, ino: int) -> list[rec.Xattr]:
        xattrs = self.tree.records(*rec.span(ino, rec.XATTR))
        return [rec.parse_xattr(record.key, record.value) for _key, record in xattrs]

    def xattr(self, ino: int, name: str) -> Optional[rec.Xattr]:
        return next((x for x in self.xattrs(ino) if x.name == name), None)

    def extents(self, stream_id: int) -> list[rec.FileExtent]:
        found = []
        if self.fext is not None:
            records = self.fext.records((stream_id,), (stream_id + 1,))
        else:
            records = self.tree.records(*rec.span(stream_id, rec.FILE_EXTENT))
        for _key, record in records:
            found.append(rec.parse_extent(record.key, record.value))
            if len(found) > MAX_EXTENTS:
                raise CorruptImage(f"{self.name}: data stream {stream_id} has more than {MAX_EXTENTS} extents",
                                   layer=LAYER)
        return found

    # -- data ----------------------------------------------------------------------------------------

    def data_stream(self, stream_id: int, size: int, what: str) -> Stream:
        """The ``size`` bytes of data stream ``stream_id``: its extents over the container, holes as zeros."""
        pieces: list[Extent] = []
        pos = 0
        block_size = self.blocks.block_size
        for extent in self.extents(stream_id):
            if pos >= size:
                break
            if extent.logical != pos:
                if extent.logical < pos:
                    raise CorruptImage(f"{what}: extents overlap at byte {extent.logical}", layer=LAYER)
                gap_end = min(extent.logical, size)  # an extent may start past the end the inode states
                pieces.append(Extent(gap_end - pos, None))  # a gap reads as a hole
                pos = gap_end
                if pos >= size:
                    break
            length = min(extent.length, size - pos)
            if extent.block:
                blocks = -(-extent.length // block_size)
                self.blocks.check_range(extent.block, blocks, f"{what}'s extent at byte {pos}")
                pieces.append(Extent(length, self._extent_source(extent, blocks), 0))
            else:
                pieces.append(Extent(length, None))
            pos += length
        if pos < size:
            pieces.append(Extent(size - pos, None))  # sparse to the end
        return ExtentStream(pieces, name=f"{self.blocks.name}:{what}")

    def _extent_source(self, extent: rec.FileExtent, blocks: int) -> Stream:
        offset = self.blocks.offset(extent.block)
        if self.cipher is None:
            return SliceStream(self.blocks.stream, offset, blocks * self.blocks.block_size)
        return self.cipher.extent_stream(extent.block, blocks, extent.crypto_id)

    def read_xattr(self, ino: int, xattr: rec.Xattr, limit: int) -> Optional[bytes]:
        """An attribute's value, None when it is longer than ``limit``."""
        if xattr.size > limit:
            return None
        if xattr.embedded:
            return xattr.data
        return self.data_stream(xattr.stream_id, xattr.size, f"attribute {xattr.name!r} of inode {ino}").pread(
            0, xattr.size)

    def open_xattr(self, ino: int, xattr: rec.Xattr) -> Stream:
        if xattr.embedded:
            return BytesStream(xattr.data, name=f"{self.blocks.name}:{xattr.name}")
        return self.data_stream(xattr.stream_id, xattr.size, f"attribute {xattr.name!r} of inode {ino}")
