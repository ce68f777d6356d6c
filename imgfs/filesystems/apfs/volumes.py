"""An APFS container as a volume set: one volume per entry of ``nx_fs_oid``, each opened directly.

APFS volumes share their container's blocks, so they are not streams to detect again: each ``Volume``
opens its filesystem itself (its object map, its key when it is encrypted, its tree). A container with
one volume shows it at the root; several are folders ``N NAME``. Roles go into ``imgfs info``.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import TYPE_CHECKING, Any, Optional

from imgfs.errors import ImageError, UnsupportedFormat
from imgfs.filesystems.apfs.container import Container, VolumeEntry
from imgfs.filesystems.apfs.objects import LAYER
from imgfs.filesystems.apfs.omap import ObjectMap
from imgfs.filesystems.apfs.reader import ApfsFilesystem
from imgfs.filesystems.apfs.superblock import FS_ONEKEY
from imgfs.filesystems.apfs.volume import VolumeTree
from imgfs.io.stream import Stream
from imgfs.layer import Layer, OpenContext, Volume, VolumeSet

if TYPE_CHECKING:  # cryptography is imported only when a volume is encrypted: it costs every mount 40 ms
    from imgfs.filesystems.apfs.crypto import VolumeCipher
    from imgfs.filesystems.apfs.keybag import Entry


class ApfsContainer(VolumeSet):
    kind = "apfs"

    def __init__(self, stream: Stream, ctx: OpenContext) -> None:
        self.container = Container(stream, ctx.cache)
        self.ctx = ctx
        self._keybag: Optional[list[Entry]] = None
        self._ciphers: dict[int, VolumeCipher] = {}
        self._failures: list[str] = []  # why volumes did not open: the reason when none did
        volumes = self.container.volumes
        if volumes and all(v.superblock.encrypted for v in volumes):
            # nothing could be shown without a key: a missing or wrong passphrase refuses the image in one
            # line now; beside a volume that is not encrypted, it only leaves its own volume out
            for entry in volumes:
                name = entry.superblock.name or f"volume {entry.index + 1}"
                self._ciphers[entry.index] = self._cipher(entry, ctx, name)

    def volumes(self) -> Sequence[Volume]:
        return [Volume(name=str(entry.index + 1), open=partial(self.open_volume, entry),
                       label=entry.superblock.name, details=self._details(entry))
                for entry in self.container.volumes]

    @staticmethod
    def _details(entry: VolumeEntry) -> dict[str, Any]:
        sb = entry.superblock
        return {"volume": entry.index + 1, "roles": sb.roles, "encrypted": sb.encrypted}

    def open_volume(self, entry: VolumeEntry, ctx: OpenContext) -> Layer:
        """The filesystem of one volume (asking for its passphrase when it is encrypted)."""
        try:
            return self._open_volume(entry, ctx)
        except ImageError as exc:
            self._failures.append(f"volume {entry.index + 1} ({entry.superblock.name!r}): {exc}")
            raise

    def _open_volume(self, entry: VolumeEntry, ctx: OpenContext) -> Layer:
        c, sb = self.container, entry.superblock
        name = sb.name or f"volume {entry.index + 1}"
        cipher = self._ciphers.get(entry.index) or (self._cipher(entry, ctx, name) if sb.encrypted else None)
        omap = ObjectMap(c.blocks, ctx.cache, sb.omap_oid, f"{name!r} volume")
        tree = VolumeTree(c.blocks, ctx.cache, sb, omap, c.superblock.xid, repr(name), cipher=cipher)
        return ApfsFilesystem(tree, self._details(entry))

    def _cipher(self, entry: VolumeEntry, ctx: OpenContext, name: str) -> VolumeCipher:
        from imgfs.filesystems.apfs import keybag as kb
        from imgfs.filesystems.apfs.crypto import VolumeCipher

        c, sb = self.container, entry.superblock
        if not sb.flags & FS_ONEKEY:
            raise UnsupportedFormat(f"APFS volume {name!r} is encrypted per file (hardware encryption, keys held "
                                    "by a T2 chip or Apple silicon): not supported", layer=LAYER)
        if self._keybag is None:
            start, count = c.superblock.keylocker
            self._keybag = kb.container_keybag(c.blocks, start, count, c.superblock.uuid)
        key = kb.volume_key(self._keybag, kb.volume_keybag(c.blocks, sb.uuid), sb.uuid, ctx.passphrase(), name,
                            ctx.progress)
        return VolumeCipher(c.blocks, ctx.cache, key)

    def empty_reason(self) -> str:
        if not self.container.volumes:
            return "the APFS container holds no volume"
        return "no APFS volume could be opened: " + "; ".join(self._failures) if self._failures else ""

    def describe(self) -> dict[str, Any]:
        sb = self.container.superblock
        return {"layer": "apfs container", "uuid": sb.uuid_text, "block_size": sb.block_size,
                "block_count": sb.block_count, "checkpoint_xid": sb.xid, "volumes": len(self.container.volumes),
                **({"warnings": self.container.warnings} if self.container.warnings else {})}


def open_apfs(stream: Stream, ctx: OpenContext) -> ApfsContainer:
    """The registry's opener: an APFS container (an Apple_APFS partition, or a bare container)."""
    return ApfsContainer(stream, ctx)
