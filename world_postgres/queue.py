"""The durable queue in SQL: one row per message, claimed with `FOR UPDATE SKIP LOCKED`.

Columns that matter: `due_at` is when the message may next be taken (its `available_at`
while waiting, its `lease_until` while leased), `deliveries` counts deliveries including
a current lease, `again_at` records an enqueue that coalesced into a leased message (it is
delivered once more after the ack, from attempts 1), `holder` is the session number of the
process holding the lease (see notify.py).

`take` leases the smallest (order_key, message_id) among due messages of the named queues
in one UPDATE … RETURNING. When nothing is due it waits on the `q` notification (sent by
enqueue, nack, a requeueing ack and the reaper), never longer than until the next due time
or a jittered second. While waiting it also expires the leases of dead holders (their
session lock is gone from `pg_locks`), every `REAP_SECONDS`: a `kill -9`ed worker's
messages are delivered again within a fraction of a second, not after the lease.

A lease id is made before the statement that takes it, so a take whose answer was lost
to a dropped connection finds its message again on the retry instead of orphaning it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any

import orjson
from psycopg import AsyncConnection

from ..runtime.errors import NotFoundError
from ..runtime.ids import new_ulid, validate_id
from ..runtime.queue_args import MAX_QUEUE_NAME, check_enqueue, check_name, check_seconds, queue_names
from ..runtime.world import Message, Queue
from .database import Database
from .notify import Hub, Listener

#: A waiting take expires dead holders' leases this often (and looks again at least this often
#: while others hold leases).
REAP_SECONDS = 0.25
#: A waiting take looks again at least this often, should a notification be lost.
POLL_SECONDS = 1.0

#: In a statement's WHERE clause: commit it without waiting for the WAL flush. Only for take,
#: ack and extend, which the contract lets a power loss undo (the message is delivered again).
_ASYNC_COMMIT = "set_config('synchronous_commit', 'off', true) IS NOT NULL"
_MESSAGE = ("message_id, queue, payload, order_key, available_at, deliveries, idempotency_key, lease_id, "
            "lease_until, holder, again_at")


def _message(row: tuple[Any, ...], now: datetime, leased_view: bool = False) -> Message:
    (message_id, queue, payload, order_key, available_at, deliveries, key, lease_id, lease_until, _holder,
     _again) = row[:11]
    if leased_view or (lease_id is not None and lease_until is not None and lease_until > now):
        state, attempts = "leased", deliveries
    else:
        lease_id = lease_until = None
        state = "ready" if available_at <= now else "delayed"
        attempts = deliveries
    return Message(message_id=message_id, queue=queue, payload=payload, order_key=order_key,
                   available_at=available_at, attempts=attempts, idempotency_key=key, state=state,
                   lease_until=lease_until, lease_id=lease_id)


class PgQueue(Queue):
    """`Queue` on one schema's `queue` table, shared by every process on the database."""

    def __init__(self, db: Database, schema: str, hub: Hub, listener: Listener, channel: str, lock_space: int) -> None:
        self.db = db
        self.hub = hub
        self.listener = listener
        self.channel = channel
        s = f'"{schema}"'
        self.s = s
        self._next_reap = 0.0
        #: This process's session number, once its listener holds the session lock (set by the World).
        self.session: Callable[[], Awaitable[int]] = self._no_session
        coalesce = (
            "available_at = CASE WHEN q.lease_id IS NULL THEN LEAST(q.available_at, EXCLUDED.available_at) "
            "ELSE q.available_at END, "
            "due_at = CASE WHEN q.lease_id IS NULL THEN LEAST(q.due_at, EXCLUDED.available_at) ELSE q.due_at END, "
            "again_at = CASE WHEN q.lease_id IS NULL THEN q.again_at "
            "ELSE LEAST(COALESCE(q.again_at, 'infinity'), EXCLUDED.available_at) END"
        )
        self.sql_enqueue_keyed = (
            f"WITH m AS (INSERT INTO {s}.queue AS q (message_id, queue, payload, order_key, available_at, created_at, "
            "due_at, idempotency_key) VALUES (%(id)s, %(queue)s, %(payload)s::json, %(order_key)s, "
            "now() + %(delay)s * interval '1 second', now(), now() + %(delay)s * interval '1 second', %(key)s) "
            f"ON CONFLICT (idempotency_key) DO UPDATE SET {coalesce} RETURNING message_id, lease_id IS NULL AS woke) "
            "SELECT message_id, CASE WHEN woke THEN pg_notify(%(channel)s, 'q') END FROM m")
        self.sql_enqueue = (
            f"WITH m AS (INSERT INTO {s}.queue (message_id, queue, payload, order_key, available_at, created_at, "
            "due_at) VALUES (%(id)s, %(queue)s, %(payload)s::json, %(order_key)s, "
            "now() + %(delay)s * interval '1 second', now(), now() + %(delay)s * interval '1 second') "
            "ON CONFLICT (message_id) DO NOTHING RETURNING message_id) "
            "SELECT %(id)s, pg_notify(%(channel)s, 'q')")
        self.sql_recover = (
            f"INSERT INTO {s}.queue AS q (message_id, queue, payload, order_key, available_at, created_at, due_at, "
            "idempotency_key) SELECT %(prefix)s || r.run_id, %(queue)s, json_build_object('run_id', r.run_id), "
            "r.run_id, now(), now(), now(), 'run:' || r.run_id FROM {s}.runs r "
            "WHERE r.status IN ('pending', 'running') "
            f"ON CONFLICT (idempotency_key) DO UPDATE SET {coalesce}").replace("{s}", s)
        self.sql_take = (f"SELECT {_MESSAGE} FROM {s}.take_message(%(queues)s::text[], %(lease_id)s, "
                         "%(lease)s::float8, %(holder)s)")
        self.sql_find_lease = f"SELECT {_MESSAGE} FROM {s}.queue WHERE lease_id = %s"
        self.sql_reap = (
            f"WITH dead AS (UPDATE {s}.queue q SET due_at = now(), lease_until = now() "
            "WHERE q.lease_id IS NOT NULL AND q.lease_until > now() AND q.holder <> %(me)s AND NOT EXISTS ("
            "SELECT 1 FROM pg_locks l WHERE l.locktype = 'advisory' AND l.classid = %(space)s::oid "
            "AND l.objid = q.holder::oid AND l.objsubid = 2 AND l.granted "
            "AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())) "
            "RETURNING 1) SELECT count(*), CASE WHEN count(*) > 0 THEN pg_notify(%(channel)s, 'q') END FROM dead")
        dead_holder = (
            "NOT EXISTS (SELECT 1 FROM pg_locks l WHERE l.locktype = 'advisory' AND l.classid = %(space)s::oid "
            "AND l.objid = q.holder::oid AND l.objsubid = 2 AND l.granted "
            "AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()))")
        self.sql_dead_leases = (f"SELECT {_MESSAGE}, now() FROM {s}.queue q WHERE q.lease_id IS NOT NULL "
                                f"AND q.lease_until > now() AND {dead_holder} ORDER BY order_key, message_id")
        self.sql_release_dead = (
            f"WITH m AS (UPDATE {s}.queue q SET lease_id = NULL, lease_until = NULL, holder = NULL, "
            "due_at = LEAST(q.available_at, now()) WHERE q.message_id = %(id)s AND q.lease_id = %(lease_id)s "
            f"AND q.lease_until > now() AND {dead_holder} RETURNING 1) "
            "SELECT count(*), pg_notify(%(channel)s, 'q') FROM m")
        self.lock_space = lock_space
        # How long a waiting take may sleep, in one statement: whether another process holds
        # leases (whose holder may die: reap soon), and when the next message falls due.
        self.sql_pause = (f"SELECT EXISTS (SELECT 1 FROM {s}.queue WHERE lease_id IS NOT NULL "
                          f"AND holder <> %s AND lease_until > now()), "
                          f"(SELECT min(due_at) - now() FROM {s}.queue WHERE queue = ANY(%s))")
        self.sql_ack = f"SELECT {s}.ack_message(%(id)s, %(lease_id)s, %(channel)s)"
        self.sql_nack = (
            f"WITH m AS (UPDATE {s}.queue q SET lease_id = NULL, lease_until = NULL, holder = NULL, again_at = NULL, "
            "available_at = LEAST(now() + %(delay)s * interval '1 second', COALESCE(q.again_at, 'infinity')), "
            "due_at = LEAST(now() + %(delay)s * interval '1 second', COALESCE(q.again_at, 'infinity')) "
            "WHERE message_id = %(id)s AND lease_id = %(lease_id)s RETURNING 1) "
            "SELECT count(*), pg_notify(%(channel)s, 'q') FROM m")
        self.sql_release = (
            f"UPDATE {s}.queue SET lease_id = NULL, lease_until = NULL, holder = NULL, due_at = available_at, "
            "deliveries = deliveries - 1 WHERE lease_id = %s")
        self.sql_extend = (
            f"UPDATE {s}.queue q SET lease_until = now() + %(lease)s * interval '1 second', "
            "due_at = now() + %(lease)s * interval '1 second', holder = %(holder)s "
            f"WHERE message_id = %(id)s AND lease_id = %(lease_id)s AND {{ASYNC}} RETURNING {_MESSAGE}")
        for name in ("sql_extend",):
            setattr(self, name, getattr(self, name).replace("{ASYNC}", _ASYNC_COMMIT))

    async def _no_session(self) -> int:
        return await self.listener.ensure_started(10.0)

    # --- enqueue ---

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
        text = orjson.dumps(payload).decode()  # TypeError for what is not JSON
        message_id = new_ulid()
        params = {"id": message_id, "queue": queue, "payload": text, "order_key": order_key or message_id,
                  "delay": delay, "key": idempotency_key, "channel": self.channel}
        query = self.sql_enqueue if idempotency_key is None else self.sql_enqueue_keyed

        async def op(conn: AsyncConnection, attempt: int) -> str:
            cur = await conn.execute(query, params)
            row = await cur.fetchone()
            assert row is not None
            return str(row[0])

        found = await self.db.run(op)
        self.hub.fire("q")
        return found

    # --- take ---

    async def _claim(self, names: list[str], lease: float, lease_id: str) -> Message | None:
        holder = await self.session()
        query = self.sql_take
        params = {"queues": names, "lease_id": lease_id, "lease": lease, "holder": holder}

        async def op(conn: AsyncConnection, attempt: int) -> Message | None:
            if attempt:  # an earlier try may have taken it, its answer lost with the connection
                cur = await conn.execute(self.sql_find_lease, (lease_id,))
                row = await cur.fetchone()
                if row is not None:
                    return _message(row, row[8], leased_view=True)
            cur = await conn.execute(query, params)
            row = await cur.fetchone()
            return None if row is None else _message(row, row[8], leased_view=True)

        return await self.db.run(op)

    async def _release(self, lease_id: str) -> None:
        async def op(conn: AsyncConnection, attempt: int) -> None:
            await conn.execute(self.sql_release, (lease_id,))

        await self.db.run(op)

    async def _claim_safely(self, names: list[str], lease: float) -> Message | None:
        """`_claim`, undone if the caller is cancelled meanwhile (a cancelled take leases nothing)."""
        lease_id = new_ulid()
        task = asyncio.ensure_future(self._claim(names, lease, lease_id))
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            try:
                message = await task
            except Exception:  # noqa: BLE001 - the claim failed: nothing to give back
                message = None
            if message is not None:
                await asyncio.shield(self._release(lease_id))
            raise

    async def take(
        self, queues: Sequence[str], *, lease: float = 60.0, timeout: float | None = 0.0
    ) -> Message | None:
        """Lease the first due message of `queues`, waiting up to `timeout` seconds for one."""
        names = queue_names(queues)
        lease = check_seconds(lease, "lease")
        if lease <= 0:
            raise ValueError(f"lease must be positive, not {lease!r}")
        if timeout is not None:
            timeout = check_seconds(timeout, "timeout")
        message = await self._claim_safely(names, lease)
        if message is not None or (timeout is not None and timeout <= 0):
            return message
        deadline = None if timeout is None else time.monotonic() + timeout
        with self.hub.subscribe("q") as waiter:
            while True:
                message = await self._claim_safely(names, lease)
                if message is not None:
                    return message
                pause = await self._pause(names)
                if deadline is not None:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        return None
                    pause = min(pause, left)
                await waiter.wait(pause)

    async def _pause(self, names: list[str]) -> float:
        """How long a waiting take may sleep: until the next due message, a reap, or a poll."""
        me = await self.session()

        async def op(conn: AsyncConnection, attempt: int) -> float:
            pause = POLL_SECONDS
            now = time.monotonic()
            if now >= self._next_reap:
                self._next_reap = now + REAP_SECONDS
                cur = await conn.execute(self.sql_reap, {"me": me, "space": self.listener.lock_space,
                                                         "channel": self.channel})
                row = await cur.fetchone()
                if row and row[0]:
                    return 0.0
            cur = await conn.execute(self.sql_pause, (me, names))
            row = await cur.fetchone()
            if row and row[0]:
                pause = min(pause, REAP_SECONDS)
            if row and row[1] is not None:
                pause = min(pause, max(row[1].total_seconds(), 0.0) + 0.001)
            return pause

        return max(await self.db.run(op), 0.001)

    # --- settle ---

    def _lease_of(self, message: Message) -> str:
        if not isinstance(message, Message):
            raise TypeError(f"expected a Message from take(), got {type(message).__name__}")
        if message.lease_id is None:
            raise NotFoundError(f"message {message.message_id} is not leased")
        return message.lease_id

    async def ack(self, message: Message) -> None:
        """Remove a leased message, or make it deliverable once more if an enqueue asked for that."""
        lease_id = self._lease_of(message)
        params = {"id": message.message_id, "lease_id": lease_id, "channel": self.channel}

        async def op(conn: AsyncConnection, attempt: int) -> tuple[int, int]:
            cur = await conn.execute(self.sql_ack, params)
            row = await cur.fetchone()
            outcome = int(row[0]) if row else 0
            if outcome == 0 and attempt:
                return (1, 0)  # an earlier try acked it; its answer was lost with the connection
            return int(outcome > 0), int(outcome == 2)

        found, again = await self.db.run(op)
        if not found:
            raise NotFoundError(f"the lease on message {message.message_id} was lost (acked, deleted or expired "
                                "and taken by another consumer)")
        if again:
            self.hub.fire("q")

    async def nack(self, message: Message, *, delay: float = 0.0) -> None:
        """Give a leased message back, deliverable again after `delay` seconds."""
        delay = max(0.0, check_seconds(delay, "delay"))
        lease_id = self._lease_of(message)
        params = {"id": message.message_id, "lease_id": lease_id, "delay": delay, "channel": self.channel}

        async def op(conn: AsyncConnection, attempt: int) -> int:
            cur = await conn.execute(self.sql_nack, params)
            row = await cur.fetchone()
            return 1 if attempt else int(row[0]) if row else 0

        if not await self.db.run(op):
            raise NotFoundError(f"the lease on message {message.message_id} was lost")
        self.hub.fire("q")

    async def extend(self, message: Message, *, lease: float) -> Message:
        """Renew a lease for `lease` more seconds from now."""
        lease = check_seconds(lease, "lease")
        if lease <= 0:
            raise ValueError(f"lease must be positive, not {lease!r}")
        lease_id = self._lease_of(message)
        params = {"id": message.message_id, "lease_id": lease_id, "lease": lease,
                  "holder": await self.session()}

        async def op(conn: AsyncConnection, attempt: int) -> Message | None:
            cur = await conn.execute(self.sql_extend, params)
            row = await cur.fetchone()
            return None if row is None else _message(row, row[8], leased_view=True)

        renewed = await self.db.run(op)
        if renewed is None:
            raise NotFoundError(f"the lease on message {message.message_id} was lost")
        return renewed

    # --- operators ---

    async def list(self, queue: str | None = None) -> list[Message]:
        """Every message not yet acked, smallest order_key first, with its state now."""
        if queue is not None:
            check_name(queue, "queue name", MAX_QUEUE_NAME)

        async def op(conn: AsyncConnection, attempt: int) -> list[Message]:
            where = "WHERE queue = %s" if queue is not None else ""
            cur = await conn.execute(f"SELECT {_MESSAGE}, now() FROM {self.s}.queue {where} "
                                     "ORDER BY order_key, message_id", (queue,) if queue is not None else ())
            return [_message(row, row[11]) for row in await cur.fetchall()]

        return await self.db.run(op)

    async def dead_leases(self) -> list[Message]:
        """Messages leased by a process that is gone (its session lock vanished), not yet taken again."""
        async def op(conn: AsyncConnection, attempt: int) -> list[Message]:
            cur = await conn.execute(self.sql_dead_leases, {"space": self.lock_space})
            found = []
            for row in await cur.fetchall():
                message = _message(row, row[11], leased_view=True)
                found.append(replace(message, extra={"holder": f"session {row[9]}"}))
            return found

        return await self.db.run(op)

    async def release(self, message: Message) -> bool:
        """Hand a dead holder's message back to the queue now; False if the dead no longer hold it."""
        if not isinstance(message, Message) or message.lease_id is None:
            return False
        params = {"id": message.message_id, "lease_id": message.lease_id, "space": self.lock_space,
                  "channel": self.channel}

        async def op(conn: AsyncConnection, attempt: int) -> int:
            cur = await conn.execute(self.sql_release_dead, params)
            row = await cur.fetchone()
            return int(row[0]) if row else 0

        released = await self.db.run(op) > 0
        if released:
            self.hub.fire("q")
        return released

    async def delete(self, message_id: str) -> None:
        """Remove a message whatever its state. NotFoundError if there is none with this id."""
        validate_id(message_id, "message id")

        async def op(conn: AsyncConnection, attempt: int) -> int:
            cur = await conn.execute(f"DELETE FROM {self.s}.queue WHERE message_id = %s", (message_id,))
            return 1 if attempt else cur.rowcount

        if not await self.db.run(op):
            raise NotFoundError(f"no queue message {message_id}")
