"""Old Mac images through real FUSE mounts, each compared with the tree it was made from: classic HFS bare,
in an Apple partition map named .toast, and as the Mac side of ISO 9660 hybrids; Disk Copy 4.2; NDIF with its
resource fork in every companion form and in MacBinary and AppleSingle; a MacBinary .smi; Active@ .dim sets and
split sets from .000; cue/mds/ccd sheets naming a renamed data file; and the bad input of each.

The daemon reads HFS dates (local time) with TZ=UTC, which the Mac dates the tests write assume.
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
from pathlib import Path

import cdwriter as cw
import pytest
from conftest import compare_trees, run_imgfs, unmount
from corpuslib import mounted, refusal_line
from hfstools import Expected, Hfsutils, build_floppy, build_volume, needs_hfsutils
from macwriter import (
    DOUBLE_MAGIC,
    NDIF_ADC,
    NDIF_RAW,
    RESOURCE_FORK,
    MacFile,
    apple_entries,
    appledouble,
    applesingle,
    dc42,
    macbinary,
    ndif,
    ndif_resource_fork,
    pef_code,
)

UTC = {**os.environ, "TZ": "UTC"}
pytestmark = needs_hfsutils


def mount(image: Path, where: Path, *options: str):
    return mounted(image, where, *options, env=UTC)


def refuse(image: Path, where: Path, *options: str) -> str:
    """The one line with which imgfs refuses to mount ``image``."""
    where.mkdir(parents=True, exist_ok=True)
    try:
        return refusal_line(run_imgfs(str(image), str(where), *(["-o", ",".join(options)] if options else []),
                                      env=UTC))
    finally:
        unmount(where)  # if it mounted after all


def check_mac_metadata(root: Path, expected: dict[str, Expected]) -> None:
    """Resource forks, Finder info and (where known) modification times, as the mount shows them."""
    for path, meta in expected.items():
        target = root / path
        names = os.listxattr(target)
        if meta.rsrc:
            assert os.getxattr(target, "user.com.apple.ResourceFork") == meta.rsrc, path
        else:
            assert "user.com.apple.ResourceFork" not in names, path
        assert os.getxattr(target, "user.com.apple.FinderInfo") == meta.finder_info, path
        if meta.mtime is not None:
            assert int(target.stat().st_mtime) == meta.mtime, path


@pytest.fixture(scope="module")
def volume(tmp_path_factory) -> tuple[Path, Path, dict[str, Expected]]:
    return build_volume(tmp_path_factory.mktemp("hfs"))


@pytest.fixture(scope="module")
def floppy(tmp_path_factory) -> tuple[Path, Path, dict[str, Expected]]:
    return build_floppy(tmp_path_factory.mktemp("floppy"))


def check_floppy(root: Path, floppy: tuple[Path, Path, dict[str, Expected]]) -> None:
    _image, source, expected = floppy
    compare_trees(source, root, mtime=False)
    check_mac_metadata(root, expected)


# -- classic HFS ------------------------------------------------------------------------------------------

def test_bare_hfs(volume, tmp_path: Path) -> None:
    image, source, expected = volume
    with mount(image, tmp_path / "mnt") as root:
        assert compare_trees(source, root, mtime=False) > 70
        check_mac_metadata(root, expected)
        assert "Ünïcödé ƒ∂ß ©®™ πΩ.txt" in os.listdir(root / "Café Crème")
        assert (root / "either:or").read_bytes() == b"a Mac slash\n"
    info = subprocess.run([os.environ.get("IMGFS", "imgfs"), "info", str(image)], capture_output=True, text=True,
                          env=UTC)
    assert "classic HFS (Mac OS Standard) filesystem 'Test Vol ©'" in info.stdout


def test_hfs_in_an_apple_partition_map_named_toast(tmp_path: Path) -> None:
    """A pre-5.1 Toast image: an Apple partition map (parted) and an HFS volume (hformat) in its partition."""
    if shutil.which("parted") is None:
        pytest.skip("parted is not installed (make deps installs it)")
    image = tmp_path / "Old CD.toast"
    with open(image, "wb") as f:
        f.truncate(8 << 20)
    subprocess.run(["parted", "-s", str(image), "mklabel", "mac", "mkpart", "primary", "hfs", "1MiB", "100%"],
                   check=True, capture_output=True)
    hfs = Hfsutils(tmp_path)
    hfs.format(image, 0, "Toast Disc", partition=1)
    source = tmp_path / "source"
    (source / "Installer ƒ").mkdir(parents=True)
    (source / "Installer ƒ" / "Read Me").write_bytes(b"from a Toast image\n" * 100)
    hfs.mkdir("Installer ƒ")
    hfs.copy_raw(source / "Installer ƒ" / "Read Me", "Installer ƒ/Read Me")
    hfs.unmount()
    with mount(image, tmp_path / "mnt") as root:
        compare_trees(source, root, mtime=False)
    layers = [line.split(":")[0] for line in run_imgfs("info", str(image), env=UTC).stdout.splitlines()]
    assert any("apm" in layer.lower() or "partition" in layer.lower() for layer in layers)


def latin1_tree(base: Path) -> Path:
    """A source tree whose names are Latin-1 bytes: genisoimage turns Latin-1 names into MacRoman ones."""
    src = base / "hybrid source"
    folder = os.path.join(bytes(src), "Dossier été".encode("latin-1"))
    os.makedirs(folder)
    with open(os.path.join(folder, "crème brûlée.txt".encode("latin-1")), "wb") as f:
        f.write(b"dessert\n")
    (src / "big.bin").write_bytes(os.urandom(300_000))
    return src


@pytest.mark.parametrize("partitioned", [False, True], ids=["bare", "apm"])
def test_iso_hfs_hybrid_toast(tmp_path: Path, partitioned: bool) -> None:
    """genisoimage's ISO 9660 + HFS hybrids (bare, or behind an Apple partition map): the ISO side by default,
    the Mac side with namespace=hfs, as namespace=hfsplus does for HFS+."""
    src = latin1_tree(tmp_path)
    image = tmp_path / "hybrid.toast"
    subprocess.run(["genisoimage", "-quiet", "-hfs", *(["-part"] if partitioned else []), "-r", "-V", "HYBRID",
                    "-input-charset", "iso8859-1", "-o", str(image), str(src)], check=True, capture_output=True)
    with mount(image, tmp_path / "iso") as root:  # Rock Ridge keeps the Latin-1 bytes it was given
        assert sorted(os.listdir(bytes(root))) == ["Dossier été".encode("latin-1"), b"big.bin"]
    with mount(image, tmp_path / "mac", "namespace=hfs") as root:
        assert sorted(os.listdir(root)) == ["Desktop DB", "Desktop DF", "Dossier été", "big.bin"]
        assert (root / "Dossier été" / "crème brûlée.txt").read_bytes() == b"dessert\n"
        assert (root / "big.bin").read_bytes() == (src / "big.bin").read_bytes()
        stamp = os.stat(os.path.join(bytes(src), "Dossier été".encode("latin-1"), "crème brûlée.txt".encode("latin-1")))
        assert int((root / "Dossier été" / "crème brûlée.txt").stat().st_mtime) == int(stamp.st_mtime)
    assert "no hfsplus side" in refuse(image, tmp_path / "x", "namespace=hfsplus")


def test_plain_iso_toast(tmp_path: Path) -> None:
    """A Toast 5.1+ image is a plain ISO."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "readme.txt").write_text("toast 5.1\n")
    image = tmp_path / "new.toast"
    subprocess.run(["genisoimage", "-quiet", "-r", "-o", str(image), str(src)], check=True, capture_output=True)
    with mount(image, tmp_path / "mnt") as root:
        compare_trees(src, root, modes=False, owners=False, mtime=False)


def test_hfs_catalog_loop_and_leaf_loop_through_fuse(tmp_path: Path) -> None:
    machfs = pytest.importorskip("machfs")
    import struct

    from hfstools import leaf_nodes, mdb_fields

    vol = machfs.Volume()
    for i in range(40):
        f = machfs.File()
        f.data = b"x" * (i + 1)
        vol[f"file {i:02d}"] = f
    image = bytearray(vol.write(size=800 * 1024, desktopdb=False, bootable=False))
    fields = mdb_fields(bytes(image))
    leaves = leaf_nodes(bytes(image), fields["catalog_at"])
    struct.pack_into(">I", image, fields["catalog_at"] + leaves[1] * 512, leaves[0])  # the root's leaves loop
    (tmp_path / "loop.hfs").write_bytes(bytes(image))
    line = refuse(tmp_path / "loop.hfs", tmp_path / "mnt")
    assert "hfs" in line and "makes a loop" in line


# -- Disk Copy 4.2 ----------------------------------------------------------------------------------------

def test_dc42_floppy(floppy, tmp_path: Path) -> None:
    image = tmp_path / "Floppy.image"
    image.write_bytes(dc42(floppy[0].read_bytes(), b"Floppy", bytes(19200)))
    with mount(image, tmp_path / "mnt") as root:
        check_floppy(root, floppy)
    done = run_imgfs("verify", str(image))
    assert done.returncode == 0 and "checksum" in done.stdout, done.stdout + done.stderr
    raw = bytearray(image.read_bytes())
    raw[84 + 2000] ^= 0xFF
    bad = tmp_path / "Bad.image"
    bad.write_bytes(bytes(raw))
    done = run_imgfs("verify", str(bad))
    assert done.returncode == 1 and "data checksum mismatch" in done.stderr
    line = refuse(bad, tmp_path / "mnt2", "verify")
    assert "dc42" in line and "checksum mismatch" in line


def test_dc42_data_size_larger_than_the_file(floppy, tmp_path: Path) -> None:
    """Cut short: it mounts, what is there reads, what is missing is EIO."""
    raw = floppy[0].read_bytes()
    image = tmp_path / "Short.image"
    full = dc42(raw, b"Floppy")
    image.write_bytes(full[: 84 + 600 * 1024])
    with mount(image, tmp_path / "mnt") as root:
        assert (root / "Read Me").read_bytes() == b"An old Mac floppy\n" * 200
        files = [p for p in root.rglob("*") if p.is_file()]
        errors = []
        for path in files:
            try:
                path.read_bytes()
            except OSError as exc:
                errors.append(exc.errno)
        assert set(errors) <= {errno.EIO}


# -- NDIF -------------------------------------------------------------------------------------------------

def ndif_files(floppy, kinds: list[int]) -> tuple[bytes, bytes]:
    data, bcem = ndif(floppy[0].read_bytes(), kinds)
    return data, ndif_resource_fork(bcem)


COMPANIONS = {"._": "._{name}", "__MACOSX": "__MACOSX/._{name}", ".AppleDouble": ".AppleDouble/{name}"}


# Every form of resource fork with an image of zero, raw and ADC chunks; raw-only and ADC-only images once.
NDIF_CASES = [(form, [NDIF_ADC, NDIF_RAW]) for form in ("._", "__MACOSX", ".AppleDouble", "macbinary", "applesingle")]
NDIF_CASES += [("._", [NDIF_RAW]), ("macbinary", [NDIF_ADC])]


@pytest.mark.parametrize("form,kinds", NDIF_CASES, ids=[f"{f}-{'+'.join(map(hex, k))}" for f, k in NDIF_CASES])
def test_ndif_with_its_resource_fork(floppy, tmp_path: Path, kinds: list[int], form: str) -> None:
    data, rsrc = ndif_files(floppy, kinds)
    f = MacFile(b"Floppy.img", data, rsrc, b"rohd", b"ddsk")
    if form == "macbinary":
        image = tmp_path / "Floppy.img.bin"
        image.write_bytes(macbinary(f))
    elif form == "applesingle":
        image = tmp_path / "Floppy.img.as"
        image.write_bytes(applesingle(f))
    else:
        image = tmp_path / "Floppy.img"
        image.write_bytes(data)
        companion = tmp_path / COMPANIONS[form].format(name="Floppy.img")
        companion.parent.mkdir(exist_ok=True)
        companion.write_bytes(appledouble(f))
    with mount(image, tmp_path / "mnt") as root:
        check_floppy(root, floppy)


def test_a_macbinary_smi(floppy, tmp_path: Path) -> None:
    code = pef_code(20_000)
    code += bytes(-len(code) % 512)
    chunks, bcem = ndif(floppy[0].read_bytes(), [NDIF_ADC], data_offset=len(code))
    f = MacFile(b"Floppy.smi", code + chunks, ndif_resource_fork(bcem), b"APPL", b"oneb")
    image = tmp_path / "Floppy.smi"  # MacBinary, though not named .bin
    image.write_bytes(macbinary(f, version=3))
    with mount(image, tmp_path / "mnt") as root:
        check_floppy(root, floppy)
    layers = run_imgfs("info", str(image), env=UTC).stdout
    assert "MacBinary III" in layers and "Disk Copy 6 image" in layers and f"data offset  {len(code):,}" in layers
    assert "classic HFS" in layers


def test_macbinary_wrapped_udif_and_floppy(floppy, tmp_path: Path) -> None:
    """A .dmg.bin (MacBinary around a UDIF) and a MacBinary floppy image mount like the image inside."""
    from udifwriter import write_udif

    write_udif(tmp_path / "Floppy.dmg", floppy[0].read_bytes(), codec="zlib")
    wrapped = {"Floppy.dmg.bin": (tmp_path / "Floppy.dmg").read_bytes(), "Floppy.img.bin": floppy[0].read_bytes()}
    for name, data in wrapped.items():
        (tmp_path / name).write_bytes(macbinary(MacFile(name[:-4].encode(), data, b"", b"devi", b"ddsk")))
        with mount(tmp_path / name, tmp_path / f"mnt-{name}") as root:
            check_floppy(root, floppy)


def test_ndif_without_its_resource_fork(floppy, tmp_path: Path) -> None:
    """Uncompressed, the data fork alone is the disk: it mounts. Compressed, it is refused in one line that
    says where the resource fork was looked for."""
    raw_data, _ = ndif(floppy[0].read_bytes(), [NDIF_RAW], zeros=False)
    (tmp_path / "raw.img").write_bytes(raw_data)
    with mount(tmp_path / "raw.img", tmp_path / "mnt") as root:
        check_floppy(root, floppy)
    adc_data, _ = ndif_files(floppy, [NDIF_ADC])
    (tmp_path / "Floppy.img").write_bytes(adc_data)
    line = refuse(tmp_path / "Floppy.img", tmp_path / "mnt2")
    assert "resource fork, which is missing" in line and str(tmp_path / "._Floppy.img") in line


def test_ndif_chunk_past_the_data_fork_is_eio(floppy, tmp_path: Path) -> None:
    data, rsrc = ndif_files(floppy, [NDIF_RAW])
    (tmp_path / "Cut.img").write_bytes(data[: len(data) - 60_000])
    (tmp_path / "._Cut.img").write_bytes(appledouble(MacFile(b"Cut.img", b"", rsrc)))
    with mount(tmp_path / "Cut.img", tmp_path / "mnt") as root:
        errors = {}
        for path in (p for p in root.rglob("*") if p.is_file()):
            try:
                path.read_bytes()
            except OSError as exc:
                errors[path.name] = exc.errno
        assert errors and set(errors.values()) == {errno.EIO}, errors


def test_macbinary_with_a_bad_crc_is_one_line(floppy, tmp_path: Path) -> None:
    image = tmp_path / "Floppy.img.bin"
    data, rsrc = ndif_files(floppy, [NDIF_ADC])
    image.write_bytes(macbinary(MacFile(b"Floppy.img", data, rsrc), crc=0xBEEF))
    line = refuse(image, tmp_path / "mnt")
    assert "macbinary" in line and "CRC mismatch" in line and "0xbeef" in line


def test_appledouble_entry_past_its_file_is_one_line(floppy, tmp_path: Path) -> None:
    data, _ = ndif_files(floppy, [NDIF_ADC])
    (tmp_path / "Floppy.img").write_bytes(data)
    (tmp_path / "._Floppy.img").write_bytes(apple_entries(DOUBLE_MAGIC, [(RESOURCE_FORK, b"short")],
                                                          lengths={RESOURCE_FORK: 99_999}))
    line = refuse(tmp_path / "Floppy.img", tmp_path / "mnt")
    assert str(tmp_path / "._Floppy.img") in line and "runs past the end of the file" in line
    line = refuse(tmp_path / "._Floppy.img", tmp_path / "mnt")
    assert "runs past the end of the file" in line


# -- Active@ .dim sets and split sets ---------------------------------------------------------------------

def split_into(data: bytes, paths: list[Path]) -> None:
    size = -(-len(data) // len(paths))
    for i, path in enumerate(paths):
        path.write_bytes(data[i * size : (i + 1) * size])


def test_active_dim_set(floppy, tmp_path: Path) -> None:
    raw = floppy[0].read_bytes()
    descriptor = "Active@ Disk Image\0Floppy 800K\0".encode("utf-16-le") + len(raw).to_bytes(8, "little")
    (tmp_path / "Backup.dim").write_bytes(descriptor)
    split_into(raw, [tmp_path / f"Backup.dim.{i:03d}" for i in (1, 2, 3)])
    with mount(tmp_path / "Backup.dim", tmp_path / "mnt") as root:
        check_floppy(root, floppy)
    info = run_imgfs("info", str(tmp_path / "Backup.dim"), "--json", env=UTC).stdout
    assert "Floppy 800K" in info and '"segments": 3' in info and '"descriptor_records_data_size": true' in info
    (tmp_path / "Backup.dim.002").unlink()
    line = refuse(tmp_path / "Backup.dim", tmp_path / "mnt2")
    assert f"segment {tmp_path / 'Backup.dim.002'} of the split image is missing" in line


def test_split_set_from_000(floppy, tmp_path: Path) -> None:
    raw = floppy[0].read_bytes()
    split_into(raw, [tmp_path / f"disk.{i:03d}" for i in range(4)])
    for first in ("disk.000", "disk.001"):
        with mount(tmp_path / first, tmp_path / f"mnt-{first}") as root:
            check_floppy(root, floppy)
    (tmp_path / "disk.002").unlink()
    line = refuse(tmp_path / "disk.000", tmp_path / "mnt2")
    assert f"segment {tmp_path / 'disk.002'} of the split image is missing" in line


# -- sheets that name a renamed data file -----------------------------------------------------------------

@pytest.fixture(scope="module")
def disc_iso(tmp_path_factory) -> tuple[bytes, Path]:
    base = tmp_path_factory.mktemp("disc")
    src = base / "src"
    src.mkdir()
    (src / "file.txt").write_bytes(b"a renamed download\n" * 50)
    return cw.make_iso(base / "d.iso", src), src


@pytest.mark.parametrize("kind,data_name,renamed_to", [("cue", "Game.bin", "game.IMG"), ("mds", "Game.mdf", "Game.iso"),
                                                       ("ccd", "Game.img", "Game.bin")])
def test_a_sheet_naming_a_missing_data_file(disc_iso, tmp_path: Path, kind: str, data_name: str,
                                            renamed_to: str) -> None:
    iso, src = disc_iso
    sheet = cw.write_format(kind, cw.data_disc(iso), tmp_path, "Game")
    folder = sheet.parent
    (folder / data_name).rename(folder / renamed_to)
    for sub in folder.glob("*.sub"):
        sub.unlink()
    for target in (sheet, folder / renamed_to):  # the sheet, and the data file the sheet describes
        done = run_imgfs("ls", str(target), env=UTC)
        assert done.returncode == 0 and done.stdout.split() == ["file.txt"], done.stderr
        assert renamed_to in done.stderr and "WARNING" in done.stderr
        with mount(target, tmp_path / f"mnt-{target.name}") as root:
            compare_trees(src, root, modes=False, owners=False, mtime=False)


def test_no_stand_in_when_two_files_could_be_it(disc_iso, tmp_path: Path) -> None:
    iso, _ = disc_iso
    sheet = cw.write_format("cue", cw.data_disc(iso), tmp_path, "Game")
    (sheet.parent / "Game.bin").rename(sheet.parent / "Game.img")
    shutil.copy(sheet.parent / "Game.img", sheet.parent / "Game.iso")
    line = refuse(sheet, tmp_path / "mnt")
    assert "names the data file 'Game.bin'" in line
