"""CD-TEXT packs (Red Book annex / MMC): disc and track titles, performers, ISRCs; and Q control flags.

Used by the NRG (CDTX chunk) and CloneCD ([CDText] section) readers; a cue sheet spells CD-TEXT as lines.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from imgfs.containers.optical.disc import Disc

MAX_TRACKS = 99


def control_flags(control: int) -> list[str]:
    flags = [name for bit, name in ((0x2, "DCP"), (0x1, "PRE"), (0x8, "4CH")) if control & bit]
    return flags if not control & 0x4 else [f for f in flags if f != "PRE"]



CDTEXT_FIELDS = {0x80: "TITLE", 0x81: "PERFORMER", 0x82: "SONGWRITER", 0x83: "COMPOSER", 0x84: "ARRANGER",
                 0x85: "MESSAGE", 0x86: "DISC_ID", 0x8E: "UPC_ISRC"}
MAX_CDTEXT_PACKS = 8 * 256  # eight language blocks of at most 256 packs


@dataclass
class CdText:
    disc: dict[str, str] = field(default_factory=dict)
    tracks: dict[int, dict[str, str]] = field(default_factory=dict)
    complete: bool = True  # False: some packs (other blocks, double-byte text) were not decoded


def decode_cdtext(data: bytes, pack_size: int = 18) -> CdText:
    """Block 0, single-byte text of CD-TEXT packs (18 bytes each, or 16 without their CRC)."""
    result = CdText()
    streams: dict[int, list[tuple[int, bytes]]] = {}
    for i in range(min(len(data) // pack_size, MAX_CDTEXT_PACKS)):
        pack = data[i * pack_size : i * pack_size + 16]
        kind, track, flags = pack[0], pack[1] & 0x7F, pack[3]
        if kind not in CDTEXT_FIELDS:
            continue
        if flags & 0x80 or (flags >> 4) & 7:
            result.complete = False
            continue
        streams.setdefault(kind, []).append((track, pack[4:16]))
    for kind, packs in streams.items():
        _decode_stream(result, CDTEXT_FIELDS[kind], packs[0][0], b"".join(text for _, text in packs))
    return result


def _decode_stream(result: CdText, name: str, track: int, text: bytes) -> None:
    previous = ""
    for part in text.split(b"\0")[: MAX_TRACKS + 1]:
        value = part.decode("latin-1")
        value = previous if value == "\t" else value
        if value and track <= MAX_TRACKS:
            (result.disc if track == 0 else result.tracks.setdefault(track, {}))[name] = value
        previous, track = value, track + 1


def apply_cdtext(disc: Disc, data: bytes, pack_size: int = 18) -> dict[str, Any]:
    """Put CD-TEXT titles, performers and ISRCs on the disc and its tracks; what ``imgfs info`` shows of it."""
    text = decode_cdtext(data, pack_size)
    for key, value in text.disc.items():
        if key == "UPC_ISRC":
            disc.catalog = disc.catalog or value
        else:
            disc.cdtext[key] = value
    by_number = {t.number: t for t in disc.tracks}
    pending = {n: fields for n, fields in text.tracks.items() if n not in by_number}
    for number, fields in text.tracks.items():
        track = by_number.get(number)
        if track is not None:
            track.title = fields.get("TITLE", track.title)
            track.performer = fields.get("PERFORMER", track.performer)
            track.isrc = track.isrc or fields.get("UPC_ISRC", "")
    info: dict[str, Any] = {"packs": len(data) // pack_size, "decoded": text.complete}
    if pending:
        info["tracks"] = {str(n): f for n, f in pending.items()}
    if not text.complete:
        info["raw"] = data[: MAX_CDTEXT_PACKS * pack_size].hex()
    return info
