"""Text for people: sizes, durations, aligned tables."""

from __future__ import annotations

from collections.abc import Sequence

UNITS = ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB")


def human_size(size: int) -> str:
    """``7.1 GiB``, ``512 bytes``: as file managers show sizes (binary units)."""
    value, unit = float(size), 0
    while abs(value) >= 1024 and unit < len(UNITS) - 1:
        value, unit = value / 1024, unit + 1
    if unit == 0:
        return f"{size:,} byte{'' if size == 1 else 's'}"
    if value == int(value) or abs(value) >= 100:
        return f"{value:.0f} {UNITS[unit]}"
    return f"{value:.1f} {UNITS[unit]}"


def duration(seconds: float) -> str:
    """``0:32``, ``1:02:03``."""
    whole = int(seconds + 0.5)
    hours, rest = divmod(whole, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


def table(rows: Sequence[Sequence[str]], right: Sequence[bool] = (), indent: str = "") -> list[str]:
    """Rows of cells as aligned lines; ``right[i]`` aligns column ``i`` to the right (numbers)."""
    if not rows:
        return []
    widths = [max(len(row[i]) if i < len(row) else 0 for row in rows) for i in range(max(map(len, rows)))]
    lines = []
    for row in rows:
        cells = [(cell.rjust(widths[i]) if i < len(right) and right[i] else cell.ljust(widths[i]))
                 for i, cell in enumerate(row)]
        lines.append((indent + "  ".join(cells)).rstrip())
    return lines
