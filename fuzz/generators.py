"""Generated seeds: small images made by the real tools and by the tests' writers, one generator per target
(``GENERATORS``); ``fuzz/seeds.py`` encodes them and adds the corpus. Each yields (name, image bytes), or
(name, [(file name, bytes)]) for a multi-file target.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent / "tests")]

from targets import PASSPHRASE  # noqa: E402

Files = list[tuple[str, bytes]]


def _run(*command: str, **kwargs) -> None:
    subprocess.run(command, check=True, capture_output=True, **kwargs)


def _tree(root: Path, many: int = 3) -> Path:
    """A small tree with what readers trip on: nesting, long and non-ASCII names, a symlink, a hard link."""
    (root / "dir" / "sub" / "deeper").mkdir(parents=True)
    (root / "dir" / "sub" / "deeper" / "leaf.txt").write_bytes(b"leaf\n")
    (root / "readme.txt").write_bytes(b"hello\n" * 20)
    (root / ("long name " + "x" * 90 + ".txt")).write_bytes(b"long\n")
    (root / "caf\u00e9.txt").write_bytes(b"cafe\n")
    (root / "data.bin").write_bytes(bytes(range(256)) * 40)
    for i in range(many):
        (root / "dir" / f"f{i}.txt").write_bytes(f"{i}\n".encode())
    os.symlink("readme.txt", root / "link")
    os.link(root / "readme.txt", root / "dir" / "hard.txt")
    return root


# -- generators: target name -> images (name, bytes) or files ---------------------------------------------


def gen_iso(work: Path) -> Iterator[tuple[str, bytes]]:
    src = _tree(work / "src")
    for name, command in (("xorriso-rr-joliet", ["xorriso", "-as", "mkisofs", "-R", "-J"]),
                          ("genisoimage-plain", ["genisoimage"]),
                          ("xorriso-iso1999", ["xorriso", "-as", "mkisofs", "-R", "-iso-level", "4"])):
        out = work / f"{name}.iso"
        _run(*command, "-quiet", "-V", "SEED", "-o", str(out), str(src))
        yield name, out.read_bytes()
    zsrc = work / "zsrc"
    zsrc.mkdir()
    (zsrc / "packed.txt").write_bytes(b"row\n" * 20000)
    out = work / "zisofs.iso"
    _run("xorriso", "-outdev", str(out), "-zisofs", "block_size=32k", "-map", str(zsrc), "/", "-set_filter_r",
         "--zisofs", "/packed.txt", "--")
    yield "zisofs", out.read_bytes()


def gen_udf(work: Path) -> Iterator[tuple[str, bytes]]:
    from udfbuild import UdfBuilder

    for partition in ("physical", "sparable", "virtual", "metadata"):
        b = UdfBuilder(partition=partition)
        b.add_dir("/dir")
        b.add_file("/dir/a.txt", b"hello\n")
        b.add_file("/big.bin", bytes(range(256)) * 20)
        b.add_symlink("/link", "dir/a.txt")
        out = work / f"udf-{partition}.img"
        b.write(str(out))
        yield f"udf-{partition}", out.read_bytes()


def gen_hfsplus(work: Path) -> Iterator[tuple[str, bytes]]:
    from hfswriter import Dir, File, Symlink, build, decmpfs_fork, decmpfs_inline, wrap

    shared = File(b"shared\n")
    tree = Dir({"a.txt": File(b"a\n" * 50, rsrc=b"resource"), "dir": Dir({"b": File(b"b")}, xattrs={"user.x": b"1"}),
                "link": Symlink(b"a.txt"), "one": shared, "two": shared,
                "packed": File(decmpfs=decmpfs_fork(4, b"compressible " * 400)),
                "inline": File(decmpfs=decmpfs_inline(3, b"small " * 20))})
    yield "hfsplus", build(tree, block_size=512, catalog_node_size=512).image
    yield "hfsx", build(tree, block_size=4096, hfsx=True, binary=True).image
    yield "hfs-wrapped", wrap(build(tree, block_size=512)).image


def gen_fat(work: Path) -> Iterator[tuple[str, bytes]]:
    src = work / "src"
    (src / "dir" / "sub").mkdir(parents=True)
    (src / "dir" / "sub" / "leaf.txt").write_bytes(b"leaf\n")
    (src / "A long file name.txt").write_bytes(b"long\n" * 100)
    (src / "SHORT.TXT").write_bytes(b"short\n")
    for bits, size_kb in ((12, 720), (16, 8192), (32, 34000)):  # sparse: the size costs nothing
        out = work / f"fat{bits}.img"
        _run("mkfs.fat", "-C", "-F", str(bits), *(["-s", "1"] if bits > 12 else []), "-n", "SEED", str(out),
             str(size_kb))
        _run("mcopy", "-s", "-i", str(out), *[str(p) for p in src.iterdir()], "::/",
             env={**os.environ, "MTOOLS_SKIP_CHECK": "1"})
        yield f"fat{bits}", out.read_bytes()


def gen_exfat(work: Path) -> Iterator[tuple[str, bytes]]:
    for cluster in ("4K", "512"):
        out = work / f"exfat-{cluster}.img"
        with open(out, "wb") as f:
            f.truncate(8 << 20)
        _run("mkfs.exfat", "-c", cluster, "-L", "SEED", str(out))
        image = bytearray(out.read_bytes())
        yield f"exfat-{cluster}-empty", bytes(image)
        _ExfatFiller(image).fill()
        yield f"exfat-{cluster}-files", bytes(image)
    yield "exfat-fs-explorer", _fs_explorer(work, "exfat", "exfat", "UDRW").read_bytes()


class _ExfatFiller:
    """Puts a few entries into a fresh exFAT volume (mkfs.exfat cannot fill one): a contiguous file, a folder
    with a file whose clusters follow the FAT, written from the exFAT specification."""

    def __init__(self, image: bytearray) -> None:
        self.image = image
        sector = 1 << image[108]
        self.cluster_size = sector << image[109]
        self.fat, self.heap = (int.from_bytes(image[at : at + 4], "little") * sector for at in (80, 88))
        self.root = int.from_bytes(image[96:100], "little")
        root = self.at(self.root)
        bitmap = next(root + i for i in range(0, self.cluster_size, 32) if image[root + i] == 0x81)
        self.bitmap = self.at(int.from_bytes(image[bitmap + 20 : bitmap + 24], "little"))
        self.next = max(c for c in range(2, 4096) if image[self.bitmap + (c - 2) // 8] >> ((c - 2) % 8) & 1) + 1

    def at(self, cluster: int) -> int:
        return self.heap + (cluster - 2) * self.cluster_size

    def allocate(self, count: int, chained: bool) -> int:
        first = self.next
        for c in range(first, first + count):
            self.image[self.bitmap + (c - 2) // 8] |= 1 << ((c - 2) % 8)
            if chained:
                self.image[self.fat + 4 * c : self.fat + 4 * c + 4] = \
                    (c + 1 if c < first + count - 1 else 0xFFFFFFFF).to_bytes(4, "little")
        self.next += count
        return first

    def add(self, directory: int, name: str, data: bytes = b"", is_dir: bool = False, chained: bool = False) -> int:
        count = max(1, -(-len(data) // self.cluster_size))
        first = self.allocate(count, chained)
        self.image[self.at(first) : self.at(first) + len(data)] = data
        size = self.cluster_size if is_dir else len(data)
        units = name.encode("utf-16-le")
        names = [units[i : i + 30].ljust(30, b"\0") for i in range(0, len(units), 30)]
        entries = [bytearray(32) for _ in range(2 + len(names))]
        entries[0][0:2] = bytes([0x85, 1 + len(names)])
        entries[0][4:6] = (0x10 if is_dir else 0x20).to_bytes(2, "little")
        entries[0][8:20] = (0x5A8C4C21).to_bytes(4, "little") * 3  # 2025-04-12 09:34:02, three times
        entries[1][0:4] = bytes([0xC0, 1 if chained else 3, 0, len(name)])
        entries[1][4:6] = _exfat_hash(name.upper().encode("utf-16-le")).to_bytes(2, "little")
        entries[1][8:16] = entries[1][24:32] = size.to_bytes(8, "little")
        entries[1][20:24] = first.to_bytes(4, "little")
        for entry, part in zip(entries[2:], names):
            entry[0], entry[2:32] = 0xC1, part
        checksum = 0
        for index, byte in enumerate(b"".join(entries)):
            if index not in (2, 3):
                checksum = (((checksum << 15) | (checksum >> 1)) + byte) & 0xFFFF
        entries[0][2:4] = checksum.to_bytes(2, "little")
        start = self.at(directory)
        slot = next(i for i in range(0, self.cluster_size, 32) if self.image[start + i] == 0)
        self.image[start + slot : start + slot + 32 * len(entries)] = b"".join(entries)
        return first

    def fill(self) -> None:
        self.add(self.root, "hello.txt", b"hello exfat\n" * 40)
        folder = self.add(self.root, "A folder with a long name", is_dir=True)
        self.add(folder, "inner.bin", bytes(range(256)) * (2 * self.cluster_size // 256 + 1), chained=True)


def _exfat_hash(data: bytes) -> int:
    value = 0
    for byte in data:
        value = (((value << 15) | (value >> 1)) + byte) & 0xFFFF
    return value


def gen_ext(work: Path) -> Iterator[tuple[str, bytes]]:
    src = _tree(work / "src")
    for name, options in (("ext2", ["-t", "ext2"]), ("ext4", ["-t", "ext4", "-O", "^has_journal"]),
                          ("ext4-inline", ["-t", "ext4", "-O", "^has_journal,inline_data", "-I", "256"]),
                          ("ext3", ["-t", "ext3", "-J", "size=1"])):
        out = work / f"{name}.img"
        _run("mke2fs", "-q", "-F", *options, "-b", "1024", "-N", "64", "-d", str(src), str(out), "4M")
        yield name, out.read_bytes()


def gen_hfs(work: Path) -> Iterator[tuple[str, bytes]]:
    from hfstools import build_floppy, build_volume

    for name, build in (("hfs-volume", build_volume), ("hfs-floppy", build_floppy)):
        folder = work / name
        folder.mkdir()
        yield name, build(folder)[0].read_bytes()


def gen_ntfs(work: Path) -> Iterator[tuple[str, bytes]]:
    from ntfstools import copy_tree, mkntfs, ntfs3g

    for cluster in (512, 4096):
        image = mkntfs(work / f"ntfs-{cluster}.img", 4 << 20, cluster, label="SEED")
        yield f"ntfs-{cluster}-empty", _unfilled(image.read_bytes())
        with ntfs3g(image, work / f"mnt-{cluster}", "streams_interface=xattr") as mnt:
            copy_tree(_tree(work / f"src-{cluster}"), mnt)
        yield f"ntfs-{cluster}-files", _unfilled(image.read_bytes())


def _unfilled(image: bytes) -> bytes:
    """mkntfs fills the $LogFile's pages (a megabyte) with 0xFF: zeros there keep the seed small."""
    filled = b"\xff" * 512
    blocks = (image[i : i + 512] for i in range(0, len(image), 512))
    return b"".join(bytes(512) if block == filled else block for block in blocks)


def _fs_explorer(work: Path, name: str, fs: str, image_format: str, layout: str = "NONE") -> Path:
    """An image fs-explorer (BSD-3, a dev dependency) writes of the small tree."""
    out = work / f"{name}.dmg"
    _run(sys.executable, "-m", "fs_explorer", "create", "dmg", "--fs", fs, "--format", image_format, "--layout",
         layout, "-f", "--volname", "SEED", str(out), str(_tree(work / f"src-{name}")))
    return out


def gen_apfs(work: Path) -> Iterator[tuple[str, bytes]]:
    yield "apfs", _fs_explorer(work, "apfs", "apfs", "UDRW").read_bytes()  # UDRW: the raw volume itself


def gen_oldmac(work: Path) -> Iterator[tuple[str, Files]]:
    from macwriter import MacFile, appledouble, applesingle, dc42, macbinary, ndif, ndif_resource_fork

    disk = _small_disk(work)
    yield "dc42", [("disk.image", dc42(disk[: 400 << 10].ljust(400 << 10, b"\0")))]
    data, bcem = ndif(disk, [2, 0x83], chunk_sectors=64)
    fork = ndif_resource_fork(bcem)
    image = MacFile(b"disk.img", data, fork, b"rohd", b"ddsk", 0, 0, 0)
    yield "ndif-macbinary", [("disk.img.bin", macbinary(image))]
    yield "ndif-appledouble", [("disk.img", data), ("._disk.img", appledouble(image))]
    yield "applesingle", [("disk.as", applesingle(MacFile(b"disk", disk, b"", b"rohd", b"ddsk", 0, 0, 0)))]

def _small_disk(work: Path) -> bytes:
    out = work / "fat.img"
    out.unlink(missing_ok=True)
    _run("mkfs.fat", "-C", "-F", "12", "-n", "INNER", str(out), "360")
    (work / "in.txt").write_bytes(b"inside\n" * 30)
    _run("mcopy", "-i", str(out), str(work / "in.txt"), "::/", env={**os.environ, "MTOOLS_SKIP_CHECK": "1"})
    return out.read_bytes()


def gen_partitions(work: Path) -> Iterator[tuple[str, bytes]]:
    disk = work / "disk.img"
    for name, script in (("mbr", "label: dos\n,1M,c\n,4M,5\n,1M,83\n,1M,83\n"),
                         ("gpt", "label: gpt\n,1M,L\n,1M,U\n")):
        disk.unlink(missing_ok=True)
        with open(disk, "wb") as f:
            f.truncate(8 << 20)
        _run("sfdisk", "-q", str(disk), input=script.encode())
        data = bytearray(disk.read_bytes())
        fat = _small_disk(work)
        data[1 << 20 : (1 << 20) + len(fat)] = fat  # a filesystem in the first partition
        yield name, bytes(data)


def gen_udif(work: Path) -> Iterator[tuple[str, bytes]]:
    from udifwriter import write_udif

    disk = _small_disk(work)
    for codec in ("zlib", "bzip2", "xz", "lzma-alone", "lzfse", "adc", "raw"):
        out = work / f"{codec}.dmg"
        write_udif(out, disk, codec=codec, chunk_sectors=64)
        yield f"udif-{codec}", out.read_bytes()
    out = work / "rsrc.dmg"
    write_udif(out, disk, metadata="rsrc", zeros="ignore")
    yield "udif-rsrc", out.read_bytes()


def gen_encrypted(work: Path) -> Iterator[tuple[str, bytes]]:
    from applewriter import write_cdsaencr, write_encrcdsa

    disk = _small_disk(work)[: 64 << 10]
    for name, kwargs in (("encrcdsa-3des", {}), ("encrcdsa-aes", {"blob_cipher": "aes", "key_bits": 128})):
        out = work / f"{name}.dmg"
        write_encrcdsa(out, disk, PASSPHRASE, iterations=1000, block_size=512, **kwargs)
        yield name, out.read_bytes()
    out = work / "cdsaencr.dmg"
    write_cdsaencr(out, disk, PASSPHRASE, iterations=1000)
    yield "cdsaencr", out.read_bytes()


def _folder_files(folder: Path, top: str) -> Files:
    return [(f"{top}/{p.relative_to(folder)}", p.read_bytes()) for p in sorted(folder.rglob("*")) if p.is_file()]


def gen_sparse(work: Path) -> Iterator[tuple[str, Files]]:
    from applewriter import write_sparsebundle, write_sparseimage

    disk = _small_disk(work)
    asif = _fs_explorer(work, "asif", "exfat", "ASIF", layout="GPT")
    yield "asif", [("image.asif", asif.read_bytes())]
    out = work / "image.sparseimage"
    write_sparseimage(out, disk, sectors_per_band=16)
    yield "sparseimage", [("image.sparseimage", out.read_bytes())]
    bundle = work / "b.sparsebundle"
    write_sparsebundle(bundle, disk, band_size=8192)
    files = _folder_files(bundle, "b.sparsebundle")
    info = next(f for f in files if f[0].endswith("Info.plist"))
    yield "sparsebundle", [info, *(f for f in files if f is not info)]  # the first file's folder is opened


def gen_split(work: Path) -> Iterator[tuple[str, Files]]:
    iso = next(gen_iso(work))[1]
    third = -(-len(iso) // 3)
    yield "split-iso", [(f"disk.{n:03d}", iso[(n - 1) * third : n * third]) for n in (1, 2, 3)]


def gen_optical(work: Path) -> Iterator[tuple[str, Files]]:
    import cdwriter

    src = work / "src"
    src.mkdir()
    (src / "a.txt").write_bytes(b"on a disc\n")
    iso = cdwriter.make_iso(work / "tiny.iso", src)
    disc = cdwriter.Disc([[cdwriter.Track(cdwriter.MODE1, iso), cdwriter.Track(cdwriter.AUDIO, cdwriter.pcm(40, 1),
                                                                             pregap=cdwriter.PREGAP)]])
    for kind in ("cue", "nrg", "mds", "ccd"):
        made = cdwriter.write_format(kind, disc, work / kind, "disc")
        folder = made if made.is_dir() else made.parent
        first = made.name if made.is_file() else next(p.name for p in folder.iterdir() if p.suffix == ".cue")
        files = [(first, (folder / first).read_bytes())]
        files += [(p.name, p.read_bytes()) for p in sorted(folder.iterdir()) if p.name != first and p.is_file()]
        yield f"optical-{kind}", files


GENERATORS: dict[str, Callable[[Path], Iterator]] = {
    "udif": gen_udif, "sparse": gen_sparse, "encrypted": gen_encrypted, "split": gen_split, "optical": gen_optical,
    "partitions": gen_partitions, "iso9660": gen_iso, "udf": gen_udf, "hfsplus": gen_hfsplus, "fat": gen_fat,
    "exfat": gen_exfat, "ext": gen_ext, "hfs": gen_hfs, "ntfs": gen_ntfs, "apfs": gen_apfs, "oldmac": gen_oldmac,
}
