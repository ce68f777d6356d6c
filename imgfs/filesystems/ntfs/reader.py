"""NTFS as a lazy tree: each directory is listed from its index the first time it is needed.

At mount only the boot sector, the MFT's own record, $Volume and the root are read. A directory lists from
its $I30 index (see ``index``); a child's MFT record is read when its ``stat`` values are first wanted (see
``nodes``), when it is a link or special file, and when it is opened. File data is never copied: a file is
an ``ExtentStream`` over the volume, or a ``ChunkedStream`` of compression units (LZNT1), or WOF's chunks.

What is shown:

* Inode numbers are MFT record numbers (the root is 5), so hard links share one; a file's link count is
  the number of its names that a directory shows (a DOS 8.3 alias is not one); a directory's is 1.
* Names as stored, POSIX and Win32 (DOS 8.3 duplicates are not shown); look-ups are exact, as on Linux.
* Times: mtime, atime and ctime are $STANDARD_INFORMATION's modified, accessed and record-changed times, to
  the 100 ns tick. Modes are 0644 for files, 0755 for directories, with no owner (``uid=``, ``gid=``,
  ``umask=`` apply).
* Named data streams are ``user.<name>`` extended attributes (as ntfs-3g's ``streams_interface=xattr``),
  those up to 64 KiB, what getxattr can pass; ``system.ntfs_attrib`` is the DOS/NTFS attribute flags
  (read-only, hidden, system, archive, ...) as 4 little-endian bytes, as ntfs-3g gives them.
* Metafiles ($MFT, $LogFile, ..., $Extend) and the contents of "System Volume Information" are hidden; with
  ``-o rawviews`` they are under ``.imgfs/`` (see ``views``).
* EFS-encrypted files list with their size and give EIO when read, with a log line.
"""

from __future__ import annotations

import logging
import stat
import struct
from collections import OrderedDict
from typing import Any, Optional, Union

from imgfs.codecs import lznt1
from imgfs.errors import CorruptImage, EncryptedImage, ImageError
from imgfs.filesystems.base import Filesystem, Node
from imgfs.filesystems.ntfs import journal
from imgfs.filesystems.ntfs.boot import LAYER, read_boot_sector
from imgfs.filesystems.ntfs.index import DirectoryIndex, Entry
from imgfs.filesystems.ntfs.mft import Mft
from imgfs.filesystems.ntfs.nodes import DirHandle, FileHandle, NtfsNode, wait_together
from imgfs.filesystems.ntfs.record import (
    DATA,
    EA,
    FILE_NAME,
    FLAG_ENCRYPTED,
    INDEX_ROOT,
    LOGGED_UTILITY_STREAM,
    REPARSE_POINT,
    STANDARD_INFORMATION,
    VOLUME_INFORMATION,
    VOLUME_NAME,
    Attribute,
    Record,
)
from imgfs.filesystems.ntfs.reparse import (
    INTERIX_MAX_SIZE,
    SPECIAL_TAGS,
    TAG_WOF,
    TAG_WSL_SYMLINK,
    WSL_KINDS,
    Special,
    Translator,
    interix,
    reparse_tag,
    windows_link,
    wsl_device,
    wsl_link,
)
from imgfs.filesystems.ntfs.streams import attribute_stream, first_segment
from imgfs.filesystems.ntfs.values import (
    ATTR_DIRECTORY,
    ATTR_ENCRYPTED,
    ATTR_HIDDEN,
    ATTR_REPARSE_POINT,
    ATTR_SYSTEM,
    DOS,
    StandardInformation,
    extended_attributes,
    volume_flags,
)
from imgfs.io.cache import new_cache_id
from imgfs.io.stream import BytesStream, Stream
from imgfs.layer import OpenContext, View

log = logging.getLogger(__name__)

MFT_RECORD, LOGFILE_RECORD, VOLUME_RECORD, ROOT_RECORD, UPCASE_RECORD = 0, 2, 3, 5, 10
FIRST_USER_RECORD = 16  # records below are metafiles (and reserved); the root lists them, imgfs does not
SYSTEM_VOLUME_INFORMATION = "System Volume Information"
WOF_STREAM = "WofCompressedData"
XATTR_SIZE_MAX = 65536  # what getxattr can return on Linux
FILE_MODE, DIR_MODE, LINK_MODE = stat.S_IFREG | 0o644, stat.S_IFDIR | 0o755, stat.S_IFLNK | 0o777
LOOKUP_MEMO = 16  # directories whose names are kept for resolving link targets


class NtfsFilesystem(Filesystem):
    kind = "ntfs"
    has_xattrs = True
    xattr_prefixes = ("user.", "system.ntfs_attrib")

    def __init__(self, stream: Stream, ctx: OpenContext) -> None:
        super().__init__()
        self.stream = stream
        self.ctx = ctx
        self.cache = ctx.cache
        self.name = stream.name
        self.boot = read_boot_sector(stream)
        self.block_size = self.boot.cluster_size
        self.total_size = self.boot.volume_size
        self.mft = Mft(stream, self.boot)
        self._cache_id = new_cache_id()
        self._names: OrderedDict[int, dict[str, tuple[str, int]]] = OrderedDict()
        self._translator = Translator(self._lookup, ROOT_RECORD)
        self._upcase: Optional[dict[int, int]] = None
        self._big_streams: set[int] = set()  # records whose too large streams were reported
        self.version, self._volume_flags = self._read_volume()
        root = self._record(ROOT_RECORD, "the root directory")
        if not root.header.is_directory:
            raise CorruptImage("MFT record 5, the root, is not a directory", layer=LAYER, offset=root.offset)
        times = self._standard(self.mft.attributes(root), root).times
        self.root = NtfsNode("", DIR_MODE, 0, ROOT_RECORD, 1, None, None, *times,
                             handle=DirHandle(ROOT_RECORD, (ROOT_RECORD,)), owner=self)
        self.children(self.root)  # a broken root fails the mount, not the first ls
        self._warn_about_state()  # only once the mount will happen: a refusal stays one line

    # -- volume --------------------------------------------------------------------------------------

    def _read_volume(self) -> tuple[str, int]:
        attrs = self.mft.attributes(self._record(VOLUME_RECORD, "$Volume"))
        name = next((a.value for a in attrs if a.type == VOLUME_NAME and a.value is not None), b"")
        self.label = name.decode("utf-16-le", "replace")
        info = next((a.value for a in attrs if a.type == VOLUME_INFORMATION and a.value is not None), b"")
        major, minor, flags = volume_flags(info)
        return f"{major}.{minor}", flags

    def _warn_about_state(self) -> None:
        try:
            log_stream: Optional[Stream] = self._data(LOGFILE_RECORD, "")
        except ImageError:
            log_stream = None
        reason = journal.unclean_reason(self._volume_flags, log_stream)
        if reason:
            log.warning("%s: the NTFS volume was not cleanly closed (%s); imgfs does not replay $LogFile, so the "
                        "latest changes may be missing", self.name, reason)
        if self.stream.size < self.total_size:
            log.warning("%s: the image is %d bytes shorter than its NTFS volume; files past the end give EIO",
                        self.name, self.total_size - self.stream.size)

    def _record(self, number: int, what: str) -> Record:
        return self._check(self.mft.record(number), what, None)

    @staticmethod
    def _check(record: Record, what: Optional[str], sequence: Optional[int]) -> Record:
        """``record`` if it is a base record in use (of the sequence a directory entry expects)."""
        header = record.header
        if what is not None and (not header.in_use or header.base):
            raise CorruptImage(f"MFT record {record.number} ({what}) is not in use or not a base record",
                               layer=LAYER, offset=record.offset)
        if sequence is not None and (not header.in_use or header.base or sequence and header.sequence != sequence):
            raise CorruptImage(f"the directory entry names MFT record {record.number} (sequence {sequence}), "
                               f"which is {'in use' if header.in_use else 'not in use'} with sequence "
                               f"{header.sequence}{' as an extension record' if header.base else ''}",
                               layer=LAYER, offset=record.offset)
        return record

    def _standard(self, attrs: list[Attribute], record: Record) -> StandardInformation:
        value = next((a.value for a in attrs if a.type == STANDARD_INFORMATION and a.value is not None), None)
        if value is None:
            raise CorruptImage(f"MFT record {record.number} has no $STANDARD_INFORMATION", layer=LAYER,
                               offset=record.offset)
        return StandardInformation.parse(value, record.number)

    def _data(self, number: int, stream_name: str) -> Stream:
        """A metafile's data stream (plain: metafiles are never compressed)."""
        attrs = self.mft.attributes(self.mft.record(number))
        segments = [a for a in attrs if a.type == DATA and a.name == stream_name]
        if not segments:
            raise CorruptImage(f"MFT record {number} has no $DATA {stream_name!r}", layer=LAYER)
        return self.mft.attribute_stream(segments, f"{self.name}:record {number}")

    # -- directories ---------------------------------------------------------------------------------

    def _index(self, record: Record, attrs: list[Attribute]) -> DirectoryIndex:
        return DirectoryIndex(record.number, attrs, self.boot.cluster_size, self.mft.attribute_stream,
                              lambda vcn, load: self.cache.get((self._cache_id, record.number, vcn), load))

    def _entries(self, number: int) -> list[Entry]:
        record = self._record(number, "a directory")
        if not record.header.is_directory:
            raise CorruptImage(f"MFT record {number} is listed as a directory but is not one", layer=LAYER,
                               offset=record.offset)
        return list(self._index(record, self.mft.attributes(record)).entries())

    def _load_children(self, node: Node) -> dict[str, Node]:
        handle: DirHandle = node.handle
        if handle.hidden:
            return {}
        kids: dict[str, Node] = {}
        for entry in self._entries(handle.record):
            name = self._shown_name(entry, handle)
            if name is None:
                continue
            if name in kids:
                if kids[name].ino != entry.record:
                    log.warning("%s: two entries of directory record %d are named %r; showing the first",
                                self.name, handle.record, name)
                continue
            try:
                child = self._node(name, entry, handle)
            except ImageError as exc:
                log.warning("%s: %r in directory record %d skipped: %s", self.name, name, handle.record, exc)
                continue
            if child is not None:
                kids[name] = child
        wait_together(self, list(kids.values()))
        return kids

    def _shown_name(self, entry: Entry, handle: DirHandle) -> Optional[str]:
        """The name an index entry is shown under, or None for entries that are not shown."""
        key = entry.key
        if key.namespace == DOS:
            return None  # the 8.3 alias of a name listed beside it
        if entry.record == handle.record:
            if not (handle.record == ROOT_RECORD and key.name == "."):
                log.warning("%s: directory record %d lists itself as %r; skipped", self.name, handle.record,
                            key.name)
            return None
        if handle.record == ROOT_RECORD and entry.record < FIRST_USER_RECORD:
            return None  # a metafile
        if key.parent != handle.record:
            log.warning("%s: directory record %d lists %r, whose name says its parent is record %d; skipped",
                        self.name, handle.record, key.name, key.parent)
            return None
        if not key.name or key.name in (".", "..") or "/" in key.name or "\0" in key.name:
            log.warning("%s: directory record %d has an entry named %r, which Linux cannot show; skipped",
                        self.name, handle.record, key.name)
            return None
        return key.name

    def _node(self, name: str, entry: Entry, parent: DirHandle) -> Optional[Node]:
        key = entry.key
        if key.flags & ATTR_REPARSE_POINT and key.reparse_tag in SPECIAL_TAGS:
            return self._special_node(name, entry, parent)
        if key.is_directory:
            handle = self._folder(name, entry.record, parent)
            if handle is None:
                return None
            return NtfsNode(name, DIR_MODE, 0, entry.record, 1, None, None, *key.times, handle=handle, owner=self)
        if key.flags & ATTR_SYSTEM and not key.flags & ATTR_HIDDEN and key.data_size <= INTERIX_MAX_SIZE:
            return self._special_node(name, entry, parent)  # maybe an Interix link, device, FIFO or socket
        return NtfsNode(name, FILE_MODE, key.data_size, entry.record, 1, None, None, *key.times,
                        handle=FileHandle(entry.record, entry.sequence), owner=self)

    def _folder(self, name: str, record: int, parent: DirHandle) -> Optional[DirHandle]:
        """A child folder's handle; None (with a warning) when it is one of its own ancestors: a loop."""
        if record in parent.folders:
            log.warning("%s: directory record %d lists one of its own ancestors (record %d) as %r; skipped",
                        self.name, parent.record, record, name)
            return None
        hidden = parent.record == ROOT_RECORD and name == SYSTEM_VOLUME_INFORMATION
        return DirHandle(record, (*parent.folders, record), hidden)

    def _special_node(self, name: str, entry: Entry, parent: DirHandle) -> Optional[Node]:
        """A link or special file: its record is read now, for its target or device number."""
        record = self._file_record(FileHandle(entry.record, entry.sequence))
        attrs = self.mft.attributes(record)
        standard = self._standard(attrs, record)
        special = self._special(attrs, standard.flags, parent)
        names = self._link_count(attrs)
        if special is None:
            if record.header.is_directory:  # a folder with a reparse point of another kind
                folder = self._folder(name, entry.record, parent)
                return None if folder is None else NtfsNode(name, DIR_MODE, 0, entry.record, 1, None, None,
                                                            *standard.times, handle=folder, owner=self)
            size = self._data_size(attrs)
            return NtfsNode(name, FILE_MODE, size, entry.record, names, None, None, *standard.times,
                            handle=FileHandle(entry.record, entry.sequence))
        size = len(special.target) if special.target is not None else 0
        mode = LINK_MODE if special.kind == stat.S_IFLNK else special.kind | 0o644
        node = NtfsNode(name, mode, size, entry.record, names, None, None, *standard.times, special.rdev,
                        special.target, FileHandle(entry.record, entry.sequence))
        node.remember(self._attrib(standard, record), False)
        return node

    def _special(self, attrs: list[Attribute], flags: int, parent: DirHandle) -> Optional[Special]:
        reparse = next((a for a in attrs if a.type == REPARSE_POINT), None)
        if reparse is not None and flags & ATTR_REPARSE_POINT:
            tag, payload = reparse_tag(self._value(reparse))
            if tag == TAG_WSL_SYMLINK:
                target = wsl_link(payload)
                return None if target is None else Special(stat.S_IFLNK, target)
            if tag in WSL_KINDS:
                ea = next((a for a in attrs if a.type == EA), None)
                device = wsl_device(extended_attributes(self._value(ea), ea.record)) if ea is not None else 0
                return Special(WSL_KINDS[tag], rdev=device)
            link = windows_link(tag, payload)
            if link is None:
                return None
            return Special(stat.S_IFLNK, self._translator.target(link, parent.folders))
        if flags & ATTR_SYSTEM and not flags & ATTR_HIDDEN and not any(a.type == INDEX_ROOT for a in attrs):
            size = self._data_size(attrs)
            if size <= 1:
                return Special(stat.S_IFIFO if size == 0 else stat.S_IFSOCK)
            if size <= INTERIX_MAX_SIZE:
                data = self._unnamed(attrs, "a system file")
                return interix(data.pread(0, size))
        return None

    def _value(self, attr: Attribute) -> bytes:
        """A small attribute's value, resident or not."""
        if attr.value is not None:
            return attr.value
        if attr.data_size > XATTR_SIZE_MAX:
            raise CorruptImage(f"MFT record {attr.record}: attribute 0x{attr.type:x} of {attr.data_size} bytes, "
                               "expected a small one", layer=LAYER, offset=attr.offset)
        return self.mft.attribute_stream([attr]).pread(0, attr.data_size)

    # -- records of files ----------------------------------------------------------------------------

    def _file_record(self, handle: FileHandle) -> Record:
        return self._check(self.mft.record(handle.record), None, handle.sequence)

    @staticmethod
    def _link_count(attrs: list[Attribute]) -> int:
        """The names a folder shows: every $FILE_NAME but the DOS 8.3 aliases (namespace, byte 65)."""
        names = sum(1 for a in attrs if a.type == FILE_NAME and a.value is not None and len(a.value) > 65
                    and a.value[65] != DOS)
        return max(1, names)

    @staticmethod
    def _data_size(attrs: list[Attribute]) -> int:
        segments = [a for a in attrs if a.type == DATA and not a.name]
        return first_segment(segments).size if segments else 0

    def settle_many(self, nodes: list[NtfsNode]) -> None:
        """The stat values of nodes listed from an index (``nodes.Siblings``), their records read together."""
        records = self.mft.records([node.handle.record for node in nodes])
        for node in nodes:
            try:
                self._settle(node, records[node.handle.record])
            except ImageError as exc:
                log.warning("%s: %r: the directory's copy of its size and times is shown: %s", self.name, node.name,
                            exc)

    def _settle(self, node: NtfsNode, record: Union[Record, CorruptImage]) -> None:
        if isinstance(record, CorruptImage):
            raise record
        handle = node.handle
        folder = isinstance(handle, DirHandle)
        self._check(record, "a directory" if folder else None, None if folder else handle.sequence)
        summary = record.summary()
        if summary is None or summary.standard is None:  # an attribute list: the long way
            self._settle_from_attributes(node, record, folder)
            return
        standard = StandardInformation.parse(summary.standard, record.number)
        node.size = summary.index_size if folder else summary.data_size
        node.nlink = 1 if folder else max(1, summary.names)
        node.mtime_ns, node.atime_ns, node.ctime_ns = standard.times
        node.remember(self._attrib(standard, record), summary.streams)

    def _settle_from_attributes(self, node: NtfsNode, record: Record, folder: bool) -> None:
        attrs = self.mft.attributes(record)
        if folder:
            node.size = self._index(record, attrs).allocated_size
        else:
            node.size = self._data_size(attrs)
            node.nlink = self._link_count(attrs)
        standard = self._standard(attrs, record)
        node.mtime_ns, node.atime_ns, node.ctime_ns = standard.times
        node.remember(self._attrib(standard, record), bool(self._stream_names(attrs)))

    # -- data ----------------------------------------------------------------------------------------

    def _unnamed(self, attrs: list[Attribute], what: str) -> Stream:
        segments = [a for a in attrs if a.type == DATA and not a.name]
        if not segments:
            return BytesStream(b"", name=f"{self.name}:{what}")
        return attribute_stream(self.stream, self.boot, segments, self.cache, lznt1.decompress, f"{self.name}:{what}")

    def open(self, node: Node) -> Stream:
        if not node.is_file:
            raise IsADirectoryError(node.name)
        if isinstance(node, NtfsNode):
            node.settle()
        record = self._file_record(node.handle)
        attrs = self.mft.attributes(record)
        standard = self._standard(attrs, record)
        if standard.flags & ATTR_ENCRYPTED or any(a.type == DATA and a.flags & FLAG_ENCRYPTED for a in attrs) \
                or any(a.type == LOGGED_UTILITY_STREAM and a.name == "$EFS" for a in attrs):
            log.warning("%s: %r is EFS-encrypted; imgfs cannot decrypt it", self.name, node.name)
            raise EncryptedImage(f"{node.name!r} is encrypted (EFS)", layer=LAYER, offset=record.offset)
        reparse = next((a for a in attrs if a.type == REPARSE_POINT), None)
        if reparse is not None and reparse_tag(self._value(reparse))[0] == TAG_WOF:
            return self._wof(attrs, reparse, node.name)
        return self._unnamed(attrs, node.name)

    def _wof(self, attrs: list[Attribute], reparse: Attribute, name: str) -> Stream:
        """A WOF-compressed file (CompactOS): its chunks are in the WofCompressedData stream."""
        from imgfs.codecs import wof  # here: its decoders' tables take longer to set up than a mount should wait

        algorithm = wof.parse_reparse_data(reparse_tag(self._value(reparse))[1], layer=LAYER)
        segments = [a for a in attrs if a.type == DATA and a.name == WOF_STREAM]
        if not segments:
            raise CorruptImage(f"{name!r} has a WOF reparse point but no {WOF_STREAM} stream", layer=LAYER,
                               offset=reparse.offset)
        data = attribute_stream(self.stream, self.boot, segments, self.cache, lznt1.decompress,
                                f"{self.name}:{name}:{WOF_STREAM}")
        return wof.open_wof(data, self._data_size(attrs), algorithm, self.cache, f"{self.name}:{name}")

    # -- extended attributes -------------------------------------------------------------------------

    @staticmethod
    def _attrib(standard: StandardInformation, record: Record) -> int:
        """The DOS/NTFS attribute flags as ntfs-3g's system.ntfs_attrib gives them: 0x10 on folders."""
        return standard.flags | (ATTR_DIRECTORY if record.header.is_directory else 0)

    def _stream_names(self, attrs: list[Attribute]) -> list[str]:
        """The named data streams shown as xattrs (a WOF file's compressed data is not one)."""
        names = sorted({a.name for a in attrs if a.type == DATA and a.name})
        return [n for n in names if n != WOF_STREAM] if WOF_STREAM in names and self._is_wof(attrs) else names

    def xattrs(self, node: Node) -> dict[str, bytes]:
        if isinstance(node, NtfsNode):
            node.settle()
            if node.attrib is not None and not (node.streams and (node.is_file or node.is_dir)):
                return {"system.ntfs_attrib": node.attrib.to_bytes(4, "little")}  # no record read: ls asks a lot
        handle = node.handle
        record = self._file_record(handle) if isinstance(handle, FileHandle) else self._record(handle.record, "")
        attrs = self.mft.attributes(record)
        shown = {"system.ntfs_attrib": self._attrib(self._standard(attrs, record), record).to_bytes(4, "little")}
        if not (node.is_file or node.is_dir):
            return shown  # Linux allows user.* attributes only on files and directories
        for name in self._stream_names(attrs):
            segments = [a for a in attrs if a.type == DATA and a.name == name]
            size = first_segment(segments).size
            if size > XATTR_SIZE_MAX:
                if record.number not in self._big_streams:  # once, not at every getxattr
                    self._big_streams.add(record.number)
                    log.warning("%s: %r's stream %r (%d bytes) is too large for an xattr; not shown", self.name,
                                node.name, name, size)
                continue
            stream = attribute_stream(self.stream, self.boot, segments, self.cache, lznt1.decompress, name)
            shown[f"user.{name}"] = stream.pread(0, size)
        return shown

    def _is_wof(self, attrs: list[Attribute]) -> bool:
        reparse = next((a for a in attrs if a.type == REPARSE_POINT), None)
        return reparse is not None and reparse_tag(self._value(reparse))[0] == TAG_WOF

    # -- name look-ups for link targets --------------------------------------------------------------

    def _lookup(self, folder: int, name: str) -> Optional[tuple[str, int]]:
        """``name`` in directory record ``folder``: exactly, else without regard to case (as Windows)."""
        names = self._names.get(folder)
        if names is None:
            names = {}
            try:
                entries = self._entries(folder)
            except ImageError:
                entries = []
            for entry in entries:
                if entry.key.namespace != DOS and entry.record != folder:
                    names.setdefault(entry.key.name, (entry.key.name, entry.record))
                    names.setdefault("\0" + self._upper(entry.key.name), (entry.key.name, entry.record))
            self._names[folder] = names
            while len(self._names) > LOOKUP_MEMO:
                self._names.popitem(last=False)
        return names.get(name) or names.get("\0" + self._upper(name))

    def _upper(self, name: str) -> str:
        """Upper case as NTFS compares names: through the volume's $UpCase table."""
        if self._upcase is None:
            self._upcase = self._load_upcase()
        return name.translate(self._upcase)

    def _load_upcase(self) -> dict[int, int]:
        try:
            data = self._data(UPCASE_RECORD, "").pread(0, 1 << 17)
        except ImageError as exc:
            log.warning("%s: $UpCase cannot be read (%s); names compare with Python's upper case", self.name, exc)
            return {c: ord(chr(c).upper()) for c in range(0x10000) if len(chr(c).upper()) == 1 and
                    chr(c).upper() != chr(c)}
        table = struct.unpack(f"<{len(data) // 2}H", data[: len(data) // 2 * 2])
        return {c: u for c, u in enumerate(table) if c != u}

    # -- what imgfs info shows -----------------------------------------------------------------------

    def describe(self) -> dict[str, Any]:
        return {"filesystem": "ntfs", "label": self.label, "version": self.version,
                "dirty": bool(self._volume_flags & journal.VOLUME_IS_DIRTY), "mft_records": self.mft.record_count,
                **self.boot.describe()}

    def views(self) -> list[View]:
        from imgfs.filesystems.ntfs.views import raw_views

        return raw_views(self)

