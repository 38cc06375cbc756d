"""The Postgres World's schema, in one place: versioned migrations and the version check.

Everything lives in one schema (default `wf`). `meta` holds `format` = "wf-postgres" and
`version`; each entry of MIGRATIONS brings the schema from the version before it to its
own, in one transaction. `migrate` holds a transaction-level advisory lock (the schema's
lock space, key 0) around the whole upgrade, so processes starting together apply each
migration once and never race on `CREATE SCHEMA`. A schema written by a newer wf is
refused with one line, never touched.
"""

from __future__ import annotations

from psycopg import AsyncConnection, sql

from ..runtime.errors import DataDirError
from .url import lock_space

FORMAT = "wf-postgres"

#: The tables of version 1. `{s}` is the schema (quoted as an identifier).
_V1 = """
CREATE TABLE {s}.meta (key text PRIMARY KEY, value text NOT NULL);

CREATE TABLE {s}.runs (
    run_id text PRIMARY KEY,
    workflow_name text NOT NULL,
    status text NOT NULL,
    input json, output json, error json,
    attributes json NOT NULL,
    created_at timestamptz, started_at timestamptz, completed_at timestamptz, updated_at timestamptz,
    event_count integer NOT NULL,
    last_event_id text NOT NULL
);
CREATE INDEX runs_by_time ON {s}.runs (created_at, run_id);
CREATE INDEX runs_by_status ON {s}.runs (status, created_at, run_id);
CREATE INDEX runs_by_workflow ON {s}.runs (workflow_name, created_at, run_id);

CREATE TABLE {s}.events (
    run_id text NOT NULL,
    seq integer NOT NULL,
    event_id text NOT NULL,
    event_type text NOT NULL,
    correlation_id text,
    data json NOT NULL,
    created_at timestamptz NOT NULL,
    PRIMARY KEY (run_id, seq)
);
CREATE INDEX events_by_correlation ON {s}.events (run_id, correlation_id, seq) WHERE correlation_id IS NOT NULL;

CREATE TABLE {s}.steps (
    run_id text NOT NULL, step_id text NOT NULL, created_seq integer NOT NULL,
    step_name text NOT NULL, status text NOT NULL,
    input json, output json, error json,
    attempt integer NOT NULL, retry_after timestamptz,
    created_at timestamptz, started_at timestamptz, completed_at timestamptz, updated_at timestamptz,
    PRIMARY KEY (run_id, step_id)
);
CREATE INDEX steps_in_order ON {s}.steps (run_id, created_seq);

CREATE TABLE {s}.hooks (
    run_id text NOT NULL, hook_id text NOT NULL, created_seq integer NOT NULL,
    token bytea NOT NULL, token_hash bytea NOT NULL, status text NOT NULL,
    metadata json, received_count integer NOT NULL,
    created_at timestamptz, disposed_at timestamptz,
    PRIMARY KEY (run_id, hook_id)
);
CREATE INDEX hooks_in_order ON {s}.hooks (run_id, created_seq);
CREATE INDEX hooks_by_status ON {s}.hooks (status, run_id, created_seq);
CREATE UNIQUE INDEX hooks_live_token ON {s}.hooks (token_hash) WHERE status = 'active';

CREATE TABLE {s}.waits (
    run_id text NOT NULL, wait_id text NOT NULL, created_seq integer NOT NULL,
    resume_at timestamptz NOT NULL, status text NOT NULL,
    created_at timestamptz, completed_at timestamptz,
    PRIMARY KEY (run_id, wait_id)
);
CREATE INDEX waits_in_order ON {s}.waits (run_id, created_seq);
CREATE INDEX waits_by_status ON {s}.waits (status, run_id, created_seq);

CREATE TABLE {s}.queue (
    message_id text PRIMARY KEY,
    queue text NOT NULL,
    payload json NOT NULL,
    order_key text NOT NULL,
    available_at timestamptz NOT NULL,
    created_at timestamptz NOT NULL,
    due_at timestamptz NOT NULL,
    deliveries integer NOT NULL DEFAULT 0,
    idempotency_key text UNIQUE,
    lease_id text,
    lease_until timestamptz,
    holder integer,
    again_at timestamptz
);
CREATE INDEX queue_in_order ON {s}.queue (order_key, message_id);
CREATE INDEX queue_by_name ON {s}.queue (queue, order_key, message_id);
CREATE INDEX queue_by_due ON {s}.queue (queue, due_at);
CREATE INDEX queue_leases ON {s}.queue (holder) WHERE lease_id IS NOT NULL;

CREATE TABLE {s}.streams (
    run_id text NOT NULL, name_hash bytea NOT NULL, name bytea NOT NULL,
    chunks integer NOT NULL, closed boolean NOT NULL,
    PRIMARY KEY (run_id, name_hash)
);
CREATE TABLE {s}.stream_chunks (
    run_id text NOT NULL, name_hash bytea NOT NULL, idx integer NOT NULL, chunk json NOT NULL,
    PRIMARY KEY (run_id, name_hash, idx)
);

-- The queue's two hottest statements, as functions: their plans are cached per connection
-- (prepared statements stay off, for PgBouncer), and both commit without waiting for the WAL
-- flush (a power loss may undo a take or an ack: the message is delivered again).
CREATE FUNCTION {s}.take_message(p_queues text[], p_lease_id text, p_lease float8, p_holder integer)
RETURNS SETOF {s}.queue LANGUAGE plpgsql AS $$
#variable_conflict use_column
BEGIN
    PERFORM set_config('synchronous_commit', 'off', true);
    RETURN QUERY
    WITH c AS (SELECT m.message_id FROM {s}.queue m WHERE m.queue = ANY(p_queues) AND m.due_at <= now()
               ORDER BY m.order_key, m.message_id LIMIT 1 FOR UPDATE SKIP LOCKED)
    UPDATE {s}.queue q SET lease_id = p_lease_id, lease_until = now() + p_lease * interval '1 second',
        due_at = now() + p_lease * interval '1 second', holder = p_holder, deliveries = q.deliveries + 1,
        again_at = CASE WHEN q.again_at <= now() THEN NULL ELSE q.again_at END
    FROM c WHERE q.message_id = c.message_id RETURNING q.*;
END $$;

-- 0: not leased by p_lease_id (lost); 1: removed; 2: made available again (an enqueue asked for it).
CREATE FUNCTION {s}.ack_message(p_id text, p_lease_id text, p_channel text) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE again timestamptz;
BEGIN
    PERFORM set_config('synchronous_commit', 'off', true);
    SELECT q.again_at INTO again FROM {s}.queue q WHERE q.message_id = p_id AND q.lease_id = p_lease_id FOR UPDATE;
    IF NOT FOUND THEN
        RETURN 0;
    END IF;
    IF again IS NULL THEN
        DELETE FROM {s}.queue WHERE message_id = p_id;
        RETURN 1;
    END IF;
    UPDATE {s}.queue SET lease_id = NULL, lease_until = NULL, holder = NULL, available_at = again, due_at = again,
        again_at = NULL, deliveries = 0 WHERE message_id = p_id;
    PERFORM pg_notify(p_channel, 'q');
    RETURN 2;
END $$;

CREATE SEQUENCE {s}.sessions AS integer MINVALUE 1 CYCLE;
CREATE TABLE {s}.workers (
    worker_id text PRIMARY KEY, session_no integer NOT NULL, info json NOT NULL,
    announced_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE {s}.counters (name text PRIMARY KEY, value bigint NOT NULL);
INSERT INTO {s}.counters VALUES ('drain_generation', 0), ('recoveries', 0), ('recovered_at', 0);
"""

#: Version 2: flow control (limits.py, schedules.py). `slot_keys` rows are locked to serialize one
#: key's changes; `slots` holds holders and waiters (`session_no` NULL: not tied to a process);
#: `rate_keys` rows are locked likewise for `rate_starts`.
_V2 = """
CREATE TABLE {s}.slot_keys (key text COLLATE "C" PRIMARY KEY, lim integer NOT NULL);
CREATE TABLE {s}.slots (
    key text COLLATE "C" NOT NULL, holder text COLLATE "C" NOT NULL, waiting boolean NOT NULL,
    since timestamptz NOT NULL, until timestamptz, session_no integer,
    ord text COLLATE "C" NOT NULL DEFAULT '', info json NOT NULL,
    PRIMARY KEY (key, holder)
);
CREATE TABLE {s}.rate_keys (key text COLLATE "C" PRIMARY KEY);
CREATE TABLE {s}.rate_starts (key text COLLATE "C" NOT NULL, at timestamptz NOT NULL);
CREATE INDEX rate_starts_by_key ON {s}.rate_starts (key, at);
CREATE TABLE {s}.schedules (
    schedule_id text COLLATE "C" PRIMARY KEY, spec json NOT NULL, next_at timestamptz NOT NULL,
    paused boolean NOT NULL DEFAULT false, created_at timestamptz NOT NULL, updated_at timestamptz NOT NULL
);
"""

#: MIGRATIONS[i] brings the schema to version i + 1.
MIGRATIONS: list[str] = [_V1, _V2]
LATEST = len(MIGRATIONS)


def _q(text: str, schema: str) -> sql.Composed:
    return sql.SQL(text).format(s=sql.Identifier(schema))  # type: ignore[arg-type]


async def schema_version(conn: AsyncConnection, schema: str) -> int | None:
    """The schema's version; None if there is no such schema or it is empty.

    DataDirError if the schema holds tables that are not a wf store's.
    """
    cur = await conn.execute(
        "SELECT to_regclass(format('%%I.meta', %s::text)) IS NOT NULL,"
        " EXISTS (SELECT 1 FROM pg_tables WHERE schemaname = %s)", (schema, schema))
    row = await cur.fetchone()
    assert row is not None
    has_meta, has_tables = row
    if not has_meta:
        if has_tables:
            raise DataDirError(f"Postgres schema {schema!r} holds tables that are not a wf store's (choose another "
                               "schema with ?schema=NAME or WF_PG_SCHEMA)")
        return None
    cur = await conn.execute(_q("SELECT key, value FROM {s}.meta WHERE key IN ('format', 'version')", schema))
    meta = dict(await cur.fetchall())
    if meta.get("format") != FORMAT or not str(meta.get("version", "")).isdigit():
        raise DataDirError(f"Postgres schema {schema!r} is not a wf store (its meta table says {meta!r})")
    return int(meta["version"])


def _refuse_newer(schema: str, version: int) -> None:
    if version > LATEST:
        raise DataDirError(
            f"Postgres schema {schema!r} was written by a newer wf (schema version {version}, this wf knows "
            f"up to {LATEST}): upgrade wf"
        )


async def migrate(conn: AsyncConnection, schema: str) -> int:
    """Create or upgrade the schema to LATEST (safe when many processes do it at once); the version."""
    version = await schema_version(conn, schema)
    if version is not None:
        _refuse_newer(schema, version)
        if version == LATEST:
            return version
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(%s, 0)", (lock_space(schema),))
        version = await schema_version(conn, schema) or 0  # again, under the lock
        _refuse_newer(schema, version)
        if version == 0:
            await conn.execute(_q("CREATE SCHEMA IF NOT EXISTS {s}", schema))
        for target in range(version + 1, LATEST + 1):
            await conn.execute(_q(MIGRATIONS[target - 1], schema))
        await conn.execute(
            _q("INSERT INTO {s}.meta VALUES ('format', %s), ('version', %s) "
               "ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value", schema), (FORMAT, str(LATEST)))
    return LATEST


async def check(conn: AsyncConnection, schema: str, where: str) -> int:
    """The schema's version if it is LATEST; else DataDirError saying to run `wf db migrate`."""
    version = await schema_version(conn, schema)
    if version is None:
        raise DataDirError(f"no wf schema {schema!r} in {where} (run `wf db migrate` first)")
    _refuse_newer(schema, version)
    if version < LATEST:
        raise DataDirError(f"wf schema {schema!r} in {where} is at version {version}, this wf needs {LATEST}: "
                           "run `wf db migrate`")
    return version


async def drop(conn: AsyncConnection, schema: str) -> None:
    """Remove the schema and everything in it."""
    await conn.execute(_q("DROP SCHEMA IF EXISTS {s} CASCADE", schema))
