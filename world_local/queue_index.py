"""One process's in-memory view of the queue's message files: records, heaps, key map.

`MessageRecord` is one message (its `.json` and `.lease` files) as data; `QueueIndex` finds
the next message to deliver in O(log n): per queue, a heap of deliverable messages by
(order_key, message id) and a heap of future times (a delayed message becoming
available, a lease running out). Heap entries carry the record's version and are
dropped lazily once the record changed.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from ..runtime.world import Message
from .leases import Holder

FORMAT_VERSION = 1


def _number(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{what} is not a number")
    return float(value)


def _optional_str(value: Any, what: str) -> str | None:
    if value is not None and not isinstance(value, str):
        raise ValueError(f"{what} is not a string")
    return value


def _dt(timestamp: float) -> datetime:
    return datetime.fromtimestamp(timestamp, UTC)


@dataclass(frozen=True, slots=True)
class Lease:
    """The content of a `<id>.lease` file: who holds the message, until when, which delivery."""

    lease_id: str
    until: float
    holder: Holder
    #: Deliveries of the message so far, counting this one.
    attempts: int

    def to_doc(self) -> dict[str, Any]:
        return {"v": FORMAT_VERSION, "id": self.lease_id, "until": self.until,
                "holder": self.holder.to_dict(), "attempts": self.attempts}

    @classmethod
    def from_doc(cls, doc: Any) -> Lease:
        """Parse a lease file's JSON; ValueError saying what is wrong if it is not one."""
        if not isinstance(doc, dict) or doc.get("v") != FORMAT_VERSION or not isinstance(doc.get("id"), str):
            raise ValueError("not a lease")
        return cls(doc["id"], _number(doc.get("until"), "until"), Holder.from_dict(doc.get("holder")),
                   _count(doc.get("attempts"), "attempts"))


def _count(value: Any, what: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(f"{what} is not a count")
    return value


@dataclass(slots=True)
class MessageRecord:
    """One message: its `<id>.json` file plus, while leased, its `<id>.lease` file. Times are Unix seconds."""

    message_id: str
    queue: str
    payload: dict[str, Any]
    order_key: str
    available_at: float
    created_at: float
    #: Deliveries before the current lease (the lease holds the count including itself).
    attempts: int = 0
    key: str | None = None
    lease: Lease | None = None
    #: Set when an enqueue with our key came while we were leased: deliver once more then.
    again_at: float | None = None
    #: Bumped by the index on every change; heap entries with an older one are stale.
    version: int = 0

    @property
    def deliveries(self) -> int:
        """Deliveries so far, counting the current lease."""
        return self.lease.attempts if self.lease is not None else self.attempts

    def to_doc(self) -> dict[str, Any]:
        """The `<id>.json` file's content (the lease lives in its own file)."""
        return {
            "v": FORMAT_VERSION,
            "id": self.message_id,
            "queue": self.queue,
            "order_key": self.order_key,
            "available_at": self.available_at,
            "created_at": self.created_at,
            "attempts": self.attempts,
            "key": self.key,
            "again_at": self.again_at,
            "payload": self.payload,
        }

    @classmethod
    def from_doc(cls, doc: Any, message_id: str, lease: Lease | None) -> MessageRecord:
        """Parse a message file's JSON; ValueError saying what is wrong if it is not one."""
        if not isinstance(doc, dict):
            raise ValueError("not a JSON object")
        if doc.get("v") != FORMAT_VERSION:
            raise ValueError(f"unknown format version {doc.get('v')!r}")
        if doc.get("id") != message_id:
            raise ValueError(f"holds id {doc.get('id')!r}, not its file name's")
        queue, order_key, payload = doc.get("queue"), doc.get("order_key"), doc.get("payload")
        if not isinstance(queue, str) or not isinstance(order_key, str) or not isinstance(payload, dict):
            raise ValueError("queue, order_key or payload missing")
        again_at = doc.get("again_at")
        return cls(
            message_id=message_id,
            queue=queue,
            payload=payload,
            order_key=order_key,
            available_at=_number(doc.get("available_at"), "available_at"),
            created_at=_number(doc.get("created_at"), "created_at"),
            attempts=_count(doc.get("attempts"), "attempts"),
            key=_optional_str(doc.get("key"), "key"),
            lease=lease,
            again_at=None if again_at is None else _number(again_at, "again_at"),
        )

    def changed(self, **changes: Any) -> MessageRecord:
        """A copy with `changes` applied (the index gives it a new version when stored)."""
        copy = MessageRecord(self.message_id, self.queue, self.payload, self.order_key, self.available_at,
                             self.created_at, self.attempts, self.key, self.lease, self.again_at)
        for name, value in changes.items():
            setattr(copy, name, value)
        return copy

    def state(self, now: float, alive: Callable[[Holder], bool]) -> str:
        """"leased", "ready" or "delayed" at time `now`."""
        lease = self.lease
        if lease is not None and lease.until > now and alive(lease.holder):
            return "leased"
        if lease is not None or self.available_at <= now:
            return "ready"  # an expired lease is deliverable again
        return "delayed"

    def to_message(self, now: float, alive: Callable[[Holder], bool]) -> Message:
        """The public view of this record (with its own copy of the payload)."""
        state = self.state(now, alive)
        lease = self.lease if state == "leased" else None
        extra: dict[str, Any] = {}
        if self.again_at is not None:
            extra["redeliver_at"] = _dt(self.again_at).isoformat()
        if lease is not None:
            extra["holder_pid"] = lease.holder.pid
        return self._message(state, lease, extra)

    def leased_message(self) -> Message:
        """The message as handed out by `take` to the holder of its (fresh) lease."""
        return self._message("leased", self.lease, {})

    def _message(self, state: str, lease: Lease | None, extra: dict[str, Any]) -> Message:
        return Message(
            message_id=self.message_id,
            queue=self.queue,
            payload=orjson.loads(orjson.dumps(self.payload)),
            order_key=self.order_key,
            available_at=_dt(self.available_at),
            attempts=self.deliveries,
            idempotency_key=self.key,
            state=state,
            lease_until=None if lease is None else _dt(lease.until),
            lease_id=None if lease is None else lease.lease_id,
            extra=extra,
        )


_Entry = tuple[Any, str, int]  # (sort key, message id, record version)


class QueueIndex:
    """Every not-yet-acked message as this process last saw it, with fast "what's next" queries."""

    def __init__(self, me: Holder, alive: Callable[[Holder], bool]) -> None:
        self.records: dict[str, MessageRecord] = {}
        self.by_key: dict[str, str] = {}
        self._me = me
        self._alive = alive
        self._versions = itertools.count(1)
        self._ready: dict[str, list[_Entry]] = {}
        self._timed: dict[str, list[_Entry]] = {}
        self._foreign: dict[Holder, set[str]] = {}

    def __len__(self) -> int:
        return len(self.records)

    def put(self, record: MessageRecord, now: float) -> None:
        """Store (or replace) a record and schedule it."""
        self.drop(record.message_id)
        record.version = next(self._versions)
        mid = record.message_id
        self.records[mid] = record
        if record.key is not None:
            self.by_key[record.key] = mid
        lease = record.lease
        if lease is None and record.available_at <= now:
            self._push(self._ready, record.queue, (record.order_key, mid, record.version))
        else:
            until = record.available_at if lease is None else lease.until
            self._push(self._timed, record.queue, (until, mid, record.version))
            if lease is not None and lease.holder != self._me:
                self._foreign.setdefault(lease.holder, set()).add(mid)

    def _push(self, heaps: dict[str, list[_Entry]], queue: str, entry: _Entry) -> None:
        heap = heaps.get(queue)
        if heap is None:
            heap = heaps[queue] = []
        elif len(heap) > 2 * len(self.records) + 1024:  # mostly stale entries of a queue nobody takes from
            heap[:] = [e for e in heap if self._valid(e)]
            heapq.heapify(heap)
        heapq.heappush(heap, entry)

    def drop(self, message_id: str) -> None:
        """Forget a message (its heap entries go stale)."""
        old = self.records.pop(message_id, None)
        if old is None:
            return
        if old.key is not None and self.by_key.get(old.key) == message_id:
            del self.by_key[old.key]
        if old.lease is not None:
            ids = self._foreign.get(old.lease.holder)
            if ids is not None:
                ids.discard(message_id)
                if not ids:
                    del self._foreign[old.lease.holder]

    def replace_all(self, records: Iterable[MessageRecord], now: float) -> None:
        """Forget everything and index `records` instead."""
        self.records.clear()
        self.by_key.clear()
        self._ready.clear()
        self._timed.clear()
        self._foreign.clear()
        for record in records:
            self.put(record, now)

    def _valid(self, entry: _Entry) -> bool:
        record = self.records.get(entry[1])
        return record is not None and record.version == entry[2]

    def _promote(self, queue: str, now: float) -> None:
        timed = self._timed.get(queue)
        while timed and timed[0][0] <= now:
            entry = heapq.heappop(timed)
            if self._valid(entry):
                record = self.records[entry[1]]
                self._push(self._ready, queue, (record.order_key, record.message_id, record.version))

    def _reap_dead_holders(self) -> None:
        for holder in [h for h in self._foreign if not self._alive(h)]:
            for mid in self._foreign.pop(holder):
                record = self.records.get(mid)
                if record is not None and record.lease is not None and record.lease.holder == holder:
                    self._push(self._ready, record.queue, (record.order_key, mid, record.version))

    def candidate(self, queues: Iterable[str], now: float) -> MessageRecord | None:
        """The deliverable message with the smallest (order_key, id) among `queues`, or None."""
        if self._foreign:
            self._reap_dead_holders()
        best: _Entry | None = None
        for queue in queues:
            self._promote(queue, now)
            heap = self._ready.get(queue)
            while heap and not self._valid(heap[0]):
                heapq.heappop(heap)
            if heap and (best is None or heap[0] < best):
                best = heap[0]
        return None if best is None else self.records[best[1]]

    def next_change(self, queues: Iterable[str]) -> float | None:
        """The earliest time a message of `queues` becomes due or a lease runs out (Unix seconds)."""
        earliest: float | None = None
        for queue in queues:
            timed = self._timed.get(queue)
            while timed and not self._valid(timed[0]):
                heapq.heappop(timed)
            if timed and (earliest is None or timed[0][0] < earliest):
                earliest = timed[0][0]
        return earliest

    def has_foreign_leases(self) -> bool:
        """Whether another (live, as last checked) process holds leases: their death must be watched."""
        return bool(self._foreign)
