"""Mount options (``-o a,b=c``): the ones imgfs uses, and the ones accepted and ignored."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Optional

from imgfs.registry import NAMESPACES
from imgfs.tree import Presentation

DEFAULT_CACHE_SIZE = 64 << 20

# Always read-only, so these cannot change anything; mount(8) and mount.fuse3 pass some of them
# on their own (mount.fuse3 adds "rw,dev,suid" when the user gave no options).
IGNORED = {"ro", "rw", "dev", "nodev", "suid", "nosuid", "exec", "noexec", "noauto", "nofail", "user",
           "nouser", "users", "auto", "defaults", "_netdev", "atime", "noatime", "relatime", "strictatime",
           "nodiratime", "diratime", "sync", "async", "loop", "owner", "group", "silent", "loud"}
PASSED_TO_FUSE = {"allow_root", "auto_unmount"}


@dataclass(frozen=True)
class OptionDoc:
    """One ``-o`` option as ``--help``, the man page and the shell completions list it."""

    name: str
    value: str  # what follows "=" ("N", "SIZE"); "" for an option without a value
    help: str

    @property
    def usage(self) -> str:
        return f"{self.name}={self.value}" if self.value else self.name


OPTIONS: tuple[OptionDoc, ...] = (
    OptionDoc("namespace", "NAME", "which directory tree of a volume that has several: auto (the richest) or one of "
              + ", ".join(NAMESPACES)),
    OptionDoc("uid", "N", "show every entry as owned by this user (default: the image's owners, else yours)"),
    OptionDoc("gid", "N", "show every entry as owned by this group"),
    OptionDoc("umask", "OCTAL", "remove these permission bits from every mode"),
    OptionDoc("allow_other", "", "let other users in (with default_permissions; non-root users need "
              "user_allow_other in /etc/fuse.conf)"),
    OptionDoc("allow_root", "", "let root in besides you (passed to FUSE)"),
    OptionDoc("default_permissions", "", "let the kernel enforce the modes the image gives"),
    OptionDoc("auto_unmount", "", "unmount when the daemon ends, even when it is killed (passed to FUSE)"),
    OptionDoc("cache_size", "SIZE", "bytes of decoded data kept in memory, e.g. 256M (default 64M)"),
    OptionDoc("verify", "", "check the image's checksums (EDC/ECC of raw sectors, container checksums) before "
              "mounting and while reading: damaged data reads as EIO"),
    OptionDoc("rawviews", "", "a folder .imgfs at the root: info.json, tracks, sessions, boot images, partitions"),
    OptionDoc("passfile", "PATH", "the passphrase of an encrypted image, first line of PATH (else "
              "$IMGFS_PASSPHRASE, else a prompt on a terminal)"),
    OptionDoc("logfile", "PATH", "where a background mount logs (default: syslog through /dev/log, else "
              "$XDG_STATE_HOME/imgfs/imgfs.log)"),
    OptionDoc("debug", "", "stay in the foreground and print every FUSE request (as -d)"),
    OptionDoc("single_threaded", "", "serve FUSE from one thread (as -s)"),
)


class OptionError(ValueError):
    pass


@dataclass
class MountOptions:
    allow_other: bool = False
    uid: Optional[int] = None
    gid: Optional[int] = None
    umask: Optional[int] = None
    cache_size: int = DEFAULT_CACHE_SIZE
    namespace: str = "auto"
    logfile: Optional[str] = None
    single_threaded: bool = False
    verify: bool = False  # check EDC/ECC of raw sectors and container checksums while reading
    raw_views: bool = False  # the .imgfs folder: info.json, tracks, sessions, boot images, partitions
    passfile: Optional[str] = None  # a file holding the passphrase of an encrypted image
    debug: bool = False  # -o debug: as -d (every FUSE request logged, in the foreground)
    default_permissions: bool = False  # the kernel checks the image's modes for everyone, the mounting user too
    fuse_flags: list[str] = field(default_factory=list)

    def presentation(self) -> Presentation:
        """What ``stat`` shows: owners and modes after uid=, gid= and umask=; the mounting user by default."""
        return Presentation(self.uid, self.gid, self.umask or 0, os.getuid(), os.getgid())


def parse_size(text: str) -> int:
    match = re.fullmatch(r"\s*(\d+)\s*([kmgt]?)i?b?\s*", text.lower())
    if not match:
        raise OptionError(f"cache_size={text}: expected a size such as 256M")
    return int(match.group(1)) << (10 * " kmgt".index(match.group(2) or " "))


def _number(key: str, value: str, base: int = 10) -> int:
    try:
        return int(value, base)
    except ValueError:
        raise OptionError(f"{key}={value}: expected a number") from None


def parse_options(groups: list[str], options: Optional[MountOptions] = None) -> MountOptions:
    opts = options or MountOptions()
    for group in groups:
        for item in filter(None, (part.strip() for part in group.split(","))):
            key, has_value, value = item.partition("=")
            _apply(opts, key, value if has_value else None)
    return opts


def _apply(opts: MountOptions, key: str, value: Optional[str]) -> None:
    if key in IGNORED or key.startswith("x-") or key == "comment":
        return
    if key == "allow_other":
        opts.allow_other = True
    elif key == "single_threaded":
        opts.single_threaded = True
    elif key == "verify" and value is None:
        opts.verify = True
    elif key == "rawviews" and value is None:
        opts.raw_views = True
    elif key == "debug" and value is None:
        opts.debug = True
    elif key == "default_permissions" and value is None:
        opts.default_permissions = True
    elif key in ("passphrase", "password", "pass"):
        raise OptionError(f"{key}= is not accepted on the command line, where other users can read it: "
                          "use passfile=FILE or the IMGFS_PASSPHRASE environment variable")
    elif key in PASSED_TO_FUSE and value is None:
        opts.fuse_flags.append(key)
    elif value is None:
        raise OptionError(f"unknown option {key!r}" if key not in ("uid", "gid", "umask", "cache_size",
                                                                    "namespace", "logfile", "passfile")
                          else f"option {key} needs a value ({key}=...)")
    elif key == "uid":
        opts.uid = _number(key, value)
    elif key == "gid":
        opts.gid = _number(key, value)
    elif key == "umask":
        opts.umask = _number(key, value, 8) & 0o7777
    elif key == "cache_size":
        opts.cache_size = parse_size(value)
    elif key == "namespace":
        if value not in ("auto", *NAMESPACES):
            raise OptionError(f"namespace={value}: expected one of auto, {', '.join(NAMESPACES)}")
        opts.namespace = value
    elif key == "logfile":
        opts.logfile = value
    elif key == "passfile":
        opts.passfile = value
    else:
        raise OptionError(f"unknown option {key}={value}")
