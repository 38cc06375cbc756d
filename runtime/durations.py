"""Durations as users write them (`10`, `"500ms"`, `"1h30m"`, `timedelta(...)`) and the deadlines they set."""

from __future__ import annotations

import math
import re
from datetime import datetime, timedelta
from decimal import Decimal, InvalidOperation

_MICROSECONDS = {
    "us": 1,
    "ms": 1_000,
    "s": 1_000_000,
    "m": 60_000_000,
    "h": 3_600_000_000,
    "d": 86_400_000_000,
    "w": 604_800_000_000,
}
_UNIT_ALIASES = {
    "µs": "us", "usec": "us", "usecs": "us", "microsecond": "us", "microseconds": "us",
    "msec": "ms", "msecs": "ms", "millisecond": "ms", "milliseconds": "ms",
    "sec": "s", "secs": "s", "second": "s", "seconds": "s",
    "min": "m", "mins": "m", "minute": "m", "minutes": "m",
    "hr": "h", "hrs": "h", "hour": "h", "hours": "h",
    "day": "d", "days": "d",
    "week": "w", "weeks": "w",
}  # fmt: skip
_PART = re.compile(r"\s*(\d+(?:\.\d+)?|\.\d+)\s*([a-zµ]+)?\s*")
_EXAMPLES = 'e.g. 10 (seconds), "500ms", "10s", "5m", "2h", "1d", "1h30m", "1.5s"'


def _bad(value: object, why: str) -> ValueError:
    shown = repr(value) if len(repr(value)) <= 60 else repr(value)[:57] + "..."
    return ValueError(f"invalid duration {shown}: {why} ({_EXAMPLES})")


def parse_duration(value: int | float | str | timedelta) -> timedelta:
    """A non-negative duration from seconds, a duration string or a timedelta. ValueError otherwise.

    Strings are one or more `<number><unit>` parts (`"1h30m"`, `"1.5s"`, `"2 hours"`),
    units us, ms, s, m, h, d, w (or their long names); a bare number means seconds.
    """
    if isinstance(value, timedelta):
        if value < timedelta(0):
            raise _bad(value, "it is negative")
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise _bad(value, f"expected seconds, a duration string or a timedelta, not {type(value).__name__}")
    if isinstance(value, (int, float)):
        if isinstance(value, float) and not math.isfinite(value):
            raise _bad(value, "it is not a finite number")
        if value < 0:
            raise _bad(value, "it is negative")
        return _from_microseconds(value, Decimal(value) * 1_000_000)
    return _parse_string(value)


def _parse_string(text: str) -> timedelta:
    cleaned = text.strip().lower()
    if not cleaned:
        raise _bad(text, "it is empty")
    if cleaned.startswith("-"):
        raise _bad(text, "it is negative")
    total = Decimal(0)
    pos = 0
    parts = 0
    while pos < len(cleaned):
        match = _PART.match(cleaned, pos)
        if match is None or match.end() == pos:
            raise _bad(text, f"cannot read {cleaned[pos:]!r}")
        number, unit = match.group(1), match.group(2)
        if unit is None:
            if parts or match.end() != len(cleaned):
                raise _bad(text, f"the number {number} has no unit")
            unit = "s"  # a bare number: seconds
        unit = _UNIT_ALIASES.get(unit, unit)
        if unit not in _MICROSECONDS:
            raise _bad(text, f"unknown unit {match.group(2)!r}")
        try:
            total += Decimal(number) * _MICROSECONDS[unit]
        except InvalidOperation as exc:
            raise _bad(text, f"cannot read the number {number!r}") from exc
        parts += 1
        pos = match.end()
    return _from_microseconds(text, total)


def _from_microseconds(value: object, microseconds: Decimal) -> timedelta:
    try:
        return timedelta(microseconds=int(microseconds.to_integral_value()))
    except OverflowError as exc:
        raise _bad(value, "it is too long") from exc


def deadline(value: int | float | str | timedelta | datetime, now: datetime) -> datetime:
    """When a wait or retry of `value` that starts at `now` ends.

    An aware datetime is the deadline itself; a naive one is refused (ValueError) since
    it names no instant. Anything else is a duration (see `parse_duration`) added to `now`.
    """
    if isinstance(value, datetime):
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(
                f"invalid deadline {value.isoformat()!r}: a naive datetime names no instant; "
                "give it a timezone (e.g. datetime.now(UTC) + timedelta(...)) or pass a duration"
            )
        return value
    return now + parse_duration(value)
