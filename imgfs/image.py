"""The assembler: from a path, through every layer the registry detects, to the tree that is mounted.

It names no format. The registry turns the path into the first stream (``SOURCES``), then detection
and the openers do the rest, each returning one of the three results of the layer contract
(``imgfs.layer``), and the assembler places each:

* a **container** (a stream): detection goes on inside it;
* a **volume set**: each volume is detected and opened in turn; those that open are folders named
  ``NAME LABEL`` (a set of one volume shows it at the root), the others raw files when they say so; or,
  for a set of alternatives (``choose_one``), the first that opens is the root and the others go to the
  raw views; the set's own extra files are grafted beside whatever is at the root;
* a **filesystem**: the tree of one volume.

Containers and volume sets nest up to ``MAX_DEPTH`` deep. With ``-o rawviews`` every layer's raw
views, and ``info.json``, are gathered in a ``.imgfs`` folder at the root.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from typing import Any, Optional, Union

from imgfs import registry
from imgfs.errors import ImageError, UnsupportedFormat
from imgfs.filesystems.base import Filesystem
from imgfs.io import background
from imgfs.io.cache import BlockCache
from imgfs.io.stream import BytesStream, Stream
from imgfs.layer import Layer, OpenContext, Progress, View, Volume, VolumeSet, no_passphrase, no_progress
from imgfs.options import MountOptions
from imgfs.tree import Tree, VirtualFilesystem

log = logging.getLogger(__name__)

RAW_VIEWS = ".imgfs"  # the folder of raw views (-o rawviews)
MAX_DEPTH = 8  # layers inside layers: more than this is a loop, not an image

Described = Union[registry.Format, registry.Source, None]


@dataclass
class OpenedImage:
    path: str
    stream: Stream  # the first stream: the file(s) the user named
    tree: Tree
    layers: list[dict[str, Any]]  # what ``imgfs info`` shows, outermost first
    opened: list[tuple[Layer, str]] = field(default_factory=list)  # every layer and its name, outermost first
    empty_reason: str = ""  # why nothing at all can be shown, when that is so
    # a container whose disk holds no format imgfs knows: nothing is shown, but its own checks can still run
    refusal: Optional[ImageError] = None

    @property
    def fs(self) -> Filesystem:
        return self.tree.fs

    def close(self) -> None:
        for layer, _ in reversed(self.opened):
            layer.close()

    def require_content(self) -> None:
        """Refuse, in one line, an image in which nothing at all can be shown."""
        if self.refusal is not None:
            raise self.refusal
        if self.empty_reason:
            raise UnsupportedFormat(self.empty_reason)


def open_image(path: str, options: Optional[MountOptions] = None, *, passphrase=no_passphrase,
               progress: Progress = no_progress) -> OpenedImage:
    """Detect and open ``path``; any problem is an ``ImageError`` that names the layer."""
    options = options or MountOptions()
    with background.held():  # no decoding ahead while opening: it would only delay the mount
        sheet = registry.find_sheet(path)
        if sheet:
            log.info("%s: using the sheet %s beside it", path, sheet)
            path = sheet
        ctx = OpenContext(path, BlockCache(options.cache_size), options.verify, passphrase, options.namespace,
                          options.raw_views, progress)
        return _Assembly(ctx, Tree(presentation=options.presentation())).run()


class _Assembly:
    def __init__(self, ctx: OpenContext, tree: Tree) -> None:
        self.ctx = ctx
        self.tree = tree
        self.mtime = _mtime(ctx.path)
        self.records: list[tuple[Layer, Described, dict[str, Any]]] = []
        self.views: list[View] = []
        self.refusal: Optional[ImageError] = None

    def run(self) -> OpenedImage:
        source, stream = registry.open_source(self.ctx.path, self.ctx)
        try:
            root = self._place(_as_layer(stream), source, 0, {})
            self._check_namespace()
            self.tree.set_root(root)
            if self.ctx.raw_views:
                self._raw_views()
        except BaseException as exc:
            if isinstance(exc, ImageError) and not exc.described:
                exc.described = self._layers()  # imgfs info shows how far the image opened
            for layer, _, _ in reversed(self.records):
                layer.close()
            raise
        empty = root.empty_reason if isinstance(root, VirtualFilesystem) else ""
        return OpenedImage(self.ctx.path, stream, self.tree, self._layers(),
                           [(layer, _name(layer, what)) for layer, what, _ in self.records], empty, self.refusal)

    def _check_namespace(self) -> None:
        """namespace=NAME: refuse, in one line, an image none of whose filesystems offers that tree."""
        wanted = self.ctx.namespace
        offered = [ns for layer, _, _ in self.records if isinstance(layer, Filesystem) for ns in layer.namespaces]
        if wanted != "auto" and wanted not in offered:
            others = f" (its volumes offer {', '.join(dict.fromkeys(offered))})" if offered else ""
            raise UnsupportedFormat(f"{self.ctx.path} has no {wanted} side{others}")

    # -- one layer at a time -------------------------------------------------------------------------

    def _open(self, stream: Stream, kinds: tuple[str, ...], depth: int, details: dict[str, Any]) -> Filesystem:
        """What to show for ``stream``: detect its format, open it, place the result."""
        if depth > MAX_DEPTH:
            raise UnsupportedFormat(f"more than {MAX_DEPTH} layers inside each other", layer="image")
        fmt = registry.detect(stream, kinds, self.ctx.namespace)
        assert fmt.opener is not None
        try:
            layer = registry.load(fmt.opener)(stream, self.ctx)
        except ImageError as exc:
            if not exc.described:  # the layer that failed, after those that opened
                exc.described = [*self._layers(), {"layer": fmt.name, "description": fmt.description, **details,
                                                   "error": str(exc)}]
            raise
        return self._place(layer, fmt, depth, details)

    def _place(self, layer: Layer, what: Described, depth: int, details: dict[str, Any]) -> Filesystem:
        self.records.append((layer, what, details))
        if self.ctx.raw_views:
            self.views.extend(layer.views())
        if isinstance(layer, Filesystem):
            return layer
        if isinstance(layer, VolumeSet):
            return self._volume_set(layer, depth + 1)
        if isinstance(layer, Stream):  # a container: its disk is detected again
            if isinstance(what, registry.Format):
                self.views.append(View(f"{what.name}.img", layer))
            try:
                return self._open(layer, registry.KINDS, depth + 1, {})
            except UnsupportedFormat as exc:
                if not exc.tried or not all(isinstance(opened, Stream) for opened, _, _ in self.records):
                    raise  # a format that knew the disk and refused it; or a volume's, shown raw (_volume)
                # Nothing recognised in the disk of the image's container(s): that is the answer to a mount
                # (require_content), but the containers' own checksums can still be verified (imgfs verify).
                exc.described = self._layers()
                self.refusal = exc
                return VirtualFilesystem(0, self.mtime)
        raise TypeError(f"{_name(layer, what)}: an opener returned {type(layer).__name__}, not a layer")

    # -- volume sets -----------------------------------------------------------------------------------

    def _volume_set(self, volumes: VolumeSet, depth: int) -> Filesystem:
        found = list(volumes.volumes())
        shown = self._choose(volumes, found, depth) if volumes.choose_one else self._folders(found, depth)
        self.views.extend(View(v.view, v.stream) for v in found if v.view and v.stream is not None)
        extras = list(volumes.extras())
        if extras:
            files = VirtualFilesystem(0, self.mtime)
            for name, stream in extras:
                self.tree.graft(shown.root, name, files.add_file(files.root, name, stream), files)
        elif isinstance(shown, VirtualFilesystem) and not shown.root.children:
            shown.empty_reason = volumes.empty_reason()
        return shown

    def _folders(self, found: list[Volume], depth: int) -> Filesystem:
        opened = []
        for volume in found:
            details = dict(volume.details)  # its record: "shown_as" is added once the folder's name is known
            fs = self._volume(volume, depth, details)
            if fs is not None:
                details["shown_as"] = _folder(volume, fs)
            opened.append((volume, fs, details))
        readable = [fs for _, fs, _ in opened if fs is not None]
        if len(readable) == 1 and (len(found) == 1 or self.ctx.namespace in readable[0].namespaces):
            return readable[0]  # a set of one volume, or the side of a hybrid disc that namespace= asked for
        top = VirtualFilesystem(sum(v.stream.size for v in found if v.stream is not None), self.mtime)
        for volume, fs, details in opened:
            if fs is not None:
                self.tree.mount(top.root, details["shown_as"], fs)
            elif volume.raw and volume.stream is not None:
                top.add_file(top.root, volume.raw, volume.stream)
        return top

    def _choose(self, volumes: VolumeSet, found: list[Volume], depth: int) -> Filesystem:
        chosen: Optional[Filesystem] = None
        for volume in found:
            if chosen is not None and not self.ctx.raw_views:
                break
            fs = self._volume(volume, depth, dict(volume.details))
            if fs is None:
                continue
            if chosen is None:
                chosen = fs
                if volume is not found[0]:
                    log.warning("%s holds no filesystem imgfs reads; showing %s", found[0].name, volume.name)
            else:
                self.views.append(View(f"{volumes.others}/{volume.name}", fs))
        if chosen is not None:
            return chosen
        top = VirtualFilesystem(0, self.mtime)
        for name, stream in volumes.fallback():
            top.add_file(top.root, name, stream)
        return top

    def _volume(self, volume: Volume, depth: int, details: dict[str, Any]) -> Optional[Filesystem]:
        """The volume's tree, or None (recorded as raw) when it holds nothing imgfs reads."""
        try:
            if volume.open is not None:
                return self._place(volume.open(self.ctx), None, depth, details)
            assert volume.stream is not None
            return self._open(volume.stream, volume.kinds, depth, details)
        except ImageError as exc:
            unknown = isinstance(exc, UnsupportedFormat) and exc.layer is None
            if not isinstance(exc, UnsupportedFormat):
                log.warning("%s: %s; shown as %s", _title(volume), exc, volume.raw or "nothing")
            details.update({"shown_as": volume.raw} if volume.raw else {})
            details["reason"] = "no filesystem recognised" if unknown else str(exc)
            self.records.append((Layer(), None, details))
            return None

    # -- raw views and what imgfs info shows -----------------------------------------------------------

    def _raw_views(self) -> None:
        """The ``.imgfs`` folder: every layer's raw views, and ``info.json``."""
        folder = VirtualFilesystem(0, self.mtime)
        for view in self.views:
            *dirs, name = view.path.split("/")
            parent = folder.root
            for part in dirs:
                parent = folder.add_dir(parent, part)
            if isinstance(view.target, Filesystem):
                self.tree.mount(parent, name, view.target)
            elif isinstance(view.target, Stream):
                folder.add_file(parent, name, view.target)
        info = json.dumps({"layers": self._layers()}, indent=2, default=str).encode() + b"\n"
        folder.add_file(folder.root, "info.json", BytesStream(info, "info.json"))
        self.tree.graft(self.tree.root, RAW_VIEWS, folder.root, folder)

    def _layers(self) -> list[dict[str, Any]]:
        layers = []
        for layer, what, details in self.records:
            record: dict[str, Any] = {"layer": _name(layer, what)}
            if what is not None:
                record["description"] = what.description
            record.update(details)
            record.update(layer.describe())
            layers.append(record)
        return layers


def _as_layer(stream: Stream) -> Layer:
    if not isinstance(stream, Layer):
        raise TypeError(f"a source returned {type(stream).__name__}, not a layer")
    return stream


def _name(layer: Layer, what: Described) -> str:
    return layer.kind or (what.name if what is not None else "raw")


def _folder(volume: Volume, fs: Filesystem) -> str:
    """``NAME LABEL``: the volume's name, then its filesystem's label (else the volume's own label)."""
    label = (fs.label or volume.label).strip().replace("/", "_").replace("\0", "")
    return f"{volume.name} {label}" if label else volume.name


def _title(volume: Volume) -> str:
    """How a log line names a volume: by its first detail ("partition 3"), else by its name."""
    key, value = next(iter(volume.details.items()), ("", volume.name))
    return f"{key} {value}".strip()


def _mtime(path: str) -> int:
    try:
        return os.stat(path).st_mtime_ns
    except OSError:
        return 0
