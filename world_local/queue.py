"""The durable queue of the local World: one JSON file per message under `<data>/queue/`.

Layout:
    queue/messages/<ULID>.json   a message: queue, payload, order, delay, lease, attempts
    queue/changes.log            ids of changed messages (see `queue_log`), a refresh hint
    queue/lock                   flock'ed around every state change (all processes)
    queue/corrupt/               unreadable message files moved aside

Every change happens under the queue-wide flock (plus a thread lock, since flock does
not exclude threads sharing one descriptor): refresh the in-memory index from the change
log, decide, append the id to the log, change the file. Deciding on a fresh index under
one lock is what makes a lease exclusive and idempotency coalescing race-free.

`take` needs no lock when nothing is deliverable and the log did not grow; a waiting
consumer subscribes to the Notifier channel "queue" (enqueue, nack and redelivery notify
it) and otherwise sleeps until the next delayed message or lease expiry is due, re-checking
every 0.2 s only while another process holds leases (so a killed worker's messages come
back within a fraction of a second), and rescanning the directory every
`SAFETY_RESCAN_SECONDS` in case anything escaped the log.

Durability with `fsync=True`: enqueue, nack, ack and delete are on disk when they return.
Taking and extending a lease are not fsynced: after a power loss a leased message is
simply delivered again (its holder is gone), possibly with `attempts` one lower.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import itertools
import logging
import math
import os
import secrets
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson

from ..runtime.errors import CorruptDataError, InvalidIdError, NotFoundError, WorldError
from ..runtime.ids import new_ulid, validate_id
from ..runtime.world import Message, Queue
from .files import dumps, fsync_dir, write_bytes_atomic
from .leases import LivenessCache, current_holder
from .notify import Notifier
from .queue_index import MESSAGE_FILE, Lease, MessageRecord, QueueIndex
from .queue_log import ChangeLog

logger = logging.getLogger("wf.world_local")

#: Notifier channel woken whenever a message may have become deliverable.
CHANNEL = "queue"
#: A waiting `take` lists the directory this often, in case a change escaped the log.
SAFETY_RESCAN_SECONDS = 10.0
#: How often a waiting `take` looks for dead lease holders while other processes hold leases.
DEAD_HOLDER_POLL_SECONDS = 0.2
#: Leftover temporary files older than this are removed by rescans.
STALE_TMP_SECONDS = 600.0

_MAX_NAME = 200
_MAX_KEY = 1000


def _check_name(value: object, what: str, limit: int) -> str:
    if not isinstance(value, str) or not value or len(value) > limit or any(ord(c) < 32 for c in value):
        shown = repr(value) if len(repr(value)) <= 80 else repr(value)[:77] + "..."
        raise InvalidIdError(f"invalid {what} {shown}: use 1 to {limit} printable characters")
    return value


def _check_seconds(value: object, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value) or math.isinf(value):
        raise ValueError(f"{what} must be a finite number of seconds, not {value!r}")
    return float(value)


def _queue_names(queues: Sequence[str] | str) -> list[str]:
    names = [queues] if isinstance(queues, str) else list(queues)
    for name in names:
        _check_name(name, "queue name", _MAX_NAME)
    return names


def _load_json(path: str) -> Any:
    """Read a small JSON file: FileNotFoundError if absent, CorruptDataError if unreadable."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise CorruptDataError(f"cannot read {path}: {exc.strerror}", path) from exc
    try:
        chunks = []
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
    except OSError as exc:
        raise CorruptDataError(f"cannot read {path}: {exc.strerror}", path) from exc
    finally:
        os.close(fd)
    data = b"".join(chunks)
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        what = "empty" if not data else "truncated or corrupt"
        raise CorruptDataError(f"{path} is {what} JSON ({exc})", path) from exc


class _Unsettled(Exception):
    """A file read without the lock did not parse: it may be mid-write; re-read it under the lock."""


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


class LocalQueue(Queue):
    """`Queue` on the file system, safe for several threads and processes on one directory."""

    def __init__(self, root: Path, notifier: Notifier, *, fsync: bool) -> None:
        self.root = Path(root)
        self._messages = self.root / "messages"
        self._dir = str(self._messages)
        self._corrupt = self.root / "corrupt"
        self._notifier = notifier
        self._fsync = fsync
        self._messages.mkdir(parents=True, exist_ok=True)
        self._mutex = threading.Lock()
        self._tag = secrets.token_hex(6)
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

    def _new_lease_id(self) -> str:
        return f"{self._tag}-{next(self._lease_ids)}"

    def _check_open(self) -> None:
        if self._closed:
            raise WorldError("the queue is closed")

    # --- reading files into the index ---------------------------------------------------

    def _msg_path(self, message_id: str) -> str:
        return f"{self._dir}/{message_id}.json"

    def _lease_path(self, message_id: str) -> str:
        return f"{self._dir}/{message_id}.lease"

    def _refresh(self) -> None:
        """Apply every change others logged since our last look (under the lock)."""
        changed, rescan = self._log.read_new()
        if changed:
            now = time.time()
            for message_id in changed:
                self._reload(message_id, now, locked=True)
        if rescan is not None:
            if rescan == "garbled":
                logger.warning("queue change log %s holds a garbled entry; rescanning the messages", self._log.path)
            files = self._list_files()
            records = [self._read(mid, locked=True, has_lease=has_lease) for mid, (has_json, has_lease)
                       in files.items() if has_json]
            self._index.replace_all([r for r in records if r is not None], time.time())

    def _reload(self, message_id: str, now: float, *, locked: bool) -> None:
        record = self._read(message_id, locked=locked)
        if record is None:
            self._index.drop(message_id)
        else:
            self._index.put(record, now)

    def _read(self, message_id: str, *, locked: bool, has_lease: bool = True) -> MessageRecord | None:
        """A message's files as a record; None if absent or corrupt (then moved aside).

        Without the lock, an unparsable file raises `_Unsettled` instead: it may be mid-write.
        `has_lease=False` (known from a directory listing) skips looking for a lease file.
        """
        path = self._msg_path(message_id)
        try:
            doc = _load_json(path)
        except FileNotFoundError:
            return None
        except CorruptDataError as exc:
            if not locked:
                raise _Unsettled from exc
            self._quarantine(path, str(exc))
            return None
        lease = self._read_lease(message_id, locked=locked) if has_lease else None
        try:
            return MessageRecord.from_doc(doc, message_id, lease)
        except ValueError as exc:
            self._quarantine(path, str(exc))
            return None

    def _read_lease(self, message_id: str, *, locked: bool) -> Lease | None:
        path = self._lease_path(message_id)
        try:
            return Lease.from_doc(_load_json(path))
        except FileNotFoundError:
            return None
        except (CorruptDataError, ValueError) as exc:
            if not locked:
                raise _Unsettled from exc
            self._quarantine(path, f"{exc}; the message is deliverable again")
            return None

    def _quarantine(self, path: str, reason: str) -> None:
        self._corrupt.mkdir(exist_ok=True)
        target = self._corrupt / f"{os.path.basename(path)}.{new_ulid()}"
        try:
            os.rename(path, target)
        except OSError:
            logger.warning("skipping corrupt queue file %s (%s)", path, reason)
            return
        logger.warning("skipping corrupt queue file %s (%s); moved to %s", path, reason, target)

    def _list_files(self) -> dict[str, tuple[bool, bool]]:
        """{message id: (has .json, has .lease)} on disk; removes temporary files left by crashes."""
        found: dict[str, tuple[bool, bool]] = {}
        now = time.time()
        with os.scandir(self._dir) as entries:
            for entry in entries:
                match = MESSAGE_FILE.fullmatch(entry.name)
                if match is not None:
                    has_json, has_lease = found.get(match.group(1), (False, False))
                    if match.group(2) == "json":
                        has_json = True
                    else:
                        has_lease = True
                    found[match.group(1)] = (has_json, has_lease)
                elif entry.name.startswith(".") and entry.name.endswith(".tmp"):
                    with contextlib.suppress(OSError):
                        if now - entry.stat().st_mtime > STALE_TMP_SECONDS:
                            os.unlink(entry.path)
        return found

    def _rescan(self, *, full: bool) -> None:
        """Reconcile the index with the directory (caller holds `_mutex`, not the flock).

        Reads without the flock: the log position is taken first, so a change racing with
        the scan is in the log after it and is reloaded again; a file that does not parse
        is re-read under the lock before it is called corrupt.
        """
        with self._exclusive():
            pass
        files = self._list_files()
        now = time.time()
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
                record = self._read(message_id, locked=False, has_lease=files.get(message_id, (False, True))[1])
            except _Unsettled:
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
                    self._reload(message_id, time.time(), locked=True)
                for message_id in orphans:  # a lease whose message is gone (ack interrupted)
                    if not os.path.exists(self._msg_path(message_id)):
                        with contextlib.suppress(FileNotFoundError):
                            os.unlink(self._lease_path(message_id))
        self._next_rescan = time.monotonic() + SAFETY_RESCAN_SECONDS

    # --- writing files (always under the lock, after logging the id) ----------------------

    def _create(self, path: str, data: bytes, *, durable: bool) -> None:
        """Create a file that must not exist yet (readers under the lock never see it half written)."""
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            if durable:
                os.fsync(fd)
        except BaseException:
            os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(path)
            raise
        os.close(fd)

    def _stage(self, message_id: str, data: bytes) -> str:
        """Write a new message's file, fsynced, under a temporary name (done before taking the lock)."""
        tmp = f"{self._dir}/.{message_id}.{os.getpid()}.{self._tag}.tmp"
        self._create(tmp, data, durable=True)
        return tmp

    def _rewrite_message(self, record: MessageRecord, *, durable: bool) -> None:
        write_bytes_atomic(Path(self._msg_path(record.message_id)), dumps(record.to_doc()), fsync=durable)

    def _write_lease(self, message_id: str, lease: Lease, *, replacing: bool) -> None:
        path = self._lease_path(message_id)
        data = dumps(lease.to_doc())
        if not replacing:
            try:
                self._create(path, data, durable=False)
                return
            except FileExistsError:  # left by an interrupted ack: replace it
                pass
        write_bytes_atomic(Path(path), data, fsync=False)

    def _unlink(self, path: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)

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
        _check_name(queue, "queue name", _MAX_NAME)
        if not isinstance(payload, dict):
            raise TypeError(f"a queue payload must be a dict, not {type(payload).__name__}")
        if idempotency_key is not None:
            _check_name(idempotency_key, "idempotency key", _MAX_KEY)
        if order_key is not None:
            _check_name(order_key, "order key", _MAX_KEY)
        delay = max(0.0, _check_seconds(delay, "delay"))
        self._check_open()
        payload = orjson.loads(dumps(payload))  # our own copy, exactly as stored; bad payloads fail here
        now = time.time()
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
            staged = self._stage(message_id, data)  # the slow fsync happens outside the lock
        woke = created = False
        try:
            with self._mutex:
                self._check_open()
                with self._exclusive():
                    existing_id = None if idempotency_key is None else self._index.by_key.get(idempotency_key)
                    if existing_id is not None:
                        woke = self._coalesce(self._index.records[existing_id], now + delay)
                        return existing_id
                    self._log.append(message_id)
                    if staged is not None:
                        os.rename(staged, self._msg_path(message_id))
                        staged = None
                    else:
                        self._create(self._msg_path(message_id), data, durable=self._fsync)
                    self._index.put(record, time.time())
                    self._log.maybe_rotate()
                    woke = created = True
        finally:
            if staged is not None:
                self._unlink(staged)
            if created and self._fsync:
                fsync_dir(self._messages)
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
        self._log.append(record.message_id)
        self._rewrite_message(changed, durable=self._fsync)
        self._index.put(changed, time.time())
        return woke

    async def take(
        self, queues: Sequence[str], *, lease: float = 60.0, timeout: float | None = 0.0
    ) -> Message | None:
        """Lease the first deliverable message of `queues`, waiting up to `timeout` seconds for one."""
        names = _queue_names(queues)
        lease = _check_seconds(lease, "lease")
        if lease <= 0:
            raise ValueError(f"lease must be positive, not {lease!r}")
        if timeout is not None:
            timeout = _check_seconds(timeout, "timeout")
        message = self._take_now(names, lease)
        if message is not None or (timeout is not None and timeout <= 0):
            return message
        deadline = None if timeout is None else time.monotonic() + timeout
        subscribed = self._notifier.subscribe(CHANNEL)
        subscription = subscribed.__enter__()
        try:
            while True:
                message = self._take_now(names, lease)
                if message is not None:
                    break
                pause = self._pause(names)
                if deadline is not None:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    pause = min(pause, left)
                await subscription.wait(pause)
        except BaseException:
            subscribed.__exit__(None, None, None)
            raise
        # Unsubscribing costs a few hundred microseconds (a FIFO and the notifier's poll
        # thread): do it just after handing the message over, not before.
        try:
            asyncio.get_running_loop().call_soon(subscribed.__exit__, None, None, None)
        except RuntimeError:
            subscribed.__exit__(None, None, None)
        return message

    def _take_now(self, queues: list[str], lease: float) -> Message | None:
        with self._mutex:
            self._check_open()
            if time.monotonic() >= self._next_rescan:
                self._rescan(full=False)
            if not self._log.has_news() and self._index.candidate(queues, time.time()) is None:
                return None
            with self._exclusive():
                now = time.time()
                record = self._index.candidate(queues, now)
                if record is None:
                    return None
                mid = record.message_id
                claim = Lease(self._new_lease_id(), now + lease, self._me, record.deliveries + 1)
                self._log.append(mid)
                leased = record.changed(lease=claim)
                if record.again_at is not None and record.again_at <= now:
                    # this delivery answers the wake-up that was asked for while the lost lease ran
                    leased.again_at = None
                    self._rewrite_message(leased, durable=False)
                self._write_lease(mid, claim, replacing=record.lease is not None)
                self._index.put(leased, now)
                self._log.maybe_rotate()
                return leased.to_message(now, self._liveness.alive)

    def _pause(self, queues: list[str]) -> float:
        """How long a waiting take may sleep: until a delayed message or a lease is due, or a check."""
        with self._mutex:
            pause = self._next_rescan - time.monotonic()
            due = self._index.next_change(queues)
            if due is not None:
                pause = min(pause, due - time.time())
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
            self._log.append(mid)
            if record.again_at is not None:
                again = record.changed(lease=None, available_at=record.again_at, again_at=None, attempts=0)
                self._rewrite_message(again, durable=False)
                self._unlink(self._lease_path(mid))
                self._index.put(again, time.time())
                requeued = True
            else:
                self._unlink(self._msg_path(mid))  # the message first: a lone lease file is just cleaned up
                self._unlink(self._lease_path(mid))
                self._index.drop(mid)
            self._log.maybe_rotate()
        if self._fsync:
            fsync_dir(self._messages)
        if requeued:
            self._notifier.notify(CHANNEL)

    async def nack(self, message: Message, *, delay: float = 0.0) -> None:
        """Give a leased message back, deliverable again after `delay` seconds."""
        delay = max(0.0, _check_seconds(delay, "delay"))
        self._check_open()
        with self._mutex, self._exclusive():
            record = self._leased_record(message)
            available_at = time.time() + delay
            if record.again_at is not None:
                available_at = min(available_at, record.again_at)
            back = record.changed(lease=None, available_at=available_at, again_at=None, attempts=record.deliveries)
            self._log.append(record.message_id)
            self._rewrite_message(back, durable=self._fsync)
            self._unlink(self._lease_path(record.message_id))
            self._index.put(back, time.time())
            self._log.maybe_rotate()
        if self._fsync:
            fsync_dir(self._messages)
        self._notifier.notify(CHANNEL)

    async def extend(self, message: Message, *, lease: float) -> Message:
        """Renew a lease for `lease` more seconds from now."""
        lease = _check_seconds(lease, "lease")
        if lease <= 0:
            raise ValueError(f"lease must be positive, not {lease!r}")
        self._check_open()
        with self._mutex, self._exclusive():
            record = self._leased_record(message)
            assert record.lease is not None
            now = time.time()
            renewed = record.changed(lease=replace(record.lease, until=now + lease, holder=self._me))
            self._log.append(record.message_id)
            assert renewed.lease is not None
            self._write_lease(record.message_id, renewed.lease, replacing=True)
            self._index.put(renewed, now)
            self._log.maybe_rotate()
            return renewed.to_message(now, self._liveness.alive)

    async def list(self, queue: str | None = None) -> list[Message]:
        """Every message not yet acked, smallest order_key first, with its state now."""
        if queue is not None:
            _check_name(queue, "queue name", _MAX_NAME)
        self._check_open()
        with self._mutex:
            with self._exclusive():
                records = [r for r in self._index.records.values() if queue is None or r.queue == queue]
            now = time.time()
            messages = [r.to_message(now, self._liveness.alive) for r in records]
        messages.sort(key=lambda m: (m.order_key, m.message_id))
        return messages

    async def delete(self, message_id: str) -> None:
        """Remove a message whatever its state. NotFoundError if there is none with this id."""
        validate_id(message_id, "message id")
        self._check_open()
        with self._mutex, self._exclusive():
            if message_id not in self._index.records:
                raise NotFoundError(f"no queue message {message_id}")
            self._log.append(message_id)
            self._unlink(self._msg_path(message_id))
            self._unlink(self._lease_path(message_id))
            self._index.drop(message_id)
            self._log.maybe_rotate()
        if self._fsync:
            fsync_dir(self._messages)

    def close(self) -> None:
        """Release the lock file and log; the queue may not be used afterwards."""
        with self._mutex:
            if self._closed:
                return
            self._closed = True
            self._log.close()
            with contextlib.suppress(OSError):
                os.close(self._lock_fd)
