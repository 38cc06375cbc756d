"""Stored payloads shown to people: deserialized when this process can, else the raw JSON."""

from __future__ import annotations

import base64
import dataclasses
import enum
import math
from collections.abc import Mapping
from datetime import date, datetime, time, timedelta
from typing import Any

from ..runtime.errors import SerializationError
from ..runtime.serialization import deserialize


def jsonable(value: Any, _depth: int = 0) -> Any:
    """A JSON-friendly form of a deserialized value."""
    if _depth > 50:
        return repr(value)
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else repr(value)
    if isinstance(value, Mapping):
        return {k if isinstance(k, str) else str(k): jsonable(v, _depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        items = sorted(value, key=repr) if isinstance(value, set | frozenset) else value
        return [jsonable(v, _depth + 1) for v in items]
    if isinstance(value, bytes | bytearray):
        try:
            return bytes(value).decode("utf-8")
        except UnicodeDecodeError:
            return {"base64": base64.b64encode(bytes(value)).decode()}
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, enum.Enum):
        return jsonable(value.value, _depth + 1)
    if isinstance(value, BaseException):
        return {"type": type(value).__name__, "message": str(value)}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: jsonable(getattr(value, f.name), _depth + 1) for f in dataclasses.fields(value)}
    return repr(value)


def payload_json(data: Any) -> Any:
    """A stored payload as JSON-friendly data (the raw stored JSON when it cannot be rebuilt here)."""
    if data is None:
        return None
    try:
        return jsonable(deserialize(data))
    except (SerializationError, RecursionError, TypeError, ValueError):
        return data


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


def short_name(name: str) -> str:
    """A step or workflow name without its module path."""
    return name.rsplit(".", 1)[-1]
