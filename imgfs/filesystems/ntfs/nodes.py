"""Nodes listed from a directory index and completed from their MFT record on first ``stat``.

A directory's index holds a copy of each child's $FILE_NAME (flags, size, times), so listing a directory of
thousands of files reads its index blocks and nothing else. That copy is what Windows itself lists, but it
is not always current (a hard link's other names keep the size they had), and it has no link count. So the
first time one of the values ``stat`` shows is asked for, the child's MFT record is read and they are taken
from it: the size of the unnamed $DATA, the times of $STANDARD_INFORMATION, the count of names. A ``find``
that only wants names and types never reads a record.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NamedTuple, Optional

from imgfs.filesystems.base import Node

if TYPE_CHECKING:
    from imgfs.filesystems.ntfs.reader import NtfsFilesystem

SETTLED_SLOTS = ("size", "nlink", "mtime_ns", "atime_ns", "ctime_ns")


class DirHandle(NamedTuple):
    """A directory: its record, and the records from the root down to it (a child among them is a loop)."""

    record: int
    folders: tuple[int, ...]
    hidden: bool = False  # its contents are not shown (System Volume Information)


class FileHandle(NamedTuple):
    record: int
    sequence: int  # what the directory entry expects the record's sequence number to be


class NtfsNode(Node):
    __slots__ = ("_owner", "attrib", "streams")

    def __init__(self, *args: Any, owner: Optional[NtfsFilesystem] = None, **kwargs: Any) -> None:
        self._owner = None
        super().__init__(*args, **kwargs)
        self._owner = owner  # None once the record's values are in
        self.attrib: Optional[int] = None  # the DOS/NTFS attribute flags, once the record has been read
        self.streams = True  # may it have named streams? (False once the record says it has none)

    def remember(self, attrib: int, streams: bool) -> None:
        """What the record says about its extended attributes, so that asking for them needs no record."""
        self.attrib, self.streams = attrib, streams

    def settle(self) -> None:
        """Take the stat values from the MFT record, once."""
        owner, self._owner = self._owner, None
        if owner is not None:
            owner.settle(self)


def _settled(slot: str) -> property:
    stored = Node.__dict__[slot]  # the slot's own descriptor

    def get(node: NtfsNode) -> Any:
        if node._owner is not None:
            node.settle()
        return stored.__get__(node, Node)

    def put(node: NtfsNode, value: Any) -> None:
        stored.__set__(node, value)

    return property(get, put)


for _slot in SETTLED_SLOTS:
    setattr(NtfsNode, _slot, _settled(_slot))
