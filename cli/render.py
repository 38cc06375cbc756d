"""Showing recorded data to people: payloads, times, durations, statuses.

Payloads are stored in wf's tagged JSON; they are shown as the Python values they stand for
(`deserialize`), or as their raw JSON when this process cannot rebuild them (a class that
is not imported here). Nothing here touches the World.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from rich.table import Table
from rich.text import Text

from ..runtime.display import decode, jsonable, payload_json, short_name  # noqa: F401 - re-exported for cli/

#: Longest payload text shown before truncation (without --full).
SHORT = 120

STATUS_STYLE = {
    "pending": "yellow",
    "running": "cyan",
    "completed": "green",
    "failed": "bold red",
    "cancelled": "magenta",
    "active": "cyan",
    "disposed": "dim",
    "waiting": "yellow",
    "ready": "green",
    "delayed": "yellow",
    "leased": "cyan",
}


def style_of(status: str) -> str:
    """The rich style a status is shown in."""
    return STATUS_STYLE.get(str(status), "")


def text_of(value: Any) -> str:
    """One value as text: JSON when it is JSON-like, else its repr."""
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    try:
        return json.dumps(value, ensure_ascii=False, separators=(", ", ": "), allow_nan=False)
    except (TypeError, ValueError):
        return repr(value)


def payload_text(data: Any, *, full: bool = False, limit: int = SHORT) -> str:
    """A stored payload as one short line (or whole, with `full`)."""
    value, _ = decode(data)
    return clip(text_of(value), full=full, limit=limit)


def call_text(data: Any, *, full: bool = False, limit: int = SHORT) -> str:
    """A recorded call input {"args": [...], "kwargs": {...}} as `(a, b, key=c)`."""
    value, ok = decode(data)
    if ok and isinstance(value, dict) and set(value) <= {"args", "kwargs"}:
        parts = [text_of(a) for a in value.get("args") or []]
        parts += [f"{k}={text_of(v)}" for k, v in (value.get("kwargs") or {}).items()]
        return clip("(" + ", ".join(parts) + ")", full=full, limit=limit)
    return clip(text_of(value), full=full, limit=limit)


def call_json(data: Any) -> Any:
    """A recorded call input as JSON-friendly {"args": [...], "kwargs": {...}}."""
    return payload_json(data)


def clip(text: str, *, full: bool = False, limit: int = SHORT) -> str:
    """`text` on one line, cut to `limit` characters with a note of how much was left out."""
    if full:
        return text
    text = text.replace("\n", "\\n")
    if len(text) <= limit:
        return text
    return f"{text[:limit]}… (+{len(text) - limit} chars, --full shows all)"


def error_line(error: Mapping[str, Any] | None) -> str:
    """`Type: message` of a recorded error."""
    if not error:
        return ""
    return f"{error.get('type', 'Error')}: {error.get('message', '')}"


def when(value: datetime | None) -> str:
    """An absolute time, local to the reader, to the millisecond."""
    if value is None:
        return "-"
    return value.astimezone().strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def when_short(value: datetime | None) -> str:
    """An absolute time for listings: month, day and time to the second."""
    if value is None:
        return "-"
    return value.astimezone().strftime("%m-%d %H:%M:%S")


def duration(seconds: float | None) -> str:
    """A duration for people: 850ms, 12.3s, 4m05s, 2h03m, 3d04h."""
    if seconds is None:
        return "-"
    if seconds < 0:
        return "-" + duration(-seconds)
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 60:
        return f"{seconds:.1f}s" if seconds < 10 else f"{seconds:.0f}s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours}h{minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d{hours:02d}h"


def between(start: datetime | None, end: datetime | None) -> float | None:
    """Seconds from `start` to `end` (None if either is unknown)."""
    if start is None or end is None:
        return None
    return (end - start).total_seconds()


def offset(origin: datetime | None, at: datetime | None) -> str:
    """`at` relative to `origin`, as `+1.234s`."""
    seconds = between(origin, at)
    if seconds is None:
        return "-"
    return f"+{seconds:.3f}s" if seconds < 100 else f"+{duration(seconds)}"


def fit_table(headers: list[str], rows: list[list[str | Text]], elastic: tuple[str, ...], width: int) -> Table:
    """A borderless table whose fixed columns are never cut; elastic ones share what is left."""
    widest = [max([len(name), *(len(str(row[i])) for row in rows)]) for i, name in enumerate(headers)]
    fixed = sum(w for name, w in zip(headers, widest, strict=True) if name not in elastic)
    left = width - fixed - (len(headers) - 1)  # one space between columns
    flexible = sorted((i for i, name in enumerate(headers) if name in elastic), key=lambda i: widest[i])
    sizes = list(widest)
    for n, i in enumerate(flexible):  # the narrowest first: what they leave goes to the others
        sizes[i] = max(4, min(widest[i], left // (len(flexible) - n)))
        left -= sizes[i]
    table = Table(box=None, pad_edge=False, header_style="bold", collapse_padding=True)
    for name, size in zip(headers, sizes, strict=True):
        table.add_column(name, no_wrap=True, overflow="ellipsis", width=size)
    for row in rows:
        table.add_row(*row)
    return table
