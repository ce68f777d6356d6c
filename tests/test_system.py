"""imgfs as the system runs it: mount(8) with -t fuse.imgfs and -t imgfs, an fstab line, a user
without privileges, signals, and the commands that need no FUSE."""

from __future__ import annotations

import hashlib
import json
import os
import pwd
import shutil
import signal
import stat
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
from conftest import IMGFS, daemon_pid, is_mounted, mounted, run_imgfs, unmount
from isotools import pseudo_random, write_file, xorriso

TEST_USER = "imgfs-test"
IGNORED = "ro,rw,dev,nodev,suid,nosuid,exec,noexec,noauto,nofail,user,users,auto,defaults,_netdev,x-gvfs-show"


@pytest.fixture(scope="module")
def public_dir():
    """A directory every user can read, since pytest's tmp_path is root's alone."""
    path = Path(tempfile.mkdtemp(prefix="imgfs-sys-", dir="/tmp"))
    path.chmod(0o755)
    yield path
    for mnt in path.glob("mnt*"):
        unmount(mnt)
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def iso(public_dir: Path) -> Path:
    src = public_dir / "src"
    write_file(src / "hello.txt", b"hello from the image\n")
    write_file(src / "private.txt", b"mode 0600 in the image\n", 0o600)
    write_file(src / "dir" / "data.bin", pseudo_random(200_000, 11))
    image = xorriso(public_dir / "system.iso", src)
    image.chmod(0o644)
    return image


def mountpoint(public_dir: Path, name: str) -> Path:
    path = public_dir / name
    path.mkdir(exist_ok=True)
    return path


def mount_line(mnt: Path) -> list[str]:
    with open("/proc/mounts") as mounts:
        return next(line.split() for line in mounts if line.split()[1] == str(mnt))


def test_fsname_and_type_in_proc_mounts(iso, public_dir):
    with mounted(iso, mountpoint(public_dir, "mnt-proc")) as mnt:
        source, target, fstype, options = mount_line(mnt)[:4]
        assert (source, target, fstype) == (str(iso), str(mnt), "fuse.imgfs")
        assert "ro" in options.split(",")


def test_mount_t_fuse_imgfs(iso, public_dir):
    mnt = mountpoint(public_dir, "mnt-t")
    done = subprocess.run(["mount", "-t", "fuse.imgfs", str(iso), str(mnt)], capture_output=True, text=True,
                          env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})
    assert done.returncode == 0, done.stderr
    try:
        assert (mnt / "hello.txt").read_bytes() == b"hello from the image\n"
        assert mount_line(mnt)[2] == "fuse.imgfs"
    finally:
        subprocess.run(["umount", str(mnt)], check=True)
    assert not is_mounted(mnt)


def test_mount_t_imgfs_uses_the_mount_imgfs_helper(iso, public_dir):
    mnt = mountpoint(public_dir, "mnt-helper")
    done = subprocess.run(["mount", "-t", "imgfs", "-o", "ro,nodev", str(iso), str(mnt)], capture_output=True,
                          text=True, env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})
    assert done.returncode == 0, done.stderr
    try:
        assert (mnt / "dir" / "data.bin").read_bytes() == pseudo_random(200_000, 11)
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


@pytest.mark.parametrize("fstype", ["fuse.imgfs", "imgfs"])
def test_fstab_line(iso, public_dir, fstype):
    mnt = mountpoint(public_dir, f"mnt-fstab-{fstype}")
    fstab = public_dir / f"fstab-{fstype}"
    fstab.write_text(f"# test fstab\n{iso} {mnt} {fstype} {IGNORED},uid=1234,umask=022 0 0\n")
    done = subprocess.run(["mount", "--fstab", str(fstab), str(mnt)], capture_output=True, text=True,
                          env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})
    assert done.returncode == 0, done.stderr
    try:
        st = os.stat(mnt / "hello.txt")
        assert st.st_uid == 1234 and stat.S_IMODE(st.st_mode) == 0o644
        assert (mnt / "hello.txt").read_bytes() == b"hello from the image\n"
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


@pytest.fixture(scope="module")
def test_user() -> pwd.struct_passwd:
    """A user without privileges, on a system set up as Debian's udev sets it up (/dev/fuse 0666)."""
    if stat.S_IMODE(os.stat("/dev/fuse").st_mode) & 0o006 != 0o006:
        os.chmod("/dev/fuse", 0o666)  # containers create it root-only; udev would have made it 0666
    try:
        return pwd.getpwnam(TEST_USER)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/bin/sh", TEST_USER], check=True)
        return pwd.getpwnam(TEST_USER)


def as_user(user: pwd.struct_passwd, *command: str) -> subprocess.CompletedProcess:
    return subprocess.run(["runuser", "-u", user.pw_name, "--", *command], capture_output=True, text=True,
                          timeout=60, cwd="/")


def test_unprivileged_user_mounts_reads_and_unmounts(iso, public_dir, test_user):
    mnt = mountpoint(public_dir, "mnt-user")
    os.chown(mnt, test_user.pw_uid, test_user.pw_gid)
    done = as_user(test_user, IMGFS, str(iso), str(mnt))
    assert done.returncode == 0, done.stderr
    try:
        assert f"user_id={test_user.pw_uid}" in mount_line(mnt)[3]
        listed = as_user(test_user, "ls", str(mnt))
        assert listed.stdout.split() == ["dir", "hello.txt", "private.txt"]
        assert as_user(test_user, "cat", str(mnt / "hello.txt")).stdout == "hello from the image\n"
        # the image's 0600 root-owned file: without allow_other, FUSE lets only the mounting user in, and
        # imgfs does not enforce the image's modes on that user
        assert as_user(test_user, "cat", str(mnt / "private.txt")).stdout == "mode 0600 in the image\n"
        assert as_user(test_user, "touch", str(mnt / "new")).returncode != 0
    finally:
        done = as_user(test_user, IMGFS, "umount", str(mnt))
        assert done.returncode == 0, done.stderr
    assert not is_mounted(mnt)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_unmounts_cleanly(iso, public_dir, signum):
    mnt = mountpoint(public_dir, f"mnt-signal-{signum}")
    with mounted(iso, mnt):
        pid = daemon_pid(str(mnt))
        os.kill(pid, signum)
        for _ in range(100):
            if not is_mounted(mnt) and not Path(f"/proc/{pid}").exists():
                break
            time.sleep(0.05)
        assert not is_mounted(mnt), "still mounted after the signal"
        assert not Path(f"/proc/{pid}").exists(), "daemon still running"


def _foreground_until_sigterm(iso: Path, mnt: Path, *options: str) -> tuple[int, str]:
    """Mount in the foreground with ``options``, read a file through it, send SIGTERM: the exit status and
    what the daemon wrote to stderr."""
    proc = subprocess.Popen([IMGFS, str(iso), str(mnt), *options], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        for _ in range(100):
            if is_mounted(mnt):
                break
            time.sleep(0.05)
        assert (mnt / "hello.txt").read_bytes() == b"hello from the image\n"
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=20)
        return proc.returncode, err
    finally:
        if proc.poll() is None:
            proc.kill()
        unmount(mnt)


def test_foreground_mode_exits_zero_on_sigterm(iso, public_dir):
    mnt = mountpoint(public_dir, "mnt-fg")
    returncode, err = _foreground_until_sigterm(iso, mnt, "-f")
    assert returncode == 0 and "Traceback" not in err
    assert not is_mounted(mnt)


def test_image_named_like_a_command_mounts_through_a_path(iso, public_dir):
    workdir = public_dir / "collide"
    workdir.mkdir(exist_ok=True)
    shutil.copy(iso, workdir / "info")
    mnt = mountpoint(public_dir, "mnt-collide")
    done = subprocess.run([IMGFS, "./info", str(mnt)], cwd=workdir, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    try:
        assert mount_line(mnt)[0] == str(workdir / "info")
        assert (mnt / "hello.txt").exists()
    finally:
        unmount(mnt)


def test_info_text_and_json(iso):
    text = run_imgfs("info", str(iso), check=True).stdout
    assert "ISO 9660" in text and "rockridge" in text and "joliet" in text
    layers = json.loads(run_imgfs("info", str(iso), "--json", check=True).stdout)["layers"]
    assert [layer["layer"] for layer in layers] == ["file", "iso9660"]
    assert layers[0]["size"] == iso.stat().st_size
    assert layers[1]["namespace"] == "rockridge" and layers[1]["namespaces"] == ["rockridge", "joliet", "iso9660"]


def test_ls_and_cat_without_fuse(iso):
    assert run_imgfs("ls", str(iso), check=True).stdout.split() == ["dir", "hello.txt", "private.txt"]
    recursive = run_imgfs("ls", str(iso), "-R", check=True).stdout.split()
    assert recursive == ["/dir", "/dir/data.bin", "/hello.txt", "/private.txt"]
    long = run_imgfs("ls", "-l", str(iso), "/private.txt", check=True).stdout
    assert long.startswith("-rw-------") and "23" in long and long.rstrip().endswith("/private.txt")
    cat = subprocess.run([IMGFS, "cat", str(iso), "/dir/data.bin"], capture_output=True, check=True)
    assert cat.stdout == pseudo_random(200_000, 11)
    joliet = run_imgfs("ls", str(iso), "-o", "namespace=iso9660", check=True).stdout.split()
    assert joliet == ["DIR", "HELLO.TXT", "PRIVATE.TXT"]


def test_ls_of_a_missing_path(iso):
    done = run_imgfs("ls", str(iso), "/nope")
    assert done.returncode != 0 and len(done.stderr.strip().splitlines()) == 1 and "nope" in done.stderr


def test_umount_of_something_not_mounted(public_dir):
    done = run_imgfs("umount", str(mountpoint(public_dir, "mnt-never")))
    assert done.returncode != 0 and len(done.stderr.strip().splitlines()) == 1


def test_ignored_options_are_accepted(iso, public_dir):
    with mounted(iso, mountpoint(public_dir, "mnt-ignored"), *IGNORED.split(","), "x-systemd.automount") as mnt:
        assert (mnt / "hello.txt").read_bytes() == b"hello from the image\n"


def test_unprivileged_reads_large_and_small_files_and_x_ok(public_dir, test_user):
    """As a user: spliced (large) and buffered (small) reads give the file's bytes, X_OK follows the modes."""
    src = public_dir / "src-user"
    write_file(src / "big.bin", pseudo_random(3_000_000, 5))
    write_file(src / "run.sh", b"#!/bin/sh\necho run\n", 0o755)
    write_file(src / "notes.txt", b"not a program\n", 0o644)
    image = xorriso(public_dir / "user.iso", src)
    image.chmod(0o644)
    mnt = mountpoint(public_dir, "mnt-user-reads")
    os.chown(mnt, test_user.pw_uid, test_user.pw_gid)
    done = as_user(test_user, IMGFS, str(image), str(mnt))
    assert done.returncode == 0, done.stderr
    try:
        digest = as_user(test_user, "sha256sum", str(mnt / "big.bin")).stdout.split()[0]
        assert digest == hashlib.sha256(pseudo_random(3_000_000, 5)).hexdigest()
        assert as_user(test_user, "cat", str(mnt / "notes.txt")).stdout == "not a program\n"
        found = as_user(test_user, "find", str(mnt), "-type", "f", "-executable").stdout.split()
        assert found == [str(mnt / "run.sh")]
        assert as_user(test_user, str(mnt / "run.sh")).stdout == "run\n"
    finally:
        as_user(test_user, IMGFS, "umount", str(mnt))
    assert not is_mounted(mnt)


def _allow_other_allowed() -> bool:
    try:
        return any(line.strip() == "user_allow_other" for line in Path("/etc/fuse.conf").read_text().splitlines())
    except OSError:
        return False


@pytest.mark.parametrize("case", ["allow_other", "not the user's", "already mounted"])
def test_a_refused_mount_says_fusermount3s_reason(iso, public_dir, test_user, case):
    """In background mode, the one line names fusermount3's own reason, not a libfuse error number."""
    mnt = mountpoint(public_dir, f"mnt-refused-{case.replace(' ', '-')}")
    args, reason = [], ""
    if case == "allow_other":
        if _allow_other_allowed():
            pytest.skip("/etc/fuse.conf has user_allow_other")
        os.chown(mnt, test_user.pw_uid, test_user.pw_gid)
        args, reason = ["-o", "allow_other"], \
            "fusermount3: option allow_other only allowed if 'user_allow_other' is set in /etc/fuse.conf"
    elif case == "not the user's":
        os.chown(mnt, 0, 0)
        reason = f"fusermount3: user has no write access to mountpoint {mnt}"
    else:
        os.chown(mnt, test_user.pw_uid, test_user.pw_gid)
        assert as_user(test_user, IMGFS, str(iso), str(mnt)).returncode == 0
    try:
        done = as_user(test_user, IMGFS, str(iso), str(mnt), *args)
        assert done.returncode == 1
        if case == "already mounted":  # imgfs sees its own mount there before fusermount3 is asked
            assert done.stderr.splitlines() == [f"imgfs: {mnt} is already an imgfs mount of {iso}: "
                                                f"`imgfs close {mnt}` unmounts it"]
        else:
            assert done.stderr.splitlines() == [f"imgfs: cannot mount {iso} on {mnt}: {reason}"]
    finally:
        if case == "already mounted":
            as_user(test_user, IMGFS, "umount", str(mnt))


def test_default_permissions_makes_the_kernel_check_the_modes(iso, public_dir, test_user):
    mnt = mountpoint(public_dir, "mnt-default-permissions")
    os.chown(mnt, test_user.pw_uid, test_user.pw_gid)
    done = as_user(test_user, IMGFS, str(iso), str(mnt), "-o", "default_permissions")
    assert done.returncode == 0, done.stderr
    try:
        assert as_user(test_user, "cat", str(mnt / "hello.txt")).stdout == "hello from the image\n"
        refused = as_user(test_user, "cat", str(mnt / "private.txt"))  # root's 0600 file
        assert refused.returncode != 0 and "Permission denied" in refused.stderr
    finally:
        as_user(test_user, IMGFS, "umount", str(mnt))


def test_o_debug_is_d(iso, public_dir):
    """-o debug stays in the foreground and logs every request by name."""
    returncode, err = _foreground_until_sigterm(iso, mountpoint(public_dir, "mnt-debug"), "-o", "debug")
    assert returncode == 0 and "LOOKUP" in err and "Traceback" not in err


def test_allow_root_lets_root_in_and_turns_others_away(iso, public_dir, test_user):
    mnt = mountpoint(public_dir, "mnt-allow-root")
    with mounted(iso, mnt, "allow_root"):
        refused = as_user(test_user, "cat", str(mnt / "hello.txt"))  # first: nothing cached yet
        assert refused.returncode != 0 and "Permission denied" in refused.stderr
        assert (mnt / "hello.txt").read_bytes() == b"hello from the image\n"
