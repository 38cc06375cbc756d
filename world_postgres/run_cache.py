"""The write path's fast lane: a run's state kept by the process that last wrote it.

A worker that drives a run writes its events one batch after another. The general commit
(`commit.Writer`) reads the run and the entities the batch names, under a row lock, before
it plans: two round trips per batch. This process already knows that state, as its own last
commit left it, unless someone else wrote the run since. So each process keeps the complete
state of the runs it wrote last (`RunCache`), and the next batch of such a run is planned
against it and written by one statement (`cached_write_sql`) with no read first:

- the run's row is updated only `WHERE event_count = <the count the cache knows>`; every
  other part of the statement (events, steps, hooks, waits, the notification) reads that
  update's RETURNING row, so when another process wrote the run meanwhile the statement
  writes nothing, returns no row, and the commit falls back to the general path;
- a run's state is exactly the fold of its events, so an equal count means an equal state;
- only complete states are kept (a run whose entities were all loaded, which a run of at most
  `COMPLETE_UP_TO` events is) so that an entity missing from the cache does not exist;
- an entry is taken out while a commit uses it and put back only after that commit landed, so
  a failed, raced or unknown-fate commit never leaves a state that differs from the database.

States come from this process's own commits (including a new run's `run_created`) and from
reading a run's whole log (`RunCache.offer`: a worker reads the log before driving a run).
Batches that create a hook take the general path (a token's uniqueness needs a read).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import orjson

from ..runtime.entities import Event, EventType
from ..runtime.state_machine import RunState, event_kind, fold
from . import rows
from .rows import json_or_null, to_json

#: A run of at most this many events has all its entities loaded by the general path's read.
COMPLETE_UP_TO = 1000
#: Entities (steps, hooks, waits) kept across all cached runs before the least recent are dropped.
MAX_ENTITIES = 50_000


@dataclass(slots=True)
class Loaded:
    """A run's state as of its last event, with what the write needs beside it."""

    state: RunState
    last_event_id: str
    #: (kind, id) -> created_seq of the entities the batch reads or writes (all of them if complete).
    created_seq: dict[tuple[str, str], int] = field(default_factory=dict)
    touched: set[tuple[str, str]] = field(default_factory=set)
    #: Every step, hook and wait of the run is in `state` (absent means: does not exist).
    complete: bool = False

    def size(self) -> int:
        state = self.state
        return len(state.steps) + len(state.hooks) + len(state.waits) + 1


class RunCache:
    """Complete run states this process wrote last, least recently used dropped first."""

    def __init__(self, max_entities: int = MAX_ENTITIES) -> None:
        self._entries: OrderedDict[str, Loaded] = OrderedDict()
        self._size = 0
        self._max = max_entities
        self._lock = threading.Lock()  # one World may be used from several event loops (threads)

    def take(self, run_id: str) -> Loaded | None:
        """The cached state of `run_id`, removed until `keep` puts it back."""
        with self._lock:
            entry = self._entries.pop(run_id, None)
            if entry is not None:
                self._size -= entry.size()
            return entry

    def keep(self, run_id: str, loaded: Loaded) -> None:
        """Remember the state a landed commit left (ended or incomplete runs are not kept)."""
        run = loaded.state.run
        if not loaded.complete or run is None or run.status.terminal:
            return
        loaded.touched = set()
        size = loaded.size()
        with self._lock:
            old = self._entries.pop(run_id, None)
            if old is not None:
                self._size -= old.size()
            self._entries[run_id] = loaded
            self._size += size
            while self._size > self._max and self._entries:
                _, dropped = self._entries.popitem(last=False)
                self._size -= dropped.size()

    def offer(self, run_id: str, events: list[Event]) -> None:
        """A run's whole log, just read: keep the state it folds to, unless a fresher one is kept.

        A worker reads a run's log before it drives it; with this its first write to the run
        takes the fast lane too."""
        if not events or len(events) > COMPLETE_UP_TO or events[0].seq != 0 or events[-1].seq != len(events) - 1:
            return
        with self._lock:
            kept = self._entries.get(run_id)
            kept_run = kept.state.run if kept is not None else None
            if kept_run is not None and kept_run.event_count >= len(events):
                return  # as fresh already (the usual case for a run this process drives): no fold
        state = fold(events)
        if state.run is None:
            return
        created: dict[tuple[str, str], int] = {}
        for event in events:
            kind = event_kind(event.event_type)
            if kind is not None and event.correlation_id and event.event_type != EventType.HOOK_CONFLICT:
                created.setdefault((kind, event.correlation_id), event.seq)
        self.keep(run_id, Loaded(state, events[-1].event_id or "", created, complete=True))

    def __len__(self) -> int:
        return len(self._entries)


_STEP_SET = ("status = EXCLUDED.status, output = EXCLUDED.output, error = EXCLUDED.error, "
             "attempt = EXCLUDED.attempt, retry_after = EXCLUDED.retry_after, started_at = EXCLUDED.started_at, "
             "completed_at = EXCLUDED.completed_at, updated_at = EXCLUDED.updated_at")
#: table -> (its columns after run_id with their types, the ON CONFLICT clause). The rows travel
#: as one JSON document (orjson builds it in C; psycopg's per-element array dumping cost ~0.2 ms).
_TABLES: dict[str, tuple[tuple[tuple[str, str], ...], str]] = {
    "events": ((("seq", "int4"), ("event_id", "text"), ("event_type", "text"), ("correlation_id", "text"),
                ("data", "json"), ("created_at", "timestamptz")), ""),
    "steps": ((("step_id", "text"), ("created_seq", "int4"), ("step_name", "text"), ("status", "text"),
               ("input", "json"), ("output", "json"), ("error", "json"), ("attempt", "int4"),
               ("retry_after", "timestamptz"), ("created_at", "timestamptz"), ("started_at", "timestamptz"),
               ("completed_at", "timestamptz"), ("updated_at", "timestamptz")),
              f" ON CONFLICT (run_id, step_id) DO UPDATE SET {_STEP_SET}"),
    "hooks": ((("hook_id", "text"), ("created_seq", "int4"), ("token", "bytea"), ("token_hash", "bytea"),
               ("status", "text"), ("metadata", "json"), ("received_count", "int4"), ("created_at", "timestamptz"),
               ("disposed_at", "timestamptz")),
              " ON CONFLICT (run_id, hook_id) DO UPDATE SET status = EXCLUDED.status, "
              "received_count = EXCLUDED.received_count, disposed_at = EXCLUDED.disposed_at"),
    "waits": ((("wait_id", "text"), ("created_seq", "int4"), ("resume_at", "timestamptz"), ("status", "text"),
               ("created_at", "timestamptz"), ("completed_at", "timestamptz")),
              " ON CONFLICT (run_id, wait_id) DO UPDATE SET status = EXCLUDED.status, "
              "completed_at = EXCLUDED.completed_at"),
}


def _insert(schema: str, table: str) -> str:
    # json columns travel as JSON strings holding their text, cast back here: PostgreSQL's JSON
    # functions refuse a \u0000 escape in any value they take apart, which a json column keeps.
    columns, conflict = _TABLES[table]
    names = ", ".join(name for name, _ in columns)
    values = ", ".join(f"{name}::json" if kind == "json" else name for name, kind in columns)
    record = ", ".join(f"{name} {'text' if kind == 'json' else kind}" for name, kind in columns)
    return (f'{table[0]}x AS (INSERT INTO "{schema}".{table} (run_id, {names}) SELECT ru.run_id, {values} '
            f"FROM ru, json_to_recordset(%(doc)s::json -> '{table}') AS u({record}){conflict})")


def cached_write_sql(schema: str, kinds: tuple[str, ...], *, ended: bool, new: bool) -> str:
    """One statement writing a batch planned on a cached state, or on none for a `new` run
    (see the module's docstring).

    It returns one row when it wrote, none when the run's count was not the one expected
    (or the new run exists already)."""
    if new:
        run = (f'ru AS (INSERT INTO "{schema}".runs (run_id, workflow_name, status, input, output, error, '
               "attributes, created_at, started_at, completed_at, updated_at, event_count, last_event_id) "
               "VALUES (%(run)s, %(workflow)s, %(status)s, %(input)s::json, %(output)s::json, %(error)s::json, "
               "%(attributes)s::json, %(created_at)s, %(started_at)s, %(completed_at)s, %(updated_at)s, %(count)s, "
               "%(last)s) ON CONFLICT (run_id) DO NOTHING RETURNING run_id)")
    else:
        run = (f'ru AS (UPDATE "{schema}".runs SET status = %(status)s, output = %(output)s::json, '
               "error = %(error)s::json, started_at = %(started_at)s, completed_at = %(completed_at)s, "
               "updated_at = %(updated_at)s, event_count = %(count)s, last_event_id = %(last)s "
               "WHERE run_id = %(run)s AND event_count = %(expected)s RETURNING run_id)")
    parts = [run, *(_insert(schema, table) for table in ("events", *kinds))]
    notify = "pg_notify(%(runs_channel)s, %(r)s)" + (", pg_notify(%(channel)s, %(e)s)" if ended else "")
    return "WITH " + ", ".join(parts) + f" SELECT {notify} FROM ru"


def _record(table: str, values: tuple[Any, ...]) -> dict[str, Any]:
    """One row (without its run id) as a JSON object: json columns as their text, bytea as hex."""
    record: dict[str, Any] = {}
    for (name, kind), value in zip(_TABLES[table][0], values, strict=True):
        if value is not None and kind == "bytea":
            value = "\\x" + value.hex()
        record[name] = value
    return record


#: kind -> its row parameters (run id first, which the statement takes from the run's update).
_ROW = {"steps": rows.step_params, "hooks": rows.hook_params, "waits": rows.wait_params}


def cached_write_params(run_id: str, loaded: Loaded, recorded: list[Event], expected: int,
                        channel: str, runs_channel: str, *, new: bool) -> tuple[tuple[str, ...], dict[str, Any]]:
    """The entity kinds the batch writes, and the statement's parameters (a `new` run's whole
    row; else only what a run's event changes: its input and attributes are written once)."""
    state = loaded.state
    run = state.run
    assert run is not None
    doc: dict[str, list[dict[str, Any]]] = {
        "events": [_record("events", (e.seq, e.event_id, e.event_type.value, e.correlation_id,
                                      to_json(e.data, f"the data of {e.event_type.value}"), e.created_at))
                   for e in recorded]}
    for kind, entity_id in sorted(loaded.touched):
        entity = getattr(state, kind).get(entity_id)
        if entity is not None:
            values = _ROW[kind](entity, loaded.created_seq[(kind, entity_id)])[1:]
            doc.setdefault(kind, []).append(_record(kind, values))
    params: dict[str, Any] = {
        "run": run_id, "expected": expected, "status": run.status.value,
        "output": json_or_null(run.output, "run output"), "error": json_or_null(run.error, "run error"),
        "started_at": run.started_at, "completed_at": run.completed_at, "updated_at": run.updated_at,
        "count": run.event_count, "last": loaded.last_event_id, "channel": channel, "runs_channel": runs_channel,
        "r": f"r:{run_id}",
        "e": f"e:{run_id}", "doc": orjson.dumps(doc).decode(),
    }
    if new:
        params.update(workflow=run.workflow_name, input=json_or_null(run.input, "run input"),
                      attributes=to_json(run.attributes, "run attributes"), created_at=run.created_at)
    return tuple(sorted(k for k in doc if k != "events")), params
