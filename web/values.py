"""Stored payloads shown to people: deserialized when this process can, else the raw JSON."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from ..runtime.display import jsonable, payload_json, short_name  # noqa: F401 - short_name, jsonable re-exported

#: A payload shown whole up to this size (JSON bytes); beyond, a preview and its size.
SHOWN_BYTES = 256 * 1024


def shown(data: Any, limit: int = SHOWN_BYTES) -> Any:
    """`payload_json(data)`, or {"truncated": bytes, "preview": text} when its JSON is over `limit` bytes."""
    import orjson

    value = payload_json(data)
    if value is None or isinstance(value, int | float | bool) or (isinstance(value, str) and len(value) <= limit):
        return value
    if isinstance(value, str):
        return {"truncated": len(value.encode()), "preview": value[:4096] + "…"}
    text = orjson.dumps(value, default=str)
    if len(text) <= limit:
        return value
    return {"truncated": len(text), "preview": text[:4096].decode("utf-8", "replace") + "…"}


def iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def seconds_between(start: datetime | None, end: datetime | None) -> float | None:
    if start is None or end is None:
        return None
    return (end - start).total_seconds()
