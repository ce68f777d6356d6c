"""``imgfs info IMAGE``: what each layer of the image says of itself (``Layer.describe()``), for people.

Nothing here knows a format. Every layer is one heading and an aligned table of its details; a list of
records is a table; a dict is an indented group. A few generic keys change how a value is shown:

* ``size``, ``*_size`` and ``available`` are bytes: shown as ``7.1 GiB``;
* a list of records that each have a byte ``start`` and ``size`` (partitions) is also drawn as a layout bar,
  ``[1 bootfs 256 MiB][2 rootfs 7.1 GiB][free 1.2 GiB]``, over ``disk_size`` when the layer gives it; a
  record is labelled by its ``number`` and by the label of the layer opened from it (the layer whose
  details name it: ``{"partition": 1}`` for an entry of ``partitions``), else its ``name``;
* a path under the image's folder is shown relative to it.

``--json`` prints every detail as the layers gave it.
"""

from __future__ import annotations

import argparse
import json
import os
from typing import Any, Optional

from imgfs.cli.commands import add_options_argument
from imgfs.cli.common import error_line, fail, open_for_user
from imgfs.cli.text import human_size, table
from imgfs.errors import EncryptedImage, ImageError
from imgfs.options import parse_options

HIDDEN = ("layer", "description", "shown_as")  # shown in the heading
MIN_FREE_SIZE = 1 << 20  # free space up to this is alignment, not worth a block of the bar


def add_arguments(name: str, parser: argparse.ArgumentParser) -> None:
    parser.add_argument("image", help="the image file (or folder, for a sparse bundle)")
    parser.add_argument("--json", action="store_true", help="every detail, as JSON")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="when no format is recognised, what was tried and why it did not match")
    add_options_argument(parser)


def run(name: str, args: argparse.Namespace) -> int:
    try:
        image = open_for_user(args.image, parse_options(args.options))
    except ImageError as exc:
        return _partial(args, exc)
    try:
        if image.refusal is not None:  # containers opened, and nothing known inside: as if it had failed there
            return _partial(args, image.refusal)
        if args.json:
            print(json.dumps({"image": image.path, "layers": image.layers}, indent=2, default=str))
        else:
            print("\n".join(render(image.layers, image.path)))
    finally:
        image.close()
    return 0


def _partial(args: argparse.Namespace, exc: ImageError) -> int:
    """The layers that opened before the one that failed, then why it failed (one line on stderr)."""
    layers: list[dict[str, Any]] = list(getattr(exc, "described", []))
    tried: tuple[str, ...] = tuple(getattr(exc, "tried", ()))
    if args.json:
        print(json.dumps({"image": args.image, "layers": layers, "error": str(exc), "tried": list(tried)},
                         indent=2, default=str))
        return 1
    if isinstance(exc, EncryptedImage) and layers and "error" in layers[-1]:
        layers[-1] = {**layers[-1], "error": "a passphrase is needed to see what it holds"}
    lines = render(layers, args.image) + [""] if layers else []
    if tried and args.verbose:
        lines += ["No format matched. What was tried, in order:"]
        lines += table([[f"  {entry.partition(': ')[0]}", entry.partition(": ")[2]] for entry in tried])
        lines += [""]
    if lines:
        print("\n".join(lines).rstrip("\n"))
    return fail(str(exc) if args.verbose else error_line(exc, args.image))


def render(layers: list[dict[str, Any]], image_path: str) -> list[str]:
    folder = os.path.dirname(os.path.abspath(image_path))
    lines: list[str] = []
    for index, layer in enumerate(layers):
        lines += [_heading(layer, folder)]
        lines += _body(layer, layers[index + 1 :], folder)
        lines += [""]
    return lines[:-1]


def _heading(layer: dict[str, Any], folder: str) -> str:
    title = str(layer.get("description") or layer.get("layer", "layer"))
    if layer.get("layer") == "file" and "path" in layer:  # the first layer: the file(s) the user named
        return f"{layer['path']}  {_size(layer.get('size', 0), exact=True)}"
    label = layer.get("label")
    if label:
        title += f" '{label}'"
    if layer.get("shown_as"):
        title += f", shown as the folder '{layer['shown_as']}'"
    return title


def _body(layer: dict[str, Any], below: list[dict[str, Any]], folder: str) -> list[str]:
    if layer.get("layer") == "file":
        return _section({k: v for k, v in layer.items() if k not in ("path", "size")}, below, folder, "  ")
    lines = _section({k: v for k, v in layer.items() if k not in ("label", "error")}, below, folder, "  ")
    if "error" in layer:
        lines += [f"  not opened: {layer['error']}"]
    return lines


def _section(values: dict[str, Any], below: list[dict[str, Any]], folder: str, indent: str) -> list[str]:
    """Plain values as aligned ``key  value`` rows, then each group (a dict) and each table (a list of records)."""
    shown = {k: v for k, v in values.items() if k not in HIDDEN}
    rows = [[_words(k), _value(k, v, folder, exact=True)] for k, v in shown.items()
            if not isinstance(v, dict) and not _is_records(v)]
    lines = table(rows, indent=indent)
    for key, value in shown.items():
        if isinstance(value, dict):
            lines += [f"{indent}{_words(key)}:"] + _section(value, below, folder, indent + "  ")
        elif _is_records(value):
            lines += [f"{indent}{_words(key)}:"]
            bar = _layout_bar(key, value, values.get("disk_size"), below)
            lines += [f"{indent}  {bar}"] if bar else []
            lines += _records(value, folder, indent + "  ")
    return lines


def _is_records(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(item, dict) for item in value)


def _records(records: list[dict[str, Any]], folder: str, indent: str) -> list[str]:
    columns = list(dict.fromkeys(key for record in records for key in record))
    cells = [[_value(key, record[key], folder) if key in record else "" for key in columns] for record in records]
    numeric = [all(isinstance(r.get(k), (int, float)) and not isinstance(r.get(k), bool) or k not in r
                   for r in records) or _is_size(k) for k in columns]
    return table([[_words(key) for key in columns], *cells], numeric, indent)


def _value(key: str, value: Any, folder: str, exact: bool = False) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int) and _is_size(key):
        return _size(value, exact)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, list):
        return ", ".join(_value(key, item, folder) for item in value) if value else "none"
    if isinstance(value, dict):
        return ", ".join(f"{_words(k)} {_value(k, v, folder)}" for k, v in value.items())
    if isinstance(value, str):
        return _path(value, folder) if value.startswith("/") else (value if value else "''")
    return str(value)


def _is_size(key: str) -> bool:
    return key in ("size", "available", "disk_size") or key.endswith("_size")


def _size(size: int, exact: bool = False) -> str:
    """Small sizes in bytes; larger ones in binary units, with the exact count when asked."""
    if size < 10 * 1024 and size % 1024:
        return f"{size:,} bytes"
    text = human_size(size)
    return f"{text} ({size:,} bytes)" if exact and size >= 10 * 1024 and "." in text else text


def _words(key: str) -> str:
    return key.replace("_", " ")


def _path(path: str, folder: str) -> str:
    return os.path.relpath(path, folder) if path.startswith(folder + os.sep) else path


def _layout_bar(key: str, records: list[dict[str, Any]], disk_size: Optional[int],
                below: list[dict[str, Any]]) -> str:
    """``[1 bootfs 256 MiB][2 rootfs 7.1 GiB][free 1.2 GiB]``: the records that have a byte ``start`` and
    ``size``, in disk order; a record that holds others (an extended partition) is drawn as what it holds."""
    spans = [r for r in records if isinstance(r.get("start"), int) and isinstance(r.get("size"), int) and r["size"]]
    if len(spans) != len(records):
        return ""
    spans = [r for r in spans if not any(o is not r and r["start"] <= o["start"] and
                                         o["start"] + o["size"] <= r["start"] + r["size"] for o in spans)]
    end = disk_size if isinstance(disk_size, int) else max(r["start"] + r["size"] for r in spans)
    blocks, position = [], 0
    for record in sorted(spans, key=lambda r: r["start"]):
        if record["start"] - position > MIN_FREE_SIZE:
            blocks.append(f"[free {human_size(record['start'] - position)}]")
        blocks.append(f"[{_block_name(key, record, below)}{human_size(record['size'])}]")
        position = max(position, record["start"] + record["size"])
    if end - position > MIN_FREE_SIZE:
        blocks.append(f"[free {human_size(end - position)}]")
    return "".join(blocks)


def _block_name(key: str, record: dict[str, Any], below: list[dict[str, Any]]) -> str:
    number = record.get("number")
    detail = key[:-1] if key.endswith("s") else key  # "partitions" -> the detail "partition" of what opened
    opened = next((layer for layer in below if number is not None and layer.get(detail) == number), {})
    label = opened.get("label") or record.get("name") or record.get("label") or ""
    return "".join(f"{part} " for part in (number, label) if part not in (None, ""))
