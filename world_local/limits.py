"""`LocalLimits`: concurrency slots and rate windows in small files under `<data>/limits/`.

    limits/slots/<sha256(key)>.json    {"key", "limit", "holders": {...}, "waiters": {...}}
    limits/rates/<sha256(key)>.json    {"key", "starts": [microseconds, ...]}

One key's file is read, changed and rewritten in place under an exclusive flock on it, so every
process and thread on the data directory sees one order of acquisitions. A holder (or waiter) with a
lease names its process (`leases.py`): it is freed at the next look once that process is
dead, or once its time runs out. Nothing is fsynced: after a power loss every process that
held a slot is gone anyway. Times are integer microseconds of the wall clock, so windows
compare exactly with event times.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

from ..runtime.flow_contract import Limits, RateDecision, SlotEntry, SlotState, check_key, check_limit
from .boundary import storage_boundary
from .leases import Holder, LivenessCache, current_holder

#: Key files whose descriptor a World keeps open.
_MAX_OPEN = 256


def _now_us() -> int:
    return time.time_ns() // 1000


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _dt(us: int | float) -> datetime:
    return _EPOCH + timedelta(microseconds=int(us))  # exact, unlike a float of seconds


class _KeyFiles:
    """One kind of key file (slots or rates): `<sha256(key)>.json`, read and rewritten in place under
    an exclusive flock on the file itself (and a thread lock), its descriptor kept open.

    One `pwrite` of the whole document, then `ftruncate`: a process killed at any point leaves
    either the old or the new document (a regular file's write is not cut by a signal); readers
    without the lock (`read_name`) take a shared flock.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self._fds: OrderedDict[str, tuple[int, threading.Lock]] = OrderedDict()
        self._fds_lock = threading.Lock()

    def name(self, key: str) -> str:
        return hashlib.sha256(key.encode()).hexdigest()[:40]

    def _fd(self, name: str) -> tuple[int, threading.Lock]:
        with self._fds_lock:
            entry = self._fds.get(name)
            if entry is not None:
                self._fds.move_to_end(name)
                return entry
        fd = os.open(self.root / f"{name}.json", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        with self._fds_lock:
            entry = self._fds.get(name)
            if entry is not None:
                os.close(fd)
                return entry
            entry = self._fds[name] = (fd, threading.Lock())
            while len(self._fds) > _MAX_OPEN:
                _, (old_fd, old_lock) = self._fds.popitem(last=False)
                with old_lock:
                    os.close(old_fd)
            return entry

    @contextlib.contextmanager
    def locked(self, key: str) -> Iterator[tuple[dict[str, Any], list[bool]]]:
        """The key's document under its lock; set `changed[0]` to have it written back."""
        fd, lock = self._fd(self.name(key))
        with lock:
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                doc = _parse(_read_all(fd)) or {"key": key}
                changed = [False]
                yield doc, changed
                if changed[0]:
                    data = orjson.dumps(doc)
                    if os.pwrite(fd, data, 0) != len(data):
                        raise OSError(errno.EIO, "short write", str(self.root))
                    os.ftruncate(fd, len(data))
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)

    def read_name(self, name: str) -> dict[str, Any] | None:
        try:
            fd = os.open(self.root / f"{name}.json", os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_SH)
            return _parse(_read_all(fd))
        finally:
            os.close(fd)

    def names(self) -> list[str]:
        try:
            return sorted(n[:-5] for n in os.listdir(self.root) if n.endswith(".json") and not n.startswith("."))
        except FileNotFoundError:
            return []

    def close(self) -> None:
        with self._fds_lock:
            for fd, lock in self._fds.values():
                with lock:
                    os.close(fd)
            self._fds.clear()


def _read_all(fd: int) -> bytes:
    size = os.fstat(fd).st_size
    return os.pread(fd, size, 0) if size else b""


def _parse(data: bytes) -> dict[str, Any] | None:
    if not data:
        return None
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError:
        return None  # never written half (see the class docs); a damaged file counts as empty
    return doc if isinstance(doc, dict) else None


@storage_boundary
class LocalLimits(Limits):
    """`Limits` on the file system (see the module docs)."""

    def __init__(self, root: Path) -> None:
        self._slots = _KeyFiles(root / "slots")
        self._rates = _KeyFiles(root / "rates")
        self._liveness = LivenessCache()

    def close(self) -> None:
        """Close the key files' descriptors."""
        self._slots.close()
        self._rates.close()

    # --- slots ---
    #
    # A slot document: {"key", "limit", "procs": {id: [pid, start, boot, ns]},
    #   "holders": {holder: [since, until | None, proc id | None, info]},
    #   "waiters": {holder: [since, until, proc id, order, info]}, "min_until": int | None}
    # Entries are dropped when their time passed or their process died. Looking at every entry
    # on every call would cost O(holders): only the few distinct processes are checked each
    # time, and entries are scanned when one died or when `min_until` (a lower bound of their
    # times) has passed.

    def _proc_id(self, doc: dict[str, Any]) -> str:
        me = current_holder()
        ident = f"{me.pid}:{me.start}:{me.ns}"
        procs = doc.setdefault("procs", {})
        if ident not in procs:
            procs[ident] = [me.pid, me.start, me.boot, me.ns]
        return ident

    def _expire(self, doc: dict[str, Any], now: int) -> bool:
        """Drop dead holders and waiters; whether any was dropped."""
        for group in ("holders", "waiters", "procs"):
            if not isinstance(doc.get(group), dict):
                doc[group] = {}
        procs: dict[str, Any] = doc["procs"]
        dead = set()
        for ident, proc in procs.items():
            try:
                if not self._liveness.alive(Holder(*proc)):
                    dead.add(ident)
            except TypeError:
                dead.add(ident)
        min_until = doc.get("min_until")
        if not dead and (min_until is None or now < min_until):
            return False
        lowest: int | None = None
        dropped = False
        used = set()
        for group in ("holders", "waiters"):
            entries = doc[group]
            gone = []
            for name, entry in entries.items():
                until, proc = entry[1], entry[2]
                if (until is not None and until < now) or proc in dead:
                    gone.append(name)
                    continue
                if until is not None and (lowest is None or until < lowest):
                    lowest = until
                if proc is not None:
                    used.add(proc)
            for name in gone:
                del entries[name]
            dropped = dropped or bool(gone)
        doc["min_until"] = lowest
        doc["procs"] = {ident: p for ident, p in procs.items() if ident in used}
        return True

    @staticmethod
    def _lower_min(doc: dict[str, Any], until: int | None) -> None:
        if until is not None and (doc.get("min_until") is None or until < doc["min_until"]):
            doc["min_until"] = until

    @staticmethod
    def _line(waiters: dict[str, Any]) -> list[tuple[str, list[Any]]]:
        return sorted(waiters.items(), key=lambda item: (item[1][3], item[1][0], item[0]))

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
        check_key(key, "slot key")
        check_key(holder, "slot holder")
        check_limit(limit, "concurrency limit")
        with self._slots.locked(key) as (doc, changed):
            now = _now_us()
            changed[0] = self._expire(doc, now) or doc.get("limit") != limit
            doc["limit"] = limit
            holders: dict[str, Any] = doc["holders"]
            waiters: dict[str, Any] = doc["waiters"]
            held = holders.get(holder)
            if held is not None:
                if lease is not None:
                    held[1], held[2] = now + int(lease * 1e6), self._proc_id(doc)
                    changed[0] = True
                return True
            changed[0] = True
            waiting = waiters.get(holder)
            since = waiting[0] if waiting is not None else now
            mine = (order, since, holder)
            free = limit - len(holders)
            if free > 0 and (not waiters or free > sum(
                    1 for name, w in waiters.items() if name != holder and (w[3], w[0], name) < mine)):
                waiters.pop(holder, None)
                until = None if lease is None else now + int(lease * 1e6)
                holders[holder] = [now, until, None if lease is None else self._proc_id(doc), info or {}]
                self._lower_min(doc, until)
                return True
            until = now + int(wait_lease * 1e6)
            waiters[holder] = [since, until, self._proc_id(doc), order, info or {}]
            self._lower_min(doc, until)
            return False

    async def release(self, key: str, holder: str) -> list[SlotEntry]:
        check_key(key, "slot key")
        with self._slots.locked(key) as (doc, changed):
            now = _now_us()
            changed[0] = self._expire(doc, now)
            holders, waiters = doc["holders"], doc["waiters"]
            if holders.pop(holder, None) is not None or waiters.pop(holder, None) is not None:
                changed[0] = True
            if not waiters:
                return []
            free = max(int(doc.get("limit", 1)) - len(holders), 1)
            return [SlotEntry(h, dict(w[4]), _dt(w[0]), w[3]) for h, w in self._line(waiters)[:free]]

    async def extend(self, key: str, holder: str, *, lease: float) -> bool:
        check_key(key, "slot key")
        with self._slots.locked(key) as (doc, changed):
            now = _now_us()
            changed[0] = self._expire(doc, now)
            held = doc["holders"].get(holder)
            if held is None:
                return False
            if held[1] is not None:
                held[1], held[2] = now + int(lease * 1e6), self._proc_id(doc)
                changed[0] = True
            return True

    async def slots(self, key: str | None = None) -> list[SlotState]:
        names = [self._slots.name(check_key(key, "slot key"))] if key is not None else self._slots.names()
        now = _now_us()
        states = []
        for name in names:
            doc = self._slots.read_name(name)
            if doc is None:
                continue
            try:
                self._expire(doc, now)
                if not doc["holders"] and not doc["waiters"]:
                    continue
                holders = [SlotEntry(h, dict(e[3]), _dt(e[0]))
                           for h, e in sorted(doc["holders"].items(), key=lambda item: item[1][0])]
                waiters = [SlotEntry(h, dict(e[4]), _dt(e[0]), e[3]) for h, e in self._line(doc["waiters"])]
            except (TypeError, IndexError, KeyError):
                continue  # a document of another format: nothing to show
            states.append(SlotState(str(doc.get("key", "")), int(doc.get("limit", 1)), holders, waiters))
        return states

    # --- rate windows ---

    async def rate(self, key: str, limit: int, window: float) -> RateDecision:
        check_key(key, "rate key")
        check_limit(limit, "rate limit")
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
