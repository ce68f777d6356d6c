"""Opening an image: from the file, through detection and the partition map, to the tree.

One disk: the filesystem at the root. A partitioned disk: one folder per partition that holds a
filesystem imgfs reads, named ``N LABEL`` (the partition number, then the filesystem's label or else
the partition's name), and a raw ``N.img`` file for every other partition with data, so that its
bytes can still be copied. A disk with exactly one partition, holding a readable filesystem, shows
that filesystem at the root.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from imgfs.containers import OpenContext
from imgfs.containers.optical.disc import Disc
from imgfs.containers.optical.files import resolve, sibling
from imgfs.containers.sparse import is_sparsebundle, open_sparsebundle
from imgfs.containers.split import open_disk
from imgfs.errors import CorruptImage, ImageError, UnsupportedFormat
from imgfs.io import background
from imgfs.io.cache import BlockCache
from imgfs.io.stream import BytesStream, SliceStream, Stream
from imgfs.registry import Format, detect, load
from imgfs.tree import VOLUME_INO_SHIFT, Filesystem, FsOptions, Tree, VirtualFilesystem
from imgfs.volumes import Partition, PartitionTable

log = logging.getLogger(__name__)

DEFAULT_CACHE_SIZE = 64 << 20
RAW_VIEWS = ".imgfs"  # the folder of raw views (-o rawviews)
RAW_VIEWS_INO = 0xFFFF << VOLUME_INO_SHIFT


def _no_passphrase() -> Optional[str]:
    return None


@dataclass
class OpenedImage:
    path: str
    stream: Stream
    cache: BlockCache
    fs: Filesystem  # the filesystem at the root (a VirtualFilesystem for a partitioned disk)
    tree: Tree
    layers: list[dict[str, Any]] = field(default_factory=list)

    opened: list[Any] = field(default_factory=list)  # every file and container opened, outermost first

    def close(self) -> None:
        for item in reversed(self.opened or [self.stream]):
            _close(item)

    def require_content(self) -> None:
        """Refuse, in one line, an image in which nothing at all can be shown."""
        reason = getattr(self.fs, "empty_reason", "")
        if reason:
            raise UnsupportedFormat(reason)


@dataclass
class Volume:
    partition: Partition
    stream: Stream
    fs: Optional[Filesystem]
    fmt: Optional[Format]
    why_raw: str = ""

    @property
    def folder(self) -> str:
        if self.fs is None:
            return f"{self.partition.number}.img"
        label = (self.fs.label or self.partition.name).strip().replace("/", "_").replace("\0", "")
        return f"{self.partition.number} {label}" if label else str(self.partition.number)


@dataclass(frozen=True)
class OpenSettings:
    """How to open an image, beyond what each filesystem is told."""

    cache_size: int = DEFAULT_CACHE_SIZE
    verify: bool = False  # check EDC/ECC of raw sectors, checksums of containers
    raw_views: bool = False  # add the .imgfs folder: info.json, tracks, sessions, boot images, partitions
    passphrase: Callable[[], Optional[str]] = _no_passphrase


HFS_HYBRID_SKIP = ("iso9660", "udf")  # namespace=hfsplus: the Apple side of an ISO + HFS+ hybrid
MAX_CONTAINER_DEPTH = 4  # an encrypted DMG in a ...: more than this is a loop, not an image


def open_image(path: str, options: FsOptions = FsOptions(), cache_size: int = DEFAULT_CACHE_SIZE,
               settings: Optional[OpenSettings] = None) -> OpenedImage:
    """Detect and open ``path``; any problem is an ``ImageError`` that names the layer."""
    with background.held():  # no decoding ahead while opening: it would only delay the mount
        return _open_image(path, options, settings or OpenSettings(cache_size=cache_size))


def _open_image(path: str, options: FsOptions, settings: OpenSettings) -> OpenedImage:
    sheet = find_sheet(path)
    if sheet:
        log.info("%s: using the sheet %s beside it", path, sheet)
        path = sheet
    cache = BlockCache(settings.cache_size)
    ctx = OpenContext(path, cache, settings.verify, settings.passphrase)
    bundle = is_sparsebundle(path)
    stream = open_sparsebundle(path, ctx) if bundle else open_disk(path)
    layers: list[dict[str, Any]] = [{"layer": "file", "path": path, "size": stream.size,
                                     **({"segments": len(stream.parts)} if hasattr(stream, "parts") else {})}]
    if bundle:
        layers.append({"layer": "sparsebundle", "description": "Apple sparse bundle", **stream.describe()})
    opened: list[Any] = [stream]
    extras: list[tuple[str, Stream]] = []  # raw views of the layers: (name, stream)
    try:
        skip = HFS_HYBRID_SKIP if options.namespace == "hfsplus" else ()
        fmt = detect(stream, skip=skip)
        for _ in range(MAX_CONTAINER_DEPTH):
            if fmt.kind != "container":
                break
            inner = load(fmt.opener or "")(stream, ctx)
            opened.append(inner)
            if isinstance(inner, Disc):
                fs, tree = _open_disc(inner, cache, options, settings, layers)
                break
            layers.append({"layer": fmt.name, "description": fmt.description, **inner.describe()})
            if settings.verify and callable(getattr(inner, "verify", None)):
                _verify_container(fmt, inner)
            extras.append((f"{fmt.name}.img", inner))
            stream = inner
            fmt = detect(stream, skip=skip)
        else:
            raise UnsupportedFormat(f"more than {MAX_CONTAINER_DEPTH} containers inside each other", layer=fmt.name)
        if not isinstance(opened[-1], Disc):
            if fmt.kind == "container":
                raise UnsupportedFormat(f"{fmt.description} inside another container is not supported", layer=fmt.name)
            if fmt.kind == "volumes":
                table = load(fmt.opener or "")(stream)
                fs, tree, volumes = _open_volumes(path, stream, table, cache, options, layers)
                extras += [(f"partitions/{v.partition.number}.img", v.stream) for v in volumes]
            else:
                fs = _open_filesystem(fmt, stream, cache, options)
                tree = Tree(fs)
                layers.append({"layer": fmt.name, "description": fmt.description, **fs.describe()})
            if settings.raw_views:
                _add_raw_views(tree, layers, extras, _mtime(path))
    except BaseException:
        for item in reversed(opened):
            _close(item)
        raise
    image = OpenedImage(path, opened[0], cache, fs, tree, layers)
    image.opened = opened
    return image


def _verify_container(fmt: Format, container: Any) -> None:
    """-o verify: a container with checksums (a DMG) is checked whole before it is mounted."""
    problems = container.verify()
    if problems:
        more = f" (and {len(problems) - 1} more: imgfs verify lists them)" if len(problems) > 1 else ""
        raise CorruptImage(f"checksum mismatch: {problems[0]}{more}", layer=fmt.name)
    log.info("%s: every checksum matches", fmt.name)


def _mtime(path: str) -> int:
    try:
        return os.stat(path).st_mtime_ns
    except OSError:
        return 0


def find_sheet(path: str) -> Optional[str]:
    """The cue sheet, CloneCD or Alcohol descriptor that describes the data file ``path``, if one is beside it."""
    if os.path.isdir(path) or not os.path.isfile(path):
        return None
    lower = path.lower()
    if lower.endswith((".cue", ".ccd", ".mds", ".nrg")):
        return None
    named = sibling(path, (".cue", ".ccd", ".mds"))
    if named and (not named.lower().endswith(".cue") or _cue_names(named, path)):
        return named
    folder = os.path.dirname(os.path.abspath(path))
    try:
        sheets = sorted(e for e in os.listdir(folder) if e.lower().endswith(".cue"))[:64]
    except OSError:
        return None
    for entry in sheets:  # redump: "Game (Track 1).bin" is named by "Game.cue"
        candidate = os.path.join(folder, entry)
        if _cue_names(candidate, path):
            return candidate
    return None


def _cue_names(sheet: str, path: str) -> bool:
    from imgfs.containers.optical import cue

    try:
        if os.path.getsize(sheet) > cue.MAX_SHEET:
            return False
        with open(sheet, "rb") as handle:
            parsed = cue.parse(cue._decode(handle.read()), sheet)
        target = os.path.realpath(path)
        for entry in parsed.files:
            try:
                if os.path.realpath(resolve(sheet, entry.name)) == target:
                    return True
            except ImageError:
                continue
    except (OSError, ImageError):
        return False
    return False


def _close(stream: Any) -> None:
    if isinstance(stream, Disc):
        stream.close()
        return
    for part in getattr(stream, "parts", [stream]):
        close = getattr(part, "close", None)
        if close:
            close()


def _open_filesystem(fmt: Format, stream: Stream, cache: BlockCache, options: FsOptions) -> Filesystem:
    return load(fmt.opener or "")(stream, cache, options)


def _open_volumes(path: str, disk: Stream, table: PartitionTable, cache: BlockCache, options: FsOptions,
                  layers: list[dict[str, Any]]) -> tuple[Filesystem, Tree, list[Volume]]:
    layers.append(table.describe())
    volumes = [_volume(disk, part, cache, options) for part in table.partitions if _holds_data(part)]
    for vol in volumes:
        layer = {"layer": vol.fmt.name if vol.fs and vol.fmt else "raw", "partition": vol.partition.number,
                 "shown_as": vol.folder}
        layer.update(vol.fs.describe() if vol.fs else {"reason": vol.why_raw})
        layers.append(layer)
    if len(volumes) == 1 and volumes[0].fs is not None:
        return volumes[0].fs, Tree(volumes[0].fs), volumes
    readable = [v for v in volumes if v.fs is not None]
    if options.namespace == "hfsplus" and len(readable) == 1:  # the Apple side of a hybrid: its HFS+ volume
        return readable[0].fs, Tree(readable[0].fs), volumes
    top = VirtualFilesystem(disk.size, os.stat(path).st_mtime_ns)
    if not volumes:
        top.empty_reason = (f"{table.scheme}: no partition has data in this image ({disk.size} bytes): the "
                            f"{len(table.partitions)} listed lie beyond its end or are the map's own entries; a "
                            "partition table without its partitions (imgfs info lists them)")
    tree = Tree(top)
    for vol in volumes:
        if vol.fs is None:
            top.add_file(top.root, vol.folder, vol.stream)
        else:
            tree.mount(top.root, vol.folder, vol.fs)
    return top, tree, volumes


def _holds_data(part: Partition) -> bool:
    """A partition to show: one with bytes in the image that is not a map's own bookkeeping."""
    return part.available > 0 and part.details.get("volume", True) and part.type_id != "0xee"


def _volume(disk: Stream, part: Partition, cache: BlockCache, options: FsOptions) -> Volume:
    stream = part.stream(disk)
    try:
        fmt = detect(stream, kinds=("filesystem",), skip=HFS_HYBRID_SKIP if options.namespace == "hfsplus" else ())
        fs = _open_filesystem(fmt, stream, cache,
                              dataclasses.replace(options, ino_base=part.number << VOLUME_INO_SHIFT))
    except UnsupportedFormat as exc:
        return Volume(part, stream, None, None, "no filesystem recognised" if exc.layer is None else str(exc))
    except ImageError as exc:
        log.warning("partition %d: %s; shown as %d.img", part.number, exc, part.number)
        return Volume(part, stream, None, None, str(exc))
    return Volume(part, stream, fs, fmt)


# -- optical discs ----------------------------------------------------------------------------------


def _open_disc(disc: Disc, cache: BlockCache, options: FsOptions, settings: OpenSettings,
               layers: list[dict[str, Any]]) -> tuple[Filesystem, Tree]:
    """The last session's filesystem at the root, audio tracks as ``Track NN.wav`` beside it."""
    disc.prepare()
    layers.append(disc.describe())
    user = disc.user_stream(verify=settings.verify)
    sessions: dict[int, Filesystem] = {}
    root_fs: Optional[Filesystem] = None
    for session in reversed(disc.sessions):
        if root_fs is not None and not settings.raw_views:
            break
        data = [t for t in disc.session_tracks(session) if not t.is_audio and t.file_sectors > 0]
        if not data:
            continue
        at_root = root_fs is None
        fs = _disc_filesystem(user, data[0].start, cache,
                              dataclasses.replace(options, ino_base=0 if at_root else session << VOLUME_INO_SHIFT),
                              session, layers)
        if fs is None:
            continue
        sessions[session] = fs
        if at_root:
            root_fs = fs
            if session != disc.sessions[-1]:
                log.warning("the last session holds no filesystem imgfs reads; showing session %d", session)
    mtime = _mtime(disc.name)
    extra = VirtualFilesystem(user.size, mtime, ino_base=RAW_VIEWS_INO)
    if root_fs is None:
        top = VirtualFilesystem(user.size, mtime)
        tree = Tree(top)
        for track in disc.tracks:
            if not track.is_audio and track.file_sectors > 0:
                top.add_file(top.root, f"Track {track.number:02d}.iso", _track_iso(disc, user, track))
        root_fs = top
    else:
        tree = Tree(root_fs)
    for track in disc.tracks:
        if track.is_audio:
            name = f"Track {track.number:02d}.wav"
            node = extra.add_file(extra.root, name, disc.wav_stream(track))
            tree.graft(root_fs.root, name, node, extra)
    if isinstance(root_fs, VirtualFilesystem) and not root_fs.root.children and not extra.root.children:
        root_fs.empty_reason = f"{disc.format}: no track of {disc.name} holds data or audio imgfs can show"
    if settings.raw_views:
        views: list[tuple[str, Stream]] = [("disc.iso", user)]
        for track in disc.tracks:
            if not track.is_audio and track.file_sectors > 0:
                views.append((f"tracks/Track {track.number:02d}.iso", _track_iso(disc, user, track)))
            views.append((f"tracks/Track {track.number:02d}.bin", disc.raw_stream(track)))
        folder = _add_raw_views(tree, layers, views, mtime)
        vfs = tree._mounts[id(folder)]
        assert isinstance(vfs, VirtualFilesystem)
        for session, fs in sessions.items():
            if fs is not root_fs:
                tree.mount(vfs.add_dir(folder, "sessions"), f"Session {session}", fs)
    return root_fs, tree


def _track_iso(disc: Disc, user: Stream, track: Any) -> Stream:
    """A data track's user bytes from its INDEX 01 to the end of what is stored (what bchunk writes)."""
    first = max(track.start, track.file_lba)
    count = max(0, track.file_lba + track.file_sectors - first)
    return SliceStream(user, first * 2048, count * 2048, name=f"track {track.number}")


def _disc_filesystem(user: Stream, start: int, cache: BlockCache, options: FsOptions, session: int,
                     layers: list[dict[str, Any]]) -> Optional[Filesystem]:
    """The filesystem of the session whose first data track starts at LBA ``start``, or None."""
    view = SliceStream(user, start * 2048, user.size - start * 2048) if start else user
    try:
        fmt = detect(view, kinds=("filesystem",), skip=HFS_HYBRID_SKIP if options.namespace == "hfsplus" else ())
        if fmt.name in ("iso9660", "udf"):  # these address sectors absolutely: give them the whole disc
            fs = _open_filesystem(fmt, user, cache, dataclasses.replace(options, start_sector=start))
        else:
            fs = _open_filesystem(fmt, view, cache, options)
    except UnsupportedFormat as exc:
        layers.append({"layer": "raw", "session": session, "start": start, "reason": str(exc)})
        return None
    except ImageError as exc:
        log.warning("session %d: %s", session, exc)
        layers.append({"layer": "raw", "session": session, "start": start, "reason": str(exc)})
        return None
    layers.append({"layer": fs.kind, "description": fmt.description, "session": session, "start": start,
                   **fs.describe()})
    return fs


# -- raw views -----------------------------------------------------------------------------------------


def _add_raw_views(tree: Tree, layers: list[dict[str, Any]], views: list[tuple[str, Stream]], mtime: int) -> Any:
    """The ``.imgfs`` folder: ``info.json``, raw views of the layers, El Torito boot images."""
    vfs = VirtualFilesystem(0, mtime, ino_base=RAW_VIEWS_INO + (1 << 40))
    for path, stream in views + _boot_views(tree, layers):
        folder = vfs.root
        *dirs, name = path.split("/")
        for part in dirs:
            folder = vfs.add_dir(folder, part)
        vfs.add_file(folder, name, stream)
    info = json.dumps({"layers": layers}, indent=2, default=str).encode() + b"\n"
    vfs.add_file(vfs.root, "info.json", BytesStream(info, "info.json"))
    tree.graft(tree.root, RAW_VIEWS, vfs.root, vfs)
    return vfs.root


def _boot_views(tree: Tree, layers: list[dict[str, Any]]) -> list[tuple[str, Stream]]:
    """El Torito boot images of the ISO 9660 filesystems in the tree, as ``boot/NAME`` (listed in ``layers``)."""
    try:
        from imgfs.filesystems.iso9660 import IsoFilesystem
        from imgfs.filesystems.iso9660.eltorito import boot_images
    except ImportError:
        return []
    views: list[tuple[str, Stream]] = []
    for fs in tree.filesystems:
        if isinstance(fs, IsoFilesystem):
            try:
                images = [image for image in boot_images(fs.stream, fs.descriptors, fs) if image.size > 0]
                for image in images:
                    views.append((f"boot/{image.name}", image.stream()))
                if images:
                    layers.append({"layer": "el-torito", "images": [image.describe() for image in images]})
            except (ImageError, OSError, ValueError) as exc:
                log.warning("El Torito boot catalog unreadable: %s", exc)
    return views
