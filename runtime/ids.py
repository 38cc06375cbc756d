"""Ids: monotonic ULIDs (so file names sort by time) and the validation of ids that reach storage."""

from __future__ import annotations

import os
import re
import threading
import time

from ulid import ULID

from .errors import InvalidIdError

_lock = threading.Lock()
_last_ms = 0
_last_rand = 0
_RAND_MAX = (1 << 80) - 1


def new_ulid() -> str:
    """A ULID string, strictly increasing within this process (even within one millisecond)."""
    global _last_ms, _last_rand
    with _lock:
        ms = time.time_ns() // 1_000_000
        if ms <= _last_ms:
            ms = _last_ms
            rand = _last_rand + 1
            if rand > _RAND_MAX:  # 2**80 ids in one millisecond: borrow the next one
                ms += 1
                rand = int.from_bytes(os.urandom(10), "big") >> 1
        else:
            rand = int.from_bytes(os.urandom(10), "big") >> 1  # headroom for increments
        _last_ms, _last_rand = ms, rand
    return str(ULID.from_bytes(ms.to_bytes(6, "big") + rand.to_bytes(10, "big")))


def new_run_id() -> str:
    """A fresh run id: `wrun_` + ULID."""
    return "wrun_" + new_ulid()


_SAFE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_\-]{0,127}")


def validate_id(value: object, what: str = "id") -> str:
    """Return `value` if it is a safe storage id (letters, digits, `_`, `-`; ≤128 chars).

    Raises InvalidIdError otherwise: such a value can never name a path outside its folder.
    """
    if not isinstance(value, str) or not _SAFE_ID.fullmatch(value):
        shown = repr(value) if len(repr(value)) <= 80 else repr(value)[:77] + "..."
        raise InvalidIdError(f"invalid {what} {shown}: use letters, digits, '_' or '-' (at most 128)")
    return value
