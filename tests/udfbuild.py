"""A small UDF image writer for the tests, written from ECMA-167 (3rd edition) and OSTA UDF 2.60.

It makes what the installed tools cannot: virtual (VAT, UDF 1.50 and 2.00 formats), sparable and
metadata partitions with files in them, every kind of allocation descriptor, continuation extents,
holes, strategy 4096, extended file entries, hidden and deleted entries, 8- and 16-bit names,
devices, and images over 4 GiB that take a few KiB. It shares no code with the reader, and can damage
what it writes (``Damage``) for the bad-input tests.

    b = UdfBuilder(partition="metadata")
    b.add_dir("/dir")
    b.add_file("/dir/a.txt", b"hello")
    b.write(path)
"""

from __future__ import annotations

import binascii
import calendar
import os
import stat
import struct
import time
from dataclasses import dataclass, field
from typing import Optional

# Tag identifiers
PVD, AVDP, IUVD, PD, LVD, USD, TD, LVID = 1, 2, 4, 5, 6, 7, 8, 9
FSD, FID, AED, IE, FE, EAHD, EFE = 256, 257, 258, 259, 261, 262, 266
# ICB file types
FT_DIR, FT_FILE, FT_BLOCK, FT_CHAR, FT_FIFO, FT_SOCKET, FT_SYMLINK = 4, 5, 6, 7, 9, 10, 12
FT_VAT, FT_METADATA, FT_MIRROR = 248, 250, 251
AD_SHORT, AD_LONG, AD_EXT, AD_INLINE = 0, 1, 2, 3
RECORDED, ALLOCATED, UNALLOCATED, NEXT = 0, 1, 2, 3
MAX_EXTENT = (1 << 30) - 65536  # what one descriptor may cover, a multiple of every block size

_CHARSPEC = b"\x00OSTA Compressed Unicode".ljust(64, b"\0")


# -- encodings -------------------------------------------------------------------------------------------


def tagged(ident: int, body: bytes, location: int, version: int = 2) -> bytes:
    """A descriptor: the 16-byte tag (checksum, CRC over ``body``) and ``body``."""
    head = bytearray(struct.pack("<HHBBHHHI", ident, version, 0, 0, 1, binascii.crc_hqx(body, 0), len(body),
                                 location))
    head[4] = (sum(head[0:4]) + sum(head[5:16])) & 0xFF
    return bytes(head) + body


def retag(buf: bytearray, pos: int) -> None:
    """Recompute the checksum and CRC of the descriptor at ``pos`` after its body was changed."""
    crc_length = struct.unpack_from("<H", buf, pos + 10)[0]
    struct.pack_into("<H", buf, pos + 8, binascii.crc_hqx(bytes(buf[pos + 16 : pos + 16 + crc_length]), 0))
    buf[pos + 4] = (sum(buf[pos : pos + 4]) + sum(buf[pos + 5 : pos + 16])) & 0xFF


def cs0(text: str, wide: bool = False) -> bytes:
    if not wide and all(ord(c) < 256 for c in text):
        return b"\x08" + text.encode("latin-1")
    return b"\x10" + text.encode("utf-16-be")


def dstring(text: str, size: int) -> bytes:
    raw = cs0(text) if text else b""
    raw = raw[: size - 1]
    return raw.ljust(size - 1, b"\0") + bytes([len(raw)])


def regid(ident: bytes, suffix: bytes = b"") -> bytes:
    return b"\0" + ident.ljust(23, b"\0") + suffix.ljust(8, b"\0")


def stamp(seconds: float, tz_minutes: int = 0) -> bytes:
    """A timestamp of type 1 (local time) at ``tz_minutes`` east of UTC."""
    local = time.gmtime(int(seconds) + tz_minutes * 60)
    micro = int(round((seconds - int(seconds)) * 1_000_000))
    return struct.pack("<HhBBBBBBBB", 0x1000 | (tz_minutes & 0xFFF), local.tm_year, local.tm_mon, local.tm_mday,
                       local.tm_hour, local.tm_min, local.tm_sec, micro // 10000, micro // 100 % 100, micro % 100)


def long_ad(length: int, block: int, ref: int, kind: int = RECORDED) -> bytes:
    return struct.pack("<IIH6s", kind << 30 | length, block, ref, b"")


def udf_permissions(mode: int) -> int:
    other, group, owner = mode & 7, mode >> 3 & 7, mode >> 6 & 7
    return other | 0x10 | 0x08 | (group | 0x18) << 5 | (owner | 0x18) << 10  # with chattr and delete bits


def path_components(target: str) -> bytes:
    out = b""
    parts = target.split("/")
    if target.startswith("/"):
        out += struct.pack("<BBH", 2, 0, 0)
        parts = parts[1:]
    for part in parts:
        if part == "..":
            out += struct.pack("<BBH", 3, 0, 0)
        elif part == ".":
            out += struct.pack("<BBH", 4, 0, 0)
        elif part:
            name = cs0(part)
            out += struct.pack("<BBH", 5, len(name), 0) + name
    return out


# -- the tree --------------------------------------------------------------------------------------------


@dataclass
class Node:
    kind: str  # dir, file, symlink, chardev, blockdev, fifo, socket
    mode: int = 0o644
    uid: int = 0
    gid: int = 0
    mtime: float = 1_600_000_000.25
    data: bytes = b""
    segments: list[bytes | int] = field(default_factory=list)  # sparse data: bytes, or the length of a hole
    rdev: tuple[int, int] = (0, 0)
    children: dict[str, tuple[Node, int]] = field(default_factory=dict)  # name -> (node, FID characteristics)
    deleted: list[str] = field(default_factory=list)  # names of deleted entries kept in the directory
    wide: bool = False  # names written with 16-bit characters
    newer: Optional[bytes] = None  # strategy 4096: a newer entry with this data, reached by an indirect entry
    fragment: int = 0  # split the data into extents of this many blocks
    damage: str = ""  # "ad_loop", "fid_overrun", "ie_loop"
    links: int = 0
    icb: Optional[tuple[int, int]] = None  # (partition reference, block) once placed


@dataclass
class Damage:
    anchor_garbage: bool = False  # the anchors point at sectors of random bytes
    main_vds_garbage: bool = False  # only the main descriptor sequence is garbage (the reserve is good)
    metadata_loop: bool = False  # the metadata file's extents lie in the metadata partition itself
    metadata_main_bad: bool = False  # the metadata file's entry is damaged (the mirror is good)
    metadata_fsd_bad: bool = False  # the file set descriptor in the metadata file's copy is garbage (not the mirror's)
    vat_loop: bool = False  # the VAT's extents lie in the virtual partition itself


class Space:
    """The blocks of one partition as they are filled (logical block -> bytes)."""

    def __init__(self, ref: int, block_size: int) -> None:
        self.ref = ref
        self.bs = block_size
        self.blocks: dict[int, bytes] = {}
        self.next = 0

    def alloc(self, count: int) -> int:
        start = self.next
        self.next += max(1, count)
        return start

    def put(self, block: int, data: bytes) -> None:
        for i in range(0, max(1, len(data)), self.bs):
            self.blocks[block + i // self.bs] = data[i : i + self.bs].ljust(self.bs, b"\0")


class UdfBuilder:
    def __init__(self, block_size: int = 2048, revision: int = 0x0201, partition: str = "physical",
                 ad: int = AD_SHORT, extended: Optional[bool] = None, strategy: int = 4, label: str = "UDFTEST",
                 max_ads: int = 0, damage: Optional[Damage] = None, vat_version: str = "2.00",
                 start_sector: int = 0) -> None:
        self.bs = block_size
        self.revision = revision
        self.partition = partition  # physical, sparable, virtual, metadata
        self.ad = ad
        self.extended = revision >= 0x0200 if extended is None else extended
        self.strategy = strategy
        self.label = label
        self.max_ads = max_ads  # descriptors kept in an entry before a continuation extent (0: as many as fit)
        self.damage = damage or Damage()
        self.vat_version = vat_version
        self.base = start_sector  # a later session: every sector number from here (2048-byte sectors only)
        assert not start_sector or block_size == 2048
        self.root = Node("dir", 0o755)
        self.unique = 16
        self.nodes: dict[str, Node] = {"/": self.root}
        self.offsets: dict[str, int] = {}  # path -> image offset of its entry (physical partitions)

    # -- the tree ----------------------------------------------------------------------------------

    def _add(self, path: str, node: Node, characteristics: int = 0) -> Node:
        parent_path, _, name = path.rpartition("/")
        parent = self.nodes[parent_path or "/"]
        parent.children[name] = (node, characteristics | (2 if node.kind == "dir" else 0))
        self.nodes[path] = node
        return node

    def add_dir(self, path: str, mode: int = 0o755, **kw) -> Node:
        return self._add(path, Node("dir", mode, **kw))

    def add_file(self, path: str, data: bytes = b"", mode: int = 0o644, hidden: bool = False, **kw) -> Node:
        return self._add(path, Node("file", mode, data=data, **kw), 1 if hidden else 0)

    def add_symlink(self, path: str, target: str, **kw) -> Node:
        return self._add(path, Node("symlink", 0o777, data=path_components(target), **kw))

    def add_device(self, path: str, kind: str, major: int, minor: int, mode: int = 0o600) -> Node:
        return self._add(path, Node(kind, mode, rdev=(major, minor)))

    def add_sparse(self, path: str, segments: list[bytes | int], **kw) -> Node:
        return self._add(path, Node("file", 0o644, segments=segments, **kw))

    def add_special(self, path: str, kind: str, mode: int = 0o644, **kw) -> Node:
        return self._add(path, Node(kind, mode, **kw))

    def add_link(self, path: str, existing: str) -> None:
        self._add(path, self.nodes[existing])

    def add_deleted(self, dir_path: str, name: str) -> None:
        self.nodes[dir_path].deleted.append(name)

    # -- layout ------------------------------------------------------------------------------------

    def _spaces(self) -> None:
        self.phys = Space(0, self.bs)
        if self.partition in ("virtual", "metadata"):
            self.meta = Space(1, self.bs)  # where entries and directories go
        else:
            self.meta = self.phys

    def _count_links(self, node: Node) -> None:
        for child, _ in node.children.values():
            child.links += 1
            if child.kind == "dir":
                node.links += 1  # the child's parent entry names this directory
                if child.links == 1:
                    self._count_links(child)

    def build(self) -> bytes:
        self._spaces()
        self.root.links = 1
        self._count_links(self.root)
        fsd_block = self.meta.alloc(2)  # the file set descriptor and its terminating descriptor
        self._place(self.root)
        self._fill(self.root, self.root)
        self.meta.put(fsd_block, tagged(FSD, self._fsd_body(), fsd_block, self._version))
        self.meta.put(fsd_block + 1, tagged(TD, bytes(496), fsd_block + 1, self._version))
        return self._image(fsd_block)

    @property
    def _version(self) -> int:
        return 3 if self.revision >= 0x0200 else 2

    def _place(self, node: Node) -> None:
        if node.icb is not None:
            return
        block = self.meta.alloc(2 if self.strategy == 4096 or node.newer is not None or node.damage == "ie_loop"
                                else 1)
        node.icb = (self.meta.ref, block)
        for child, _ in node.children.values():
            self._place(child)

    def _fill(self, node: Node, parent: Node, done: Optional[set[int]] = None) -> None:
        done = set() if done is None else done
        if id(node) in done:
            return
        done.add(id(node))
        assert node.icb is not None
        if node.kind == "dir":
            content = self._directory(node, parent)
            self._entry(node, content, FT_DIR)
            for child, _ in node.children.values():
                self._fill(child, node, done)
        else:
            kinds = {"file": FT_FILE, "symlink": FT_SYMLINK, "chardev": FT_CHAR, "blockdev": FT_BLOCK,
                     "fifo": FT_FIFO, "socket": FT_SOCKET}
            self._entry(node, node.data, kinds[node.kind])

    def _directory(self, node: Node, parent: Node) -> bytes:
        assert parent.icb is not None
        out = self._fid(b"", 0x0A, parent.icb, 0)
        for name in node.deleted:
            raw = cs0(name, node.wide)
            out += self._fid(bytes([254 if raw[0] == 8 else 255]) + raw[1:], 0x04, (0, 0), len(out))
        for name, (child, characteristics) in node.children.items():
            assert child.icb is not None
            out += self._fid(cs0(name, node.wide), characteristics, child.icb, len(out))
        if node.damage == "fid_overrun":  # the last descriptor's name runs past the directory's end
            out = bytearray(out)
            last = len(out) - len(self._fid(cs0(list(node.children)[-1], node.wide), 0, (0, 0), 0))
            out[last + 19] = 250
            retag(out, last)
            out = bytes(out)
        return out

    def _fid(self, name: bytes, characteristics: int, icb: tuple[int, int], pos: int) -> bytes:
        self.unique += 1
        body = struct.pack("<HBB", 1, characteristics, len(name))
        body += struct.pack("<IIH2sI", self.bs if icb != (0, 0) else 0, icb[1], icb[0], b"", self.unique)
        body += struct.pack("<H", 0) + name
        body = body.ljust((len(body) + 16 + 3 & ~3) - 16, b"\0")
        return tagged(FID, body, pos // self.bs, self._version)  # location fixed up when the data is placed

    # -- entries -----------------------------------------------------------------------------------

    def _entry(self, node: Node, content: bytes, file_type: int) -> None:
        assert node.icb is not None
        ref, block = node.icb
        size = sum(len(s) if isinstance(s, bytes) else s for s in node.segments) if node.segments else len(content)
        ea = self._device_ea(node) if node.kind in ("chardev", "blockdev") else b""
        extents = [] if self.ad == AD_INLINE and self._fits_inline(content, ea) else \
            self._store(content, size, node, file_type == FT_DIR)
        ads = content if not extents and self.ad == AD_INLINE else b""
        ad_type = AD_INLINE if not extents and self.ad == AD_INLINE else self._ad_type(extents, ref)
        if extents:
            ads = self._descriptors(extents, ad_type, ref, node)
        if file_type == FT_DIR and extents:
            self._fix_fid_locations(extents, content)
        elif file_type == FT_DIR:
            content = self._relocate_fids(content, block)
            ads = content
        entry = self._fe(node, file_type, size, ad_type, ea, ads, block)
        self.meta.put(block, entry)
        if node.newer is not None:
            self._newer(node, file_type, ea, block)
        if node.damage == "ie_loop":  # two indirect entries pointing at each other, no file entry at all
            self.meta.put(block, self._ie(block + 1, block))
            self.meta.put(block + 1, self._ie(block, block + 1))

    def _fits_inline(self, content: bytes, ea: bytes) -> bool:
        return (216 if self.extended else 176) + len(ea) + len(content) <= self.bs

    def _ad_type(self, extents: list[tuple[int, int, int, int]], ref: int) -> int:
        if self.ad == AD_SHORT and any(e[2] != ref and e[0] == RECORDED for e in extents):
            return AD_LONG  # short descriptors can only point into the entry's own partition
        return AD_SHORT if self.ad == AD_INLINE else self.ad

    def _store(self, content: bytes, size: int, node: Node, is_dir: bool) -> list[tuple[int, int, int, int]]:
        """Write the data; its extents as (kind, length, partition reference, block)."""
        space = self.meta if is_dir else self.phys
        extents: list[tuple[int, int, int, int]] = []
        for segment in node.segments or [content]:
            if isinstance(segment, bytes):
                if segment:
                    extents += self._write_run(space, segment, len(segment), node.fragment)
                continue
            left = segment
            while left > 0:  # allocated-but-unrecorded and unallocated extents both read as zeros
                count = min(left, MAX_EXTENT)
                extents.append((ALLOCATED if not extents else UNALLOCATED, count, 0, 0))
                left -= count
        return extents

    def _write_run(self, space: Space, data: bytes, length: int, fragment: int) -> list[tuple[int, int, int, int]]:
        extents = []
        step = fragment * self.bs if fragment else MAX_EXTENT
        for start in range(0, length, step):
            count = min(step, length - start)
            block = space.alloc(-(-count // self.bs))
            space.put(block, data[start : start + count])
            if fragment:
                space.alloc(1)  # a gap, so that the extents are not contiguous
            extents.append((RECORDED, count, space.ref, block))
        return extents

    def _descriptors(self, extents: list[tuple[int, int, int, int]], ad_type: int, ref: int, node: Node) -> bytes:
        """The descriptors of the entry; those that do not fit (or past ``max_ads``) go into continuation blocks."""
        size = {AD_SHORT: 8, AD_LONG: 16, AD_EXT: 20}[ad_type]
        room = (self.bs - (216 if self.extended else 176) - 64) // size - 1
        keep = min(room, self.max_ads) if self.max_ads else room
        if len(extents) <= keep and node.damage != "ad_loop":
            return b"".join(self._ad(e, ad_type) for e in extents)
        head, rest = extents[:keep], extents[keep:]
        block = self.meta.alloc(1)
        out = b"".join(self._ad(e, ad_type) for e in head) + self._ad((NEXT, self.bs, self.meta.ref, block), ad_type)
        while True:
            per_block = (self.bs - 24) // size - 1
            chunk, rest = rest[: self.max_ads or per_block], rest[self.max_ads or per_block :]
            ads = b"".join(self._ad(e, ad_type) for e in chunk)
            following = block if node.damage == "ad_loop" else (self.meta.alloc(1) if rest else None)
            if following is not None:
                ads += self._ad((NEXT, self.bs, self.meta.ref, following), ad_type)
            self.meta.put(block, tagged(AED, struct.pack("<II", 0, len(ads)) + ads, block, self._version))
            if following is None or following == block:
                return out
            block = following

    def _ad(self, extent: tuple[int, int, int, int], ad_type: int) -> bytes:
        kind, length, ref, block = extent
        if ad_type == AD_SHORT:
            return struct.pack("<II", kind << 30 | length, block)
        if ad_type == AD_LONG:
            return long_ad(length, block, ref, kind)
        recorded = length if kind == RECORDED else 0
        return struct.pack("<IIIIH2s", kind << 30 | length, recorded, length, block, ref, b"")

    def _fix_fid_locations(self, extents: list[tuple[int, int, int, int]], content: bytes) -> None:
        """Each FID's tag names the logical block it starts in; rewrite the directory's blocks with them."""
        buf = bytearray(content)
        pos = 0
        while pos + 38 <= len(buf) and struct.unpack_from("<H", buf, pos)[0] == FID:
            offset, length = pos, 38 + struct.unpack_from("<H", buf, pos + 36)[0] + buf[pos + 19]
            if pos + length > len(buf):
                break
            for _, ext_length, _, block in extents:
                if offset < ext_length:
                    struct.pack_into("<I", buf, pos + 12, block + offset // self.bs)
                    break
                offset -= ext_length
            retag(buf, pos)
            pos += length + 3 & ~3
        data = bytes(buf)
        for _, ext_length, ref, block in extents:
            space = self.meta if ref == self.meta.ref else self.phys
            space.put(block, data[:ext_length])
            data = data[ext_length:]

    def _relocate_fids(self, content: bytes, block: int) -> bytes:
        buf = bytearray(content)
        pos = 0
        while pos + 38 <= len(buf) and struct.unpack_from("<H", buf, pos)[0] == FID:
            length = 38 + struct.unpack_from("<H", buf, pos + 36)[0] + buf[pos + 19]
            if pos + length > len(buf):
                break
            struct.pack_into("<I", buf, pos + 12, block)
            retag(buf, pos)
            pos += length + 3 & ~3
        return bytes(buf)

    def _fe(self, node: Node, file_type: int, size: int, ad_type: int, ea: bytes, ads: bytes, block: int,
            strategy: Optional[int] = None) -> bytes:
        strategy = strategy or self.strategy
        flags = ad_type | (0x40 if node.mode & 0o4000 else 0) | (0x80 if node.mode & 0o2000 else 0) | \
            (0x100 if node.mode & 0o1000 else 0)
        icb_tag = struct.pack("<IHHHBB6sH", 0, strategy, 0, 2 if strategy == 4096 else 1, 0, file_type, b"", flags)
        t = stamp(node.mtime, tz_minutes=120)
        recorded = sum(len(s) for s in node.segments if isinstance(s, bytes)) if node.segments else size
        blocks = -(-recorded // self.bs)
        common = icb_tag + struct.pack("<IIIHBBIQ", node.uid, node.gid, udf_permissions(node.mode),
                                       max(1, node.links), 0, 0, 0, size)
        self.unique += 1
        impl = regid(b"*imgfs test builder")
        if self.extended:
            body = common + struct.pack("<QQ", size, max(0, blocks)) + t + t + t + t + struct.pack("<II", 1, 0)
            body += bytes(16) + bytes(16) + impl + struct.pack("<QII", self.unique, len(ea), len(ads)) + ea + ads
            return tagged(EFE, body, block, self._version)
        body = common + struct.pack("<Q", max(0, blocks)) + t + t + t + struct.pack("<I", 1) + bytes(16) + impl
        body += struct.pack("<QII", self.unique, len(ea), len(ads)) + ea + ads
        return tagged(FE, body, block, self._version)

    def _ie(self, target: int, block: int) -> bytes:
        icb_tag = struct.pack("<IHHHBB6sH", 0, 4096, 0, 2, 0, 3, b"", 0)
        return tagged(IE, icb_tag + long_ad(self.bs, target, self.meta.ref), block, self._version)

    def _newer(self, node: Node, file_type: int, ea: bytes, block: int) -> None:
        """Strategy 4096: the entry at ``block`` is the old one; an indirect entry after it leads to a new one."""
        assert node.newer is not None
        new_block = self.meta.alloc(2)
        data = node.newer
        extents = self._write_run(self.phys, data, len(data), 0)
        ads = b"".join(self._ad(e, AD_LONG) for e in extents)
        self.meta.put(new_block, self._fe(node, file_type, len(data), AD_LONG, ea, ads, new_block, strategy=4096))
        old = self.meta.blocks[block]
        old_entry = bytearray(old)
        struct.pack_into("<H", old_entry, 20, 4096)
        retag(old_entry, 0)
        self.meta.put(block, bytes(old_entry))
        self.meta.put(block + 1, self._ie(new_block, block + 1))

    def _device_ea(self, node: Node) -> bytes:
        device = struct.pack("<IB3xIIII", 12, 1, 24, 0, node.rdev[0], node.rdev[1])
        header = tagged(EAHD, struct.pack("<II", 24 + len(device), 24 + len(device)), 0, self._version)
        return header + device

    # -- descriptors -------------------------------------------------------------------------------

    def _fsd_body(self) -> bytes:
        assert self.root.icb is not None
        now = stamp(self.root.mtime)
        body = now + struct.pack("<HHIIII", 3, 3, 1, 1, 0, 0) + _CHARSPEC + dstring(self.label, 128)
        body += _CHARSPEC + dstring(self.label, 32) + bytes(64)
        body += long_ad(self.bs, self.root.icb[1], self.root.icb[0])
        body += regid(b"*OSTA UDF Compliant", struct.pack("<HB", self.revision, 0)) + bytes(16) + bytes(16)
        return body.ljust(496, b"\0")

    def _maps(self) -> list[bytes]:
        maps = []
        if self.partition == "sparable":
            tables = struct.pack("<I", self.sparing_sector)
            maps.append(struct.pack("<BB2s", 2, 64, b"") + regid(b"*UDF Sparable Partition",
                                                                 struct.pack("<H", self.revision))
                        + struct.pack("<HHHBxI", 1, 0, 32, 1, self.bs) + tables.ljust(16, b"\0"))
        else:
            maps.append(struct.pack("<BBHH", 1, 6, 1, 0))
        if self.partition == "virtual":
            maps.append(struct.pack("<BB2s", 2, 64, b"") + regid(b"*UDF Virtual Partition",
                                                                 struct.pack("<H", self.revision))
                        + struct.pack("<HH", 1, 0) + bytes(24))
        elif self.partition == "metadata":
            maps.append(struct.pack("<BB2s", 2, 64, b"") + regid(b"*UDF Metadata Partition",
                                                                 struct.pack("<H", self.revision))
                        + struct.pack("<HHIIIIHB5s", 1, 0, self.metadata_file, self.mirror_file, 0xFFFFFFFF,
                                      32, 1, 0, b""))
        return maps

    def _vds(self, location: int, fsd_block: int, start: int, length: int) -> list[bytes]:
        version = self._version
        now = stamp(self.root.mtime)
        pvd = struct.pack("<II", 1, 0) + dstring(self.label, 32) + struct.pack("<HHHHII", 1, 1, 2, 2, 1, 1)
        pvd += dstring("0123456789abcdef" + self.label, 128) + _CHARSPEC + _CHARSPEC + bytes(16)
        pvd += regid(b"*imgfs") + now + regid(b"*imgfs test builder") + bytes(64) + struct.pack("<IH", 0, 0)
        nsr = b"+NSR03" if self.revision >= 0x0200 else b"+NSR02"
        access = 2 if self.partition == "virtual" else 1
        pd = struct.pack("<IHH", 2, 1, 0) + regid(nsr) + bytes(128) + struct.pack("<III", access, start, length)
        pd += regid(b"*imgfs test builder") + bytes(128)
        maps = b"".join(self._maps())
        lvd = struct.pack("<I", 3) + _CHARSPEC + dstring(self.label, 128) + struct.pack("<I", self.bs)
        lvd += regid(b"*OSTA UDF Compliant", struct.pack("<HB", self.revision, 0))
        lvd += long_ad(self.bs * 2, fsd_block, self.meta.ref)
        lvd += struct.pack("<II", len(maps), len(self._maps())) + regid(b"*imgfs test builder") + bytes(128)
        lvd += struct.pack("<II", self.bs, self.lvid_sector) + maps
        usd = struct.pack("<II", 4, 0)
        bodies = [(PVD, pvd.ljust(496, b"\0")), (PD, pd.ljust(496, b"\0")), (LVD, lvd), (USD, usd.ljust(496, b"\0")),
                  (TD, bytes(496))]
        return [tagged(ident, body, location + i, version) for i, (ident, body) in enumerate(bodies)]

    def _lvid(self, sector: int, files: int, dirs: int) -> bytes:
        impl = regid(b"*imgfs test builder") + struct.pack("<IIHHH", files, dirs, self.revision, self.revision,
                                                          self.revision)
        body = stamp(self.root.mtime) + struct.pack("<II", 1, 0) + bytes(4) + struct.pack("<Q", self.unique + 1)
        body += bytes(24) + struct.pack("<II", 1, len(impl)) + struct.pack("<II", 0, 1 << 20) + impl
        return tagged(LVID, body, sector, self._version)

    # -- the image ---------------------------------------------------------------------------------

    def _image(self, fsd_block: int) -> bytes:
        bs, base = self.bs, self.base
        start = base + 257
        self.lvid_sector = base + 128
        self.metadata_file = self.mirror_file = 0
        if self.partition == "metadata":
            self._place_metadata()
        elif self.partition == "virtual":
            vat_entries = self._place_virtual()
        partition_blocks = self.phys.next + 64
        end = start + partition_blocks  # first sector after the partition
        self.sparing_sector = end
        image: dict[int, bytes] = {}
        for block, data in self.phys.blocks.items():
            image[start + block] = data
        if self.partition == "sparable":
            end = self._spare(image, start, end)
        length = partition_blocks if self.partition != "virtual" else 1 << 20
        vds = [(base + at, self._vds(base + at, fsd_block, start, length)) for at in (96, 112)]
        for location, descriptors in vds:
            for i, d in enumerate(descriptors):
                image[location + i] = d.ljust(bs, b"\0")
        files = sum(1 for n in self.nodes.values() if n.kind != "dir")
        image[self.lvid_sector] = self._lvid(self.lvid_sector, files, len(self.nodes) - files).ljust(bs, b"\0")
        anchors = [base + 256]
        if self.partition == "virtual":
            last = self._vat(image, start, vat_entries)
        else:
            last = end + 1
            anchors.append(last)
        for sector in anchors:
            main, reserve = (base + 96, base + 112) if not self.damage.anchor_garbage else (base + 40, base + 44)
            body = struct.pack("<IIII", 16 * bs, main, 16 * bs, reserve).ljust(496, b"\0")
            image[sector] = tagged(AVDP, body, sector, self._version).ljust(bs, b"\0")
        out = bytearray(max(image) * bs + bs)
        for sector, data in image.items():
            out[sector * bs : sector * bs + len(data)] = data
        vrs = [b"BEA01", b"NSR03" if self.revision >= 0x0200 else b"NSR02", b"TEA01"]
        for i, ident in enumerate(vrs):
            pos = base * 2048 + 32768 + i * max(2048, bs)
            out[pos : pos + 7] = b"\0" + ident + b"\1"
        if self.damage.anchor_garbage:
            out[(base + 40) * bs : (base + 48) * bs] = bytes((i * 37 + 11) & 0xFF for i in range(8 * bs))
        if self.damage.main_vds_garbage:
            out[(base + 96) * bs + 16 : (base + 96) * bs + 64] = b"\x5a" * 48
        return bytes(out)

    def _place_metadata(self) -> None:
        """The metadata partition's blocks, twice (file and mirror), after the data; then their entries."""
        count = self.meta.next
        for copy, file_type in ((0, FT_METADATA), (1, FT_MIRROR)):
            first = self.phys.alloc(count)
            for block, data in self.meta.blocks.items():
                self.phys.put(first + block, data)
            if copy == 0 and self.damage.metadata_fsd_bad:
                self.phys.put(first, bytes(range(256)) * (self.bs // 256))
            entry_block = self.phys.alloc(1)
            if self.damage.metadata_loop:  # its extent is in the metadata partition it defines
                ads, ad_type = long_ad(count * self.bs, 0, 1), AD_LONG
            else:
                ads, ad_type = struct.pack("<II", count * self.bs, first), AD_SHORT
            node = Node("file", 0o600, links=1)
            saved, self.extended = self.extended, True
            entry = bytearray(self._fe(node, file_type, count * self.bs, ad_type, b"", ads, entry_block))
            self.extended = saved
            if copy == 0 and self.damage.metadata_main_bad:
                entry[40] ^= 0xFF  # the CRC no longer matches
            self.phys.put(entry_block, bytes(entry))
            if copy == 0:
                self.metadata_file = entry_block
            else:
                self.mirror_file = entry_block

    def _place_virtual(self) -> list[int]:
        """Each virtual block written to the next physical block; the VAT maps one to the other."""
        entries = [0xFFFFFFFF] * self.meta.next
        for block in sorted(self.meta.blocks):
            physical = self.phys.alloc(1)
            self.phys.put(physical, self.meta.blocks[block])
            entries[block] = physical
        return entries

    def _vat(self, image: dict[int, bytes], start: int, entries: list[int]) -> int:
        """The VAT file and its entry, last on the disc; returns the last sector."""
        table = struct.pack(f"<{len(entries)}I", *entries)
        if self.vat_version == "2.00":
            header = struct.pack("<HH", 152, 0) + dstring(self.label, 128)
            header += struct.pack("<IIIHHHH", 0xFFFFFFFF, 1, 1, self.revision, self.revision, self.revision, 0)
            data, file_type = header + table, FT_VAT
        else:
            data = table + regid(b"*UDF Virtual Alloc Tbl", struct.pack("<H", 0x0150)) + struct.pack("<I", 0xFFFFFFFF)
            file_type = 0
        sector = max(image) + 1
        data_block = sector - start
        for i in range(0, len(data), self.bs):
            image[sector + i // self.bs] = data[i : i + self.bs].ljust(self.bs, b"\0")
        entry_sector = sector + -(-len(data) // self.bs)
        ref = 1 if self.damage.vat_loop else 0
        ads = long_ad(len(data), data_block if ref == 0 else 0, ref)
        node = Node("file", 0o600, links=1)
        image[entry_sector] = self._fe(node, file_type, len(data), AD_LONG, b"", ads,
                                       entry_sector - start).ljust(self.bs, b"\0")
        return entry_sector

    def _spare(self, image: dict[int, bytes], start: int, end: int) -> int:
        """Move the packet holding the first file data block to a spare area; garbage where it was."""
        packet = 32
        table_sector = end
        spare = end + 2
        spare = -(-spare // packet) * packet
        original = 0  # the packet with the file set descriptor and the root: nothing reads without the table
        for i in range(packet):
            data = image.get(start + original + i, bytes(self.bs))
            image[spare + i] = data
            image[start + original + i] = b"\xee" * self.bs
        entries = struct.pack("<II", original, spare) + struct.pack("<II", 0xFFFFFFFF, spare + packet)
        body = regid(b"*UDF Sparing Table", struct.pack("<H", self.revision)) + struct.pack("<HHI", 2, 0, 1) + entries
        image[table_sector] = tagged(0, body, table_sector, self._version).ljust(self.bs, b"\0")
        return spare + 2 * packet

    def write(self, path: str) -> None:
        with open(path, "wb") as out:
            out.write(self.build())


def utc(text: str) -> float:
    return float(calendar.timegm(time.strptime(text, "%Y-%m-%d %H:%M:%S")))


def from_tree(builder: UdfBuilder, source: str) -> UdfBuilder:
    """Add every entry below the directory ``source`` with its mode, owner and mtime (hard links as links)."""
    seen: dict[tuple[int, int], str] = {}

    def walk(folder: str, prefix: str) -> None:
        for name in sorted(os.listdir(folder)):
            full, path = os.path.join(folder, name), f"{prefix}/{name}"
            st = os.lstat(full)
            meta = {"uid": st.st_uid, "gid": st.st_gid, "mtime": st.st_mtime_ns / 1e9}
            if stat.S_ISLNK(st.st_mode):
                builder.add_symlink(path, os.readlink(full), **meta)
            elif stat.S_ISDIR(st.st_mode):
                builder.add_dir(path, stat.S_IMODE(st.st_mode), **meta)
                walk(full, path)
            elif (st.st_dev, st.st_ino) in seen:
                builder.add_link(path, seen[st.st_dev, st.st_ino])
            elif stat.S_ISFIFO(st.st_mode):
                builder.add_special(path, "fifo", stat.S_IMODE(st.st_mode), **meta)
            else:
                with open(full, "rb") as f:
                    builder.add_file(path, f.read(), stat.S_IMODE(st.st_mode), fragment=5 if st.st_size > 65536 else 0,
                                     **meta)
                seen[st.st_dev, st.st_ino] = path

    walk(source, "")
    return builder
