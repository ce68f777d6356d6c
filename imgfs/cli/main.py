"""The entry points: ``imgfs`` (mount, or one of the commands) and ``mount.imgfs`` (for mount(8)).

Every failure is one line on stderr and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
import textwrap
from typing import Callable, NamedTuple, Optional

from imgfs.cli.common import UsageError, error_line, fail
from imgfs.errors import ImageError
from imgfs.options import OPTIONS, OptionError


class Command(NamedTuple):
    module: str  # where add_arguments(name, parser) and run(name, args) are
    usage: str
    summary: str


COMMANDS: dict[str, Command] = {
    "open": Command("imgfs.cli.desktop", "IMAGE... [--no-browse] [-o OPTIONS]",
                    "mount where the desktop shows it, print the folder, open it in the file manager"),
    "close": Command("imgfs.cli.desktop", "IMAGE|MOUNTPOINT...", "unmount (the daemon ends)"),
    "list": Command("imgfs.cli.desktop", "[--json]", "the imgfs mounts: image, mount point, format"),
    "info": Command("imgfs.cli.info", "IMAGE [--json] [-v]", "the image's layers and their details"),
    "ls": Command("imgfs.cli.commands", "IMAGE [PATH] [-l] [-R]", "list without mounting"),
    "cat": Command("imgfs.cli.commands", "IMAGE PATH", "print a file without mounting"),
    "extract": Command("imgfs.cli.extract", "IMAGE [PATH] DEST [-f]", "copy the files out without mounting"),
    "verify": Command("imgfs.cli.commands", "IMAGE", "check EDC/ECC of raw sectors and container checksums"),
    "umount": Command("imgfs.cli.desktop", "MOUNTPOINT|IMAGE...", "unmount, as close"),
}


def usage() -> str:
    """``imgfs --help``: every form, every -o option, and where the logs go."""
    lines = ["usage: imgfs IMAGE MOUNTPOINT [-o OPTIONS] [-f] [-d] [-s]"]
    lines += [f"       imgfs {name} {cmd.usage}" for name, cmd in COMMANDS.items()]
    lines += ["", "Mount an image read-only as a folder; the command returns once the mount is ready.",
              "  -f  stay in the foreground     -d  debug output (as -o debug)     -s  serve from one thread",
              "  -V  the version                -h  this help (imgfs COMMAND -h: the command's own)", "",
              "Commands:"]
    lines += [f"  {name:<8} {cmd.summary}" for name, cmd in COMMANDS.items()]
    lines += ["", "Options (-o, comma-separated; imgfs info, ls, cat, extract and verify take them too):"]
    for option in OPTIONS:
        lines += textwrap.wrap(option.help, 100, initial_indent=f"  {option.usage:<20} ",
                               subsequent_indent=" " * 23, break_on_hyphens=False)
    lines += ["  ro, rw, dev, nodev, suid, nosuid, exec, noexec, noauto, nofail, user, users, defaults, _netdev, x-*:",
              "                       accepted and ignored: the mount is always read-only", "",
              "Logs: in the foreground, on stderr; else logfile=PATH, else syslog (/dev/log), else",
              "$XDG_STATE_HOME/imgfs/imgfs.log (~/.local/state/imgfs/imgfs.log).",
              "An image named like a command mounts through a path: imgfs ./info /mnt/x"]
    return "\n".join(lines)


def main(argv: Optional[list[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    _warnings_to_stderr()
    if argv and argv[0] in COMMANDS:
        return guarded(lambda: run_command(argv[0], argv[1:]))
    from imgfs.cli.mount import mount_main  # the commands do without its imports

    return guarded(lambda: mount_main(argv, usage()))


def mount_helper_main(argv: Optional[list[str]] = None) -> int:
    """``mount.imgfs SPEC DIR [-sfnv] [-o OPTIONS]``, as mount(8) runs helpers for ``-t imgfs``."""
    from imgfs.cli.mount import helper_argv, mount_main

    args = helper_argv(sys.argv[1:] if argv is None else list(argv))
    if args is None:
        return 0
    _warnings_to_stderr()
    return guarded(lambda: mount_main(args, usage()))


def _warnings_to_stderr() -> None:
    """Until a mount sets up its own logging: warnings and errors as ``imgfs: WARNING: ...`` lines."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("imgfs: %(levelname)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)


def guarded(call: Callable[[], int]) -> int:
    try:
        return call()
    except (ImageError, OptionError) as exc:
        return fail(str(exc))
    except UsageError as exc:
        print(f"imgfs: {exc}\n{usage()}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        return 0
    except KeyboardInterrupt:
        return 130
    except OSError as exc:
        return fail(f"{exc.filename + ': ' if exc.filename else ''}{exc.strerror or exc}")
    except Exception as exc:  # noqa: BLE001 - one line, never a traceback
        return fail(f"internal error: {type(exc).__name__}: {exc}", 70)


def run_command(name: str, argv: list[str]) -> int:
    command = COMMANDS[name]
    module = importlib.import_module(command.module)
    parser = argparse.ArgumentParser(prog=f"imgfs {name}", description=command.summary)
    module.add_arguments(name, parser)
    args = parser.parse_args(argv)
    image = getattr(args, "image", None)
    try:
        return int(module.run(name, args))
    except ImageError as exc:
        return fail(error_line(exc, image))
    except module_errors(module) as exc:
        return fail(str(exc))


def module_errors(module: object) -> tuple[type[BaseException], ...]:
    """The exceptions a command's module raises for the user's mistakes (a path not in the image)."""
    return tuple(getattr(module, "USER_ERRORS", ()))
