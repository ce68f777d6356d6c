"""The one format registry: what each known format looks like, and which reader opens it.

Detection is by content, never by file name. A format has one or more magic byte strings (any one
is enough; a negative offset counts from the end of the stream) and may add a probe for a closer
look. Formats imgfs recognises but does not read yet are listed too, so that the user is told what
the image is rather than that it is nothing.

Three tables:

* ``FORMATS``: what a stream holds. ``kind`` says where detection looks for a format: "container" (it
  wraps a disk), "volumes" (a partition map), "filesystem" (what a partition or a session holds; an
  APFS container is one too, though it opens into several volumes), "wrapper" (a compressed file,
  refused with a hint). Each opener is called as ``opener(stream, ctx)`` (``imgfs.layer``).
* ``SOURCES``: what a path names before any byte is read: a folder (a sparse bundle), a set of files
  (split segments), or one file. The first whose ``claims(path)`` is true opens it.
* ``SHEETS``: finders of the sheet that describes a data file (``Game.bin`` described by ``Game.cue``
  beside it): mounting the data file mounts what the sheet describes.

Detection order (the first match wins), where the table's order is a rule rather than a habit:

1. Containers whose signature is exact come first: the bytes they wrap can match a format below (a
   sparse image of a GPT disk ends with the disk's backup GPT header; a DMG's data may hold "CD001").
2. Optical containers before filesystems: an NRG or a raw 2352-byte sector dump holds "CD001" where an
   ISO has it, shifted or not, and only the container knows which sectors are data.
3. ISO 9660 and UDF before partition maps: a hybrid disc has an Apple partition map or an MBR in its
   first 32 KiB (``namespace=`` picks the other side).
4. GPT before MBR: a GPT disk starts with a protective MBR.
5. Filesystems that start with a boot sector (NTFS, BitLocker, exFAT, FAT) before MBR: their boot sector
   ends in 55 AA as an MBR does; FAT's probe checks its BPB, MBR's its partition entries. NTFS and
   BitLocker come before FAT too: their OEM name at byte 3 ("NTFS    ", "-FVE-FS-") is exact, while an
   NTFS boot sector could pass a lenient BPB check, and BitLocker To Go keeps a FAT32 boot sector ("MSWIN4.1")
   with its GUID at byte 424, which only the BitLocker entry looks for.
6. HFS+ before classic HFS: an HFS+ volume in an HFS wrapper starts with the wrapper's "BD" signature.
7. NDIF (found by the resource fork that travels with the stream) before the containers and filesystems its
   data fork may look like; MacBinary and Disk Copy 4.2, which have no magic number, after every container
   that has one.
8. The refusal of a Disk Copy image whose resource fork is missing comes last: it is only a better message
   than "no known image format".

``-o namespace=NAME`` asks for one of a volume's trees: detection then skips formats that offer other
namespaces but not NAME (``namespace=hfsplus`` skips the ISO 9660 side of a hybrid disc and finds its
Apple partition map), and an image without that side is refused in one line.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Callable, Optional

from imgfs.errors import UnsupportedFormat
from imgfs.io.stream import Stream


@dataclass(frozen=True)
class Magic:
    offset: int  # negative: from the end
    value: bytes

    def find(self, stream: Stream) -> bool:
        start = self.offset if self.offset >= 0 else stream.size + self.offset
        if start < 0 or start + len(self.value) > stream.size:
            return False
        return stream.pread(start, len(self.value)) == self.value

    def __str__(self) -> str:
        where = f"byte {self.offset}" if self.offset >= 0 else f"{-self.offset} bytes before the end"
        return f"{printable(self.value)} at {where}"


def printable(value: bytes) -> str:
    """Magic bytes as a reader can see them: ASCII as is, anything else as \\xNN."""
    return "'" + "".join(chr(b) if 0x20 <= b < 0x7F and b != 0x5C else f"\\x{b:02x}" for b in value) + "'"


@dataclass(frozen=True)
class Format:
    name: str
    description: str
    kind: str  # "filesystem", "volumes" (a partition map), "container" (wraps a disk) or "wrapper"
    magics: tuple[Magic, ...]
    opener: Optional[str] = None  # "module:function" that opens it; None: recognised, not read yet
    probe: Optional[Callable[[Stream], bool]] = None
    hint: str = ""  # what to tell the user when it cannot be read
    namespaces: tuple[str, ...] = ()  # the trees -o namespace= can pick on such a volume, richest first

    def matches(self, stream: Stream) -> bool:
        """Any one magic (a format with none is found by its probe alone), then the probe."""
        return (not self.magics or any(m.find(stream) for m in self.magics)) and \
            (self.probe is None or self.probe(stream))

    def why_not(self) -> str:
        if not self.magics:
            return "its probe did not match"
        return " or ".join(str(m) for m in self.magics) + " not found"


SYNC = b"\x00" + b"\xff" * 10 + b"\x00"  # the sync pattern that starts every raw CD data sector
# 4967d63b-2e29-4ad8-8399-f6a339e3d001 as stored (libbde's notes): BitLocker To Go's mark in a FAT32 boot sector
BITLOCKER_GUID = bytes.fromhex("3bd66749292ed84a8399f6a339e3d001")


def _probe(module: str) -> Callable[[Stream], bool]:
    """A probe that lives with its reader, imported only when the magic bytes already matched."""
    def probe(stream: Stream) -> bool:
        return bool(importlib.import_module(module).probe(stream))

    return probe


def _text_probe(module: str) -> Callable[[Stream], bool]:
    """The probe of a text sheet (it has no magic, so every image is asked): a stream with a NUL byte in its
    first 512 bytes is no text, and the reader is not imported to say so (5 ms of every mount)."""
    def probe(stream: Stream) -> bool:
        return b"\0" not in stream.pread(0, 512) and bool(importlib.import_module(module).probe(stream))

    return probe


def load(dotted: str) -> Callable:
    """The reader a registry entry names, as "module:attribute"."""
    module, _, attribute = dotted.partition(":")
    return getattr(importlib.import_module(module), attribute)


def _has_nsr(stream: Stream) -> bool:
    """UDF: an NSR02/NSR03 descriptor follows BEA01 in the volume recognition sequence."""
    return any(stream.pread(32768 + i * 2048 + 1, 5) in (b"NSR02", b"NSR03") for i in range(1, 8))


def _probe_lost_fork(stream: Stream) -> bool:
    return bool(importlib.import_module("imgfs.containers.companions").probe_lost_fork(stream))


DISC_NAMESPACES = ("rockridge", "udf", "joliet", "iso1999", "iso9660")  # richest first

FORMATS: tuple[Format, ...] = (
    Format("encrcdsa", "encrypted Apple disk image (encrcdsa v2)", "container", (Magic(0, b"encrcdsa"),),
           opener="imgfs.containers.dmg.encrypted:open_encrypted"),
    Format("cdsaencr", "encrypted Apple disk image (cdsaencr v1)", "container", (Magic(-8, b"cdsaencr"),),
           opener="imgfs.containers.dmg.encrypted:open_encrypted"),
    Format("sparseimage", "Apple sparse disk image (.sparseimage)", "container", (Magic(0, b"sprs"),),
           opener="imgfs.containers.sparse:open_sparseimage"),
    Format("asif", "Apple sparse image (ASIF, macOS 26)", "container", (Magic(0, b"shdw"),),
           opener="imgfs.containers.asif:open_asif"),
    Format("udif", "Apple disk image (UDIF .dmg)", "container", (Magic(-512, b"koly"), Magic(0, b"koly")),
           opener="imgfs.containers.dmg:open_udif", probe=_probe("imgfs.containers.dmg")),
    # A Mac file's two forks in one (AppleSingle; an AppleDouble header file alone is refused, naming the file it
    # belongs to): the data fork is detected again, the resource fork travels with it as ``forks["rsrc"]``.
    Format("applesingle", "AppleSingle file (a Mac file's forks in one)", "container",
           (Magic(0, b"\x00\x05\x16\x00"),), opener="imgfs.containers.applesingle:open_applesingle",
           probe=_probe("imgfs.containers.applesingle")),
    Format("appledouble", "AppleDouble header file (the resource fork and Finder info of a file beside it)",
           "container", (Magic(0, b"\x00\x05\x16\x07"),), opener="imgfs.containers.applesingle:open_applesingle",
           probe=_probe("imgfs.containers.applesingle")),
    # NDIF's signature is its 'bcem' resource, in the resource fork that travels with the stream (MacBinary,
    # AppleSingle, a companion file): before everything its data fork may look like (a raw NDIF's data fork
    # can hold an HFS volume, shifted by the zero chunks it leaves out).
    Format("ndif", "Disk Copy 6 image (NDIF .img/.smi)", "container", (), opener="imgfs.containers.ndif:open_ndif",
           probe=_probe("imgfs.containers.ndif")),
    Format("smi", "self-mounting image without its resource fork (PowerPC code, then the disk)", "container",
           (Magic(0, b"Joy!peff"),), opener="imgfs.containers.smi:open_smi"),
    Format("nrg", "Nero image (.nrg)", "container", (Magic(-12, b"NER5"), Magic(-8, b"NERO")),
           opener="imgfs.containers.optical.nrg:open_nrg", probe=_probe("imgfs.containers.optical.nrg")),
    Format("mds", "Alcohol 120% media descriptor (.mds/.mdf)", "container", (Magic(0, b"MEDIA DESCRIPTOR"),),
           opener="imgfs.containers.optical.mds:open_mds"),
    Format("ccd", "CloneCD control file (.ccd/.img)", "container", (),
           opener="imgfs.containers.optical.ccd:open_ccd", probe=_probe("imgfs.containers.optical.ccd")),
    Format("cue", "CUE sheet (BIN/CUE)", "container", (), opener="imgfs.containers.optical.cue:open_cue",
           probe=_text_probe("imgfs.containers.optical.cue")),
    Format("raw-sectors", "raw CD sectors (2352/2448 bytes) without a sheet", "container", (Magic(0, SYNC),),
           opener="imgfs.containers.optical.raw:open_raw_sectors", probe=_probe("imgfs.containers.optical.raw")),
    # No magic number: their headers' fields must agree with each other and with the file's size.
    Format("macbinary", "MacBinary file (a Mac file's forks in one)", "container", (),
           opener="imgfs.containers.macbinary:open_macbinary", probe=_probe("imgfs.containers.macbinary")),
    Format("dc42", "Disk Copy 4.2 image", "container", (Magic(82, b"\x01\x00"),),
           opener="imgfs.containers.dc42:open_dc42", probe=_probe("imgfs.containers.dc42")),
    Format("iso9660", "ISO 9660 filesystem", "filesystem", (Magic(32769, b"CD001"),),
           opener="imgfs.filesystems.optical:open_disc_filesystem", namespaces=DISC_NAMESPACES),
    Format("udf", "UDF filesystem", "filesystem", (Magic(32769, b"BEA01"),), probe=_has_nsr,
           opener="imgfs.filesystems.optical:open_disc_filesystem", namespaces=DISC_NAMESPACES),
    Format("gpt", "GPT partition table", "volumes",
           (Magic(512, b"EFI PART"), Magic(4096, b"EFI PART"), Magic(-512, b"EFI PART"), Magic(-4096, b"EFI PART"),
            Magic(0, b"EFI PART")), opener="imgfs.volumes.gpt:open_gpt"),
    Format("apm", "Apple partition map", "volumes", (Magic(0, b"ER"), Magic(512, b"PM")),
           opener="imgfs.volumes.apm:open_apm", probe=_probe("imgfs.volumes.apm")),
    Format("ntfs", "NTFS filesystem", "filesystem", (Magic(3, b"NTFS    "),),
           opener="imgfs.filesystems.ntfs:NtfsFilesystem"),
    Format("bitlocker", "BitLocker-encrypted volume", "filesystem",
           (Magic(3, b"-FVE-FS-"), Magic(424, BITLOCKER_GUID)),
           hint="not supported (unlock it on Windows, or with dislocker, and mount what it gives)"),
    Format("exfat", "exFAT filesystem", "filesystem", (Magic(3, b"EXFAT   "),),
           opener="imgfs.filesystems.exfat:ExfatFilesystem"),
    Format("fat", "FAT12/16/32 filesystem", "filesystem", (Magic(510, b"\x55\xaa"),),
           opener="imgfs.filesystems.fat:FatFilesystem", probe=_probe("imgfs.filesystems.fat")),
    Format("mbr", "MBR partition table", "volumes", (Magic(510, b"\x55\xaa"),),
           opener="imgfs.volumes.mbr:open_mbr", probe=_probe("imgfs.volumes.mbr")),
    Format("ext", "ext2/3/4 filesystem", "filesystem", (Magic(1080, b"\x53\xef"),),
           opener="imgfs.filesystems.ext:ExtFilesystem", probe=_probe("imgfs.filesystems.ext")),
    Format("hfs+", "HFS+ filesystem", "filesystem",
           (Magic(1024, b"H+\x00\x04"), Magic(1024, b"HX\x00\x05"), Magic(1024, b"BD")),
           opener="imgfs.filesystems.hfsplus:HfsPlusFilesystem", probe=_probe("imgfs.filesystems.hfsplus"),
           namespaces=("hfsplus",)),
    # "BD" at 1024 is an HFS master directory block. The HFS+ entry above takes it when it wraps an HFS+ volume
    # (drEmbedSigWord 'H+', Mac OS 8.1 to 9); this one takes every other, a plain classic HFS volume (its probe
    # refuses a wrapper too, so that the rule holds whatever the order).
    Format("hfs", "classic HFS (Mac OS Standard) filesystem", "filesystem", (Magic(1024, b"BD"),),
           opener="imgfs.filesystems.hfs:HfsFilesystem", probe=_probe("imgfs.filesystems.hfs"), namespaces=("hfs",)),
    Format("apfs", "APFS container", "filesystem", (Magic(32, b"NXSB"),), opener="imgfs.filesystems.apfs:open_apfs",
           probe=_probe("imgfs.filesystems.apfs")),
    Format("xz", "xz-compressed file", "wrapper", (Magic(0, b"\xfd7zXZ\x00"),), hint="decompress it first (unxz)"),
    Format("gzip", "gzip-compressed file", "wrapper", (Magic(0, b"\x1f\x8b"),), hint="decompress it first (gunzip)"),
    Format("bzip2", "bzip2-compressed file", "wrapper", (Magic(0, b"BZh"),), hint="decompress it first (bunzip2)"),
    Format("zstd", "zstd-compressed file", "wrapper", (Magic(0, b"\x28\xb5\x2f\xfd"),),
           hint="decompress it first (unzstd)"),
    Format("compress", "compress(1) .Z file", "wrapper", (Magic(0, b"\x1f\x9d"),),
           hint="decompress it first (uncompress)"),
    # Last, once nothing matched by content: a file named like a Disk Copy image and without a resource fork
    # may be an NDIF whose chunk table was lost with its fork. Its name only chooses the refusal's words.
    Format("lost-fork", "file named like a Disk Copy image, without a resource fork", "container", (),
           opener="imgfs.containers.companions:refuse_lost_fork", probe=_probe_lost_fork),
)
KINDS = ("container", "volumes", "filesystem", "wrapper")
NAMESPACES: tuple[str, ...] = tuple(dict.fromkeys(ns for fmt in FORMATS for ns in fmt.namespaces))


@dataclass(frozen=True)
class Source:
    """What a path names, before any byte is read: ``claims(path)`` says whether it is this; ``opener(path,
    ctx)`` returns the first stream (a ``Layer`` too, that describes the files it opened)."""

    name: str
    description: str
    claims: str  # "module:function"
    opener: str  # "module:function"


SOURCES: tuple[Source, ...] = (
    Source("sparsebundle", "Apple sparse bundle (a folder of bands)", "imgfs.containers.sparse:is_sparsebundle",
           "imgfs.containers.sparse:open_sparsebundle"),
    Source("activedim", "Active@ Disk Image raw set (NAME.dim, data in NAME.dim.001, ...)",
           "imgfs.containers.activedim:claims", "imgfs.containers.activedim:open_dim"),
    Source("companion", "a file whose resource fork is in a companion (._NAME, __MACOSX/._NAME, .AppleDouble/NAME, "
           "NAME/..namedfork/rsrc)", "imgfs.containers.companions:claims",
           "imgfs.containers.companions:open_with_companion"),
    Source("file", "image file (one file, or split segments .001, .002, ... or .000, .001, ...)",
           "imgfs.containers.files:claims",
           "imgfs.containers.files:open_files"),  # last: it takes any path
)
SHEETS: tuple[str, ...] = ("imgfs.containers.optical.sheets:sheet_for",)  # "module:function(path) -> sheet or None"


def open_source(path: str, ctx: Any) -> tuple[Source, Stream]:
    """The source that claims ``path``, and the first stream it opens."""
    for source in SOURCES:
        if load(source.claims)(path):
            return source, load(source.opener)(path, ctx)
    raise UnsupportedFormat(f"{path}: nothing here opens it")  # unreachable: the last source claims any path


def find_sheet(path: str) -> Optional[str]:
    """The sheet that describes the data file ``path``, when one beside it does."""
    for finder in SHEETS:
        sheet = load(finder)(path)
        if sheet:
            return str(sheet)
    return None


def detect(stream: Stream, kinds: Sequence[str] = KINDS, namespace: str = "auto") -> Format:
    """The first registered format of ``kinds`` that the stream matches; the error lists what was tried.

    With a ``namespace``, a format that offers namespaces but not that one is skipped (see the module's doc)."""
    if stream.size == 0:
        raise UnsupportedFormat(f"{stream.name} is empty (0 bytes)")
    skipped: list[Format] = []
    for fmt in FORMATS:
        if fmt.kind not in kinds:
            continue
        if namespace != "auto" and fmt.namespaces and namespace not in fmt.namespaces:
            if fmt.matches(stream):
                skipped.append(fmt)
            continue
        if fmt.matches(stream):
            if fmt.opener is None:
                raise UnsupportedFormat(f"{fmt.description} found: {fmt.hint}", layer=fmt.name)
            return fmt
    if skipped:
        offered = ", ".join(dict.fromkeys(ns for fmt in skipped for ns in fmt.namespaces))
        raise UnsupportedFormat(f"{stream.name} has no {namespace} side: it holds {skipped[0].description} "
                                f"(namespace= can be {offered})")
    tried = tuple(f"{f.name}: {f.why_not()}" for f in FORMATS if f.kind in kinds and f.kind != "wrapper")
    raise UnsupportedFormat(f"no known image format in {stream.name} ({stream.size:,} bytes)", tried=tried)
