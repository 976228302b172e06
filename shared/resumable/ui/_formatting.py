"""How times, sizes and durations read on the pages (the CLI's conventions)."""

from __future__ import annotations

import time


def clock(t: float | None) -> str:
    """``HH:MM:SS`` in local time, with the date when it is not today; ``""`` for none."""
    if t is None:
        return ""
    local = time.localtime(t)
    if time.strftime("%Y-%m-%d", local) == time.strftime("%Y-%m-%d"):
        return time.strftime("%H:%M:%S", local)
    return time.strftime("%Y-%m-%d %H:%M:%S", local)


def iso(t: float | None) -> str:
    """UTC ISO 8601, for ``<time datetime=...>``."""
    if t is None:
        return ""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def seconds(value: float | None) -> str:
    """``0.42s``, ``12.3s``, ``4m05s``, ``2h03m``; ``""`` for none."""
    if value is None:
        return ""
    if value < 60:
        return f"{value:.2f}s" if value < 10 else f"{value:.1f}s"
    minutes, secs = divmod(int(value), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def size(value: int | None) -> str:
    """``512 B``, ``1.5 KiB``, ``3.2 MiB``; ``""`` for none."""
    if value is None:
        return ""
    amount = float(value)
    for unit in ("B", "KiB", "MiB"):
        if amount < 1024:
            return f"{amount:.0f} {unit}" if unit == "B" else f"{amount:.1f} {unit}"
        amount /= 1024
    return f"{amount:.1f} GiB"
