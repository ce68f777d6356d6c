"""Mounts that imgfs places itself, as a desktop does: ``imgfs open IMAGE`` (a folder the file manager shows
in its sidebar, opened in it), ``imgfs close``/``umount`` (by image or by folder) and ``imgfs list``.

GLib (and so GNOME Files, Nemo, Caja, PCManFM...) shows a mount in the sidebar, with an Unmount/Eject
button that runs umount(8), when its folder is under ``/media``, ``/run/media/$USER`` or the home folder
and not inside a hidden folder. umount(8) lets a user unmount a FUSE mount of their own; the daemon then
ends and removes the folder it was given by ``imgfs open``.
"""

from __future__ import annotations

import argparse
import json
import os
import pwd
import shutil
import subprocess
import sys
from typing import Any, Optional

from imgfs.cli.commands import add_options_argument
from imgfs.cli.common import error_line, fail, open_for_user
from imgfs.cli.mount import mount_opened
from imgfs.cli.mounts import MountEntry, UnmountError, entry_at, imgfs_mounts, is_dead, unmount
from imgfs.cli.text import table
from imgfs.errors import ImageError
from imgfs.image import open_image
from imgfs.options import parse_options

HOME_FOLDER = "Disk images"  # under $HOME when no media folder is writable: GLib shows mounts there
MAX_NAME_BYTES = 200


class CloseError(Exception):
    pass


USER_ERRORS = (CloseError,)


def add_arguments(name: str, parser: argparse.ArgumentParser) -> None:
    if name == "open":
        parser.add_argument("images", nargs="+", metavar="IMAGE", help="the image file(s) to open")
        parser.add_argument("--no-browse", action="store_true", help="do not open the folder in the file manager")
        add_options_argument(parser)
    elif name == "list":
        parser.add_argument("--json", action="store_true", help="as JSON")
    else:
        parser.add_argument("targets", nargs="+", metavar="IMAGE|MOUNTPOINT",
                            help="a mount point, or an image: every folder it is mounted on")


def run(name: str, args: argparse.Namespace) -> int:
    if name == "open":
        return max(open_one(image, args.options, not args.no_browse) for image in args.images)
    if name == "list":
        return list_mounts(args.json)
    return max(close(target) for target in args.targets)


# -- open ---------------------------------------------------------------------------------------------


def open_one(path: str, groups: list[str], browse: bool) -> int:
    """Mount ``path`` in a new folder of the media folder (or show where it already is), print the folder,
    open it in the file manager."""
    mounted = mounts_of(path)
    if mounted:
        folder = mounted[0].target
    else:
        options = parse_options(groups)
        try:
            image = open_for_user(path, options)
            image.require_content()
        except ImageError as exc:
            return _tell(error_line(exc, path))
        folder = new_mountpoint(image.fs.label, path)
        code = mount_opened(image, folder, options, on_exit=lambda: remove_mountpoint(folder))
        if code:
            remove_mountpoint(folder)
            _notify(f"cannot open {os.path.basename(path)}")
            return code
    print(folder)
    if browse and graphical():
        show_folder(folder)
    return 0


def media_folder() -> str:
    """Where ``imgfs open`` makes its folders: ``/run/media/$USER`` or ``/media/$USER`` when the user may write
    there (root may always), else ``~/Disk images``."""
    user = pwd.getpwuid(os.getuid()).pw_name
    for folder in (f"/run/media/{user}", f"/media/{user}"):
        if os.access(folder, os.W_OK | os.X_OK):
            return folder
    if os.getuid() == 0 and os.path.isdir("/run"):
        os.makedirs("/run/media/root", mode=0o750, exist_ok=True)
        return "/run/media/root"
    return os.path.join(os.path.expanduser("~"), HOME_FOLDER)


def folder_name(label: str, path: str) -> str:
    """The volume's label, else the image's name without its extension; never hidden, never a path."""
    base = os.path.basename(os.path.abspath(path).rstrip("/"))
    name = (label or "").strip() or os.path.splitext(base)[0] or base
    name = name.replace("/", "_").replace("\0", "").lstrip(".").strip() or "image"
    return name.encode("utf-8", "surrogateescape")[:MAX_NAME_BYTES].decode("utf-8", "ignore")


def new_mountpoint(label: str, path: str) -> str:
    """A fresh empty folder named after the volume: ``NAME``, else ``NAME (2)``, ..."""
    parent = media_folder()
    os.makedirs(parent, mode=0o755, exist_ok=True)
    name = folder_name(label, path)
    for attempt in range(1, 1000):
        folder = os.path.join(parent, name if attempt == 1 else f"{name} ({attempt})")
        try:
            os.mkdir(folder, 0o755)
            return folder
        except FileExistsError:
            if entry_at(folder) is None and not is_dead(folder) and os.path.isdir(folder) and not os.listdir(folder):
                return folder  # an empty folder left behind: use it again
    raise CloseError(f"no free folder name for {name} in {parent}")


def remove_mountpoint(folder: str) -> None:
    """Remove a folder ``imgfs open`` made, once nothing is mounted on it (an empty folder only)."""
    if os.path.dirname(folder) != media_folder() or entry_at(folder) is not None:
        return
    try:
        os.rmdir(folder)
    except OSError:
        pass


def graphical() -> bool:
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def show_folder(folder: str) -> None:
    """Open ``folder`` in the user's file manager, without waiting for it."""
    for command in (["xdg-open", folder], ["gio", "open", folder]):
        if shutil.which(command[0]):
            subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, start_new_session=True)
            return


def _tell(message: str) -> int:
    """A failure: on stderr, and as a desktop notification when no terminal shows stderr."""
    _notify(message)
    return fail(message)


def _notify(message: str) -> None:
    if graphical() and not sys.stderr.isatty() and shutil.which("notify-send"):
        subprocess.run(["notify-send", "--app-name=imgfs", "--icon=drive-removable-media", "imgfs", message],
                       stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                       timeout=10, check=False)


# -- close ----------------------------------------------------------------------------------------------


def mounts_of(image: str) -> list[MountEntry]:
    """The imgfs mounts of ``image`` (the mount table names an image by its absolute path)."""
    names = {os.path.abspath(image), os.path.realpath(image)}
    return [entry for entry in imgfs_mounts() if entry.source in names]


def close(target: str) -> int:
    entry = entry_at(target)
    if entry is not None and not entry.is_imgfs:
        return fail(f"{target} is a {entry.fstype} mount, not an imgfs mount: umount(8) unmounts it")
    entries = [entry] if entry is not None else mounts_of(target) if os.path.exists(target) else []
    if not entries:
        if os.path.isdir(target):
            return fail(f"{target} is not mounted")
        if os.path.exists(target):
            return fail(f"{target} is not mounted anywhere")
        return fail(f"{target}: no such file or folder")
    for found in entries:
        try:
            unmount(found.target, lazy=is_dead(found.target))
        except UnmountError as exc:
            return fail(f"cannot unmount {found.target}: {exc}")
        remove_mountpoint(found.target)
    return 0


# -- list -----------------------------------------------------------------------------------------------


def list_mounts(as_json: bool) -> int:
    rows = [{"image": e.source, "mountpoint": e.target, "format": describe_format(e), "user": _owner(e)}
            for e in imgfs_mounts()]
    if as_json:
        print(json.dumps(rows, indent=2))
    elif rows:
        print("\n".join(table([["IMAGE", "MOUNT POINT", "FORMAT"]] +
                              [[str(r["image"]), str(r["mountpoint"]), str(r["format"])] for r in rows])))
    return 0


def describe_format(entry: MountEntry) -> str:
    """The image's layers, outermost first (``udif › gpt › hfs+``), from the image itself."""
    if is_dead(entry.target):
        return "dead (its daemon has ended: imgfs close clears it)"
    try:
        image = open_image(entry.source)
    except ImageError as exc:
        names = [layer["layer"] for layer in getattr(exc, "described", []) if layer.get("layer") != "file"]
        return " › ".join([*names, f"({exc.layer or 'unreadable'}: {type(exc).__name__})"])
    except OSError as exc:
        return f"({exc.strerror})"
    try:
        return layer_chain(image.layers)
    finally:
        image.close()


def layer_chain(layers: list[dict[str, Any]]) -> str:
    """``udif › gpt › hfs+``: each layer inside the one before; the volumes shown side by side as folders are
    joined with ``+`` (``gpt › ext + fat``)."""
    text, previous_volume = "", False
    for layer in layers:
        if layer.get("layer") in ("file", "raw"):
            continue
        volume = "shown_as" in layer  # a volume of the set before it, shown as a folder
        text += (" + " if volume and previous_volume else " › " if text else "") + str(layer["layer"])
        previous_volume = volume
    return text


def _owner(entry: MountEntry) -> Optional[str]:
    if entry.owner is None:
        return None
    try:
        return pwd.getpwuid(entry.owner).pw_name
    except KeyError:
        return str(entry.owner)
