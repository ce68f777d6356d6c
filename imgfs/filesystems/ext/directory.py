"""Directory entries, read linearly block by block.

A linear walk reads every kind of ext directory: an htree (dir_index) keeps its index inside entries
that the walk skips (the root's ".." entry spans the dx_root, and each interior index block is one
entry with inode 0 spanning the block), and metadata_csum's tail is an entry with inode 0 as well.
Entries never cross a block boundary, so a bad length is caught within its block.
"""

from __future__ import annotations

import stat
import struct

from imgfs.errors import CorruptImage

DIRENT = struct.Struct("<IHBB")  # inode, rec_len, name_len, file_type (or the high byte of name_len)
# The directory entry's file type: only a hint, the inode's mode is the truth.
FILE_TYPE_MODES = {1: stat.S_IFREG, 2: stat.S_IFDIR, 3: stat.S_IFCHR, 4: stat.S_IFBLK, 5: stat.S_IFIFO,
                   6: stat.S_IFSOCK, 7: stat.S_IFLNK}
INLINE_PARENT_SIZE = 4  # an inline directory's i_block starts with its parent's inode number

Entry = tuple[int, bytes, int]  # inode number, raw name, file type


def parse_block(data: bytes, start: int, end: int, where: int, filetype: bool, out: list[Entry]) -> None:
    """Append the live entries of ``data[start:end]`` (one directory block, at byte ``where`` in the volume)."""
    big = end - start >= 65536  # 64 KiB blocks do not fit rec_len in 16 bits: the low two bits carry more
    pos = start
    unpack = DIRENT.unpack_from
    while pos < end:
        if pos + 8 > end:
            raise CorruptImage(f"directory entry header: expected 8 bytes, got {end - pos} before the block ends",
                               layer="ext", offset=where + pos - start)
        ino, rec_len, name_len, ftype = unpack(data, pos)
        if big:
            rec_len = 65536 if rec_len in (0, 65535) else (rec_len & 65532) | (rec_len & 3) << 16
        if rec_len < 8 or rec_len & 3 or pos + rec_len > end:
            raise CorruptImage(f"directory entry length: expected a multiple of 4 from 8 to {end - pos}, "
                               f"got {rec_len}", layer="ext", offset=where + pos - start)
        if not filetype:
            name_len |= ftype << 8  # the good old format: a 16-bit name length and no type
            ftype = 0
        if name_len > rec_len - 8:
            raise CorruptImage(f"directory entry name length: expected at most {rec_len - 8}, got {name_len}",
                               layer="ext", offset=where + pos - start)
        if ino:
            out.append((ino, data[pos + 8 : pos + 8 + name_len], ftype))
        pos += rec_len


def parse_blocks(data: bytes, block_size: int, where: int, filetype: bool, out: list[Entry]) -> None:
    """Every block of a contiguous piece of a directory."""
    for start in range(0, len(data) - block_size + 1, block_size):
        parse_block(data, start, start + block_size, where + start, filetype, out)


def parse_inline(i_block: bytes, i_block_offset: int, extra: bytes, filetype: bool) -> list[Entry]:
    """An inline directory: entries after the parent's number in i_block, then in the system.data value.
    The two areas are separate blocks as far as entries go. The parent comes first, as a ".." entry."""
    out: list[Entry] = [(struct.unpack_from("<I", i_block)[0], b"..", 2)]
    parse_block(i_block, INLINE_PARENT_SIZE, len(i_block), i_block_offset + INLINE_PARENT_SIZE, filetype, out)
    if extra:
        parse_block(extra, 0, len(extra), i_block_offset, filetype, out)
    return out


def clean_name(raw: bytes) -> str:
    """A name as the mount shows it: UTF-8 where it is, other bytes kept through surrogateescape (a "/" or a NUL
    is escaped by ``Filesystem.children``, as every format's is)."""
    return raw.decode("utf-8", "surrogateescape")
