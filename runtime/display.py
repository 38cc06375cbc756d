"""Stored values shown to people (the CLI's --json output, the web UI): deserialized when this
process can rebuild them, else the raw stored JSON."""

from __future__ import annotations

import base64
import dataclasses
import enum
import math
from collections.abc import Mapping
from datetime import date, datetime, time, timedelta
from typing import Any

from .errors import SerializationError
from .serialization import deserialize


def decode(data: Any) -> tuple[Any, bool]:
    """(value, True) for stored tagged JSON; (the raw JSON, False) when it cannot be rebuilt here."""
    try:
        return deserialize(data), True
    except (SerializationError, RecursionError, TypeError, ValueError):
        return data, False


def jsonable(value: Any, _depth: int = 0) -> Any:
    """A JSON-friendly form of a deserialized value (for --json output)."""
    if _depth > 50:
        return repr(value)
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else repr(value)
    if isinstance(value, Mapping):
        return {str(k) if not isinstance(k, str) else k: jsonable(v, _depth + 1) for k, v in value.items()}
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
    dump = getattr(value, "model_dump", None)
    if callable(dump):
        try:
            return jsonable(dump(), _depth + 1)
        except Exception:  # noqa: BLE001 - a user's model may fail to dump: show its repr
            pass
    return repr(value)


def payload_json(data: Any) -> Any:
    """A stored payload as JSON-friendly data: deserialized when possible, else the raw JSON."""
    value, ok = decode(data)
    return jsonable(value) if ok else data


def short_name(name: str) -> str:
    """A step or workflow name without its module path."""
    return name.rsplit(".", 1)[-1]
