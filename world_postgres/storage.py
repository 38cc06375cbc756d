"""The storage half of the World contract on PostgreSQL: runs, steps, events, hooks, waits.

Writes go through `commit.Writer` (one transaction per `create` / `create_batch`); reads
are single statements on the entity tables, which are always exactly the fold of the
events table (both change in one transaction). Cursors: runs page by run id (the last id
of the page; pages follow `(created_at, run_id)`, served by the `runs_by_*` indexes); the steps, hooks and
waits of one run page by the `created_seq` of the last item; listings across runs use
`<run_id>:<created_seq>`.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from psycopg import AsyncConnection

from ..runtime.entities import Event, Hook, HookStatus, Page, Run, RunStatus, Step, Wait, WaitStatus
from ..runtime.errors import InvalidIdError, NotFoundError, StorageUnavailableError
from ..runtime.ids import validate_id
from ..runtime.world import EventResult, EventsStorage, HooksStorage, RunsStorage, StepsStorage, WaitsStorage
from . import rows
from .commit import Attempt, Retry, Writer, prepare_all
from .database import Database
from .notify import Hub

#: How often a waiter looks again even without a notification (a lost one costs at most this).
POLL_SECONDS = 1.0
#: Replays of a transaction that lost a race on a unique index before giving up.
MAX_RACE_RETRIES = 20


def check_limit(limit: int) -> int:
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ValueError(f"limit must be a positive integer, got {limit!r}")
    return limit


def seq_cursor(cursor: str | None) -> int:
    if cursor is None:
        return -1
    try:
        return int(cursor)
    except (TypeError, ValueError):
        raise InvalidIdError(f"invalid cursor {cursor!r}") from None


def run_seq_cursor(cursor: str | None) -> tuple[str, int]:
    if cursor is None:
        return ("", -1)
    run_id, _, seq = str(cursor).rpartition(":")
    try:
        return (validate_id(run_id, "cursor run id"), int(seq))
    except ValueError:
        raise InvalidIdError(f"invalid cursor {cursor!r}") from None


def jittered(seconds: float) -> float:
    return seconds * (0.8 + 0.4 * random.random())


class Tables:
    """What every storage class shares: the database, the schema's quoted name, the hub."""

    def __init__(self, db: Database, schema: str, hub: Hub, writer: Writer) -> None:
        self.db = db
        self.s = f'"{schema}"'
        self.hub = hub
        self.writer = writer

    async def fetchall(self, query: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        async def op(conn: AsyncConnection, attempt: int) -> list[tuple[Any, ...]]:
            cur = await conn.execute(query, params)
            return await cur.fetchall()

        return await self.db.run(op)

    async def run_exists(self, run_id: str) -> bool:
        return bool(await self.fetchall(f"SELECT 1 FROM {self.s}.runs WHERE run_id = %s", (run_id,)))

    async def require_run(self, run_id: str) -> None:
        if not await self.run_exists(run_id):
            raise NotFoundError(f"run {run_id} not found")


class PgRuns(RunsStorage):
    def __init__(self, t: Tables) -> None:
        self.t = t

    async def get(self, run_id: str, *, resolve_data: bool = True) -> Run:
        """The run. NotFoundError if unknown."""
        validate_id(run_id, "run id")
        found = await self.t.fetchall(
            f"SELECT {rows.columns(rows.RUN_COLUMNS, resolve_data)} FROM {self.t.s}.runs WHERE run_id = %s", (run_id,))
        if not found:
            raise NotFoundError(f"run {run_id} not found")
        return rows.run_from_row(found[0])

    async def list(
        self,
        *,
        status: RunStatus | Sequence[RunStatus] | None = None,
        workflow_name: str | None = None,
        limit: int = 100,
        cursor: str | None = None,
        resolve_data: bool = True,
        newest_first: bool = True,
    ) -> Page[Run]:
        """Runs matching the filters, a page at a time, by creation time (then run id).

        The cursor is the last run id of a page; InvalidIdError if no run has that id.
        """
        check_limit(limit)
        where, params = [], []
        if status is not None:
            statuses = [RunStatus(status).value] if isinstance(status, str) else [RunStatus(s).value for s in status]
            where.append("status = ANY(%s)")
            params.append(statuses)
        if workflow_name is not None:
            where.append("workflow_name = %s")
            params.append(workflow_name)
        if cursor is not None:
            validate_id(cursor, "cursor")
            after = await self.t.fetchall(f"SELECT created_at FROM {self.t.s}.runs WHERE run_id = %s", (cursor,))
            if not after:
                raise InvalidIdError(f"invalid cursor {cursor!r}: no such run")
            where.append("(created_at, run_id) < (%s, %s)" if newest_first else "(created_at, run_id) > (%s, %s)")
            params.extend([after[0][0], cursor])
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        order = "DESC" if newest_first else "ASC"
        found = await self.t.fetchall(
            f"SELECT {rows.columns(rows.RUN_COLUMNS, resolve_data)} FROM {self.t.s}.runs {clause} "
            f"ORDER BY created_at {order}, run_id {order} LIMIT %s", (*params, limit + 1))
        runs = [rows.run_from_row(row) for row in found[:limit]]
        return Page(runs, runs[-1].run_id if len(found) > limit else None)


class PgSteps(StepsStorage):
    def __init__(self, t: Tables) -> None:
        self.t = t

    async def get(self, run_id: str, step_id: str, *, resolve_data: bool = True) -> Step:
        """The step. NotFoundError if the run or step is unknown."""
        validate_id(run_id, "run id")
        validate_id(step_id, "step id")
        found = await self.t.fetchall(
            f"SELECT {rows.columns(rows.STEP_COLUMNS, resolve_data)} FROM {self.t.s}.steps "
            "WHERE run_id = %s AND step_id = %s", (run_id, step_id))
        if not found:
            await self.t.require_run(run_id)
            raise NotFoundError(f"step {step_id} not found in run {run_id}")
        return rows.step_from_row(found[0])

    async def list(
        self, run_id: str, *, limit: int = 1000, cursor: str | None = None, resolve_data: bool = True
    ) -> Page[Step]:
        """The run's steps in creation order; the cursor is the created_seq of the last one."""
        check_limit(limit)
        validate_id(run_id, "run id")
        after = seq_cursor(cursor)
        found = await self.t.fetchall(
            f"SELECT {rows.columns(rows.STEP_COLUMNS, resolve_data)}, created_seq FROM {self.t.s}.steps "
            "WHERE run_id = %s AND created_seq > %s ORDER BY created_seq LIMIT %s", (run_id, after, limit + 1))
        if not found and after < 0:
            await self.t.require_run(run_id)
        page = found[:limit]
        return Page([rows.step_from_row(r[:-1]) for r in page], str(page[-1][-1]) if len(found) > limit else None)


class PgEvents(EventsStorage):
    def __init__(self, t: Tables) -> None:
        self.t = t
        #: Starts this process's listener if needed (set by the World).
        self.session: Callable[[], Awaitable[int]] | None = None

    async def _listening(self) -> None:
        if self.session is not None:
            await self.session()

    async def create(self, run_id: str, event: Event) -> EventResult:
        """Validate and record one event in one transaction, entities alongside."""
        return (await self.create_batch(run_id, [event]))[0]

    async def create_batch(
        self, run_id: str, events: Sequence[Event], *, skip_conflicts: bool = False, expected_seq: int | None = None
    ) -> list[EventResult]:
        """Record several events of one run in one transaction (all or none)."""
        prepared = prepare_all(run_id, events)
        if not prepared:
            return []
        writer = self.t.writer
        last = Attempt()

        async def op(conn: AsyncConnection, attempt: int) -> list[EventResult]:
            if attempt and last.first_event_id and await writer.committed_before(conn, run_id, last.first_event_id):
                return last.results  # the commit landed; only its answer was lost
            last.first_event_id = ""
            for race in range(MAX_RACE_RETRIES):
                try:
                    return await writer.commit(conn, run_id, prepared, skip_conflicts=skip_conflicts,
                                               expected_seq=expected_seq, attempt=last)
                except Retry:
                    last.first_event_id = ""
                    await asyncio.sleep(0.001 * race * random.random())
            raise StorageUnavailableError(f"run {run_id}: gave up after {MAX_RACE_RETRIES} lost races")

        results = await self.t.db.run(op)
        if any(r.events for r in results):
            self.t.hub.fire(f"r:{run_id}")
            if results[-1].run.status.terminal:
                self.t.hub.fire(f"e:{run_id}")
        return results

    async def list(
        self, run_id: str, *, after_seq: int = -1, limit: int | None = None, resolve_data: bool = True
    ) -> list[Event]:
        """The run's events with seq > after_seq, oldest first. NotFoundError for an unknown run."""
        validate_id(run_id, "run id")
        if limit is not None and limit <= 0:
            await self.t.require_run(run_id)
            return []
        found = await self.t.fetchall(
            f"SELECT {rows.EVENT_COLUMNS} FROM {self.t.s}.events WHERE run_id = %s AND seq > %s ORDER BY seq"
            + (" LIMIT %s" if limit is not None else ""),
            (run_id, after_seq, limit) if limit is not None else (run_id, after_seq))
        if not found:
            await self.t.require_run(run_id)
        events = [rows.event_from_row(row, resolve_data) for row in found]
        if after_seq < 0 and limit is None and resolve_data:
            self.t.writer.cache.offer(run_id, events)  # the whole log: this process's next write needs no read
        return events

    async def list_by_correlation_id(self, run_id: str, correlation_id: str) -> list[Event]:
        """The run's events for one step, hook or wait, oldest first."""
        validate_id(run_id, "run id")
        validate_id(correlation_id, "correlation id")
        found = await self.t.fetchall(
            f"SELECT {rows.EVENT_COLUMNS} FROM {self.t.s}.events WHERE run_id = %s AND correlation_id = %s "
            "ORDER BY seq", (run_id, correlation_id))
        if not found:
            await self.t.require_run(run_id)
        return [rows.event_from_row(row) for row in found]

    async def event_count(self, run_id: str) -> int:
        found = await self.t.fetchall(f"SELECT event_count FROM {self.t.s}.runs WHERE run_id = %s", (run_id,))
        return int(found[0][0]) if found else 0

    async def wait(self, run_id: str, *, after_seq: int, timeout: float | None) -> bool:
        """Block until the log holds an event with seq > after_seq (True) or timeout (False)."""
        validate_id(run_id, "run id")
        deadline = None if timeout is None else time.monotonic() + timeout
        await self._listening()  # the listener, which wakes us
        with self.t.hub.subscribe(f"r:{run_id}") as waiter:
            while True:
                if await self.event_count(run_id) > after_seq + 1:
                    return True
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                pause = jittered(POLL_SECONDS)
                await waiter.wait(pause if remaining is None else min(remaining, pause))


class PgHooks(HooksStorage):
    def __init__(self, t: Tables) -> None:
        self.t = t

    async def get(self, run_id: str, hook_id: str) -> Hook:
        """The hook. NotFoundError if unknown."""
        validate_id(run_id, "run id")
        validate_id(hook_id, "hook id")
        found = await self.t.fetchall(f"SELECT {rows.HOOK_COLUMNS} FROM {self.t.s}.hooks "
                                      "WHERE run_id = %s AND hook_id = %s", (run_id, hook_id))
        if not found:
            raise NotFoundError(f"hook {hook_id} not found in run {run_id}")
        return rows.hook_from_row(found[0])

    async def get_by_token(self, token: str) -> Hook:
        """The live hook holding `token`. NotFoundError if no live hook holds it."""
        if not isinstance(token, str) or not token:
            raise InvalidIdError(f"invalid hook token {token!r}: use a non-empty string")
        found = await self.t.fetchall(f"SELECT {rows.HOOK_COLUMNS} FROM {self.t.s}.hooks "
                                      "WHERE token_hash = %s AND status = 'active'", (rows.token_hash(token),))
        if not found:
            raise NotFoundError("no live hook holds this token")
        return rows.hook_from_row(found[0])

    async def list(
        self, *, run_id: str | None = None, status: HookStatus | None = None, limit: int = 1000,
        cursor: str | None = None,
    ) -> Page[Hook]:
        """Hooks of one run (creation order), or all live hooks when run_id is None."""
        check_limit(limit)
        return await _list_entities(self.t, "hooks", rows.HOOK_COLUMNS, rows.hook_from_row, run_id,
                                    None if status is None else HookStatus(status).value,
                                    HookStatus.ACTIVE.value, limit, cursor)


class PgWaits(WaitsStorage):
    def __init__(self, t: Tables) -> None:
        self.t = t

    async def list(
        self, *, run_id: str | None = None, status: WaitStatus | None = None, limit: int = 1000,
        cursor: str | None = None,
    ) -> Page[Wait]:
        """Waits of one run (creation order), or all waiting ones when run_id is None."""
        check_limit(limit)
        return await _list_entities(self.t, "waits", rows.WAIT_COLUMNS, rows.wait_from_row, run_id,
                                    None if status is None else WaitStatus(status).value,
                                    WaitStatus.WAITING.value, limit, cursor)


async def _list_entities(t: Tables, table: str, cols: str, reader: Any, run_id: str | None, status: str | None,
                         across_default: str, limit: int, cursor: str | None) -> Page[Any]:
    """Hooks or waits: of one run by created_seq, or across runs by (run_id, created_seq)."""
    if run_id is not None:
        validate_id(run_id, "run id")
        after = seq_cursor(cursor)
        status_clause = " AND status = %s" if status is not None else ""
        params: tuple[Any, ...] = (run_id, after, *([status] if status is not None else []), limit + 1)
        found = await t.fetchall(
            f"SELECT {cols}, created_seq FROM {t.s}.{table} WHERE run_id = %s AND created_seq > %s{status_clause} "
            "ORDER BY created_seq LIMIT %s", params)
        if not found and after < 0:
            await t.require_run(run_id)
        page = found[:limit]
        return Page([reader(r[:-1]) for r in page], str(page[-1][-1]) if len(found) > limit else None)
    after_run, after_seq = run_seq_cursor(cursor)
    found = await t.fetchall(
        f"SELECT {cols}, created_seq FROM {t.s}.{table} WHERE status = %s AND (run_id, created_seq) > (%s, %s) "
        "ORDER BY run_id, created_seq LIMIT %s", (status or across_default, after_run, after_seq, limit + 1))
    page = found[:limit]
    next_cursor = f"{page[-1][0]}:{page[-1][-1]}" if len(found) > limit else None
    return Page([reader(r[:-1]) for r in page], next_cursor)
