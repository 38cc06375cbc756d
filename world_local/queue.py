"""The durable queue of the local World: one JSON file per message under `<data>/queue/`.

    queue/messages/     <ULID>.json per message, <ULID>.lease while leased (queue_files.py)
    queue/changes.log   ids of changed messages: each process's index refresh (queue_log.py)
    queue/lock          flock'ed around every state change, by every process
    queue/corrupt/      unreadable files moved aside, with a warning

Every change happens under the queue-wide flock (plus a thread lock, since flock does
not exclude threads sharing one descriptor): refresh the in-memory index (queue_index.py)
from the change log, decide, append the id to the log, change the files. Deciding on a
fresh index under one lock is what makes a lease exclusive and idempotency coalescing
race-free (an ack and an enqueue with the same key are simply ordered).

`take` needs no lock when nothing is deliverable and the log did not grow; a waiting
consumer subscribes to the Notifier channel "queue" (enqueue, nack and redelivery notify
it) and otherwise sleeps until the next delayed message or lease expiry is due, looking
every 0.2 s for dead lease holders only while another process holds leases (so a killed
worker's messages come back within a fraction of a second; leases.py). As safety nets it
re-checks the log at least every second (a lost notification costs at most that) and
rescans the folder every `SAFETY_RESCAN_SECONDS` in case anything escaped the log.

Durability with `fsync=True`: enqueue, nack and delete are on disk when they return.
Take, extend and ack are not fsynced: after a power loss a taken message is delivered
again (its holder is gone), possibly with `attempts` one lower, and an acked one may be
delivered once more; nothing enqueued is ever lost (delivery is at-least-once).
Idempotency keys are global across queue names; coalescing keeps the first message's
queue, payload and order key. Queue names and keys never reach a path.
"""

from __future__ import annotations

import contextlib
import fcntl
import itertools
import logging
import os
import secrets
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson

from ..runtime.errors import NotFoundError, WorldError
from ..runtime.ids import new_ulid, validate_id
from ..runtime.queue_args import MAX_QUEUE_NAME, check_enqueue, check_name, check_seconds, queue_names
from ..runtime.world import Message, Queue
from .boundary import storage_boundary
from .files import dumps
from .leases import LivenessCache, current_holder
from .notify import Notifier
from .queue_files import MessageFiles, Unsettled
from .queue_index import Lease, MessageRecord, QueueIndex
from .queue_log import ChangeLog

logger = logging.getLogger("wf.world_local")

#: Notifier channel woken whenever a message may have become deliverable.
CHANNEL = "queue"
#: A waiting `take` lists the directory this often, in case a change escaped the log.
SAFETY_RESCAN_SECONDS = 10.0
#: How often a waiting `take` looks for dead lease holders while other processes hold leases.
DEAD_HOLDER_POLL_SECONDS = 0.2
#: A waiting `take` re-checks (one fstat) at least this often, should a notification be lost.
MAX_PAUSE_SECONDS = 1.0





class _FileLock:
    """`with`-block holding the queue-wide flock; runs `on_enter` (the refresh) once held."""

    __slots__ = ("_fd", "_on_enter")

    def __init__(self, fd: int, on_enter: Callable[[], None] | None) -> None:
        self._fd = fd
        self._on_enter = on_enter

    def __enter__(self) -> None:
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        if self._on_enter is not None:
            try:
                self._on_enter()
            except BaseException:
                fcntl.flock(self._fd, fcntl.LOCK_UN)
                raise

    def __exit__(self, *exc: object) -> None:
        fcntl.flock(self._fd, fcntl.LOCK_UN)


class _Change:
    """See `LocalQueue._changing`."""

    __slots__ = ("_message_id", "_queue")

    def __init__(self, queue: LocalQueue, message_id: str) -> None:
        self._queue = queue
        self._message_id = message_id

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: object, *exc: object) -> None:
        if exc_type is not None:
            with contextlib.suppress(Exception):
                self._queue._reload(self._message_id, self._queue._now(), locked=True)


@storage_boundary
class LocalQueue(Queue):
    """`Queue` on the file system, safe for several threads and processes on one directory."""

    def __init__(self, root: Path, notifier: Notifier, *, fsync: bool, clock: Callable[[], float] = time.time) -> None:
        """`clock`: the time due times and leases are stamped and compared on (the World's, `clock.py`)."""
        self.root = Path(root)
        self._now = clock
        self._notifier = notifier
        self._fsync = fsync
        self._mutex = threading.Lock()
        self._tag = secrets.token_hex(6)
        self._files = MessageFiles(self.root, self._tag, clock=clock)
        self._me = current_holder()
        self._liveness = LivenessCache()
        self._index = QueueIndex(self._me, self._liveness.alive)
        self._log = ChangeLog(self.root / "changes.log", self._tag)
        self._lock_fd = os.open(self.root / "lock", os.O_RDWR | os.O_CREAT, 0o644)
        self._closed = False
        self._next_rescan = 0.0
        self._lease_ids = itertools.count(1)
        with self._mutex:
            with self._flock():
                self._log.open()
            self._rescan(full=True)

    # --- locking ------------------------------------------------------------------------

    def _flock(self) -> _FileLock:
        """The queue-wide file lock, without refreshing (caller holds `_mutex`)."""
        return _FileLock(self._lock_fd, None)

    def _exclusive(self) -> _FileLock:
        """The queue-wide file lock, refreshing the index on entry (caller holds `_mutex`)."""
        return _FileLock(self._lock_fd, self._refresh)

    def _changing(self, message_id: str) -> _Change:
        """`with`-block around one message's change (under the lock): logged first; if the
        change fails half way, the index re-reads what the files now say."""
        self._log.append(message_id)
        return _Change(self, message_id)

    def _new_lease_id(self) -> str:
        return f"{self._tag}-{next(self._lease_ids)}"

    def _check_open(self) -> None:
        if self._closed:
            raise WorldError("the queue is closed")

    # --- reading files into the index ---------------------------------------------------

    def _refresh(self) -> None:
        """Apply every change others logged since our last look (under the lock)."""
        changed, rescan = self._log.read_new()
        if changed:
            now = self._now()
            for message_id in changed:
                self._reload(message_id, now, locked=True)
        if rescan is not None:
            if rescan == "garbled":
                logger.warning("queue change log %s holds a garbled entry; rescanning the messages", self._log.path)
            files = self._files.listing()
            records = [self._files.read(mid, locked=True, has_lease=has_lease) for mid, (has_json, has_lease)
                       in files.items() if has_json]
            self._index.replace_all([r for r in records if r is not None], self._now())

    def _reload(self, message_id: str, now: float, *, locked: bool) -> None:
        record = self._files.read(message_id, locked=locked)
        if record is None:
            self._index.drop(message_id)
        else:
            self._index.put(record, now)

    def _rescan(self, *, full: bool) -> None:
        """Reconcile the index with the directory (caller holds `_mutex`, not the flock).

        Reads without the flock: the log position is taken first, so a change racing with
        the scan is in the log after it and is reloaded again; a file that does not parse
        is re-read under the lock before it is called corrupt.
        """
        with self._exclusive():
            pass
        files = self._files.listing()
        now = self._now()
        unsettled: list[str] = []
        records = self._index.records
        if full:
            ids = [mid for mid, (has_json, _) in files.items() if has_json]
        else:
            ids = [
                mid for mid, (has_json, has_lease) in files.items()
                if has_json and (mid not in records or (records[mid].lease is not None) != has_lease)
            ]
            ids.extend(mid for mid in records if not files.get(mid, (False, False))[0])
        loaded: list[MessageRecord] = []
        for message_id in ids:
            try:
                record = self._files.read(message_id, locked=False, has_lease=files.get(message_id, (False, True))[1])
            except Unsettled:
                unsettled.append(message_id)
                continue
            if full:
                if record is not None:
                    loaded.append(record)
            elif record is None:
                self._index.drop(message_id)
            else:
                self._index.put(record, now)
        if full:
            self._index.replace_all(loaded, now)
        orphans = [mid for mid, (has_json, has_lease) in files.items() if has_lease and not has_json]
        if unsettled or orphans:
            with self._exclusive():
                for message_id in unsettled:
                    self._reload(message_id, self._now(), locked=True)
                for message_id in orphans:
                    self._files.remove_orphan_lease(message_id)
        self._next_rescan = time.monotonic() + SAFETY_RESCAN_SECONDS

    def _leased_record(self, message: Message) -> MessageRecord:
        """The record `message` holds the lease of (under the lock); NotFoundError if lost."""
        if not isinstance(message, Message):
            raise TypeError(f"expected a Message from take(), got {type(message).__name__}")
        record = self._index.records.get(message.message_id)
        if record is None or record.lease is None or message.lease_id is None:
            raise NotFoundError(f"message {message.message_id} is not leased (acked, deleted or lease lost)")
        if record.lease.lease_id != message.lease_id:
            raise NotFoundError(f"the lease on message {message.message_id} was lost to another consumer")
        return record

    # --- the Queue contract -------------------------------------------------------------

    async def enqueue(
        self,
        queue: str,
        payload: dict[str, Any],
        *,
        idempotency_key: str | None = None,
        delay: float = 0.0,
        order_key: str | None = None,
    ) -> str:
        """Add a message (or coalesce into the one holding `idempotency_key`); return its id."""
        delay = check_enqueue(queue, payload, idempotency_key, order_key, delay)
        self._check_open()
        payload = orjson.loads(dumps(payload))  # our own copy, exactly as stored; bad payloads fail here
        now = self._now()
        message_id = new_ulid()
        record = MessageRecord(
            message_id=message_id,
            queue=queue,
            payload=payload,
            order_key=message_id if order_key is None else order_key,
            available_at=now + delay,
            created_at=now,
            key=idempotency_key,
        )
        data = dumps(record.to_doc())
        staged: str | None = None
        if self._fsync and idempotency_key not in self._index.by_key:
            staged = self._files.stage(message_id, data)  # the slow fsync happens outside the lock
        woke = created = False
        try:
            with self._mutex:
                self._check_open()
                with self._exclusive():
                    existing_id = None if idempotency_key is None else self._index.by_key.get(idempotency_key)
                    if existing_id is not None:
                        woke = self._coalesce(self._index.records[existing_id], now + delay)
                        return existing_id
                    with self._changing(message_id):
                        self._files.create_message(record, data, staged=staged, durable=self._fsync)
                        staged = None
                        self._index.put(record, self._now())
                    self._log.maybe_rotate()
                    woke = created = True
        finally:
            if staged is not None:  # coalesced (or failed): the fsynced copy is not needed
                self._files.discard_staged(staged)
            if created and self._fsync:
                self._files.sync()
            if woke:
                self._notifier.notify(CHANNEL)
        return message_id

    def _coalesce(self, record: MessageRecord, wanted_at: float) -> bool:
        """Fold an enqueue into an existing message (under the lock); True if it may be delivered sooner."""
        if record.lease is not None:
            if record.again_at is not None and record.again_at <= wanted_at:
                return False
            changed = record.changed(again_at=wanted_at)
            woke = False  # it is delivered again after the ack: nobody to wake now
        else:
            if record.available_at <= wanted_at:
                return False
            changed = record.changed(available_at=wanted_at)
            woke = True
        with self._changing(record.message_id):
            self._files.rewrite_message(changed, durable=self._fsync)
            self._index.put(changed, self._now())
        return woke

    async def take(
        self, queues: Sequence[str], *, lease: float = 60.0, timeout: float | None = 0.0
    ) -> Message | None:
        """Lease the first deliverable message of `queues`, waiting up to `timeout` seconds for one."""
        names = queue_names(queues)
        lease = check_seconds(lease, "lease")
        if lease <= 0:
            raise ValueError(f"lease must be positive, not {lease!r}")
        if timeout is not None:
            timeout = check_seconds(timeout, "timeout")
        message = self._take_now(names, lease)
        if message is not None or (timeout is not None and timeout <= 0):
            return message
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._notifier.subscribe(CHANNEL) as subscription:
            while True:
                message = self._take_now(names, lease)
                if message is not None:
                    return message
                pause = self._pause(names)
                if deadline is not None:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        return None
                    pause = min(pause, left)
                await subscription.wait(pause)

    def _take_now(self, queues: list[str], lease: float) -> Message | None:
        with self._mutex:
            self._check_open()
            if time.monotonic() >= self._next_rescan:
                self._rescan(full=False)
            if not self._log.has_news() and self._index.candidate(queues, self._now()) is None:
                return None
            with self._exclusive():
                now = self._now()
                record = self._index.candidate(queues, now)
                if record is None:
                    return None
                mid = record.message_id
                claim = Lease(self._new_lease_id(), now + lease, self._me, record.deliveries + 1)
                leased = record.changed(lease=claim)
                with self._changing(mid):
                    if record.again_at is not None and record.again_at <= now:
                        # this delivery answers the wake-up that was asked for while the lost lease ran
                        leased.again_at = None
                        self._files.rewrite_message(leased, durable=False)
                    self._files.write_lease(mid, claim, replacing=record.lease is not None)
                    self._index.put(leased, now)
                self._log.maybe_rotate()
                return leased.leased_message()

    def _pause(self, queues: list[str]) -> float:
        """How long a waiting take may sleep: until a delayed message or a lease is due, or a check."""
        with self._mutex:
            pause = min(MAX_PAUSE_SECONDS, self._next_rescan - time.monotonic())
            due = self._index.next_change(queues)
            if due is not None:
                pause = min(pause, due - self._now())
            if self._index.has_foreign_leases():
                pause = min(pause, DEAD_HOLDER_POLL_SECONDS)
        return max(pause, 0.001)

    async def ack(self, message: Message) -> None:
        """Remove a leased message, or make it deliverable once more if an enqueue asked for that."""
        self._check_open()
        requeued = False
        with self._mutex, self._exclusive():
            record = self._leased_record(message)
            mid = record.message_id
            with self._changing(mid):
                if record.again_at is not None:
                    again = record.changed(lease=None, available_at=record.again_at, again_at=None, attempts=0)
                    self._files.rewrite_message(again, durable=False)
                    self._files.remove_lease(mid)
                    self._index.put(again, self._now())
                    requeued = True
                else:
                    self._files.remove(mid)
                    self._index.drop(mid)
            self._log.maybe_rotate()
        if requeued:
            self._notifier.notify(CHANNEL)

    async def nack(self, message: Message, *, delay: float = 0.0) -> None:
        """Give a leased message back, deliverable again after `delay` seconds."""
        delay = max(0.0, check_seconds(delay, "delay"))
        self._check_open()
        with self._mutex, self._exclusive():
            record = self._leased_record(message)
            available_at = self._now() + delay
            if record.again_at is not None:
                available_at = min(available_at, record.again_at)
            back = record.changed(lease=None, available_at=available_at, again_at=None, attempts=record.deliveries)
            with self._changing(record.message_id):
                self._files.rewrite_message(back, durable=self._fsync)
                self._files.remove_lease(record.message_id)
                self._index.put(back, self._now())
            self._log.maybe_rotate()
        if self._fsync:
            self._files.sync()
        self._notifier.notify(CHANNEL)

    async def extend(self, message: Message, *, lease: float) -> Message:
        """Renew a lease for `lease` more seconds from now."""
        lease = check_seconds(lease, "lease")
        if lease <= 0:
            raise ValueError(f"lease must be positive, not {lease!r}")
        self._check_open()
        with self._mutex, self._exclusive():
            record = self._leased_record(message)
            assert record.lease is not None
            now = self._now()
            renewed = record.changed(lease=replace(record.lease, until=now + lease, holder=self._me))
            assert renewed.lease is not None
            with self._changing(record.message_id):
                self._files.write_lease(record.message_id, renewed.lease, replacing=True)
                self._index.put(renewed, now)
            self._log.maybe_rotate()
            return renewed.leased_message()

    async def list(self, queue: str | None = None) -> list[Message]:
        """Every message not yet acked, smallest order_key first, with its state now."""
        if queue is not None:
            check_name(queue, "queue name", MAX_QUEUE_NAME)
        self._check_open()
        with self._mutex:
            with self._exclusive():
                records = [r for r in self._index.records.values() if queue is None or r.queue == queue]
            now = self._now()
            messages = [r.to_message(now, self._liveness.alive) for r in records]
        messages.sort(key=lambda m: (m.order_key, m.message_id))
        return messages

    async def dead_leases(self) -> list[Message]:
        """Messages leased by a process that is dead (see `Queue.dead_leases`)."""
        self._check_open()
        with self._mutex:
            with self._exclusive():
                self._rescan(full=True)
                records = [r for r in self._index.records.values()
                           if r.lease is not None and not self._liveness.alive(r.lease.holder)]
            now = self._now()
            held = [replace(m, state="leased", lease_id=r.lease.lease_id, attempts=r.lease.attempts,
                            extra={**m.extra, "holder": f"process {r.lease.holder.pid}"})
                    for r in records if r.lease is not None
                    for m in [r.to_message(now, self._liveness.alive)]]
        held.sort(key=lambda m: (m.order_key, m.message_id))
        return held

    async def release(self, message: Message) -> bool:
        """Give back a message a dead process leased (a nack with its lease); False if it is no longer so held."""
        for dead in await self.dead_leases():
            if dead.message_id == message.message_id and dead.lease_id == message.lease_id:
                try:
                    await self.nack(dead)
                except NotFoundError:
                    return False  # taken over or acked meanwhile
                return True
        return False

    async def delete(self, message_id: str) -> None:
        """Remove a message whatever its state. NotFoundError if there is none with this id."""
        validate_id(message_id, "message id")
        self._check_open()
        with self._mutex, self._exclusive():
            if message_id not in self._index.records:
                raise NotFoundError(f"no queue message {message_id}")
            with self._changing(message_id):
                self._files.remove(message_id)
                self._index.drop(message_id)
            self._log.maybe_rotate()
        if self._fsync:
            self._files.sync()

    def close(self) -> None:
        """Release the lock file and log; the queue may not be used afterwards."""
        with self._mutex:
            if self._closed:
                return
            self._closed = True
            self._log.close()
            self._files.close()
            with contextlib.suppress(OSError):
                os.close(self._lock_fd)
