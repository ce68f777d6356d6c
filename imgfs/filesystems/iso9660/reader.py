"""The ISO 9660 filesystem: one namespace (Rock Ridge, Joliet, ISO 9660:1999 or plain) as a lazy tree.

Only the root is parsed at mount; each directory is parsed the first time it is listed or looked up.
File data is never copied: a file is an ``ExtentStream`` over the image (a ``ChunkedStream`` of zlib
blocks on top for zisofs).

Inode numbers are byte offsets in the image, so they are stable across mounts: a directory's is where
its extent starts, a file with data's is where its data starts (hard links share their data, so they
share the number), anything else's is where its directory record lies.
"""

from __future__ import annotations

import itertools
import logging
import stat
import struct
from typing import Any, NamedTuple, Optional

from imgfs.errors import CorruptImage, UnsupportedFormat
from imgfs.filesystems.base import DEFAULT_DIR_MODE, DEFAULT_FILE_MODE, Filesystem, Node
from imgfs.filesystems.iso9660 import susp
from imgfs.filesystems.iso9660.records import (
    FLAG_ASSOCIATED,
    FLAG_DIRECTORY,
    FLAG_MULTI_EXTENT,
    RECORD_HEADER_SIZE,
    Record,
    VolumeDescriptor,
    clean_iso_name,
    clean_joliet_name,
    iter_records,
    parse_date,
    parse_record,
    read_descriptors,
    record_spans,
    root_record,
    unpack_record,
)
from imgfs.filesystems.iso9660.zisofs import open_zisofs
from imgfs.io.stream import BytesStream, ExtentStream, SliceStream, Stream, read_exact
from imgfs.layer import OpenContext, View

log = logging.getLogger(__name__)

NAMESPACES = ("rockridge", "joliet", "iso1999", "iso9660")  # richest first
_VD_KIND = {"rockridge": "primary", "joliet": "joliet", "iso1999": "enhanced", "iso9660": "primary"}
RR_MOVED_NAMES = ("rr_moved", ".rr_moved")
_NO_ROCK_RIDGE = susp.RockRidge()  # what a record says without Rock Ridge: nothing
_EMPTY = BytesStream(b"", "an empty file")  # what every empty file opens as (streams keep no state)
S_IFDIR, S_IFLNK, S_IFREG = stat.S_IFDIR, stat.S_IFLNK, stat.S_IFREG
_SPECIAL = frozenset((stat.S_IFCHR, stat.S_IFBLK, stat.S_IFIFO, stat.S_IFSOCK))
# Every mode a file or directory can have, made once: each node shares one of these ints instead of holding its
# own (28 bytes an entry), and indexing costs less than the "or".
_FILE_MODES = tuple(S_IFREG | bits for bits in range(0o10000))
_DIR_MODES = tuple(S_IFDIR | bits for bits in range(0o10000))
MAX_DIRECTORY_SIZE = 1 << 30
MAX_PATH_TABLE_SIZE = 64 << 20


class DirHandle(NamedTuple):
    offset: int  # byte offset of the directory's extent
    size: int


class FileHandle(NamedTuple):
    """A file in several pieces, or compressed. The common file, one extent and not compressed, has as its
    handle only the byte offset of its data, an int (the one its inode number already holds), and its
    length is the node's size: 170 bytes less per file than a handle and a tuple of runs."""

    runs: tuple[tuple[int, int], ...]  # (byte offset, length) of each piece of data, in order
    zf: Optional[tuple[bytes, int, int, int]]  # Rock Ridge ZF: algorithm, header, log2 block, size


_EMPTY_FILE = FileHandle((), None)  # one for every empty file: a disc of a million of them keeps one


class IsoFilesystem(Filesystem):
    kind = "iso9660"

    def __init__(self, stream: Stream, ctx: OpenContext) -> None:
        super().__init__()
        disc, start = stream.origin()  # a later session's directory records address the whole disc
        self.stream = stream = disc
        self.cache = ctx.cache
        self.total_size = stream.size
        namespace = ctx.namespace
        self.start_sector = start // 2048
        self.descriptors = read_descriptors(stream, self.start_sector)
        self._boot: Optional[list[Any]] = None  # El Torito images (BootImage), found when the raw views ask
        primary = self._descriptor("primary")
        self._su_skip = 0
        self._primary_unreadable = False
        self.has_rock_ridge = primary is not None and self._probe_rock_ridge(primary)
        self.namespaces = tuple(ns for ns in NAMESPACES if self._available(ns))
        if not self.namespaces:
            raise UnsupportedFormat("no primary, Joliet or ISO 9660:1999 volume descriptor", layer="iso9660")
        if namespace in ("auto", ""):
            namespace = self.namespaces[0]
        elif namespace not in self.namespaces:
            raise UnsupportedFormat(f"namespace {namespace!r} is not on this image; it has: "
                                    f"{', '.join(self.namespaces)}", layer="iso9660")
        self.namespace = namespace
        self._rr = namespace == "rockridge"
        vd = self._descriptor(_VD_KIND[namespace])
        assert vd is not None
        self.vd = vd
        self.block_size = vd.block_size
        self.label = vd.volume_id
        self._name = clean_joliet_name if namespace == "joliet" else clean_iso_name
        self._check_path_table(vd)
        self.root = self._root_node(vd)
        self.children(self.root)  # a broken root fails the mount, not the first ls
        if self._primary_unreadable:
            log.warning("%s: the primary root directory is unreadable; showing the %s namespace",
                        stream.name, namespace)

    # -- descriptors and the root ------------------------------------------------------------------

    def _descriptor(self, kind: str) -> Optional[VolumeDescriptor]:
        return next((vd for vd in self.descriptors if vd.kind == kind), None)

    def _available(self, namespace: str) -> bool:
        if namespace == "rockridge":
            return self.has_rock_ridge
        return self._descriptor(_VD_KIND[namespace]) is not None

    def _root_record(self, vd: VolumeDescriptor) -> Record:
        rec = root_record(vd)
        if rec is None or not rec.flags & FLAG_DIRECTORY:
            raise CorruptImage("the root directory record is invalid", layer="iso9660",
                               offset=vd.sector * 2048 + 156)
        return rec

    def _probe_rock_ridge(self, vd: VolumeDescriptor) -> bool:
        """Rock Ridge is there when the root's "." record starts with an SP entry (SUSP) and RRIP follows."""
        rec = self._root_record(vd)
        self.block_size = vd.block_size  # continuation areas are addressed in the primary's blocks
        first = self.stream.pread(rec.extent * vd.block_size, vd.block_size)
        try:
            records = iter_records(first, vd.block_size, rec.extent * vd.block_size)
            dot = next(records)
            if dot.system_use[:2] != b"SP" or dot.system_use[4:6] != b"\xbe\xef":
                return False
            self._su_skip = dot.system_use[6] if len(dot.system_use) > 6 else 0
            for index, candidate in enumerate([dot, *records]):
                if index > 4:
                    break
                area = candidate.system_use[self._su_skip if index else 0 :]
                if susp.parse(area, self._read_area, candidate.offset).seen:
                    return True
        except (CorruptImage, StopIteration):
            self._primary_unreadable = True
            return False
        return False

    def _root_node(self, vd: VolumeDescriptor) -> Node:
        rec = self._root_record(vd)
        if not self._rr:
            return self._node("", [rec], _NO_ROCK_RIDGE, directory=True)
        dot = self._dot_record(self._dir_handle(rec))  # the root's own attributes are in its "." record
        return self._node("", [dot], self._rock_ridge(dot), directory=True)

    def _check_path_table(self, vd: VolumeDescriptor) -> None:
        """A directory the path table places past the end of the file means a truncated image."""
        table_size, table_offset = vd.path_table_size, vd.path_table_lba * vd.block_size
        if not 0 < table_size <= MAX_PATH_TABLE_SIZE or table_offset + table_size > vd.space_blocks * vd.block_size:
            return  # no usable path table: nothing to check
        table = self.stream.pread(table_offset, table_size)
        if len(table) < table_size:
            raise CorruptImage(f"the image is truncated: it ends at byte {self.stream.size}, inside the path "
                               "table", layer="iso9660", offset=table_offset)
        pos, image_blocks = 0, self.stream.size // vd.block_size
        while pos + 8 <= len(table):
            name_len, ear_len, lba = table[pos], table[pos + 1], struct.unpack_from("<I", table, pos + 2)[0]
            if name_len == 0:
                return
            if image_blocks <= lba + ear_len < vd.space_blocks:
                identifier = table[pos + 8 : pos + 8 + name_len]
                what = "the root directory" if identifier == b"\x00" else f"directory {self._name(identifier)!r}"
                raise CorruptImage(f"the image is truncated: it ends at byte {self.stream.size}, before {what}",
                                   layer="iso9660", offset=(lba + ear_len) * vd.block_size)
            pos += 8 + name_len + (name_len & 1)
        if self.stream.size < vd.space_blocks * vd.block_size:
            log.warning("%s: the image is %d bytes shorter than its volume; files past the end give EIO",
                        self.stream.name, vd.space_blocks * vd.block_size - self.stream.size)

    # -- directories -------------------------------------------------------------------------------

    def _dir_handle(self, rec: Record) -> DirHandle:
        return DirHandle(rec.extent * self.block_size, rec.size)

    def _read_directory(self, handle: DirHandle) -> bytes:
        if handle.size > MAX_DIRECTORY_SIZE:
            raise CorruptImage(f"directory size {handle.size} is implausible", layer="iso9660", offset=handle.offset)
        if handle.offset + handle.size > self.stream.size:
            raise CorruptImage("directory extent runs past the end of the image", layer="iso9660",
                               offset=handle.offset)
        return self.stream.pread(handle.offset, handle.size)

    def _dot_record(self, handle: DirHandle) -> Record:
        first = self._read_directory(DirHandle(handle.offset, min(handle.size, self.block_size)))
        try:
            return next(iter_records(first, self.block_size, handle.offset, self._su_skip))
        except StopIteration:
            raise CorruptImage("directory has no '.' record", layer="iso9660", offset=handle.offset) from None

    def _read_area(self, block: int, offset: int, length: int) -> bytes:
        return read_exact(self.stream, block * self.block_size + offset, length, "rockridge",
                          "a Rock Ridge continuation area")

    def _rock_ridge(self, rec: Record) -> susp.RockRidge:
        return susp.parse(rec.system_use, self._read_area, rec.offset)

    def _load_children(self, node: Node) -> dict[str, Node]:
        kids, relocated = self._parse_directory(node.handle)
        if node is self.root and self._rr:
            for name in RR_MOVED_NAMES:
                moved = kids.get(name)
                if moved is not None and moved.is_dir:
                    moved_kids, moved_relocated = self._parse_directory(moved.handle)
                    if moved_relocated and not moved_kids:
                        del kids[name]  # only relocated directories were in it: they are back home
        return kids

    def _parse_directory(self, handle: DirHandle) -> tuple[dict[str, Node], int]:
        data = self._read_directory(handle)
        kids: dict[str, Node] = {}
        relocated = 0
        chain: list[Record] = []  # the records of a multi-extent file so far
        base, ordinary = handle.offset, self._ordinary_node
        for pos, length in record_spans(data, self.block_size, base):
            node = None if chain else ordinary(data, pos, pos + length, base, kids)
            if node is not None:
                kids[node.name] = node
                continue
            rec = parse_record(data, pos, base + pos, self._su_skip)
            if rec.name in (b"\x00", b"\x01") or rec.flags & FLAG_ASSOCIATED:
                continue
            if chain and rec.name != chain[0].name:
                log.warning("%s: multi-extent file %r ends without its last extent", self.stream.name,
                            chain[0].name)
                self._add(kids, chain)
                chain = []
            chain.append(rec)
            if rec.flags & FLAG_MULTI_EXTENT and not rec.flags & FLAG_DIRECTORY:
                continue
            relocated += self._add(kids, chain)
            chain = []
        if chain:
            self._add(kids, chain)
        return kids, relocated

    def _ordinary_node(self, data: bytes, pos: int, end: int, base: int, kids: dict[str, Node]) -> Optional[Node]:
        """The node of the record ``data[pos:end]`` when it is ordinary: a directory, or a file in one extent,
        with no Rock Ridge entries but PX, TF and one NM (``susp.plain``), and a name not taken yet. Most are,
        and this makes them in one pass over the bytes, what ``_node`` would make of them; for any other
        record it returns None, and ``parse_record`` and ``_add`` make the node."""
        _, ear, extent, size, date, flags, unit, _, _, name_len = unpack_record(data, pos)
        name_end = pos + RECORD_HEADER_SIZE + name_len
        if flags & (FLAG_ASSOCIATED | FLAG_MULTI_EXTENT) or unit or name_end > end or (
                name_len == 1 and data[pos + RECORD_HEADER_SIZE] < 2):  # "." and ".."
            return None
        px, times, nm = None, susp.NO_TIMES, None
        if self._rr:
            found = susp.plain(data, name_end + (1 - name_len % 2) + self._su_skip, end)
            if found is None:
                return None
            px, times, nm = found
        name = nm.decode("utf-8", "surrogateescape") if nm else self._name(data[pos + RECORD_HEADER_SIZE : name_end])
        if name in kids:
            return None  # _unique_name picks another
        mtime = times[0] or parse_date(date)
        atime, ctime = times[1] or mtime, times[2] or mtime
        if px is None:
            permissions, nlink, uid, gid = 0o555 if flags & FLAG_DIRECTORY else 0o444, 1, None, None
        else:
            mode, nlink, uid, gid = px
            if not flags & FLAG_DIRECTORY and (mode & 0o170000 == S_IFLNK or mode & 0o170000 in _SPECIAL):
                return None
            permissions, nlink = mode & 0o7777, nlink or 1
        start = (extent + ear) * self.block_size
        if flags & FLAG_DIRECTORY:
            return Node(name, _DIR_MODES[permissions], size, start, nlink, uid, gid, mtime, atime, ctime, 0, None,
                        DirHandle(start, size))
        if not size:
            return Node(name, _FILE_MODES[permissions], 0, base + pos, nlink, uid, gid, mtime, atime, ctime, 0, None,
                        _EMPTY_FILE)
        return Node(name, _FILE_MODES[permissions], size, start, nlink, uid, gid, mtime, atime, ctime, 0, None, start)

    def _add(self, kids: dict[str, Node], chain: list[Record]) -> int:
        """Add the node for one record (or a multi-extent chain); 1 if it was a relocated directory."""
        first = chain[0]
        rr = susp.parse(first.system_use, self._read_area, first.offset) if self._rr else _NO_ROCK_RIDGE
        if rr.relocated:
            return 1
        name = self._unique_name(first.name, rr, kids)
        kids[name] = self._node(name, chain, rr)
        return 0

    def _unique_name(self, raw: bytes, rr: susp.RockRidge, kids: dict[str, Node]) -> str:
        """The entry's name; on a clash (a directory ``A`` and a file ``A.;1`` in plain ISO 9660) a less
        cleaned-up form of the identifier, else a numbered one, so that no entry is lost. An unsafe name ("..",
        "a/b") is escaped by ``Filesystem.children``, as every format's is."""
        name = rr.name.decode("utf-8", "surrogateescape") if rr.name else self._name(raw)
        if name not in kids:
            return name
        joliet = self._name is clean_joliet_name  # UCS-2, which an odd length or a lone surrogate can break
        identifier = raw.decode("utf-16-be", "replace") if joliet else raw.decode("utf-8", "surrogateescape")
        numbered = (f"{name}~{number}" for number in range(2, len(kids) + 3))  # n entries leave one of these free
        shown = next(c for c in itertools.chain((identifier.split(";")[0], identifier), numbered) if c not in kids)
        log.warning("%s: two entries are named %r; showing one as %r", self.stream.name, name, shown)
        return shown

    # -- nodes -------------------------------------------------------------------------------------

    def _node(self, name: str, chain: list[Record], rr: susp.RockRidge, directory: bool = False) -> Node:
        """The entry of ``chain`` (one record, or a multi-extent file's); ``directory``: a record reached as a
        directory's own (the root's, a relocated directory's "."), which is one whatever its flags say."""
        first = chain[0]
        if rr.child_lba is not None and not directory:  # a relocated deep directory: its "." has its attributes
            return self._relocated_directory(name, rr.child_lba)
        mtime = rr.mtime or parse_date(first.date)
        atime, ctime = rr.atime or mtime, rr.ctime or mtime
        mode = rr.mode
        if mode is None:
            mode = DEFAULT_DIR_MODE if first.flags & FLAG_DIRECTORY else DEFAULT_FILE_MODE
            nlink, uid, gid = 1, None, None
        else:
            nlink, uid, gid = rr.nlink or 1, rr.uid, rr.gid
        permissions = mode & 0o7777
        if directory or first.flags & FLAG_DIRECTORY:
            offset = first.extent * self.block_size
            return Node(name, _DIR_MODES[permissions], first.size, offset, nlink, uid, gid, mtime, atime, ctime, 0,
                        None, DirHandle(offset, first.size))
        kind = mode & 0o170000
        if rr.symlink is not None or kind == S_IFLNK:
            target = rr.symlink or b""
            return Node(name, S_IFLNK | permissions, len(target), first.offset, nlink, uid, gid, mtime, atime,
                        ctime, 0, target)
        if kind in _SPECIAL:
            return Node(name, mode, 0, first.offset, nlink, uid, gid, mtime, atime, ctime, rr.rdev or 0)
        runs = self._runs(chain)
        size = sum(length for _, length in runs)
        ino = runs[0][0] if size else first.offset  # hard links share their data, so their number
        if rr.zf is not None:
            handle: Any = FileHandle(runs, rr.zf)
            size = rr.zf[3]
        else:  # one extent: its offset, the int the inode number holds (FileHandle says why)
            handle = runs[0][0] if len(runs) == 1 else FileHandle(runs, None) if runs else _EMPTY_FILE
        return Node(name, _FILE_MODES[permissions], size, ino, nlink, uid, gid, mtime, atime, ctime, 0, None, handle)

    def _relocated_directory(self, name: str, lba: int) -> Node:
        dot = self._dot_record(DirHandle(lba * self.block_size, self.block_size))
        return self._node(name, [dot], self._rock_ridge(dot) if self._rr else _NO_ROCK_RIDGE, directory=True)

    def _runs(self, chain: list[Record]) -> tuple[tuple[int, int], ...]:
        bs = self.block_size
        if len(chain) == 1 and not chain[0].unit_blocks:
            return ((chain[0].extent * bs, chain[0].size),) if chain[0].size else ()
        runs: list[tuple[int, int]] = []
        for rec in chain:
            if not rec.unit_blocks:
                if rec.size:
                    runs.append((rec.extent * bs, rec.size))
                continue
            block, left = rec.extent, rec.size  # interleaved: file units separated by gaps
            while left > 0:
                if block * bs >= self.stream.size:  # the rest is past the end: one run, EIO when it is read
                    runs.append((block * bs, left))
                    break
                count = min(rec.unit_blocks * bs, left)
                runs.append((block * bs, count))
                left -= count
                block += rec.unit_blocks + rec.gap_blocks
        return tuple(runs)

    # -- data --------------------------------------------------------------------------------------

    def data_runs(self, node: Node) -> tuple[tuple[int, int], ...]:
        """(byte offset, length) of each piece of a file's data as recorded (compressed, for zisofs)."""
        handle = node.handle
        if type(handle) is int:
            return ((handle, node.size),)
        return handle.runs if isinstance(handle, FileHandle) else ()

    def open(self, node: Node) -> Stream:
        handle = node.handle
        if type(handle) is int and node.is_file:  # the common case: one extent, the lightest stream
            return SliceStream(self.stream, handle, node.size, name=f"{self.stream.name}:{node.name}")
        if not isinstance(handle, FileHandle) or not node.is_file:
            raise IsADirectoryError(node.name)
        if not handle.runs and handle.zf is None:  # an empty file: every listing with attributes opens each one
            return _EMPTY
        name = f"{self.stream.name}:{node.name}"  # several runs, or zisofs (one run uncompressed is an int)
        raw = ExtentStream.over(self.stream, handle.runs, name=name)
        if handle.zf is None:
            return raw
        return open_zisofs(raw, handle.zf[0], handle.zf[3], self.cache, raw.name)

    def describe(self) -> dict[str, Any]:
        return {
            "filesystem": "iso9660",
            "namespace": self.namespace,
            "namespaces": list(self.namespaces),
            "label": self.label,
            "block_size": self.block_size,
            "volume_size": self.vd.space_blocks * self.vd.block_size,
            "descriptors": [{"sector": vd.sector, "kind": vd.kind, "volume_id": vd.volume_id,
                             "system_id": vd.system_id} for vd in self.descriptors],
            **({"el_torito": [image.describe() for image in self._boot]} if self._boot else {}),
        }

    def views(self) -> list[View]:
        """The El Torito boot images, each at its true size, as ``boot/NAME``."""
        if self._boot is None:
            # Imported only when the raw views are asked for: El Torito pulls in the FAT and MBR readers
            # (~100 ms of mount time otherwise).
            from imgfs.filesystems.iso9660.eltorito import boot_images

            self._boot = [image for image in boot_images(self.stream, self.descriptors, self) if image.size > 0]
        return [View(f"boot/{image.name}", image.stream()) for image in self._boot]
