"""Ids: monotonic ULIDs (so file names sort by time) and the validation of ids that reach storage."""

from __future__ import annotations

import os
import re
import threading
import time

from .errors import InvalidIdError

_lock = threading.Lock()
_last_ms = 0
_last_rand = 0
_RAND_MAX = (1 << 80) - 1


def new_ulid() -> str:
    """A ULID string, strictly increasing within this process (even within one millisecond)."""
    global _last_ms, _last_rand, _last_prefix
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
        if ms != _last_ms or not _last_prefix:
            _last_prefix = _encode_bits(ms, 50)  # the time: the first 10 characters
        _last_ms, _last_rand = ms, rand
        prefix = _last_prefix
    return prefix + _encode_bits(rand, 80)


_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_PAIRS = [a + b for a in _CROCKFORD for b in _CROCKFORD]  # 10 bits -> 2 characters
_last_prefix = ""


def _encode_bits(value: int, bits: int) -> str:
    """The low `bits` bits of `value` (a multiple of 10) as Crockford base32, 2 characters per 10 bits."""
    pairs = _PAIRS
    return "".join([pairs[(value >> shift) & 1023] for shift in range(bits - 10, -10, -10)])


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
