"""A small HFS+/HFSX writer for the tests, written from TN1150, independent of imgfs's reader.

It writes what mkfs and xorriso cannot: hard links (file and directory), files in more extents than a
catalog record holds, resource forks, Finder info, extended attributes inline and in forks, decmpfs
files of every type, device files, an HFS wrapper, a journal with pending transactions, HFSX. The tree
is given as ``Dir``/``File``/``Symlink`` objects; the same ``File`` (or ``Dir``) object placed twice is
a hard link. Names are sorted with a case folding of its own (Python's lower-casing of undecomposable
letters), which agrees with TN1150's table on every name the tests use.

``build(root, ...)`` returns a ``Volume``: the image bytes and where its structures are, so that tests
can damage them on purpose.
"""

from __future__ import annotations

import struct
import unicodedata
import zlib
from dataclasses import dataclass, field
from typing import Optional, Union

HFS_EPOCH = 2_082_844_800
T0 = 1_600_000_000  # default times (Unix seconds)
S_IFDIR, S_IFREG, S_IFLNK = 0o040000, 0o100000, 0o120000
FOLDER, FILE, FOLDER_THREAD, FILE_THREAD = 1, 2, 3, 4
UF_COMPRESSED = 0x20
HAS_LINK_CHAIN = 0x20
HAS_ATTRIBUTES = 0x04  # kHFSHasAttributesMask: the attributes B-tree has records for it
PRIVATE_DATA = "\0\0\0\0HFS+ Private Data"
PRIVATE_DIR_DATA = ".HFS+ Private Directory Data\r"
LEAF, INDEX, HEADER = 0xFF, 0x00, 0x01
BIG_KEYS, VARIABLE_INDEX_KEYS = 0x2, 0x4


@dataclass(eq=False)
class File:
    data: bytes = b""
    mode: int = S_IFREG | 0o644
    uid: int = 501
    gid: int = 20
    mtime: int = T0
    rsrc: bytes = b""
    xattrs: dict[str, bytes] = field(default_factory=dict)
    fork_xattrs: dict[str, bytes] = field(default_factory=dict)  # stored as fork-data attribute records
    finder_info: bytes = bytes(32)
    fragments: int = 1  # the data fork in this many extents, a free block between each
    rdev: int = 0
    decmpfs: Optional[tuple[bytes, bytes]] = None  # (com.apple.decmpfs value, resource fork): a compressed file
    owner_flags: int = 0


@dataclass(eq=False)
class Symlink:
    target: bytes
    mtime: int = T0
    mode: int = S_IFLNK | 0o755  # 0: only the Finder type and creator ('slnk', 'rhap') say it is a link


@dataclass(eq=False)
class Dir:
    children: dict[str, Union[File, Dir, Symlink]] = field(default_factory=dict)
    mode: int = S_IFDIR | 0o755
    uid: int = 501
    gid: int = 20
    mtime: int = T0
    xattrs: dict[str, bytes] = field(default_factory=dict)
    finder_info: bytes = bytes(32)


@dataclass
class Volume:
    image: bytes
    block_size: int
    offset: int  # where the HFS+ volume starts (not 0 inside an HFS wrapper)
    catalog_offset: int  # byte offset of the catalog file (contiguous) in the image
    catalog_node_size: int
    extents_offset: int
    cnids: dict[str, int]  # path -> CNID of its record


# -- names and keys -------------------------------------------------------------------------------------


def encode(name: str) -> bytes:
    return unicodedata.normalize("NFD", name).encode("utf-16-be")


def _fold_unit(unit: int) -> int:
    if unit == 0:
        return 0xFFFF
    char = chr(unit)
    lower = char.lower()
    if len(lower) == 1 and lower != char and not unicodedata.decomposition(char):
        return ord(lower)
    return unit


def sort_key(parent: int, name: bytes, binary: bool) -> tuple[int, tuple[int, ...]]:
    units = struct.unpack(f">{len(name) // 2}H", name)
    return parent, units if binary else tuple(_fold_unit(u) for u in units)


def catalog_key(parent: int, name: bytes) -> bytes:
    return struct.pack(">IH", parent, len(name) // 2) + name


# -- B-trees --------------------------------------------------------------------------------------------


def _node(kind: int, height: int, records: list[bytes], size: int, flink: int = 0, blink: int = 0) -> bytes:
    body = struct.pack(">IIBBHH", flink, blink, kind, height, len(records), 0)
    offsets = []
    for record in records:
        offsets.append(len(body))
        body += record
    offsets.append(len(body))
    table = b"".join(struct.pack(">H", o) for o in reversed(offsets))
    assert len(body) + len(table) <= size, "records do not fit in the node"
    return body + bytes(size - len(body) - len(table)) + table


def _pack(records: list[bytes], size: int) -> list[list[bytes]]:
    """Records into nodes, each as full as it can be."""
    nodes: list[list[bytes]] = [[]]
    used = 14 + 2
    for record in records:
        if used + len(record) + 2 > size and nodes[-1]:
            nodes.append([])
            used = 14 + 2
        nodes[-1].append(record)
        used += len(record) + 2
    return nodes


def build_btree(records: list[tuple[bytes, bytes]], node_size: int, max_key: int, variable_keys: bool,
                compare_type: int = 0, spare_nodes: int = 2) -> bytes:
    """A whole B-tree file from (key, data) pairs already in key order."""
    def leaf_record(key: bytes, data: bytes) -> bytes:
        record = struct.pack(">H", len(key)) + key + data
        return record + b"\0" * (len(record) % 2)

    def index_record(key: bytes, child: int) -> bytes:
        if not variable_keys:
            key = key + bytes(max_key - len(key))
        return struct.pack(">H", len(key)) + key + struct.pack(">I", child)

    levels: list[list[tuple[list[bytes], bytes]]] = []  # per level: (records, first key) of each node
    if records:
        leaves = _pack([leaf_record(k, d) for k, d in records], node_size)
        firsts, i = [], 0
        for node in leaves:
            firsts.append(records[i][0])
            i += len(node)
        levels.append(list(zip(leaves, firsts)))
    numbers: list[list[int]] = []
    next_number = 1
    while levels:
        level = levels[-1]
        numbers.append(list(range(next_number, next_number + len(level))))
        next_number += len(level)
        if len(level) == 1:
            break
        parents = _pack([index_record(first, n) for (_, first), n in zip(level, numbers[-1])], node_size)
        firsts, i = [], 0
        for node in parents:
            firsts.append(level[i][1])
            i += len(node)
        levels.append(list(zip(parents, firsts)))
    total = next_number + spare_nodes
    nodes = [b""] * total
    for depth, (level, nums) in enumerate(zip(levels, numbers)):
        for j, ((recs, _), number) in enumerate(zip(level, nums)):
            flink = nums[j + 1] if j + 1 < len(nums) else 0
            blink = nums[j - 1] if j else 0
            nodes[number] = _node(LEAF if depth == 0 else INDEX, depth + 1, recs, node_size, flink, blink)
    for number in range(next_number, total):
        nodes[number] = bytes(node_size)
    depth = len(levels)
    root = numbers[-1][0] if levels else 0
    first_leaf, last_leaf = (numbers[0][0], numbers[0][-1]) if levels else (0, 0)
    attributes = BIG_KEYS | (VARIABLE_INDEX_KEYS if variable_keys else 0)
    header = struct.pack(">HIIIIHHIIHIBBI", depth, root, len(records), first_leaf, last_leaf, node_size, max_key,
                         total, spare_nodes, 0, node_size, 0, compare_type, attributes) + bytes(64)
    bitmap = bytearray(node_size - 256)
    assert next_number <= 8 * len(bitmap), "this writer makes no map nodes: use bigger nodes"
    for number in range(next_number):
        bitmap[number // 8] |= 0x80 >> (number % 8)
    nodes[0] = _node(HEADER, 0, [header, bytes(128), bytes(bitmap)], node_size)
    return b"".join(nodes)


# -- records --------------------------------------------------------------------------------------------


def _bsd(uid: int, gid: int, mode: int, special: int = 0, owner_flags: int = 0) -> bytes:
    return struct.pack(">IIBBHI", uid, gid, 0, owner_flags, mode, special)


def _dates(mtime: int) -> bytes:
    t = mtime + HFS_EPOCH
    return struct.pack(">IIIII", t, t, t, t, 0)  # create, contentMod, attributeMod, access, backup


def fork_data(size: int, extents: list[tuple[int, int]], block_size: int) -> bytes:
    blocks = sum(count for _, count in extents)
    first = extents[:8] + [(0, 0)] * (8 - len(extents[:8]))
    return struct.pack(">QII", size, block_size, blocks) + b"".join(struct.pack(">II", *e) for e in first)


def folder_record(cnid: int, d: Dir, valence: int, flags: int = 0) -> bytes:
    return (struct.pack(">hHII", FOLDER, flags, valence, cnid) + _dates(d.mtime) + _bsd(d.uid, d.gid, d.mode)
            + d.finder_info + struct.pack(">II", 0, 0))


def file_record(cnid: int, mode: int, uid: int, gid: int, mtime: int, finder_info: bytes, data_fork: bytes,
                rsrc_fork: bytes, special: int = 0, flags: int = 0, owner_flags: int = 0) -> bytes:
    return (struct.pack(">hHII", FILE, flags | 0x2, 0, cnid) + _dates(mtime)
            + _bsd(uid, gid, mode, special, owner_flags) + finder_info + struct.pack(">II", 0, 0)
            + data_fork + rsrc_fork)


def thread_record(kind: int, parent: int, name: bytes) -> bytes:
    return struct.pack(">hHIH", kind, 0, parent, len(name) // 2) + name


def attr_key(cnid: int, name: str, start_block: int = 0) -> bytes:
    raw = name.encode("utf-16-be")
    return struct.pack(">HIIH", 0, cnid, start_block, len(raw) // 2) + raw


def attr_inline(value: bytes) -> bytes:
    return struct.pack(">I8xI", 0x10, len(value)) + value


# -- the writer -----------------------------------------------------------------------------------------


class _Writer:
    def __init__(self, block_size: int, binary: bool) -> None:
        self.block_size = block_size
        self.binary = binary
        self.next_cnid = 16
        self.blocks: dict[int, bytes] = {}  # allocation block -> contents
        self.next_block = 0
        self.catalog: list[tuple[tuple, bytes, bytes]] = []  # (sort key, key bytes, data)
        self.extents: list[tuple[tuple, bytes, bytes]] = []
        self.attrs: list[tuple[tuple, bytes, bytes]] = []
        self.files = self.folders = 0
        self.inodes: dict[int, tuple[int, int]] = {}  # id(File) -> (iNode CNID, links)
        self.dir_links: dict[int, int] = {}  # id(Dir) -> CNID of dir_N
        self.cnids: dict[str, int] = {}

    def cnid(self) -> int:
        self.next_cnid += 1
        return self.next_cnid - 1

    def allocate(self, data: bytes, fragments: int = 1) -> list[tuple[int, int]]:
        """Blocks for ``data``: ``fragments`` extents with a free block between them."""
        count = -(-len(data) // self.block_size)
        if count == 0:
            return []
        sizes = [count // fragments + (1 if i < count % fragments else 0) for i in range(min(fragments, count))]
        extents, pos = [], 0
        for size in sizes:
            start = self.next_block
            for b in range(size):
                self.blocks[start + b] = data[(pos + b) * self.block_size : (pos + b + 1) * self.block_size]
            extents.append((start, size))
            pos += size
            self.next_block += size + (1 if fragments > 1 else 0)
        return extents

    def fork(self, cnid: int, fork_type: int, data: bytes, fragments: int = 1) -> bytes:
        extents = self.allocate(data, fragments)
        for start in range(8, len(extents), 8):
            chunk = extents[start : start + 8]
            first_block = sum(c for _, c in extents[:start])
            key = struct.pack(">BBII", fork_type, 0, cnid, first_block)
            data_ = b"".join(struct.pack(">II", *e) for e in chunk + [(0, 0)] * (8 - len(chunk)))
            self.extents.append(((cnid, fork_type, first_block), key, data_))
        return fork_data(len(data), extents, self.block_size)

    def add_catalog(self, parent: int, name: bytes, data: bytes) -> None:
        self.catalog.append((sort_key(parent, name, self.binary), catalog_key(parent, name), data))

    def add_thread(self, cnid: int, kind: int, parent: int, name: bytes) -> None:
        self.catalog.append(((cnid, ()), catalog_key(cnid, b""), thread_record(kind, parent, name)))

    def add_xattrs(self, cnid: int, inline: dict[str, bytes], forked: dict[str, bytes]) -> None:
        for name, value in inline.items():
            units = tuple(struct.unpack(f">{len(name.encode('utf-16-be')) // 2}H", name.encode("utf-16-be")))
            self.attrs.append(((cnid, units, 0), attr_key(cnid, name), attr_inline(value)))
        for name, value in forked.items():
            units = tuple(struct.unpack(f">{len(name.encode('utf-16-be')) // 2}H", name.encode("utf-16-be")))
            extents = self.allocate(value)
            record = struct.pack(">II", 0x20, 0) + fork_data(len(value), extents, self.block_size)
            self.attrs.append(((cnid, units, 0), attr_key(cnid, name), record))

    def add_dir(self, d: Dir, cnid: int, parent: int, name: bytes, path: str) -> None:
        self.folders += 1
        self.cnids[path] = cnid
        self.add_catalog(parent, name, folder_record(cnid, d, len(d.children), HAS_ATTRIBUTES if d.xattrs else 0))
        self.add_thread(cnid, FOLDER_THREAD, parent, name)
        self.add_xattrs(cnid, d.xattrs, {})

    def add_file(self, f: File, cnid: int, parent: int, name: bytes, special: int = 0, flags: int = 0) -> None:
        self.files += 1
        owner_flags = f.owner_flags
        data, rsrc = f.data, f.rsrc
        inline = dict(f.xattrs)
        if f.decmpfs is not None:
            inline["com.apple.decmpfs"], rsrc = f.decmpfs
            data, owner_flags = b"", owner_flags | UF_COMPRESSED
        mode_special = f.rdev if f.mode & 0o170000 in (0o020000, 0o060000) else special
        if inline or f.fork_xattrs:
            flags |= HAS_ATTRIBUTES
        record = file_record(cnid, f.mode, f.uid, f.gid, f.mtime, f.finder_info,
                             self.fork(cnid, 0x00, data, f.fragments), self.fork(cnid, 0xFF, rsrc),
                             mode_special, flags, owner_flags)
        self.add_catalog(parent, name, record)
        self.add_thread(cnid, FILE_THREAD, parent, name)
        self.add_xattrs(cnid, inline, f.fork_xattrs)


def _count_links(node: Union[File, Dir, Symlink], counts: dict[int, int], seen_dirs: set[int]) -> None:
    counts[id(node)] = counts.get(id(node), 0) + 1
    if isinstance(node, Dir) and id(node) not in seen_dirs:
        seen_dirs.add(id(node))
        for child in node.children.values():
            _count_links(child, counts, seen_dirs)


def build(root: Dir, *, label: str = "hfs test", block_size: int = 4096, hfsx: bool = False, binary: bool = False,
          catalog_node_size: int = 4096, wrap_in_hfs: bool = False, journal_pending: Optional[bool] = None,
          spare_blocks: int = 16) -> Volume:
    """The volume image of ``root``; ``binary`` (with ``hfsx``) makes it case-sensitive."""
    w = _Writer(block_size, binary and hfsx)
    w.next_block = max(1, -(-1536 // block_size))  # the boot blocks and the volume header
    journal_info_block = 0
    if journal_pending is not None:
        journal_info_block = w.next_block
        w.next_block += 1
        journal = _journal_header(pending=journal_pending, size=8 * block_size)
        journal_start = w.allocate(journal + bytes(8 * block_size - len(journal)))[0][0]
        w.blocks[journal_info_block] = struct.pack(">I32sQQ", 1, bytes(32), journal_start * block_size,
                                                   8 * block_size)
    if journal_pending is not None:  # the journal's files, as macOS makes them (imgfs hides them)
        root = Dir({**root.children, ".journal_info_block": File(bytes(block_size), mode=0),
                    ".journal": File(journal, mode=0)}, root.mode, root.uid, root.gid, root.mtime, root.xattrs,
                   root.finder_info)
    counts: dict[int, int] = {}
    _count_links(root, counts, set())
    name = encode(label)
    w.cnids["/"] = 2
    w.add_dir(root, 2, 1, name, "/")
    private_files, private_dirs = w.cnid(), w.cnid()
    hidden = Dir(mode=0)
    w.add_dir(hidden, private_files, 2, encode(PRIVATE_DATA), "/" + PRIVATE_DATA)
    w.add_dir(Dir(mode=S_IFDIR | 0o1555, uid=0, gid=0), private_dirs, 2, encode(PRIVATE_DIR_DATA),
              "/" + PRIVATE_DIR_DATA)
    _write_children(w, root, 2, "", counts, private_files, private_dirs)
    catalog = build_btree([(k, d) for _, k, d in sorted(w.catalog, key=lambda r: r[0])], catalog_node_size, 516,
                          True, 0xBC if binary and hfsx else 0xCF)
    extents = build_btree([(k, d) for _, k, d in sorted(w.extents, key=lambda r: r[0])], 4096, 10, False)
    attributes = build_btree([(k, d) for _, k, d in sorted(w.attrs, key=lambda r: r[0])], 4096, 266, True)
    special_forks = [fork_data(len(tree), w.allocate(tree), block_size) for tree in (extents, catalog, attributes)]
    bitmap = bytearray(-(-(w.next_block + spare_blocks + 8 * block_size) // 8))
    bitmap_extents = w.allocate(bytes(len(bitmap)))
    total_blocks = w.next_block + spare_blocks
    assert len(bitmap) * 8 >= total_blocks
    for block in [*w.blocks, *range(max(1, -(-1536 // block_size)))]:
        bitmap[block // 8] |= 0x80 >> (block % 8)
    for i, (start, count) in enumerate(bitmap_extents):
        for b in range(count):
            w.blocks[start + b] = bytes(bitmap[(i + b) * block_size : (i + b + 1) * block_size])
    image = bytearray(total_blocks * block_size)
    for block, data in w.blocks.items():
        image[block * block_size : block * block_size + len(data)] = data
    attributes_bits = 0x100 | (0x2000 if journal_pending is not None else 0)
    header = struct.pack(">2sHIIIIIIIIIIIIIIIIIQ", b"HX" if hfsx else b"H+", 5 if hfsx else 4, attributes_bits,
                         0x31302E30, journal_info_block, T0 + HFS_EPOCH, T0 + HFS_EPOCH, 0, T0 + HFS_EPOCH,
                         w.files, w.folders - 1, block_size, total_blocks, total_blocks - w.next_block,
                         w.next_block, block_size, block_size, w.next_cnid, 1, 1)
    header += bytes(32) + fork_data(len(bitmap), bitmap_extents, block_size) + b"".join(special_forks)
    header += bytes(512 - len(header))
    image[1024:1536] = header
    image[len(image) - 1024 : len(image) - 512] = header  # the alternate volume header
    catalog_offset = struct.unpack_from(">I", special_forks[1], 16)[0] * block_size
    extents_offset = struct.unpack_from(">I", special_forks[0], 16)[0] * block_size
    volume = Volume(bytes(image), block_size, 0, catalog_offset, catalog_node_size, extents_offset, w.cnids)
    return wrap(volume) if wrap_in_hfs else volume


def _write_children(w: _Writer, d: Dir, cnid: int, path: str, counts: dict[int, int], private_files: int,
                    private_dirs: int) -> None:
    for child_name, child in d.children.items():
        raw = encode(child_name)
        child_path = f"{path}/{child_name}"
        linked = counts[id(child)] > 1
        if isinstance(child, Symlink):
            link = File(child.target, mode=child.mode, mtime=child.mtime,
                        finder_info=b"slnkrhap" + bytes(24))
            child_cnid = w.cnid()
            w.cnids[child_path] = child_cnid
            w.add_file(link, child_cnid, cnid, raw)
        elif isinstance(child, File) and linked:
            if id(child) not in w.inodes:
                inode = w.cnid()
                w.inodes[id(child)] = (inode, counts[id(child)])
                w.add_file(child, inode, private_files, f"iNode{inode}".encode("utf-16-be"),
                           special=counts[id(child)])
            inode = w.inodes[id(child)][0]
            link_cnid = w.cnid()
            w.cnids[child_path] = inode
            stub = File(b"", mode=S_IFREG | 0o444, finder_info=b"hlnkhfs+" + bytes(24))
            w.add_file(stub, link_cnid, cnid, raw, special=inode, flags=HAS_LINK_CHAIN)
        elif isinstance(child, File):
            child_cnid = w.cnid()
            w.cnids[child_path] = child_cnid
            w.add_file(child, child_cnid, cnid, raw)
        elif linked:
            if id(child) not in w.dir_links:
                target = w.cnid()
                w.dir_links[id(child)] = target
                w.add_dir(child, target, private_dirs, f"dir_{target}".encode("utf-16-be"), f"dir_{target}")
                _write_children(w, child, target, f"dir_{target}", counts, private_files, private_dirs)
            target = w.dir_links[id(child)]
            w.cnids[child_path] = target
            stub = File(b"", mode=S_IFREG | 0o444, finder_info=b"fdrpMACS" + bytes(24))
            w.add_file(stub, w.cnid(), cnid, raw, special=target, flags=HAS_LINK_CHAIN)
        else:
            child_cnid = w.cnid()
            w.add_dir(child, child_cnid, cnid, raw, child_path)
            _write_children(w, child, child_cnid, child_path, counts, private_files, private_dirs)


def _journal_header(pending: bool, size: int) -> bytes:
    start, end = 512, (1024 if pending else 512)
    return struct.pack("<4sIQQQIII", b"xLNJ", 0x12345678, start, end, size, 4096, 0, 512)


def wrap(volume: Volume, first_sector: int = 8) -> Volume:
    """The volume inside an HFS wrapper: an HFS master directory block whose embedded extent holds it."""
    wrapper_block = 512
    while -(-len(volume.image) // wrapper_block) > 0xFFFF:
        wrapper_block *= 2
    blocks = -(-len(volume.image) // wrapper_block)
    start = 4
    offset = first_sector * 512 + start * wrapper_block
    image = bytearray(offset + blocks * wrapper_block + 1024)
    mdb = bytearray(162)
    mdb[0:2] = b"BD"
    struct.pack_into(">I", mdb, 20, wrapper_block)
    struct.pack_into(">H", mdb, 28, first_sector)
    mdb[36:37] = b"\x07"
    mdb[37:44] = b"wrapper"
    mdb[124:126] = b"H+"
    struct.pack_into(">HH", mdb, 126, start, blocks)
    image[1024 : 1024 + len(mdb)] = mdb
    image[offset : offset + len(volume.image)] = volume.image
    return Volume(bytes(image), volume.block_size, offset, offset + volume.catalog_offset, volume.catalog_node_size,
                  offset + volume.extents_offset, volume.cnids)


# -- decmpfs --------------------------------------------------------------------------------------------

CHUNK = 65536


def lzvn_compress(data: bytes) -> bytes:
    """A simple LZVN encoder: greedy matches found by a 4-byte hash; literals in their own opcodes."""
    out = bytearray()
    table: dict[bytes, int] = {}
    i, lit_start, n = 0, 0, len(data)

    def literals(start: int, stop: int) -> None:
        while start < stop:
            count = min(stop - start, 271)
            out.extend((0xE0 | count,) if count < 16 else (0xE0, count - 16))
            out.extend(data[start : start + count])
            start += count

    while i + 4 <= n:
        key = data[i : i + 4]
        j = table.get(key)
        table[key] = i
        if j is None or i - j > 0xFFFF:
            i += 1
            continue
        length = 4
        while i + length < n and data[j + length] == data[i + length]:
            length += 1
        literals(lit_start, i)
        dist = i - j
        if dist < 1536 and length <= 10:
            first = length
            out.extend((((first - 3) << 3) | (dist >> 8), dist & 0xFF))
        elif dist < 16384:
            first = min(length, 34)
            out.extend((0xA0 | ((first - 3) >> 2), ((dist << 2) | ((first - 3) & 3)) & 0xFF, dist >> 6))
        else:
            first = min(length, 10)
            out.extend((((first - 3) << 3) | 7, dist & 0xFF, dist >> 8))
        rest = length - first
        while rest:
            count = min(rest, 271)
            out.extend((0xF0 | count,) if count < 16 else (0xF0, count - 16))
            rest -= count
        i += length
        lit_start = i
    literals(lit_start, n)
    return bytes(out + b"\x06" + bytes(7))


def _compress(kind: str, data: bytes) -> bytes:
    """One chunk (or a whole inline file) in ``kind``, or stored raw behind the marker when that is smaller."""
    if kind == "zlib":
        packed = zlib.compress(data, 9)
        return packed if len(packed) < len(data) + 1 else b"\xff" + data
    if kind == "lzvn":
        packed = lzvn_compress(data)
        return packed if len(packed) < len(data) + 1 else b"\x06" + data
    if kind == "lzfse":
        import lzfse

        packed = lzfse.compress(data)
        return packed if len(packed) < len(data) + 1 else b"\xff" + data
    return b"\xcc" + data  # copy


KINDS = {3: "zlib", 4: "zlib", 7: "lzvn", 8: "lzvn", 9: "copy", 10: "copy", 11: "lzfse", 12: "lzfse"}


def decmpfs_header(kind: int, size: int) -> bytes:
    return struct.pack("<4sIQ", b"fpmc", kind, size)


def decmpfs_inline(kind: int, data: bytes) -> tuple[bytes, bytes]:
    """(attribute value, resource fork) of a file compressed with an odd (inline) type, or type 1."""
    payload = data if kind == 1 else _compress(KINDS[kind], data)
    return decmpfs_header(kind, len(data)) + payload, b""


def decmpfs_fork(kind: int, data: bytes) -> tuple[bytes, bytes]:
    """(attribute value, resource fork) of a file compressed with an even (resource fork) type."""
    chunks = [_compress(KINDS[kind], data[i : i + CHUNK]) for i in range(0, len(data), CHUNK)]
    if kind == 4:
        table = struct.pack("<I", len(chunks))
        pos = 4 + 8 * len(chunks)
        for chunk in chunks:
            table += struct.pack("<II", pos, len(chunk))
            pos += len(chunk)
        body = table + b"".join(chunks)
        resource_map = bytes(16) + struct.pack(">IHHHH", 0, 0, 28, 50, 0) + b"cmpf" + struct.pack(">HH", 0, 10) \
            + struct.pack(">HHI", 1, 0xFFFF, 0) + bytes(4)
        fork = struct.pack(">IIII", 0x100, 0x104 + len(body), 4 + len(body), len(resource_map)) + bytes(0xF0)
        fork += struct.pack(">I", len(body)) + body + resource_map
    else:
        offsets, pos = [], 4 * (len(chunks) + 1)
        for chunk in chunks:
            offsets.append(pos)
            pos += len(chunk)
        offsets.append(pos)
        fork = struct.pack(f"<{len(offsets)}I", *offsets) + b"".join(chunks)
    return decmpfs_header(kind, len(data)), fork
