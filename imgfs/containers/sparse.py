"""Apple sparse images: ``.sparseimage`` (one file of bands) and ``.sparsebundle`` (a folder of band files).

A sparse image stores the disk in bands of equal size, allocated on first write. Its 4096-byte
header (``sprs``) maps each stored band, in file order, to its place on the disk (1-based; 0 is
unused); when the header's 1008 slots run out, index nodes (also ``sprs``, 1010 slots each) follow,
chained by offset. A node's bands lie right after it: slot ``k`` of the node at ``N`` is stored at
``N + 4096 + k * band_size``. Bands never written read as zeros.

A sparse bundle is a folder: ``Info.plist`` gives ``band-size`` and ``size`` (bytes), ``bands/``
holds one file per written band, named by its number in hex. A missing band reads as zeros, and
so does whatever lies past the end of a short band file. An encrypted bundle keeps its encrcdsa
header in ``token`` and encrypts the bands' bytes.
"""

from __future__ import annotations

import os
import plistlib
import re
import struct
import threading
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Optional, Union

from imgfs.errors import CorruptImage, MissingFile, UnsupportedFormat
from imgfs.io.stream import Extent, ExtentStream, FileStream, Stream, read_exact
from imgfs.layer import Layer, OpenContext

SPARSE_MAGIC = b"sprs"
SECTOR_SIZE = 512
NODE_SIZE = 4096
# signature, version, sectors per band, flags, total sectors (32-bit), next index node, total sectors
HEADER_NODE = struct.Struct(">4s4IQQ28x")
INDEX_NODE = struct.Struct(">4sIIQ36x")  # signature, index node number, flags, next index node
MAX_BANDS = 1 << 26
MAX_BAND_SIZE = 1 << 32
MAX_OPEN_BANDS = 64
_HEX_NAME = re.compile(r"^[0-9a-fA-F]{1,16}$")


# -- .sparseimage -------------------------------------------------------------------------------------


class SparseImage(ExtentStream, Layer):
    """The disk inside a .sparseimage; describe() says how it is stored."""

    def __init__(self, runs: list[tuple[Optional[int], int]], base: Stream, details: dict[str, Any]) -> None:
        super().__init__((Extent(n, None if where is None else base, where or 0) for where, n in runs), name=base.name)
        self._details = details

    def describe(self) -> dict[str, Any]:
        return {"layer": "sparseimage", **self._details}


def open_sparseimage(stream: Stream, ctx: OpenContext) -> SparseImage:
    """The disk inside a .sparseimage (``sprs`` at byte 0)."""
    layer = "sparseimage"
    magic, version, sectors_per_band, _flags, sectors_low, next_node, sectors = HEADER_NODE.unpack(
        read_exact(stream, 0, HEADER_NODE.size, layer, "sparse image header"))
    if magic != SPARSE_MAGIC:
        raise UnsupportedFormat(f"expected {SPARSE_MAGIC!r} at byte 0, got {magic!r}", layer=layer)
    band_size = sectors_per_band * SECTOR_SIZE
    if not 0 < band_size <= MAX_BAND_SIZE:
        raise CorruptImage(f"absurd band size: {sectors_per_band} sectors", layer=layer, offset=8)
    size = (sectors or sectors_low) * SECTOR_SIZE
    band_count = -(-size // band_size)
    if band_count > MAX_BANDS:
        raise CorruptImage(f"absurd disk size {size} for bands of {band_size} bytes", layer=layer, offset=16)
    places = _band_places(stream, band_size, band_count, next_node)
    runs = _runs(places, band_size, size)
    details = {"version": version, "band_size": band_size, "size": size, "bands": band_count,
               "bands_stored": len(places)}
    return SparseImage(runs, stream, details)


def _band_places(stream: Stream, band_size: int, band_count: int, next_node: int) -> dict[int, int]:
    """Where each stored band lies in the file: {band number from 0: file offset}."""
    header = read_exact(stream, 0, NODE_SIZE, "sparseimage", "sparse image header")
    places: dict[int, int] = {}
    _read_slots(stream, header, HEADER_NODE.size, 0, band_size, band_count, places)
    seen = {0}
    while next_node:
        if next_node in seen:
            raise CorruptImage("the index nodes loop back on themselves", layer="sparseimage", offset=next_node)
        seen.add(next_node)
        node = read_exact(stream, next_node, NODE_SIZE, "sparseimage", "sparse image index node")
        magic, _number, _flags, following = INDEX_NODE.unpack_from(node)
        if magic != SPARSE_MAGIC:
            raise CorruptImage(f"expected an index node ({SPARSE_MAGIC!r}), got {magic!r}", layer="sparseimage",
                               offset=next_node)
        _read_slots(stream, node, INDEX_NODE.size, next_node, band_size, band_count, places)
        next_node = following
    return places


def _read_slots(stream: Stream, node: bytes, first: int, node_offset: int, band_size: int, band_count: int,
                places: dict[int, int]) -> None:
    slots = struct.unpack_from(f">{(NODE_SIZE - first) // 4}I", node, first)
    for slot, band in enumerate(slots):
        if band == 0:
            continue
        where = node_offset + first + slot * 4
        if band > band_count:
            raise CorruptImage(f"band map slot {slot} names band {band}, but the disk has {band_count} bands",
                               layer="sparseimage", offset=where)
        if band - 1 in places:
            raise CorruptImage(f"band {band} is stored twice", layer="sparseimage", offset=where)
        data_offset = node_offset + NODE_SIZE + slot * band_size
        if data_offset >= stream.size:
            raise CorruptImage(f"band map slot {slot} puts band {band} at byte {data_offset}, past the end of the "
                               f"file ({stream.size} bytes)", layer="sparseimage", offset=where)
        places[band - 1] = data_offset


def _runs(places: dict[int, int], band_size: int, size: int) -> list[tuple[Optional[int], int]]:
    """(file offset or None, length) runs covering the disk, neighbouring bands merged. Built from the stored
    bands alone: a disk of 2**26 bands with three stored costs three steps, not 2**26."""
    runs: list[tuple[Optional[int], int]] = []
    end = 0  # the disk offset the runs so far reach
    for band in sorted(places):
        start = band * band_size
        if start >= size:
            continue
        if start > end:
            _append(runs, None, start - end)
        _append(runs, places[band], min(band_size, size - start))
        end = start + min(band_size, size - start)
    if size > end:
        _append(runs, None, size - end)
    return runs


def _append(runs: list[tuple[Optional[int], int]], where: Optional[int], length: int) -> None:
    """Add a run, merged with the last one when it continues it (holes with holes, stored bands back to back)."""
    if runs:
        last_where, last_length = runs[-1]
        if (where is None and last_where is None) or (
                where is not None and last_where is not None and last_where + last_length == where):
            runs[-1] = (last_where, last_length + length)
            return
    runs.append((where, length))


# -- .sparsebundle ------------------------------------------------------------------------------------


def is_sparsebundle(path: str) -> bool:
    """A folder that holds ``Info.plist`` and ``bands/``: what ``open_sparsebundle`` opens."""
    return os.path.isfile(os.path.join(path, "Info.plist")) and os.path.isdir(os.path.join(path, "bands"))


class SparseBundleStream(Stream, Layer):
    """The bands of a sparse bundle as one disk; band files open on first touch, a few stay open."""

    def __init__(self, path: str, band_size: int, size: int, band_lengths: dict[int, int],
                 details: dict[str, Any]) -> None:
        self.name = path
        self.size = size
        self.band_size = band_size
        self._bands_dir = os.path.join(path, "bands")
        self._lengths = band_lengths
        self._details = details
        self._lock = threading.Lock()
        self._fds: OrderedDict[int, int] = OrderedDict()
        self._busy: dict[int, int] = {}

    def describe(self) -> dict[str, Any]:
        return {"layer": "sparsebundle", "path": self.name, "band_size": self.band_size, "size": self.size,
                "bands": -(-self.size // self.band_size), "bands_stored": len(self._lengths), **self._details}

    def pread(self, offset: int, length: int) -> bytes:
        n = self._clamp(offset, length)
        parts = []
        pos = offset
        while pos < offset + n:
            band, inner = divmod(pos, self.band_size)
            count = min(self.band_size - inner, offset + n - pos)
            parts.append(self._read_band(band, inner, count))
            pos += count
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def _read_band(self, band: int, inner: int, count: int) -> bytes:
        stored = max(0, min(count, self._lengths.get(band, 0) - inner))
        if stored == 0:
            return bytes(count)
        with self._open_band(band) as fd:
            data = os.pread(fd, stored, inner)
        if len(data) < stored:
            raise CorruptImage(f"band file {band:x} shrank while mounted", layer="sparsebundle",
                               offset=band * self.band_size + inner + len(data))
        return data + bytes(count - stored)

    @contextmanager
    def _open_band(self, band: int) -> Iterator[int]:
        with self._lock:
            fd = self._fds.pop(band, None)
            if fd is None:
                fd = self._open_fd(band)
            self._fds[band] = fd
            self._busy[band] = self._busy.get(band, 0) + 1
            self._evict()
        try:
            yield fd
        finally:
            with self._lock:
                self._busy[band] -= 1
                if not self._busy[band]:
                    del self._busy[band]
                self._evict()

    def _open_fd(self, band: int) -> int:
        path = os.path.join(self._bands_dir, f"{band:x}")
        try:
            return os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        except OSError as exc:
            raise MissingFile(f"cannot open band file {path}: {exc.strerror}", layer="sparsebundle") from None

    def _evict(self) -> None:
        for band in list(self._fds):
            if len(self._fds) <= MAX_OPEN_BANDS:
                return
            if band not in self._busy:
                os.close(self._fds.pop(band))

    def close(self) -> None:
        with self._lock:
            for band in [b for b in self._fds if b not in self._busy]:
                os.close(self._fds.pop(band))


def read_bundle_info(path: str) -> tuple[int, int, dict[str, Any]]:
    """``band-size`` and ``size`` (bytes) from a bundle's Info.plist, and what else describe() shows."""
    plist_path = os.path.join(path, "Info.plist")
    try:
        with open(plist_path, "rb") as f:
            info = plistlib.load(f)
    except OSError as exc:
        raise MissingFile(f"cannot read {plist_path}: {exc.strerror}", layer="sparsebundle") from None
    except Exception as exc:  # plistlib raises ExpatError, InvalidFileException, ValueError, ...
        raise CorruptImage(f"Info.plist is not a property list: {exc}", layer="sparsebundle") from None
    if not isinstance(info, dict):
        raise CorruptImage("Info.plist does not hold a dictionary", layer="sparsebundle")
    kind = info.get("diskimage-bundle-type", "com.apple.diskimage.sparsebundle")
    if kind != "com.apple.diskimage.sparsebundle":
        raise UnsupportedFormat(f"Info.plist: bundle type {kind!r} is not a sparse bundle", layer="sparsebundle")
    band_size = _plist_number(info, "band-size")
    size = _plist_number(info, "size")
    if not 0 < band_size <= MAX_BAND_SIZE or band_size % SECTOR_SIZE:
        raise CorruptImage(f"Info.plist: absurd band-size {band_size}", layer="sparsebundle")
    if -(-size // band_size) > MAX_BANDS:
        raise CorruptImage(f"Info.plist: absurd size {size} for bands of {band_size} bytes", layer="sparsebundle")
    version = info.get("bundle-backingstore-version")
    return band_size, size, {} if version is None else {"backingstore_version": version}


def _plist_number(info: dict, key: str) -> int:
    value: Union[object, None] = info.get(key)
    if value is None:
        raise CorruptImage(f"Info.plist has no {key}", layer="sparsebundle")
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise CorruptImage(f"Info.plist: {key} is not a number: {value!r}", layer="sparsebundle")
    if isinstance(value, str):
        if not value.strip().isdigit():
            raise CorruptImage(f"Info.plist: {key} is not a number: {value!r}", layer="sparsebundle")
        value = int(value)
    if value < 0:
        raise CorruptImage(f"Info.plist: {key} is negative: {value}", layer="sparsebundle")
    return int(value)


def _band_lengths(path: str, band_size: int, size: int) -> dict[int, int]:
    """{band number: bytes it stores} for every band file of the disk; other names are ignored."""
    lengths: dict[int, int] = {}
    band_count = -(-size // band_size)
    try:
        entries = list(os.scandir(os.path.join(path, "bands")))
    except OSError as exc:
        raise MissingFile(f"cannot list {path}/bands: {exc.strerror}", layer="sparsebundle") from None
    for entry in entries:
        if not _HEX_NAME.match(entry.name) or not entry.is_file():
            continue
        band = int(entry.name, 16)
        if band < band_count:
            lengths[band] = min(entry.stat().st_size, band_size, size - band * band_size)
    return lengths


def open_sparsebundle(path: str, ctx: OpenContext) -> Stream:
    """The disk inside the sparse bundle folder ``path`` (decrypted when its ``token`` is encrcdsa)."""
    if not is_sparsebundle(path):
        raise UnsupportedFormat(f"{path} is a folder without Info.plist and bands/, not a sparse bundle",
                                layer="sparsebundle")
    band_size, size, details = read_bundle_info(path)
    bands = SparseBundleStream(path, band_size, size, _band_lengths(path, band_size, size), details)
    token = os.path.join(path, "token")
    if os.path.isfile(token) and os.path.getsize(token) >= 8:
        with open(token, "rb") as f:
            encrypted = f.read(8) == b"encrcdsa"
        if encrypted:
            return _open_encrypted_bundle(token, bands, ctx)
    return bands


def _open_encrypted_bundle(token: str, bands: SparseBundleStream, ctx: OpenContext) -> Stream:
    # Imported here, not at the top: this module is imported on every mount (the registry asks it whether a
    # path is a bundle), and the encryption layer's cryptography import costs ~50 ms of mount time.
    from imgfs.containers.dmg.encrypted import open_encrypted_parts, read_v2_header

    header_stream = FileStream(token)
    try:
        header = read_v2_header(header_stream)
    finally:
        header_stream.close()
    header.data_offset = 0  # the bands hold nothing but the encrypted blocks
    header.data_size = min(header.data_size, bands.size) if header.data_size else bands.size
    try:
        return open_encrypted_parts(header, bands, ctx, details={"inside": bands.describe()}, owns=bands)
    except BaseException:
        bands.close()
        raise
