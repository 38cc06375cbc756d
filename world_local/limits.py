"""`LocalLimits`: concurrency slots and rate windows in small files under `<data>/limits/`.

    limits/slots/<sha256(key)>.json    {"key", "limit", "holders": {...}, "waiters": {...}}
    limits/rates/<sha256(key)>.json    {"key", "starts": [microseconds, ...]}
    limits/*/<sha256(key)>.lock        the key's lock (flock), held for one read-modify-write

One key's file is read, changed and atomically replaced under its lock, so every process and
thread on the data directory sees one order of acquisitions. A holder (or waiter) with a
lease names its process (`leases.py`): it is freed at the next look once that process is
dead, or once its time runs out. Nothing is fsynced: after a power loss every process that
held a slot is gone anyway. Times are integer microseconds of the wall clock, so windows
compare exactly with event times.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

from ..runtime.flow_contract import Limits, RateDecision, SlotEntry, SlotState
from .boundary import storage_boundary
from .files import write_bytes_atomic
from .leases import Holder, LivenessCache, current_holder

_MAX_KEY = 512


def _now_us() -> int:
    return time.time_ns() // 1000


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _dt(us: int | float) -> datetime:
    return _EPOCH + timedelta(microseconds=int(us))  # exact, unlike a float of seconds


def _check_key(value: object, what: str) -> str:
    if not isinstance(value, str) or not value or len(value) > _MAX_KEY:
        raise ValueError(f"a {what} must be a non-empty string of at most {_MAX_KEY} characters")
    return value


class _KeyFiles:
    """One kind of key file (slots or rates) and its per-key locks."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def name(self, key: str) -> str:
        return hashlib.sha256(key.encode()).hexdigest()[:40]

    @contextlib.contextmanager
    def locked(self, key: str) -> Iterator[tuple[dict[str, Any], list[bool]]]:
        """The key's document under its lock; set `changed[0]` to have it written back."""
        name = self.name(key)
        fd = os.open(self.root / f"{name}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            doc = self.read_name(name) or {"key": key}
            changed = [False]
            yield doc, changed
            if changed[0]:
                write_bytes_atomic(self.root / f"{name}.json", orjson.dumps(doc), fsync=False)
        finally:
            os.close(fd)  # releases the flock

    def read_name(self, name: str) -> dict[str, Any] | None:
        try:
            doc = orjson.loads((self.root / f"{name}.json").read_bytes())
        except FileNotFoundError:
            return None
        except orjson.JSONDecodeError:
            return None  # never written half (atomic replace); a damaged file counts as empty
        return doc if isinstance(doc, dict) else None

    def names(self) -> list[str]:
        try:
            return sorted(n[:-5] for n in os.listdir(self.root) if n.endswith(".json") and not n.startswith("."))
        except FileNotFoundError:
            return []


@storage_boundary
class LocalLimits(Limits):
    """`Limits` on the file system (see the module docs)."""

    def __init__(self, root: Path) -> None:
        self._slots = _KeyFiles(root / "slots")
        self._rates = _KeyFiles(root / "rates")
        self._liveness = LivenessCache()

    # --- slots ---

    def _live(self, entry: Any, now: int) -> bool:
        if not isinstance(entry, dict):
            return False
        until = entry.get("until")
        if until is not None and until < now:
            return False
        proc = entry.get("proc")
        if proc is not None:
            try:
                return self._liveness.alive(Holder.from_dict(proc))
            except ValueError:
                return False
        return True

    def _expire(self, doc: dict[str, Any], now: int) -> bool:
        """Drop dead holders and waiters; whether any was dropped."""
        dropped = False
        for group in ("holders", "waiters"):
            entries = doc.get(group)
            if not isinstance(entries, dict):
                doc[group] = {}
                continue
            for name in [n for n, e in entries.items() if not self._live(e, now)]:
                del entries[name]
                dropped = True
        return dropped

    @staticmethod
    def _line(waiters: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
        return sorted(waiters.items(), key=lambda item: (item[1].get("order", ""), item[1].get("since", 0), item[0]))

    async def acquire(
        self,
        key: str,
        limit: int,
        *,
        holder: str,
        lease: float | None,
        order: str = "",
        info: dict[str, Any] | None = None,
        wait_lease: float = 30.0,
    ) -> bool:
        _check_key(key, "slot key")
        _check_key(holder, "slot holder")
        if not isinstance(limit, int) or limit < 1:
            raise ValueError(f"a concurrency limit must be an int >= 1, got {limit!r}")
        me = current_holder().to_dict()
        with self._slots.locked(key) as (doc, changed):
            now = _now_us()
            changed[0] = self._expire(doc, now)
            holders: dict[str, Any] = doc["holders"]
            waiters: dict[str, Any] = doc["waiters"]
            if doc.get("limit") != limit:
                doc["limit"] = limit
                changed[0] = True
            held = holders.get(holder)
            if held is not None:
                if lease is not None:
                    held["until"], held["proc"] = now + int(lease * 1e6), me
                    changed[0] = True
                return True
            since = waiters.get(holder, {}).get("since", now)
            mine = (order, since, holder)
            ahead = sum(1 for name, w in waiters.items()
                        if name != holder and (w.get("order", ""), w.get("since", 0), name) < mine)
            changed[0] = True
            if limit - len(holders) > ahead:
                waiters.pop(holder, None)
                holders[holder] = {
                    "info": info or {}, "since": now,
                    "until": None if lease is None else now + int(lease * 1e6),
                    "proc": None if lease is None else me,
                }
                return True
            waiters[holder] = {"info": info or {}, "since": since, "order": order,
                               "until": now + int(wait_lease * 1e6), "proc": me}
            return False

    async def release(self, key: str, holder: str) -> list[dict[str, Any]]:
        _check_key(key, "slot key")
        with self._slots.locked(key) as (doc, changed):
            now = _now_us()
            changed[0] = self._expire(doc, now)
            holders, waiters = doc["holders"], doc["waiters"]
            if holders.pop(holder, None) is not None or waiters.pop(holder, None) is not None:
                changed[0] = True
            if not waiters:
                return []
            free = max(int(doc.get("limit", 1)) - len(holders), 1)
            return [dict(w.get("info") or {}) for _, w in self._line(waiters)[:free]]

    async def extend(self, key: str, holder: str, *, lease: float) -> bool:
        _check_key(key, "slot key")
        with self._slots.locked(key) as (doc, changed):
            now = _now_us()
            changed[0] = self._expire(doc, now)
            held = doc["holders"].get(holder)
            if held is None:
                return False
            if held.get("until") is not None:
                held["until"] = now + int(lease * 1e6)
                held["proc"] = current_holder().to_dict()
                changed[0] = True
            return True

    async def slots(self, key: str | None = None) -> list[SlotState]:
        names = [self._slots.name(_check_key(key, "slot key"))] if key is not None else self._slots.names()
        now = _now_us()
        states = []
        for name in names:
            doc = self._slots.read_name(name)
            if doc is None:
                continue
            self._expire(doc, now)
            if not doc["holders"] and not doc["waiters"]:
                continue
            holders = [SlotEntry(h, dict(e.get("info") or {}), _dt(e.get("since", 0)))
                       for h, e in sorted(doc["holders"].items(), key=lambda item: item[1].get("since", 0))]
            waiters = [SlotEntry(h, dict(e.get("info") or {}), _dt(e.get("since", 0)), e.get("order", ""))
                       for h, e in self._line(doc["waiters"])]
            states.append(SlotState(str(doc.get("key", "")), int(doc.get("limit", 1)), holders, waiters))
        return states

    # --- rate windows ---

    async def rate(self, key: str, limit: int, window: float) -> RateDecision:
        _check_key(key, "rate key")
        if not isinstance(limit, int) or limit < 1:
            raise ValueError(f"a rate limit must be an int >= 1, got {limit!r}")
        span = int(window * 1e6)
        if span <= 0:
            raise ValueError(f"a rate window must be positive, got {window!r}")
        with self._rates.locked(key) as (doc, changed):
            now = _now_us()
            starts = [t for t in doc.get("starts", []) if isinstance(t, int) and t > now - span]
            if len(starts) < limit:
                starts.append(now)
                doc["starts"], changed[0] = starts, True
                return RateDecision(True, _dt(now))
            if len(starts) != len(doc.get("starts", [])):
                doc["starts"], changed[0] = starts, True
            return RateDecision(False, _dt(starts[-limit] + span))
