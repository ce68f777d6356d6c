"""Nodes listed from a directory index and completed from their MFT record on first ``stat``.

A directory's index holds a copy of each child's $FILE_NAME (flags, size, times), so listing a directory of
thousands of files reads its index blocks and nothing else. That copy is what Windows itself lists, but it
is not always current (a hard link's other names keep the size they had), and it has no link count. So the
first time one of the values ``stat`` shows is asked for, the child's MFT record is read and they are taken
from it: the size of the unnamed $DATA, the times of $STANDARD_INFORMATION, the count of names. A ``find``
that only wants names and types never reads a record.

A listing's children wait together (``Siblings``): when one is asked for, the ones whose records follow it
in the MFT are read with it, up to ``WINDOW``, in as few reads as the records' places allow. A folder listed
with its attributes (READDIRPLUS, ``ls -l``) wants them all anyway; a single ``stat`` reads a few more
records than it needs, not the whole folder.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NamedTuple, Optional, Union

from imgfs.filesystems.base import Node

if TYPE_CHECKING:
    from imgfs.filesystems.ntfs.reader import NtfsFilesystem

SETTLED_SLOTS = ("size", "nlink", "mtime_ns", "atime_ns", "ctime_ns")
WINDOW = 64  # siblings settled together: 64 records of 1 KiB are one 64 KiB read when they are adjacent


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
        self._owner: Union[None, NtfsFilesystem, Siblings] = None
        super().__init__(*args, **kwargs)
        self._owner = owner  # who settles it; None once the record's values are in
        self.attrib: Optional[int] = None  # the DOS/NTFS attribute flags, once the record has been read
        self.streams = True  # may it have named streams? (False once the record says it has none)

    def remember(self, attrib: int, streams: bool) -> None:
        """What the record says about its extended attributes, so that asking for them needs no record."""
        self.attrib, self.streams = attrib, streams

    def settle(self) -> None:
        """Take the stat values from the MFT record, once."""
        owner, self._owner = self._owner, None
        if isinstance(owner, Siblings):
            owner.settle(self)
        elif owner is not None:
            owner.settle_many([self])


class Siblings:
    """The children of one listing still waiting for their records, in record order."""

    __slots__ = ("owner", "waiting", "records")

    def __init__(self, owner: NtfsFilesystem, nodes: Sequence[NtfsNode]) -> None:
        self.owner = owner
        self.waiting = sorted(nodes, key=lambda node: node.ino)
        self.records = [node.ino for node in self.waiting]
        for node in self.waiting:
            node._owner = self

    def settle(self, node: NtfsNode) -> None:
        """``node`` (already taken off the waiting) and the next waiting siblings by record number."""
        start = bisect.bisect_left(self.records, node.ino)
        batch = [node]
        for sibling in self.waiting[start : start + WINDOW]:
            if sibling._owner is self:
                sibling._owner = None
                batch.append(sibling)
        self.owner.settle_many(batch)


def wait_together(owner: NtfsFilesystem, nodes: Sequence[Node]) -> None:
    """Let the children of one listing that wait for ``owner`` be settled a window at a time."""
    waiting = [node for node in nodes if isinstance(node, NtfsNode) and node._owner is owner]
    if len(waiting) > 1:
        Siblings(owner, waiting)


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
