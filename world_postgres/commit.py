"""The write path: record events of one run in one transaction, entities updated alongside.

`Writer.commit` locks the run's row (`FOR UPDATE`), loads what the state machine needs (the
run, and each step, hook or wait the events name), plans and applies the events with
`wf.runtime.state_machine`, then inserts the events and upserts the changed entities in the
same transaction. It runs in a pipeline: BEGIN and the reads travel in one round trip, the
writes and COMMIT in a second (a hook_created adds one, for its token). A run's end disposes
its live hooks and waiting waits with one UPDATE each, as `apply` does to those it holds.
Hook tokens are unique among live hooks by a partial unique index: two runs claiming one
token at once collide there, and the loser replays its transaction, now seeing the token
taken (`hook_conflict`). Lazy creation races the same way on the runs' primary key. A
commit notifies `r:<run>` (and `e:<run>` at its end).

That is the general path. A run this process wrote last, and a new run (`run_created`),
take the fast lane of `run_cache.py` first: planned on the state this process kept, written
by one statement guarded by the run's event count, with no read and one round trip.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import psycopg
from psycopg import AsyncConnection
from ulid import ULID

from ..runtime.entities import (
    Event,
    EventType,
    HookStatus,
    utcnow,
)
from ..runtime.errors import EntityConflictError, WorldError
from ..runtime.ids import new_ulid, validate_id
from ..runtime.state_machine import RunState, apply, checked_event, event_kind, plan
from ..runtime.world import EventResult, batch_results
from . import rows
from .rows import to_json
from .run_cache import COMPLETE_UP_TO, Loaded, RunCache, cached_write_params, cached_write_sql

E = EventType
_TERMINAL = frozenset({E.RUN_COMPLETED, E.RUN_FAILED, E.RUN_CANCELLED})
#: Unique indexes whose violation means "someone else got there first: replay the transaction".
RACE_CONSTRAINTS = frozenset({"runs_pkey", "hooks_live_token", "events_pkey"})


def _event_id_after(last: str) -> str:
    """A fresh ULID greater than `last` (several processes may write one run within a millisecond)."""
    event_id = new_ulid()
    if event_id > last:
        return event_id
    try:
        return str(ULID.from_int(int(ULID.from_str(last)) + 1))
    except ValueError:
        return event_id


@dataclass(slots=True)
class Attempt:
    """What the last try of a commit wrote (for a retry after its COMMIT's fate was lost)."""

    first_event_id: str = ""
    results: list[EventResult] = field(default_factory=list)


class Retry(Exception):
    """Another writer won a race on a unique index: run the transaction again."""


class Writer:
    """Runs `commit_events` against one schema's tables."""

    def __init__(self, schema: str, channel: str, runs_channel: str) -> None:
        s = f'"{schema}"'
        self.schema = schema
        self.channel = channel
        self.runs_channel = runs_channel
        self.cache = RunCache()
        self._cached_sql: dict[tuple[tuple[str, ...], bool, bool], str] = {}
        self.sql_run = (f"SELECT {rows.columns(rows.RUN_COLUMNS, True)}, last_event_id FROM {s}.runs "
                        "WHERE run_id = %s FOR UPDATE")
        # Per kind: the entities the batch names, or every one of a run small enough for its state
        # to be complete (so that the fast lane, run_cache.py, may keep it).
        small = f"EXISTS (SELECT 1 FROM {s}.runs WHERE run_id = %(run)s AND event_count <= {COMPLETE_UP_TO})"
        self.sql_entities = {
            kind: f"SELECT {cols}, created_seq FROM {s}.{kind} WHERE run_id = %(run)s AND ({key} = ANY(%(ids)s) "
                  f"OR {small})"
            for kind, cols, key in (("steps", rows.columns(rows.STEP_COLUMNS, True), "step_id"),
                                    ("hooks", rows.HOOK_COLUMNS, "hook_id"), ("waits", rows.WAIT_COLUMNS, "wait_id"))
        }
        self.sql_token_live = f"SELECT run_id, hook_id FROM {s}.hooks WHERE token_hash = %s AND status = 'active'"
        self.sql_insert_event = (f"INSERT INTO {s}.events (run_id, seq, event_id, event_type, correlation_id, data, "
                                 "created_at) VALUES (%s, %s, %s, %s, %s, %s::json, %s)")
        self.sql_upsert_run = (
            f"INSERT INTO {s}.runs (run_id, workflow_name, status, input, output, error, attributes, created_at, "
            "started_at, completed_at, updated_at, event_count, last_event_id) VALUES (%s, %s, %s, %s::json, "
            "%s::json, %s::json, %s::json, %s, %s, %s, %s, %s, %s) ON CONFLICT (run_id) DO UPDATE SET "
            "status = EXCLUDED.status, output = EXCLUDED.output, error = EXCLUDED.error, "
            "started_at = EXCLUDED.started_at, completed_at = EXCLUDED.completed_at, "
            "updated_at = EXCLUDED.updated_at, event_count = EXCLUDED.event_count, "
            "last_event_id = EXCLUDED.last_event_id")
        self.sql_upsert = {
            "steps": f"INSERT INTO {s}.steps (run_id, step_id, created_seq, step_name, status, input, output, error, "
                     "attempt, retry_after, created_at, started_at, completed_at, updated_at) VALUES (%s, %s, %s, %s, "
                     "%s, %s::json, %s::json, %s::json, %s, %s, %s, %s, %s, %s) ON CONFLICT (run_id, step_id) DO "
                     "UPDATE SET status = EXCLUDED.status, output = EXCLUDED.output, error = EXCLUDED.error, "
                     "attempt = EXCLUDED.attempt, retry_after = EXCLUDED.retry_after, "
                     "started_at = EXCLUDED.started_at, completed_at = EXCLUDED.completed_at, "
                     "updated_at = EXCLUDED.updated_at",
            "hooks": f"INSERT INTO {s}.hooks (run_id, hook_id, created_seq, token, token_hash, status, metadata, "
                     "received_count, created_at, disposed_at) VALUES (%s, %s, %s, %s, %s, %s, %s::json, %s, %s, %s) "
                     "ON CONFLICT (run_id, hook_id) DO UPDATE SET status = EXCLUDED.status, "
                     "received_count = EXCLUDED.received_count, disposed_at = EXCLUDED.disposed_at",
            "waits": f"INSERT INTO {s}.waits (run_id, wait_id, created_seq, resume_at, status, created_at, "
                     "completed_at) VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT (run_id, wait_id) DO UPDATE SET "
                     "status = EXCLUDED.status, completed_at = EXCLUDED.completed_at",
        }
        self.sql_dispose_hooks = (f"UPDATE {s}.hooks SET status = 'disposed', disposed_at = %s "
                                  "WHERE run_id = %s AND status = 'active'")
        self.sql_dispose_waits = (f"UPDATE {s}.waits SET status = 'disposed', completed_at = %s "
                                  "WHERE run_id = %s AND status = 'waiting'")
        self.sql_find_event = f"SELECT seq FROM {s}.events WHERE run_id = %s AND event_id = %s"

    async def _load(self, conn: AsyncConnection, run_id: str, events: list[Event]) -> Loaded:
        """The run (locked) and the entities the events name (all of them for a small run): sent
        together, one round trip in a pipeline."""
        wanted: dict[str, list[str]] = {}
        for event in events:
            kind = event_kind(event.event_type)
            if kind is not None and event.correlation_id:
                wanted.setdefault(kind, []).append(event.correlation_id)
        run_cur = await conn.execute(self.sql_run, (run_id,))
        entity_curs = [(kind, await conn.execute(sql, {"run": run_id, "ids": sorted(set(wanted.get(kind, ())))}))
                       for kind, sql in self.sql_entities.items()]
        row = await run_cur.fetchone()
        run = rows.run_from_row(row) if row is not None else None
        loaded = Loaded(RunState(run), row[12] if row is not None else "",
                        complete=run is None or run.event_count <= COMPLETE_UP_TO)
        reader = {"steps": rows.step_from_row, "hooks": rows.hook_from_row, "waits": rows.wait_from_row}
        for kind, cur in entity_curs:
            for entity_row in await cur.fetchall():
                entity = reader[kind](entity_row[:-1])
                entity_id = entity_row[1]
                getattr(loaded.state, kind)[entity_id] = entity
                loaded.created_seq[(kind, entity_id)] = entity_row[-1]
        return loaded

    async def _token_in_use(self, conn: AsyncConnection, state: RunState, hook_id: str, token: str) -> bool:
        for other_id, hook in state.hooks.items():
            if other_id != hook_id and hook.status == HookStatus.ACTIVE and hook.token == token:
                return True  # a live hook of this run, maybe created earlier in this batch
        cur = await conn.execute(self.sql_token_live, (rows.token_hash(token),))
        return await cur.fetchone() is not None

    async def committed_before(self, conn: AsyncConnection, run_id: str, event_id: str) -> bool:
        cur = await conn.execute(self.sql_find_event, (run_id, event_id))
        return await cur.fetchone() is not None

    async def commit(
        self, conn: AsyncConnection, run_id: str, events: list[Event], *, skip_conflicts: bool,
        expected_seq: int | None, attempt: Attempt,
    ) -> list[EventResult]:
        """One attempt, in one transaction. `attempt` keeps the first event id written and the
        results (so a retry after a lost commit can tell whether it landed). Retry on a lost race."""
        now = utcnow()
        cached = self.cache.take(run_id)
        new = cached is None and events[0].event_type == E.RUN_CREATED and not expected_seq
        if (cached is not None or new) and not any(e.event_type == E.HOOK_CREATED for e in events):
            loaded = cached or Loaded(RunState(), "", complete=True)
            results = await self._commit_cached(conn, run_id, events, loaded, now, skip_conflicts=skip_conflicts,
                                                expected_seq=expected_seq, attempt=attempt, new=new)
            if results is not None:
                return results
        try:
            # In a pipeline: BEGIN and the reads go in one round trip, the writes and COMMIT in another.
            async with conn.pipeline(), conn.transaction():
                loaded = await self._load(conn, run_id, events)
                state = loaded.state
                if state.base_run is None:
                    plan(RunState(), events[0], now)  # NotFoundError / lazy creation checks
                count = state.base_run.event_count if state.base_run is not None else 0
                if expected_seq is not None and count != expected_seq:
                    raise EntityConflictError(
                        f"run {run_id}: the log holds {count} events, the batch expected {expected_seq}")
                outcomes, recorded_all, ends = await self._plan_all(conn, loaded, events, now, skip_conflicts, count)
                results = batch_results(state, outcomes)
                if recorded_all:
                    attempt.first_event_id, attempt.results = recorded_all[0].event_id, results
                    await self._write(conn, run_id, loaded, recorded_all, ends)
        except psycopg.errors.UniqueViolation as exc:
            if exc.diag.constraint_name in RACE_CONSTRAINTS:
                raise Retry() from exc
            raise
        self.cache.keep(run_id, loaded)
        return results

    async def _commit_cached(
        self, conn: AsyncConnection, run_id: str, events: list[Event], loaded: Loaded, now: datetime, *,
        skip_conflicts: bool, expected_seq: int | None, attempt: Attempt, new: bool,
    ) -> list[EventResult] | None:
        """The fast lane (run_cache.py): plan on this process's cached state (or, for a `new`
        run, on nothing) and write in one statement. None when that state may be stale or the
        new run exists after all (the general path then decides)."""
        state = loaded.state
        count = state.run.event_count if state.run is not None else 0
        if expected_seq is not None and count != expected_seq:
            return None
        try:
            outcomes, recorded_all, _ = await self._plan_all(conn, loaded, events, now, skip_conflicts, count)
        except WorldError:
            return None  # maybe a conflict only with a stale state: let the general path judge
        if not recorded_all or any(not recorded for _, recorded in outcomes):
            return None  # something was skipped as a conflict: judged again on fresh state
        results = batch_results(state, outcomes)
        kinds, params = cached_write_params(run_id, loaded, recorded_all, count, self.channel,
                                            self.runs_channel, new=new)
        ended = bool(state.run and state.run.status.terminal)
        key = (kinds, ended, new)
        sql = self._cached_sql.get(key)
        if sql is None:
            sql = self._cached_sql[key] = cached_write_sql(self.schema, kinds, ended=ended, new=new)
        attempt.first_event_id, attempt.results = recorded_all[0].event_id, results
        cur = await conn.execute(sql, params)
        if await cur.fetchone() is None:
            attempt.first_event_id = ""
            return None  # another process wrote the run since: nothing was written
        self.cache.keep(run_id, loaded)
        return results

    async def _plan_all(
        self, conn: AsyncConnection, loaded: Loaded, events: list[Event], now: datetime, skip_conflicts: bool,
        count: int,
    ) -> tuple[list[tuple[Event, list[Event]]], list[Event], list[datetime]]:
        state = loaded.state
        outcomes: list[tuple[Event, list[Event]]] = []
        recorded_all: list[Event] = []
        ends: list[datetime] = []
        last_id = loaded.last_event_id
        for event in events:
            try:
                planned = plan(state, event, now)
                if planned and planned[0].event_type == E.HOOK_CREATED and await self._token_in_use(
                        conn, state, event.correlation_id or "", event.data["token"]):
                    planned = plan(state, event, now, token_in_use=True)
            except EntityConflictError:
                if not skip_conflicts:
                    raise
                outcomes.append((event, []))
                continue
            recorded: list[Event] = []
            for item in planned:
                last_id = _event_id_after(last_id)
                record = Event(run_id=event.run_id, event_type=item.event_type, correlation_id=item.correlation_id,
                               data=item.data, event_id=last_id, seq=count, created_at=item.created_at or now)
                count += 1
                apply(state, record)
                kind = event_kind(record.event_type)
                if kind is not None and record.event_type != E.HOOK_CONFLICT:
                    key = (kind, record.correlation_id or "")
                    loaded.created_seq.setdefault(key, record.seq)
                    loaded.touched.add(key)
                if record.event_type in _TERMINAL:
                    assert record.created_at is not None
                    ends.append(record.created_at)
                    loaded.touched.update(("hooks", h) for h in state.hooks)
                    loaded.touched.update(("waits", w) for w in state.waits)
                recorded.append(record)
            recorded_all.extend(recorded)
            outcomes.append((event, recorded))
        loaded.last_event_id = last_id
        return outcomes, recorded_all, ends

    async def _write(self, conn: AsyncConnection, run_id: str, loaded: Loaded, recorded: list[Event],
                     ends: list[datetime]) -> None:
        state = loaded.state
        run = state.run
        assert run is not None
        params = [(run_id, e.seq, e.event_id, e.event_type.value, e.correlation_id,
                   to_json(e.data, f"the data of {e.event_type.value}"), e.created_at) for e in recorded]
        run_row = rows.run_params(run, loaded.last_event_id)
        entity_rows: dict[str, list[tuple[Any, ...]]] = {}
        makers = {"steps": rows.step_params, "hooks": rows.hook_params, "waits": rows.wait_params}
        for kind, entity_id in sorted(loaded.touched):
            entity = getattr(state, kind).get(entity_id)
            if entity is not None:
                entity_rows.setdefault(kind, []).append(makers[kind](entity, loaded.created_seq[(kind, entity_id)]))
        async with conn.cursor() as cur:  # sent with the COMMIT (the caller's pipeline)
            await cur.executemany(self.sql_insert_event, params)
            await cur.execute(self.sql_upsert_run, run_row)
            for at in ends:
                await cur.execute(self.sql_dispose_hooks, (at, run_id))
                await cur.execute(self.sql_dispose_waits, (at, run_id))
            for kind in ("steps", "hooks", "waits"):
                if kind in entity_rows:
                    await cur.executemany(self.sql_upsert[kind], entity_rows[kind])
            if run.status.terminal:
                await cur.execute("SELECT pg_notify(%s, %s), pg_notify(%s, %s)",
                                  (self.runs_channel, f"r:{run_id}", self.channel, f"e:{run_id}"))
            else:
                await cur.execute("SELECT pg_notify(%s, %s)", (self.runs_channel, f"r:{run_id}"))




def prepare_all(run_id: str, events: Sequence[Event]) -> list[Event]:
    """Validate the run id and every event of a batch before anything reaches the database."""
    validate_id(run_id, "run id")
    return [checked_event(run_id, event) for event in events]
