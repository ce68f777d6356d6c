"""The FUSE kernel protocol, as the kernel speaks it on ``/dev/fuse``: opcodes, flags and structures.

Written from ``<linux/fuse.h>`` (protocol 7.x), whose licence is GPL-2.0 with the syscall note *or*
BSD-2-Clause: this is the kernel's interface, not libfuse's code. Every structure is little-endian here
because imgfs runs on the machine whose kernel it talks to (``=`` would do as well; ``<`` pins the sizes).
"""

from __future__ import annotations

import struct

KERNEL_VERSION = 7
MINOR_VERSION = 38  # the newest minor whose structures we know; the kernel uses the lower of both
MIN_MINOR_VERSION = 28  # max_pages and cache_symlinks (Linux 4.20); older kernels are refused
ROOT_ID = 1

# -- opcodes ----------------------------------------------------------------------------------------
LOOKUP, FORGET, GETATTR, SETATTR, READLINK, SYMLINK = 1, 2, 3, 4, 5, 6
MKNOD, MKDIR, UNLINK, RMDIR, RENAME, LINK, OPEN, READ, WRITE, STATFS, RELEASE = 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18
FSYNC, SETXATTR, GETXATTR, LISTXATTR, REMOVEXATTR, FLUSH, INIT, OPENDIR = 20, 21, 22, 23, 24, 25, 26, 27
READDIR, RELEASEDIR, FSYNCDIR, GETLK, SETLK, SETLKW, ACCESS, CREATE, INTERRUPT = 28, 29, 30, 31, 32, 33, 34, 35, 36
BMAP, DESTROY, IOCTL, POLL, NOTIFY_REPLY, BATCH_FORGET, FALLOCATE, READDIRPLUS = 37, 38, 39, 40, 41, 42, 43, 44
RENAME2, LSEEK, COPY_FILE_RANGE, SETUPMAPPING, REMOVEMAPPING, SYNCFS, TMPFILE, STATX = 45, 46, 47, 48, 49, 50, 51, 52

# requests that would change the filesystem: EROFS, should the VFS let one through
WRITING = frozenset({SETATTR, SYMLINK, MKNOD, MKDIR, UNLINK, RMDIR, RENAME, LINK, WRITE, SETXATTR, REMOVEXATTR,
                     CREATE, FALLOCATE, RENAME2, COPY_FILE_RANGE, TMPFILE})
NO_REPLY = frozenset({FORGET, BATCH_FORGET, INTERRUPT})

NAMES = {value: name for name, value in globals().items() if name.isupper() and isinstance(value, int)
         and name not in ("KERNEL_VERSION", "MINOR_VERSION", "MIN_MINOR_VERSION", "ROOT_ID")}

# -- INIT flags (fuse_init_in.flags, and flags2 << 32 with INIT_EXT) ------------------------------------
ASYNC_READ = 1 << 0
BIG_WRITES = 1 << 5
SPLICE_WRITE = 1 << 7
DO_READDIRPLUS = 1 << 13
READDIRPLUS_AUTO = 1 << 14
NO_OPEN_SUPPORT = 1 << 17
PARALLEL_DIROPS = 1 << 18
MAX_PAGES = 1 << 22
CACHE_SYMLINKS = 1 << 23
NO_OPENDIR_SUPPORT = 1 << 24
INIT_EXT = 1 << 30

# fuse_open_out.open_flags
FOPEN_KEEP_CACHE = 1 << 1
FOPEN_CACHE_DIR = 1 << 3

NOTIFY_STORE = 4  # fuse_notify_code: put bytes into an inode's page cache

# -- structures -------------------------------------------------------------------------------------
IN_HEADER = struct.Struct("<IIQQIIIHH")  # len, opcode, unique, nodeid, uid, gid, pid, total_extlen, padding
OUT_HEADER = struct.Struct("<IiQ")  # len, error (negative errno), unique
# fuse_attr: ino, size, blocks, atime, mtime, ctime, atimensec, mtimensec, ctimensec, mode, nlink, uid, gid,
# rdev, blksize, flags
ATTR = struct.Struct("<QQQqqqIIIIIIIIII")  # times are signed: before 1970 is negative
ENTRY_OUT = struct.Struct("<QQQQII")  # nodeid, generation, entry_valid, attr_valid, their nsec; then ATTR
ATTR_OUT = struct.Struct("<QII")  # attr_valid, attr_valid_nsec, dummy; then ATTR
READ_IN = struct.Struct("<QQIIQII")  # fh, offset, size, read_flags, lock_owner, flags, padding (also READDIR)
DIRENT = struct.Struct("<QQII")  # ino, off, namelen, type; then the name, padded to 8 bytes
INIT_IN = struct.Struct("<IIIII")  # major, minor, max_readahead, flags, flags2 (7.36+)
# major, minor, max_readahead, flags, max_background, congestion_threshold, max_write, time_gran, max_pages,
# map_alignment, flags2, unused[7]
INIT_OUT = struct.Struct("<IIIIHHIIHHI28x")
GETXATTR_IN = struct.Struct("<II")  # size, padding (then the name for GETXATTR)
GETXATTR_OUT = struct.Struct("<II")  # size, padding
ACCESS_IN = struct.Struct("<II")  # mask, padding
FORGET_IN = struct.Struct("<Q")  # nlookup
BATCH_FORGET_IN = struct.Struct("<II")  # count, dummy; then count × FORGET_ONE
FORGET_ONE = struct.Struct("<QQ")  # nodeid, nlookup
OPEN_OUT = struct.Struct("<QII")  # fh, open_flags, padding
# fuse_kstatfs: blocks, bfree, bavail, files, ffree, bsize, namelen, frsize, padding, spare[6]
KSTATFS = struct.Struct("<QQQQQIIII24x")
NOTIFY_STORE_OUT = struct.Struct("<QQII")  # nodeid, offset, size, padding; then the bytes

MIN_READ_BUFFER = 8192  # the kernel refuses smaller buffers for reading requests


def dirent_type(mode: int) -> int:
    """A dirent's type (DT_*) from a mode: the S_IFMT bits shifted down, as the kernel defines them."""
    return (mode >> 12) & 0o17


def padded(length: int) -> int:
    """Records in a directory reply are aligned to 8 bytes."""
    return (length + 7) & ~7
