"""The Queue contract's argument rules, checked the same way by every World (`world.Queue`)."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any

from .errors import InvalidIdError

#: Longest queue name, and longest idempotency or order key, in characters.
MAX_QUEUE_NAME = 200
MAX_KEY = 1000
_CONTROL = re.compile(r"[\x00-\x1f]")


def check_name(value: object, what: str, limit: int) -> str:
    """A queue name or key: 1 to `limit` printable characters, encodable as UTF-8; else InvalidIdError."""
    if not isinstance(value, str) or not value or len(value) > limit or _CONTROL.search(value):
        shown = repr(value) if len(repr(value)) <= 80 else repr(value)[:77] + "..."
        raise InvalidIdError(f"invalid {what} {shown}: use 1 to {limit} printable characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidIdError(f"invalid {what} {value!r}: not encodable as UTF-8") from None
    return value


def check_seconds(value: object, what: str) -> float:
    """A finite number of seconds (not a bool); ValueError otherwise."""
    if (type(value) is float or type(value) is int) and math.isfinite(value):  # the common case, first
        return float(value)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{what} must be a finite number of seconds, not {value!r}")
    return float(value)


def queue_names(queues: Sequence[str] | str) -> list[str]:
    """The queue names `take` was given (one name or several), each checked."""
    names = [queues] if isinstance(queues, str) else list(queues)
    for name in names:
        check_name(name, "queue name", MAX_QUEUE_NAME)
    return names


def check_enqueue(queue: str, payload: Any, idempotency_key: str | None, order_key: str | None,
                  delay: float) -> float:
    """Check `Queue.enqueue`'s arguments; return the delay to use (a negative one counts as 0)."""
    check_name(queue, "queue name", MAX_QUEUE_NAME)
    if not isinstance(payload, dict):
        raise TypeError(f"a queue payload must be a dict, not {type(payload).__name__}")
    if idempotency_key is not None:
        check_name(idempotency_key, "idempotency key", MAX_KEY)
    if order_key is not None:
        check_name(order_key, "order key", MAX_KEY)
    return max(0.0, check_seconds(delay, "delay"))
