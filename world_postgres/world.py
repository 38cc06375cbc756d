"""`PostgresWorld`: the World on one PostgreSQL schema, shared by any number of processes.

    PostgresWorld("postgresql://user:pass@host:5432/db?schema=wf")

Tables (schema.py): runs, events, steps, hooks, waits (storage.py, commit.py), queue
(queue.py), streams and stream_chunks (streams.py), workers, counters, meta. The
database is the only source of truth: nothing is kept on disk, and a process keeps no
state that another could contradict. `LISTEN/NOTIFY` (notify.py) carries wake-ups only.

`start()` migrates the schema (unless `create=False`, which requires it to exist at the
current version), starts the listener thread (this process's session lock, see notify.py)
and recovers: every pending or running run gets its workflow message, in one statement.
Ten workers starting together do it once: a recovery that finds another one under way
(an advisory lock) or finished in the last `RECOVERY_QUIET_SECONDS` skips.
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Any

import psycopg
from psycopg import AsyncConnection

from ..runtime.entities import Run, RunStatus
from ..runtime.errors import EntityConflictError, WorldError
from ..runtime.ids import new_ulid, validate_id
from ..runtime.state_machine import fold
from ..runtime.world import WORKFLOW_QUEUE, World
from . import rows, schema
from .commit import Writer
from .database import Database, typed, unavailable
from .limits import PgLimits
from .notify import Hub, Listener, channel_name
from .queue import PgQueue
from .schedules import PgSchedules
from .storage import PgEvents, PgHooks, PgRuns, PgSteps, PgWaits, Tables, jittered
from .streams import PgStreams
from .url import check_schema_name, hide_password, lock_space, parse_world_url, prepared_statements

log = logging.getLogger("wf.world_postgres")

#: Workers starting within this many seconds of a finished recovery skip theirs.
RECOVERY_QUIET_SECONDS = 5.0
#: How long start() waits for the listener's first connection.
LISTENER_START_SECONDS = 10.0


#: SQL: the worker row `w`'s process is gone (its session lock is not held).
_DEAD_SESSION = ("NOT EXISTS (SELECT 1 FROM pg_locks l WHERE l.locktype = 'advisory' AND l.classid = %s::oid "
                 "AND l.objid = w.session_no::oid AND l.objsubid = 2 AND l.granted "
                 "AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()))")


class PostgresWorld(World):
    """Storage, queue and streams in one schema of a PostgreSQL database."""

    capabilities = frozenset({"workers", "drain", "repair", "processes", "prune", "limits", "schedules"})

    def __init__(self, url: str, *, schema: str | None = None, create: bool = True) -> None:
        self.conninfo, self.schema = parse_world_url(url, schema)
        self.url = url
        self.create = create
        self.where = f"{hide_password(self.conninfo)} (schema {self.schema})"
        self.lock_space = lock_space(self.schema)
        self.channel = channel_name(self.schema)
        self.db = Database(self.conninfo, prepare=prepared_statements(url))
        self.hub = Hub()
        self.listener = Listener(self.conninfo, self.schema, self.lock_space, self.hub)
        self._tables = Tables(self.db, self.schema, self.hub, Writer(self.schema, self.channel,
                                                                           self.listener.runs_channel))
        self.runs = PgRuns(self._tables)
        self.steps = PgSteps(self._tables)
        self.events = PgEvents(self._tables)
        self.hooks = PgHooks(self._tables)
        self.waits = PgWaits(self._tables)
        self.queue = PgQueue(self.db, self.schema, self.hub, self.listener, self.channel, self.lock_space)
        self.streams = PgStreams(self.db, self.schema, self.hub, self.channel)
        self.limits = PgLimits(self.db, self.schema, self.lock_space, self.session)
        self.schedules = PgSchedules(self.db, self.schema)
        self._started = False
        self._schema_ready = False
        self._closed = False
        self.s = f'"{self.schema}"'
        self.db.first_use = self._first_use
        self.queue.session = self.session
        self.events.session = self.watch_runs
        self.streams.session = self.session

    async def _first_use(self) -> None:
        if not self._schema_ready:
            await self.prepare_schema()
            self._schema_ready = True

    async def watch_runs(self) -> int:
        """`session()`, with the listener LISTENing to the runs channel (for `events.wait`)."""
        session_no = await self.session()
        if not self.listener.runs_listening.is_set():
            self.listener.want_runs()
            await self.db.run(self._nudge)  # the listener thread wakes on it and LISTENs
            await asyncio.to_thread(self.listener.runs_listening.wait, 5.0)
        return session_no

    async def _nudge(self, conn: AsyncConnection, attempt: int) -> None:
        await conn.execute("SELECT pg_notify(%s, 'x')", (self.channel,))

    async def session(self) -> int:
        """This process's session number, once the listener holds its session lock (started on demand)."""
        if self.listener.session_no and self.listener.ready.is_set():
            return self.listener.session_no
        await self._first_use()
        try:
            return await self.listener.ensure_started(LISTENER_START_SECONDS)
        except (psycopg.Error, RuntimeError, TimeoutError) as exc:
            raise unavailable(exc, self.db.where) from exc

    # --- lifecycle ---

    async def prepare_schema(self) -> int:
        """Migrate (or, with create=False, check) the schema; its version. One line of error if not usable."""
        conn = await self.db.connect()
        try:
            if self.create:
                return await schema.migrate(conn, self.schema)
            return await schema.check(conn, self.schema, hide_password(self.conninfo))
        except psycopg.OperationalError as exc:
            raise unavailable(exc, self.db.where) from exc
        except psycopg.Error as exc:
            raise typed(exc, self.db.where) from exc
        finally:
            await conn.close()

    async def start(self) -> None:
        """Migrate or check the schema, connect the listener, and recover active runs."""
        if self._closed:
            raise WorldError("the Postgres World is closed")
        if not self._started:
            if self.db.home_loop is None:
                self.db.home_loop = asyncio.get_running_loop()
            await self._first_use()
            await self.session()
            self._started = True
        await self.recover()

    async def recover(self) -> bool:
        """Give every pending or running run its workflow message, unless another process just did."""
        async def op(conn: AsyncConnection, attempt: int) -> bool:
            async with conn.transaction():
                cur = await conn.execute(
                    f"SELECT pg_try_advisory_xact_lock(%s, -1), value FROM {self.s}.counters "
                    "WHERE name = 'recovered_at'", (self.lock_space,))
                row = await cur.fetchone()
                if row is None or not row[0]:
                    return False  # another process is recovering right now
                cur = await conn.execute("SELECT extract(epoch FROM clock_timestamp())")
                now_row = await cur.fetchone()
                assert now_row is not None
                if float(now_row[0]) - float(row[1]) < RECOVERY_QUIET_SECONDS:
                    return False
                await conn.execute(self.queue.sql_recover, {"prefix": new_ulid() + "-", "queue": WORKFLOW_QUEUE})
                await conn.execute(
                    f"UPDATE {self.s}.counters SET value = CASE WHEN name = 'recoveries' THEN value + 1 "
                    "ELSE extract(epoch FROM clock_timestamp())::bigint END "
                    "WHERE name IN ('recoveries', 'recovered_at')")
                await conn.execute("SELECT pg_notify(%s, 'q')", (self.channel,))
                return True

        did = await self.db.run(op)
        if did:
            self.hub.fire("q")
        return did

    async def close(self) -> None:
        """Stop the listener (its session lock goes with it) and close the pools."""
        if self._closed:
            return
        self._closed = True
        self.listener.stop()
        await self.db.close()
        self.hub.fire_all()
        await asyncio.to_thread(self.listener.join, 2.0)

    # --- waiting for a run's end ---

    async def wait_for_end(self, run_id: str, *, timeout: float | None) -> Run | None:
        """Wait for the run's end, woken by its `e:<run>` notification only."""
        validate_id(run_id, "run id")
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        await self.session()
        woken = False
        with self.hub.subscribe(f"e:{run_id}") as waiter:
            while True:
                # After the end's notification the run is read whole once; before it, without its
                # payloads (a large input is not fetched on every look).
                run = await self.runs.get(run_id, resolve_data=woken)
                if run.status.terminal:
                    return run if woken else await self.runs.get(run_id)
                remaining = None if deadline is None else deadline - loop.time()
                if remaining is not None and remaining <= 0:
                    return None
                pause = jittered(1.0)
                woken = await waiter.wait(pause if remaining is None else min(remaining, pause))

    # --- presence ---

    async def _query(self, text: str, params: Any = ()) -> list[tuple[Any, ...]]:
        return await self._tables.fetchall(text, params)

    async def announce_worker(self, info: dict[str, Any]) -> str:
        """Record this process as a live worker, alive as long as its session lock is held."""
        session_no = await self.session()
        worker_id = f"{os.getpid()}-{new_ulid()}"
        doc = rows.to_json({"worker_id": worker_id, **info}, "worker info")
        await self._query(f"INSERT INTO {self.s}.workers (worker_id, session_no, info) VALUES (%s, %s, %s::json) "
                          "RETURNING 1", (worker_id, session_no, doc))
        self.listener.announced[worker_id] = doc
        return worker_id

    async def retire_worker(self, worker_id: str) -> None:
        self.listener.announced.pop(worker_id, None)
        await self._query(f"DELETE FROM {self.s}.workers WHERE worker_id = %s RETURNING 1", (worker_id,))

    async def live_workers(self) -> list[dict[str, Any]]:
        """Workers whose session lock is held; the rows of dead ones are removed."""
        await self._query(f"DELETE FROM {self.s}.workers w WHERE {_DEAD_SESSION} RETURNING 1", (self.lock_space,))
        found = await self._query(f"SELECT info FROM {self.s}.workers ORDER BY worker_id")
        return [row[0] for row in found]

    # --- retention ---

    async def forget_dead_workers(self) -> int:
        """Remove the rows of workers whose process died without retiring; how many."""
        found = await self._query(f"DELETE FROM {self.s}.workers w WHERE {_DEAD_SESSION} RETURNING 1",
                                  (self.lock_space,))
        return len(found)

    async def delete_run(self, run_id: str) -> bool:
        """Remove an ended run and all of it, in one transaction. EntityConflictError if it is active."""
        validate_id(run_id, "run id")
        s = self.s

        async def op(conn: AsyncConnection, attempt: int) -> bool:
            async with conn.transaction():
                cur = await conn.execute(f"SELECT status FROM {s}.runs WHERE run_id = %s FOR UPDATE", (run_id,))
                row = await cur.fetchone()
                if row is None:
                    return False
                if not RunStatus(row[0]).terminal:
                    raise EntityConflictError(f"run {run_id} is {row[0]}: only ended runs can be deleted")
                for table in ("events", "steps", "hooks", "waits", "stream_chunks", "streams", "runs"):
                    await conn.execute(f"DELETE FROM {s}.{table} WHERE run_id = %s", (run_id,))
                step_prefix = f"step:{run_id}:"
                await conn.execute(
                    f"DELETE FROM {s}.queue WHERE lease_id IS NULL AND (idempotency_key = %s "
                    "OR left(idempotency_key, %s) = %s)", (f"run:{run_id}", len(step_prefix), step_prefix))
                return True

        return await self.db.run(op)

    # --- draining ---

    async def drain_generation(self) -> int:
        found = await self._query(f"SELECT value FROM {self.s}.counters WHERE name = 'drain_generation'")
        return int(found[0][0]) if found else 0

    async def request_drain(self) -> int:
        """Bump the drain generation: running workers finish in-flight work and exit."""
        found = await self._query(f"UPDATE {self.s}.counters SET value = value + 1 WHERE name = 'drain_generation' "
                                  "RETURNING value")
        return int(found[0][0])

    # --- repair ---

    async def repair_run(self, run_id: str) -> bool:
        """Rewrite the run's entity rows from its events (in one transaction). False if it has none."""
        validate_id(run_id, "run id")
        s = self.s

        async def op(conn: AsyncConnection, attempt: int) -> bool:
            async with conn.transaction():
                await conn.execute(f"SELECT 1 FROM {s}.runs WHERE run_id = %s FOR UPDATE", (run_id,))
                cur = await conn.execute(f"SELECT {rows.EVENT_COLUMNS} FROM {s}.events WHERE run_id = %s "
                                         "ORDER BY seq", (run_id,))
                events = [rows.event_from_row(r) for r in await cur.fetchall()]
                if not events:
                    return False
                state = fold(events)
                assert state.run is not None
                created = {(e.correlation_id, e.event_type.value): e.seq for e in events}
                for table in ("steps", "hooks", "waits"):
                    await conn.execute(f"DELETE FROM {s}.{table} WHERE run_id = %s", (run_id,))
                await conn.execute(f"DELETE FROM {s}.runs WHERE run_id = %s", (run_id,))
                writer = self._tables.writer
                await conn.execute(writer.sql_upsert_run, rows.run_params(state.run, events[-1].event_id))
                async with conn.cursor() as cur:
                    for kind, maker, made in (("steps", rows.step_params, "step_created"),
                                              ("hooks", rows.hook_params, "hook_created"),
                                              ("waits", rows.wait_params, "wait_created")):
                        entities = getattr(state, kind)
                        if entities:
                            await cur.executemany(writer.sql_upsert[kind], [
                                maker(entity, created[(entity_id, made)]) for entity_id, entity in entities.items()])
                await conn.execute("SELECT pg_notify(%s, %s)", (self.listener.runs_channel, f"r:{run_id}"))
                return True

        return await self.db.run(op)


async def drop_schema(url: str, schema: str) -> None:
    """Drop a schema and everything in it (tests make a fresh one per test and drop it after)."""
    conninfo, _ = parse_world_url(url, check_schema_name(schema))
    db = Database(conninfo)
    conn = await db.connect()
    try:
        await conn.execute("SELECT pg_advisory_lock(%s, 0)", (lock_space(schema),))
        from .schema import drop

        await drop(conn, schema)
    finally:
        await conn.close()

