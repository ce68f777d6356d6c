"""imgfs on a desktop: ``imgfs open`` (a folder GIO lists as a mount, so that file managers show it in their
sidebar with an Unmount button), ``gio mount -u`` and ``imgfs close`` ending the daemon, ``imgfs list``; the
desktop entry (``desktop-file-validate``), the MIME types and ``Open With`` as ``make install-desktop``
installs them (``xdg-mime``, ``gio launch``); the file manager opened in a graphical session."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
from conftest import IMGFS, daemon_pid, is_mounted, run_imgfs, unmount
from isotools import write_file, xorriso

PROJECT = Path(__file__).resolve().parents[1]
DESKTOP_ENTRY = PROJECT / "imgfs" / "cli" / "share" / "applications" / "imgfs.desktop"


@pytest.fixture(scope="module")
def iso(tmp_path_factory) -> Path:
    """A disc whose label is unique to this run: its folder under the media folder is too."""
    work = tmp_path_factory.mktemp("desktop")
    write_file(work / "src" / "hello.txt", b"hello from the desktop\n")
    return xorriso(work / "desktop.iso", work / "src", "-volid", f"DESKTOP{os.getpid()}")


@pytest.fixture
def opened(iso):
    """``imgfs open`` of the disc; always closed afterwards."""
    folders: list[Path] = []

    def _open(*args: str, env: dict | None = None) -> Path:
        done = run_imgfs("open", *args, str(iso), env=env)
        assert done.returncode == 0, done.stderr
        folder = Path(done.stdout.strip())
        folders.append(folder)
        return folder

    yield _open
    for folder in folders:
        if is_mounted(folder):
            unmount(folder)
        if folder.is_dir() and not os.listdir(folder):
            folder.rmdir()


def gone(pid: int, folder: Path) -> bool:
    for _ in range(100):
        if not Path(f"/proc/{pid}").exists() and not folder.exists():
            return True
        time.sleep(0.05)
    return False


def gio_mounts() -> str:
    return subprocess.run(["gio", "mount", "-l"], capture_output=True, text=True, timeout=30,
                          env={**os.environ, "GIO_USE_VOLUME_MONITOR": "unix"}).stdout


def test_open_mounts_where_the_desktop_shows_it(iso, opened):
    folder = opened("--no-browse")
    assert folder == Path("/run/media/root") / f"DESKTOP{os.getpid()}"  # root's media folder, the label
    assert (folder / "hello.txt").read_text() == "hello from the desktop\n"
    assert re.search(rf"^Mount\(\d+\): DESKTOP{os.getpid()} -> file://{folder}$", gio_mounts(), re.M)  # the sidebar
    listed = run_imgfs("list", check=True).stdout.splitlines()
    assert listed[0].split() == ["IMAGE", "MOUNT", "POINT", "FORMAT"]
    assert any(re.fullmatch(rf"{re.escape(str(iso))}\s+{re.escape(str(folder))}\s+iso9660", line) for line in listed)
    again = run_imgfs("open", "--no-browse", str(iso))
    assert again.returncode == 0 and again.stdout.strip() == str(folder)  # the same folder, not a second mount
    with open("/proc/mounts") as table:
        assert sum(1 for line in table if line.split()[0] == str(iso)) == 1


def test_close_by_image_unmounts_and_removes_the_folder(iso, opened):
    folder = opened("--no-browse")
    pid = daemon_pid("open", str(iso))
    done = run_imgfs("close", str(iso))
    assert done.returncode == 0 and done.stderr == ""
    assert not is_mounted(folder) and gone(pid, folder)


def test_the_file_managers_unmount_ends_the_daemon(iso, opened):
    folder = opened("--no-browse")
    pid = daemon_pid("open", str(iso))
    done = subprocess.run(["gio", "mount", "-u", str(folder)], capture_output=True, text=True, timeout=30,
                          env={**os.environ, "GIO_USE_VOLUME_MONITOR": "unix"})
    assert done.returncode == 0, done.stderr
    assert gone(pid, folder), "the daemon or its folder outlived the unmount"
    assert f"DESKTOP{os.getpid()}" not in gio_mounts()


def fake_tool(folder: Path, name: str) -> Path:
    """A stand-in for a desktop tool that records its arguments."""
    folder.mkdir(exist_ok=True)
    record = folder / f"{name}.args"
    tool = folder / name
    tool.write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" > {record}\n')
    tool.chmod(0o755)
    return record


def test_open_shows_the_folder_in_the_file_manager_in_a_graphical_session(opened, tmp_path):
    record = fake_tool(tmp_path / "bin", "xdg-open")
    env = {**os.environ, "DISPLAY": ":77", "PATH": f"{tmp_path / 'bin'}:{os.environ['PATH']}"}
    folder = opened(env=env)
    for _ in range(100):
        if record.exists():
            break
        time.sleep(0.05)
    assert record.read_text() == f"{folder}\n"
    record.unlink()
    assert opened("--no-browse", env=env) == folder and not record.exists()
    assert opened(env={k: v for k, v in env.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}) == folder
    time.sleep(0.3)
    assert not record.exists()  # no graphical session: nothing to open it in


def test_a_failure_from_the_desktop_is_a_notification(tmp_path):
    record = fake_tool(tmp_path / "bin", "notify-send")
    (tmp_path / "random.iso").write_bytes(os.urandom(100_000))
    env = {**os.environ, "DISPLAY": ":77", "PATH": f"{tmp_path / 'bin'}:{os.environ['PATH']}"}
    done = run_imgfs("open", str(tmp_path / "random.iso"), env=env)  # stderr is a pipe: no one reads it
    assert done.returncode == 1
    line = done.stderr.strip()
    assert line.startswith(f"imgfs: no known image format in {tmp_path / 'random.iso'}")
    assert record.read_text().splitlines()[-2:] == ["imgfs", line[len("imgfs: "):]]


def test_the_desktop_entry_is_valid():
    done = subprocess.run(["desktop-file-validate", str(DESKTOP_ENTRY)], capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout == "" and done.stderr == "", done.stdout + done.stderr
    entry = DESKTOP_ENTRY.read_text()
    assert "\nExec=imgfs open %F\n" in entry
    types = re.search(r"^MimeType=(.*)$", entry, re.M).group(1).split(";")
    assert {"application/x-cd-image", "application/x-raw-disk-image", "application/x-apple-diskimage",
            "application/x-cue", "application/x-nrg", "application/x-mds", "application/x-ccd",
            "application/x-toast", "application/x-apple-sparseimage"} <= set(types)


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> dict[str, str]:
    """``make install-desktop`` into a prefix of its own; the environment a session with it would have."""
    prefix = tmp_path_factory.mktemp("prefix")
    done = subprocess.run(["make", "-C", str(PROJECT), "--no-print-directory", "install-desktop",
                           f"PREFIX={prefix}", "SUDO="], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    home = prefix / "home"
    home.mkdir()
    return {**os.environ, "XDG_DATA_DIRS": f"{prefix}/share:/usr/share", "XDG_DATA_HOME": str(home / "data"),
            "XDG_CONFIG_HOME": str(home / "config"), "XDG_CONFIG_DIRS": str(home / "etc"), "HOME": str(home),
            "XDG_CURRENT_DESKTOP": "", "PREFIX": str(prefix)}


@pytest.mark.parametrize("mime", ["application/x-cd-image", "application/x-apple-diskimage", "application/x-nrg",
                                  "application/x-apple-sparseimage"])
def test_open_with_resolves_to_imgfs(installed, mime):
    done = subprocess.run(["xdg-mime", "query", "default", mime], capture_output=True, text=True, env=installed)
    assert done.stdout.strip() == "imgfs.desktop", done.stderr


@pytest.mark.parametrize(("name", "mime"), [("disc.nrg", "application/x-nrg"), ("disc.mds", "application/x-mds"),
                                            ("disc.ccd", "application/x-ccd"), ("disc.toast", "application/x-toast"),
                                            ("disk.sparseimage", "application/x-apple-sparseimage")])
def test_the_mime_package_names_the_missing_kinds(installed, tmp_path, name, mime):
    """As file managers see it: GIO's content type (xdg-mime would ask file(1), which knows no MIME package)."""
    (tmp_path / name).write_bytes(bytes(1024))
    done = subprocess.run(["gio", "info", "-a", "standard::content-type", str(tmp_path / name)], capture_output=True,
                          text=True, env=installed)
    assert done.stdout.splitlines()[-1].strip() == f"standard::content-type: {mime}", done.stdout + done.stderr


def test_gio_launch_of_the_entry_opens_the_image(installed, iso, opened):
    entry = Path(installed["PREFIX"]) / "share" / "applications" / "imgfs.desktop"
    env = {**installed, "PATH": f"{Path(IMGFS).parent}:{os.environ['PATH']}"}
    env.pop("DISPLAY", None)
    done = subprocess.run(["gio", "launch", str(entry), str(iso)], capture_output=True, text=True, env=env,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    folder = Path("/run/media/root") / f"DESKTOP{os.getpid()}"
    for _ in range(200):  # gio launch does not wait for what it launched
        if is_mounted(folder):
            break
        time.sleep(0.05)
    assert (folder / "hello.txt").read_text() == "hello from the desktop\n"
    run_imgfs("close", str(folder), check=True)


def test_a_user_without_privileges_opens_in_the_home_folder(iso, tmp_path_factory):
    """No media folder is theirs: the mount goes under ~/Disk images, which GLib shows too; the user's own
    Unmount (umount(8) of their FUSE mount) ends it."""
    user = "imgfs-test"
    try:
        subprocess.run(["id", user], check=True, capture_output=True)
    except subprocess.CalledProcessError:
        pytest.skip(f"no user {user} (test_system.py makes it)")
    if subprocess.run(["runuser", "-u", user, "--", IMGFS, "--version"], capture_output=True).returncode:
        pytest.skip(f"{IMGFS} cannot be run by other users (a venv of root's own Python)")
    public = Path(tempfile.mkdtemp(prefix="imgfs-desktop-", dir="/tmp"))
    try:
        public.chmod(0o755)
        home = public / "home"
        home.mkdir()
        shutil.chown(home, user)
        shutil.copy(iso, public / "disc.iso")
        (public / "disc.iso").chmod(0o644)

        def as_user(*command: str) -> subprocess.CompletedProcess:
            return subprocess.run(["runuser", "-u", user, "--", "env", f"HOME={home}", "GIO_USE_VOLUME_MONITOR=unix",
                                   *command], capture_output=True, text=True, cwd="/", timeout=60)

        done = as_user(IMGFS, "open", "--no-browse", str(public / "disc.iso"))
        assert done.returncode == 0, done.stderr
        folder = home / "Disk images" / f"DESKTOP{os.getpid()}"
        assert done.stdout == f"{folder}\n"
        assert f"-> file://{str(folder).replace(' ', '%20')}\n" in as_user("gio", "mount", "-l").stdout
        assert as_user("gio", "mount", "-u", str(folder)).returncode == 0
        for _ in range(100):
            if not folder.exists():
                break
            time.sleep(0.05)
        assert not is_mounted(folder) and not folder.exists()
    finally:
        for mnt in public.rglob("DESKTOP*"):
            unmount(mnt)
        shutil.rmtree(public, ignore_errors=True)


def test_list_names_the_layers_nested_and_side_by_side():
    from imgfs.cli.desktop import layer_chain

    layers = [{"layer": "file"}, {"layer": "udif"}, {"layer": "mbr"}, {"layer": "fat", "partition": 1, "shown_as": "1"},
              {"layer": "ext", "partition": 2, "shown_as": "2 root"}]
    assert layer_chain(layers) == "udif › mbr › fat + ext"
    assert layer_chain([{"layer": "file"}, {"layer": "iso9660"}]) == "iso9660"
