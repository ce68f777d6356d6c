"""The one format registry: what each known format looks like, and which reader opens it.

Detection is by content, never by file name. A format has one or more magic byte strings (any one
is enough; a negative offset counts from the end of the stream) and may add a probe for a closer
look. Formats imgfs recognises but does not read yet are listed too, so that the user is told what
the image is rather than that it is nothing.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Callable, Optional

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
        return f"{self.value.decode('latin-1')!r} at {where}"


@dataclass(frozen=True)
class Format:
    name: str
    description: str
    kind: str  # "filesystem", "volumes" (a partition map), "container" (wraps a disk) or "wrapper"
    magics: tuple[Magic, ...]
    opener: Optional[str] = None  # "module:function" that opens it; None: recognised, not read yet
    probe: Optional[Callable[[Stream], bool]] = None
    hint: str = ""  # what to tell the user when it cannot be read

    def matches(self, stream: Stream) -> bool:
        """Any one magic (a format with none is found by its probe alone), then the probe."""
        return (not self.magics or any(m.find(stream) for m in self.magics)) and \
            (self.probe is None or self.probe(stream))

    def why_not(self) -> str:
        if not self.magics:
            return "its probe did not match"
        return " or ".join(str(m) for m in self.magics) + " not found"


SYNC = b"\x00" + b"\xff" * 10 + b"\x00"  # the sync pattern that starts every raw CD data sector


def _probe(module: str) -> Callable[[Stream], bool]:
    """A probe that lives with its reader, imported only when the magic bytes already matched."""
    def probe(stream: Stream) -> bool:
        return bool(importlib.import_module(module).probe(stream))

    return probe


def load(dotted: str) -> Callable:
    """The reader a registry entry names, as "module:attribute"."""
    module, _, attribute = dotted.partition(":")
    return getattr(importlib.import_module(module), attribute)


def _has_nsr(stream: Stream) -> bool:
    """UDF: an NSR02/NSR03 descriptor follows BEA01 in the volume recognition sequence."""
    return any(stream.pread(32768 + i * 2048 + 1, 5) in (b"NSR02", b"NSR03") for i in range(1, 8))


def _is_mdb(stream: Stream) -> bool:
    """A classic HFS master directory block: allocation blocks a non-zero multiple of 512 bytes, and some of them."""
    mdb = stream.pread(1024, 64)
    if len(mdb) < 64:
        return False
    blocks, block_size = int.from_bytes(mdb[18:20], "big"), int.from_bytes(mdb[20:24], "big")
    return blocks > 0 and block_size > 0 and block_size % 512 == 0


FORMATS: tuple[Format, ...] = (
    # First: their signatures are exact, and the bytes they wrap can match the formats below (a sparse
    # image of a GPT disk may end with the disk's backup GPT header).
    Format("encrcdsa", "encrypted Apple disk image (encrcdsa v2)", "container", (Magic(0, b"encrcdsa"),),
           opener="imgfs.containers.dmg.encrypted:open_encrypted"),
    Format("cdsaencr", "encrypted Apple disk image (cdsaencr v1)", "container", (Magic(-8, b"cdsaencr"),),
           opener="imgfs.containers.dmg.encrypted:open_encrypted"),
    Format("sparseimage", "Apple sparse disk image (.sparseimage)", "container", (Magic(0, b"sprs"),),
           opener="imgfs.containers.sparse:open_sparseimage"),
    Format("udif", "Apple disk image (UDIF .dmg)", "container", (Magic(-512, b"koly"), Magic(0, b"koly")),
           opener="imgfs.containers.dmg:open_udif", probe=_probe("imgfs.containers.dmg")),
    # Containers first: an NRG or a raw sector dump may also hold "CD001" where an ISO has it.
    Format("nrg", "Nero image (.nrg)", "container", (Magic(-12, b"NER5"), Magic(-8, b"NERO")),
           opener="imgfs.containers.optical.nrg:open_nrg", probe=_probe("imgfs.containers.optical.nrg")),
    Format("mds", "Alcohol 120% media descriptor (.mds/.mdf)", "container", (Magic(0, b"MEDIA DESCRIPTOR"),),
           opener="imgfs.containers.optical.mds:open_mds"),
    Format("ccd", "CloneCD control file (.ccd/.img)", "container", (),
           opener="imgfs.containers.optical.ccd:open_ccd", probe=_probe("imgfs.containers.optical.ccd")),
    Format("cue", "CUE sheet (BIN/CUE)", "container", (), opener="imgfs.containers.optical.cue:open_cue",
           probe=_probe("imgfs.containers.optical.cue")),
    Format("raw-sectors", "raw CD sectors (2352/2448 bytes) without a sheet", "container", (Magic(0, SYNC),),
           opener="imgfs.containers.optical.raw:open_raw_sectors", probe=_probe("imgfs.containers.optical.raw")),
    Format("iso9660", "ISO 9660 filesystem (Joliet, Rock Ridge)", "filesystem", (Magic(32769, b"CD001"),),
           opener="imgfs.filesystems.optical:open_disc_filesystem"),
    Format("udf", "UDF filesystem", "filesystem", (Magic(32769, b"BEA01"),), probe=_has_nsr,
           opener="imgfs.filesystems.optical:open_disc_filesystem"),
    Format("gpt", "GPT partition table", "volumes",
           (Magic(512, b"EFI PART"), Magic(4096, b"EFI PART"), Magic(-512, b"EFI PART"), Magic(-4096, b"EFI PART"),
            Magic(0, b"EFI PART")), opener="imgfs.volumes.gpt:read_gpt"),
    Format("apm", "Apple partition map", "volumes", (Magic(0, b"ER"), Magic(512, b"PM")),
           opener="imgfs.volumes.apm:read_apm", probe=_probe("imgfs.volumes.apm")),
    Format("exfat", "exFAT filesystem", "filesystem", (Magic(3, b"EXFAT   "),),
           opener="imgfs.filesystems.exfat:ExfatFilesystem"),
    Format("fat", "FAT12/16/32 filesystem", "filesystem", (Magic(510, b"\x55\xaa"),),
           opener="imgfs.filesystems.fat:FatFilesystem", probe=_probe("imgfs.filesystems.fat")),
    Format("mbr", "MBR partition table", "volumes", (Magic(510, b"\x55\xaa"),),
           opener="imgfs.volumes.mbr:read_mbr", probe=_probe("imgfs.volumes.mbr")),
    Format("ext", "ext2/3/4 filesystem", "filesystem", (Magic(1080, b"\x53\xef"),),
           opener="imgfs.filesystems.ext:ExtFilesystem", probe=_probe("imgfs.filesystems.ext")),
    Format("hfs+", "HFS+ filesystem", "filesystem",
           (Magic(1024, b"H+\x00\x04"), Magic(1024, b"HX\x00\x05"), Magic(1024, b"BD")),
           opener="imgfs.filesystems.hfsplus:HfsPlusFilesystem", probe=_probe("imgfs.filesystems.hfsplus")),
    Format("hfs", "classic HFS (Mac OS Standard) filesystem", "filesystem", (Magic(1024, b"BD"),), probe=_is_mdb,
           hint="classic HFS is not supported (only HFS+ and HFSX, also inside an HFS wrapper)"),
    Format("apfs", "APFS container", "filesystem", (Magic(32, b"NXSB"),), hint="APFS is not supported yet"),
    Format("xz", "xz-compressed file", "wrapper", (Magic(0, b"\xfd7zXZ\x00"),), hint="decompress it first (unxz)"),
    Format("gzip", "gzip-compressed file", "wrapper", (Magic(0, b"\x1f\x8b"),), hint="decompress it first (gunzip)"),
    Format("bzip2", "bzip2-compressed file", "wrapper", (Magic(0, b"BZh"),), hint="decompress it first (bunzip2)"),
    Format("zstd", "zstd-compressed file", "wrapper", (Magic(0, b"\x28\xb5\x2f\xfd"),),
           hint="decompress it first (unzstd)"),
    Format("compress", "compress(1) .Z file", "wrapper", (Magic(0, b"\x1f\x9d"),),
           hint="decompress it first (uncompress)"),
)


def detect(stream: Stream, kinds: tuple[str, ...] = ("filesystem", "volumes", "container", "wrapper"),
           skip: tuple[str, ...] = ()) -> Format:
    """The first registered format of ``kinds``, not named in ``skip``, that the stream matches; the error
    lists what was tried."""
    if stream.size == 0:
        raise UnsupportedFormat(f"{stream.name} is empty (0 bytes)")
    for fmt in FORMATS:
        if fmt.kind in kinds and fmt.name not in skip and fmt.matches(stream):
            if fmt.opener is None:
                raise UnsupportedFormat(f"{fmt.description} found: {fmt.hint}", layer=fmt.name)
            return fmt
    tried = "; ".join(f"{f.name}: {f.why_not()}" for f in FORMATS if f.kind in kinds and f.kind != "wrapper")
    raise UnsupportedFormat(f"no known image format in {stream.name} ({stream.size} bytes); tried {tried}")
