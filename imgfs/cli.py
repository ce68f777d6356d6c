"""The command line: ``imgfs IMAGE MOUNTPOINT [-o OPTIONS] [-f] [-d]`` and the commands that need no FUSE.

Every failure is one line on stderr and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import logging.handlers
import os
import shutil
import stat
import subprocess
import sys
import time
from typing import Callable, Optional

from imgfs import __version__
from imgfs.errors import EncryptedImage, ImageError
from imgfs.filesystems.base import Filesystem, Node
from imgfs.image import OpenedImage, open_image
from imgfs.options import MountOptions, OptionError, parse_options
from imgfs.registry import NAMESPACES
from imgfs.tree import Tree

log = logging.getLogger("imgfs")

COMMANDS = ("info", "ls", "cat", "verify", "umount")
READY = b"\0imgfs-ready\0"
USAGE = """usage: imgfs IMAGE MOUNTPOINT [-o OPTIONS] [-f] [-d] [-s]
       imgfs info IMAGE [--json]
       imgfs ls IMAGE [PATH] [-l] [-R]
       imgfs cat IMAGE PATH
       imgfs verify IMAGE
       imgfs umount MOUNTPOINT

Mount options (-o, comma-separated): allow_other, uid=N, gid=N, umask=OCTAL, cache_size=SIZE,
namespace=auto|""" + "|".join(NAMESPACES) + """, logfile=PATH, verify (check EDC/ECC of raw
sectors and container checksums: a damaged file reads as EIO), rawviews (a .imgfs folder with
info.json, tracks, earlier sessions, boot images, partitions), passfile=PATH (the passphrase of an
encrypted image; else $IMGFS_PASSPHRASE, else a prompt on a terminal). The mount is always read-only:
ro, rw, dev, suid, exec, noauto, nofail, user, users, defaults, _netdev and x-* are accepted and ignored.
-f: stay in the foreground; -d: debug output (implies -f); -s: serve FUSE from one thread.
An image named like a command mounts through a path: imgfs ./info /mnt/x"""


class UsageError(Exception):
    pass


def _fail(message: str, code: int = 1) -> int:
    print(f"imgfs: {message}", file=sys.stderr)
    return code


def main(argv: Optional[list[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    _setup_logging(debug=False, logfile=None, to_stderr=True, level=logging.WARNING)
    try:
        if argv and argv[0] in COMMANDS:
            return _run_command(argv[0], argv[1:])
        return _mount_main(argv)
    except (ImageError, OptionError) as exc:
        return _fail(str(exc))
    except UsageError as exc:
        print(f"imgfs: {exc}\n{USAGE}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        return 0
    except KeyboardInterrupt:
        return 130
    except OSError as exc:
        return _fail(f"{exc.filename + ': ' if exc.filename else ''}{exc.strerror or exc}")
    except Exception as exc:  # noqa: BLE001 - one line, never a traceback
        return _fail(f"internal error: {type(exc).__name__}: {exc}", 70)


def mount_helper_main(argv: Optional[list[str]] = None) -> int:
    """``mount.imgfs SPEC DIR [-sfnv] [-o OPTIONS]``, as mount(8) runs helpers for ``-t imgfs``."""
    argv = sys.argv[1:] if argv is None else list(argv)
    positional: list[str] = []
    groups: list[str] = []
    fake = False
    args = iter(argv)
    for arg in args:
        if arg == "-o":
            groups.append(next(args, ""))
        elif arg.startswith("-o"):
            groups.append(arg[2:])
        elif arg.startswith("-") and len(arg) > 1:
            fake = fake or "f" in arg[1:]  # -f: fake; -s, -n, -v: nothing to do for a FUSE mount
        else:
            positional.append(arg)
    if fake:
        return 0
    try:
        return _mount_main(positional + [item for g in groups for item in ("-o", g)])
    except (ImageError, OptionError) as exc:
        return _fail(str(exc))
    except UsageError as exc:
        return _fail(str(exc), 2)


# -- mounting -----------------------------------------------------------------------------------------


def _parse_mount_args(argv: list[str]) -> tuple[list[str], list[str], bool, bool]:
    positional: list[str] = []
    groups: list[str] = []
    foreground = debug = single = False
    args = iter(argv)
    for arg in args:
        if arg in ("-h", "--help"):
            print(USAGE)
            raise SystemExit(0)
        if arg in ("-V", "--version"):
            print(f"imgfs {__version__}")
            raise SystemExit(0)
        if arg == "-o":
            value = next(args, None)
            if value is None:
                raise UsageError("-o needs a value")
            groups.append(value)
        elif arg.startswith("-o"):
            groups.append(arg[2:])
        elif arg == "-f":
            foreground = True
        elif arg == "-d":
            foreground = debug = True
        elif arg == "-s":
            single = True
        elif arg == "--":
            positional.extend(args)
        elif arg.startswith("-") and len(arg) > 1:
            raise UsageError(f"unknown flag {arg}")
        else:
            positional.append(arg)
    if single:
        groups.append("single_threaded")
    return positional, groups, foreground, debug


def _mount_main(argv: list[str]) -> int:
    positional, groups, foreground, debug = _parse_mount_args(argv)
    if len(positional) != 2:
        raise UsageError("expected IMAGE and MOUNTPOINT" if positional or groups else "no image given")
    image_path, mountpoint = positional
    options = parse_options(groups)
    if not os.path.exists(mountpoint):
        return _fail(f"mount point {mountpoint} does not exist")
    if not os.path.isdir(mountpoint):
        return _fail(f"mount point {mountpoint} is not a directory")
    image = _open(image_path, options)
    image.require_content()
    if foreground:
        _setup_logging(debug=debug, logfile=options.logfile, to_stderr=True)
        _tune_malloc()
        from imgfs.fuse_ops import serve

        serve(image, mountpoint, options, debug=debug)
        return 0
    return _serve_in_background(image, mountpoint, options)


def _open(path: str, options: MountOptions) -> OpenedImage:
    return open_image(path, options, passphrase=_passphrase_source(path, options.passfile))


def _passphrase_source(path: str, passfile: Optional[str]) -> Callable[[], Optional[str]]:
    """Where an encrypted image's passphrase comes from: -o passfile, $IMGFS_PASSPHRASE, or a prompt on a TTY.

    Asked only when an image needs one, and at most once."""
    asked: list[Optional[str]] = []

    def get() -> Optional[str]:
        if asked:
            return asked[0]
        value: Optional[str] = None
        if passfile:
            try:
                with open(passfile, encoding="utf-8") as handle:
                    value = handle.readline().rstrip("\r\n")
            except OSError as exc:
                raise EncryptedImage(f"cannot read the passphrase file {passfile}: {exc.strerror}") from None
        elif "IMGFS_PASSPHRASE" in os.environ:
            value = os.environ["IMGFS_PASSPHRASE"]
        elif sys.stdin.isatty() and sys.stderr.isatty():
            import getpass

            value = getpass.getpass(f"passphrase for {os.path.basename(path)}: ", stream=sys.stderr)
        asked.append(value)
        return value

    return get


def _serve_in_background(image: OpenedImage, mountpoint: str, options: MountOptions) -> int:
    """Fork; the child mounts and tells the parent through a pipe once the kernel has called init.

    Until then the child's stderr is that pipe too, so that a libfuse complaint reaches the user as
    the reason; the parent returns only when the mount is ready (0) or has failed (1).
    """
    from imgfs.fuse_ops import serve  # import before fork: errors show here, in the parent

    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_end)
        _child(image, mountpoint, options, write_end, serve)
    os.close(write_end)
    chunks = []
    while chunk := os.read(read_end, 65536):
        chunks.append(chunk)
    os.close(read_end)
    output = b"".join(chunks)
    if READY in output:
        return 0
    os.waitpid(pid, 0)
    lines = [line.strip() for line in output.decode("utf-8", "replace").splitlines() if line.strip()]
    reason = lines[-1] if lines else "the FUSE mount failed"
    return _fail(f"cannot mount {image.path} on {mountpoint}: {reason}")


def _child(image: OpenedImage, mountpoint: str, options: MountOptions, pipe: int, serve: Callable) -> None:
    code = 1
    try:
        os.setsid()
        devnull = os.open(os.devnull, os.O_RDWR)
        os.dup2(devnull, 0)
        os.dup2(devnull, 1)
        os.dup2(pipe, 2)
        _setup_logging(debug=False, logfile=options.logfile, to_stderr=False)
        _tune_malloc()

        def ready() -> None:
            os.write(pipe, READY)
            os.dup2(devnull, 2)
            os.close(pipe)

        serve(image, mountpoint, options, on_ready=ready)
        code = 0
    except BaseException as exc:  # noqa: BLE001 - report through the pipe, exit quietly
        try:
            os.write(pipe, f"\n{exc}\n".encode())
        except OSError:
            pass
    finally:
        os._exit(code)


def _setup_logging(debug: bool, logfile: Optional[str], to_stderr: bool, level: int = logging.INFO) -> None:
    root = logging.getLogger()
    root.setLevel(logging.DEBUG if debug else level)
    if logfile:
        handler: logging.Handler = logging.FileHandler(logfile)
        handler.setFormatter(logging.Formatter("%(asctime)s imgfs[%(process)d] %(levelname)s: %(message)s"))
    elif to_stderr:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("imgfs: %(levelname)s: %(message)s"))
    elif os.path.exists("/dev/log"):
        handler = logging.handlers.SysLogHandler(address="/dev/log")
        handler.setFormatter(logging.Formatter(f"imgfs[{os.getpid()}]: %(levelname)s: %(message)s"))
    else:
        handler = logging.NullHandler()
    root.handlers[:] = [handler]
    logging.getLogger("mfusepy").setLevel(logging.DEBUG if debug else logging.CRITICAL)


def _tune_malloc() -> None:
    """Keep glibc from trimming and growing the heap around every 128 KiB read buffer, and from giving each
    decoding thread its own arena (each holding freed chunks: tens of MiB over the cache size)."""
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-1, 64 << 20)  # M_TRIM_THRESHOLD
        libc.mallopt(-3, 16 << 20)  # M_MMAP_THRESHOLD
        libc.mallopt(-8, 2)  # M_ARENA_MAX: decoding threads would each keep an arena of freed chunks
    except (OSError, AttributeError):
        pass


# -- commands that need no FUSE -------------------------------------------------------------------------


def _run_command(name: str, argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog=f"imgfs {name}")
    if name == "umount":
        parser.add_argument("mountpoint")
        return _umount(parser.parse_args(argv).mountpoint)
    parser.add_argument("image")
    parser.add_argument("-o", dest="options", action="append", default=[], help="options, as for mounting")
    if name == "info":
        parser.add_argument("--json", action="store_true")
    elif name == "verify":
        pass
    elif name == "ls":
        parser.add_argument("path", nargs="?", default="/")
        parser.add_argument("-l", dest="long", action="store_true")
        parser.add_argument("-R", dest="recursive", action="store_true")
    else:
        parser.add_argument("path")
    args = parser.parse_args(argv)
    image = _open(args.image, parse_options(args.options))
    try:
        if name == "info":
            return _info(image, args.json)
        if name == "verify":
            return _verify(image)
        image.require_content()
        if name == "ls":
            return _ls(image, args.path, args.long, args.recursive)
        return _cat(image, args.path)
    finally:
        image.close()


def _verify(image: OpenedImage) -> int:
    """Check every checksum the image has: each layer says what it checks (EDC/ECC of raw sectors, a
    container's checksums)."""
    problems: list[str] = []
    checked: list[str] = []
    for layer, name in image.opened:
        if layer.checks:
            checked.append(f"{name}: {layer.checks}")
            problems += layer.verify()
    if not checked:
        print(f"{image.path}: nothing to verify (no layer of this image carries checksums)")
        return 0
    for problem in problems:
        print(f"imgfs: {problem}", file=sys.stderr)
    verdict = f"{len(problems)} problem(s)" if problems else "OK"
    print(f"{image.path}: {verdict} ({'; '.join(checked)})")
    return 1 if problems else 0


def _info(image: OpenedImage, as_json: bool) -> int:
    if as_json:
        print(json.dumps({"image": image.path, "layers": image.layers}, indent=2))
        return 0
    for layer in image.layers:
        if layer["layer"] == "file":
            segments = f" in {layer['segments']} segments" if "segments" in layer else ""
            print(f"{layer['path']}: {layer['size']:,} bytes{segments}")
        elif "partitions" in layer:
            _print_partitions(layer)
        elif "tracks" in layer and isinstance(layer["tracks"], list):
            _print_tracks(layer)
        else:
            _print_layer(layer)
    return 0


def _print_layer(layer: dict) -> None:
    skip = ("layer", "descriptors", "description", "partition", "shown_as")
    title = layer.get("description", layer["layer"])
    where = f"partition {layer['partition']} ({layer['shown_as']}): " if "partition" in layer else ""
    rows = {k: v for k, v in layer.items() if isinstance(v, list) and v and all(isinstance(i, dict) for i in v)}
    details = ", ".join(f"{k}={_fmt(v)}" for k, v in layer.items() if k not in skip and k not in rows)
    print(f"{where}{title}: {details}")
    for key, items in rows.items():
        if key == "descriptors":
            continue
        for item in items:
            print(f"  {key}: " + ", ".join(f"{k}={_fmt(v)}" for k, v in item.items()))
    for vd in layer.get("descriptors", []):
        print(f"  volume descriptor at sector {vd['sector']}: {vd['kind']} {vd['volume_id']!r}")


def _fmt(value: object) -> str:
    if isinstance(value, list):
        return "/".join(str(v) for v in value)
    return repr(value) if isinstance(value, str) and value == "" else str(value)


def _print_partitions(layer: dict) -> None:
    table = {k: v for k, v in layer.items() if k not in ("layer", "description", "partitions", "unit")}
    print(f"{layer['layer'].upper()} partition table: " + ", ".join(f"{k}={_fmt(v)}" for k, v in table.items()))
    unit = layer.get("unit", "LBA")
    print(f"  {'#':>3} {'first ' + unit:>13} {'size (bytes)':>16}  type")
    for part in layer["partitions"]:
        first = part.get("first_lba", part.get("start_lba", part.get("start_block", "?")))
        name = f" {part['name']!r}" if part.get("name") else ""
        clipped = f" (only {part['available']:,} bytes in the image)" if "available" in part else ""
        print(f"  {part['number']:>3} {first:>13} {part['size']:>16,}  {part['type']} [{part['type_id']}]"
              f"{name}{clipped}")


def _print_tracks(layer: dict) -> None:
    disc = {k: v for k, v in layer.items() if k not in ("layer", "description", "tracks", "file", "cdtext", "notes")}
    print(f"{layer['layer'].upper()} disc image {layer.get('file', '')}: " +
          ", ".join(f"{k}={_fmt(v)}" for k, v in disc.items()))
    for key, value in layer.get("cdtext", {}).items():
        print(f"  CD-TEXT {key}: {value}")
    print(f"  {'session':>7} {'track':>5}  {'mode':<22} {'start':>8} {'length':>8} {'pregap':>6}  file")
    for t in layer["tracks"]:
        extra = "".join(f" {k}={t[k]}" for k in ("isrc", "title", "performer", "flags") if k in t)
        print(f"  {t['session']:>7} {t['track']:>5}  {t['mode']:<22} {t['start']:>8} {t['length']:>8} "
              f"{t['pregap']:>6}  {os.path.basename(t.get('file', '-'))}{extra}")
    for note in layer.get("notes", []):
        print(f"  note: {note}")


def _long_line(tree: Tree, node: Node, fs: Filesystem, name: str) -> str:
    st = tree.attributes(node, fs)
    when = time.strftime("%Y-%m-%d %H:%M", time.gmtime(st.mtime_ns // 1_000_000_000))
    size = f"{os.major(st.rdev)}, {os.minor(st.rdev)}" if stat.S_ISCHR(st.mode) or stat.S_ISBLK(st.mode) \
        else str(st.size)
    line = f"{stat.filemode(st.mode)} {st.nlink:>3} {st.uid:>5} {st.gid:>5} {size:>12} {when} {name}"
    if node.target is not None:
        line += f" -> {node.target.decode('utf-8', 'surrogateescape')}"
    return line


def _ls(image: OpenedImage, path: str, long: bool, recursive: bool) -> int:
    tree = image.tree
    node, fs = tree.resolve(path)

    def show(child: Node, child_fs: Filesystem, name: str) -> str:
        return _long_line(tree, child, child_fs, name) if long else name

    out = sys.stdout
    if not node.is_dir:
        print(show(node, fs, path))
        return 0
    if not recursive:
        for name, child, child_fs in tree.listing(node, fs):
            out.write(show(child, child_fs, name) + "\n")
        return 0
    unreadable: list[str] = []

    def report(where: str, exc: Exception) -> None:  # one line for this directory; the walk goes on
        unreadable.append(where)
        _fail(f"{where}: {exc}")

    for child_path, child, child_fs in tree.walk_entries(path, on_error=report):
        out.write(show(child, child_fs, child_path) + "\n")
    return 1 if unreadable else 0


def _cat(image: OpenedImage, path: str) -> int:
    stream = image.tree.open(path)
    out = sys.stdout.buffer
    for offset in range(0, stream.size, 1 << 20):
        out.write(stream.pread(offset, 1 << 20))
    out.flush()
    return 0


def _umount(mountpoint: str) -> int:
    for tool in ("fusermount3", "fusermount"):
        if shutil.which(tool):
            done = subprocess.run([tool, "-u", mountpoint], capture_output=True, text=True)
            if done.returncode == 0:
                return 0
            error = done.stderr.strip().splitlines()
            if os.getuid() != 0:
                return _fail(error[-1] if error else f"cannot unmount {mountpoint}")
    done = subprocess.run(["umount", mountpoint], capture_output=True, text=True)
    if done.returncode == 0:
        return 0
    error = done.stderr.strip().splitlines()
    return _fail(error[-1] if error else f"cannot unmount {mountpoint}")
