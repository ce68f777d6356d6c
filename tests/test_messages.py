"""What the command line says when something is not as the user thought: each message as the user sees it.

A path not in the image, a folder given to ``cat``, ``umount`` of a folder that is not mounted, mounting
where an imgfs mount is active, over files, or on a dead mount (its daemon killed), an image without the
side ``namespace=`` asks for; and ``imgfs info`` for people."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import daemon_pid, is_mounted, mounted, run_imgfs, unmount
from disktools import blank, ext4_image, fat_image, put, sfdisk
from isotools import write_file, xorriso


@pytest.fixture(scope="module")
def iso(tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("messages")
    write_file(work / "src" / "hello.txt", b"hello\n")
    write_file(work / "src" / "dir" / "inner.txt", b"inner\n")
    return xorriso(work / "image.iso", work / "src", "-volid", "MESSAGES")


def one_line(done: subprocess.CompletedProcess) -> str:
    assert done.returncode != 0 and done.stderr.count("\n") == 1, done.stderr
    return done.stderr.rstrip("\n")


def test_cat_and_ls_of_what_the_image_does_not_have(iso):
    assert one_line(run_imgfs("cat", str(iso), "/nope.txt")) == \
        "imgfs: /nope.txt: no such file or folder in the image"
    assert one_line(run_imgfs("ls", str(iso), "/nope")) == "imgfs: /nope: no such file or folder in the image"
    assert one_line(run_imgfs("cat", str(iso), "/dir")) == "imgfs: /dir: is a folder, not a file (imgfs ls lists it)"
    assert one_line(run_imgfs("cat", str(iso), "/hello.txt/x")) == \
        "imgfs: /hello.txt/x: a part of this path is a file, not a folder"


def test_umount_of_a_folder_that_is_not_mounted(tmp_path):
    (tmp_path / "empty").mkdir()
    assert one_line(run_imgfs("umount", str(tmp_path / "empty"))) == f"imgfs: {tmp_path / 'empty'} is not mounted"
    assert one_line(run_imgfs("close", str(tmp_path / "nothing"))) == \
        f"imgfs: {tmp_path / 'nothing'}: no such file or folder"


def test_no_hfsplus_side(iso, tmp_path):
    (tmp_path / "mnt").mkdir()
    line = one_line(run_imgfs(str(iso), str(tmp_path / "mnt"), "-o", "namespace=hfsplus"))
    assert line == (f"imgfs: {iso} has no hfsplus side: it holds ISO 9660 filesystem (namespace= can be rockridge, "
                    "udf, joliet, iso1999, iso9660)")


def test_mounting_on_an_active_imgfs_mount_is_refused(iso, tmp_path):
    with mounted(iso, tmp_path / "mnt") as mnt:
        line = one_line(run_imgfs(str(iso), str(mnt)))
        assert line == f"imgfs: {mnt} is already an imgfs mount of {iso}: `imgfs close {mnt}` unmounts it"
        with open("/proc/mounts") as table:
            assert sum(1 for entry in table if entry.split()[1] == str(mnt)) == 1


def test_mounting_over_files_warns(iso, tmp_path):
    mnt = tmp_path / "full"
    write_file(mnt / "mine.txt", b"hidden for a while\n")
    done = run_imgfs(str(iso), str(mnt))
    try:
        assert done.returncode == 0
        assert done.stderr == f"imgfs: warning: {mnt} is not empty: its 1 entry is hidden until the image is " \
                              "unmounted\n"
        assert sorted(os.listdir(mnt)) == ["dir", "hello.txt"]
    finally:
        unmount(mnt)
    assert (mnt / "mine.txt").exists()


def _kill_daemon(mnt: Path) -> None:
    pid = daemon_pid(str(mnt))
    os.kill(pid, signal.SIGKILL)
    for _ in range(100):
        if not Path(f"/proc/{pid}").exists():
            return
        time.sleep(0.05)


def dead(mnt: Path) -> bool:
    try:
        os.statvfs(mnt)  # stat could be answered from the kernel's cache
    except OSError as exc:
        return exc.errno == 107  # ENOTCONN
    return False


def test_a_dead_imgfs_mount_of_ones_own_is_cleared(iso, tmp_path):
    mnt = tmp_path / "stale"
    mnt.mkdir()
    run_imgfs(str(iso), str(mnt), check=True)
    _kill_daemon(mnt)
    assert dead(mnt)
    done = run_imgfs(str(iso), str(mnt))
    try:
        assert done.returncode == 0, done.stderr
        assert done.stderr == f"imgfs: {mnt} held a dead imgfs mount of {iso} (its daemon had ended): unmounted it\n"
        assert (mnt / "hello.txt").read_bytes() == b"hello\n"
    finally:
        unmount(mnt)


OTHER_FUSE = """
import sys
from imgfs.fuse.mount import mount
from imgfs.fuse.operations import ImgfsOperations
from imgfs.fuse.session import Session
from imgfs.image import open_image
from imgfs.options import MountOptions
# a FUSE mount whose mount table entry is not imgfs's: another fsname and subtype
image = open_image(sys.argv[2], MountOptions())
mounted = mount(sys.argv[1], ["ro", "fsname=somewhere", "subtype=otherfs"])
Session(mounted, ImgfsOperations(image, MountOptions(), sys.argv[1]), threads=1).run()
"""


def test_a_dead_mount_of_another_kind_is_named(iso, tmp_path):
    mnt = tmp_path / "other"
    mnt.mkdir()
    daemon = subprocess.Popen([sys.executable, "-c", OTHER_FUSE, str(mnt), str(iso)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            if is_mounted(mnt):
                break
            time.sleep(0.05)
        daemon.kill()
        daemon.wait()
        assert dead(mnt)
        line = one_line(run_imgfs(str(iso), str(mnt)))
        assert line == (f"imgfs: mount point {mnt} is a fuse.otherfs mount of somewhere whose daemon has ended "
                        f"(transport endpoint not connected): clear it with `fusermount3 -uz {mnt}`")
        assert one_line(run_imgfs("close", str(mnt))) == \
            f"imgfs: {mnt} is a fuse.otherfs mount, not an imgfs mount: umount(8) unmounts it"
    finally:
        subprocess.run(["fusermount3", "-uz", str(mnt)], capture_output=True)


# -- imgfs info for people ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def disk(tmp_path_factory) -> Path:
    """An MBR disk as a Raspberry Pi image has it: a FAT boot partition, an ext4 root, free space after."""
    work = tmp_path_factory.mktemp("disk")
    write_file(work / "boot" / "config.txt", b"arm_64bit=1\n")
    write_file(work / "root" / "etc" / "hostname", b"pi\n")
    image = blank(work / "pi.img", 48 << 20)
    sfdisk(image, "label: dos\nstart=2048, size=32768, type=c\nstart=34816, size=49152, type=83\n")
    put(image, 1 << 20, fat_image(work / "boot.img", work / "boot", 16, "bootfs"))
    put(image, 17 << 20, ext4_image(work / "root.img", work / "root", 24, "rootfs"))
    return image


def test_info_of_a_partitioned_disk(disk):
    text = run_imgfs("info", str(disk), check=True).stdout
    assert "[1 bootfs 16 MiB][2 rootfs 24 MiB][free 7 MiB]" in text
    assert f"{disk}  48 MiB\n" in text
    assert "\n  sector size  512 bytes\n" in text and "\n  disk size    48 MiB\n" in text
    lines = text.splitlines()
    header = next(line for line in lines if line.strip().startswith("number"))
    assert header.split() == ["number", "start", "size", "type", "type", "id", "start", "lba", "sectors", "bootable"]
    row = lines[lines.index(header) + 1]
    assert row.split()[:4] == ["1", "1,048,576", "16", "MiB"]
    assert row.index("16 MiB") + len("16 MiB") == header.index("size") + len("size")  # numbers to the right
    assert "'{" not in text and "={" not in text  # no Python dicts
    assert "FAT12/16/32 filesystem 'bootfs', shown as the folder '1 bootfs'" in text


def test_info_json_keeps_every_detail(disk):
    layers = json.loads(run_imgfs("info", "--json", str(disk), check=True).stdout)["layers"]
    table = next(layer for layer in layers if "partitions" in layer)
    assert table["disk_size"] == 48 << 20
    assert [(p["number"], p["start"], p["size"]) for p in table["partitions"]] == \
        [(1, 1 << 20, 16 << 20), (2, 17 << 20, 24 << 20)]


def test_info_of_an_optical_disc_shows_its_tracks(tmp_path):
    import cdwriter as cw

    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "a.txt").write_bytes(b"a\n")
    iso = cw.make_iso(tmp_path / "d.iso", tmp_path / "src")
    disc = cw.data_disc(iso)
    sheet = cw.write_cue(disc, tmp_path / "cue", "disc")
    text = run_imgfs("info", str(sheet), check=True).stdout
    header = next(line for line in text.splitlines() if line.split()[:1] == ["track"])
    assert header.split()[:9] == ["track", "session", "mode", "start", "length", "pregap", "start", "time",
                                  "duration"]
    row = text.splitlines()[text.splitlines().index(header) + 1].split()
    sectors = len(iso) // 2048
    assert row[:3] == ["1", "1", "MODE1/2352"] and row[4] == f"{sectors:,}"
    assert row[6:8] == ["00:00:00", f"{sectors // 4500:02d}:{sectors // 75 % 60:02d}:{sectors % 75:02d}"]
    assert row[-1] == "disc.bin"  # the data file, named as beside the sheet


def test_info_of_an_encrypted_image_without_its_passphrase(tmp_path):
    from applewriter import write_encrcdsa

    disk = tmp_path / "disk.img"
    blank(disk, 1 << 20)
    image = tmp_path / "secret.dmg"
    write_encrcdsa(image, disk.read_bytes(), "open sesame")
    done = run_imgfs("info", str(image), env={k: v for k, v in os.environ.items() if k != "IMGFS_PASSPHRASE"},
                     stdin=subprocess.DEVNULL)
    assert done.returncode == 1
    assert done.stdout.splitlines()[0].startswith(f"{image}  ")
    assert "encrypted Apple disk image (encrcdsa v2)\n  not opened: a passphrase is needed to see what it holds" \
        in done.stdout
    assert done.stderr.count("\n") == 1 and "passfile" in done.stderr
