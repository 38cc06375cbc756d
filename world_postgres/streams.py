"""Streams in SQL: a `streams` row per stream (chunk count, closed) and a row per chunk.

A write bumps the stream's count under its row lock and inserts the chunks at the indexes
it reserved, in one statement; a closed stream refuses (EntityConflictError). Stream names
are any non-empty string: they are kept as UTF-8 bytes and keyed by their SHA-256, so no
name ever reaches SQL text. Every write and close notifies `s:<run>:<hash>`; `tail` waits
on that, reads only past its last index, and looks again after a jittered second anyway.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

import orjson
from psycopg import AsyncConnection

from ..runtime.errors import EntityConflictError, InvalidIdError, SerializationError
from ..runtime.ids import validate_id
from ..runtime.world import StreamInfo, Streams
from .database import Database
from .notify import Hub
from .storage import jittered

POLL_SECONDS = 1.0
#: Longest stream name, in bytes of UTF-8.
MAX_NAME_BYTES = 200


def _name_bytes(name: object) -> bytes:
    if not isinstance(name, str) or not name:
        raise InvalidIdError(f"invalid stream name {name!r}: use a non-empty string")
    try:
        raw = name.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidIdError(f"invalid stream name {name!r}: not encodable as UTF-8") from None
    if len(raw) > MAX_NAME_BYTES:
        raise InvalidIdError(f"invalid stream name {name[:37]!r}...: longer than {MAX_NAME_BYTES} bytes")
    return raw


def _encode(chunks: Sequence[Any], run_id: str, name: str) -> list[str]:
    out = []
    for i, chunk in enumerate(chunks):
        try:
            out.append(orjson.dumps(chunk).decode())
        except TypeError as exc:
            raise SerializationError(
                f"stream {name!r} of run {run_id}: chunk {i} is not JSON-compatible "
                f"({type(chunk).__name__}: {exc}); serialize it first") from exc
    return out


class PgStreams(Streams):
    def __init__(self, db: Database, schema: str, hub: Hub, channel: str) -> None:
        self.db = db
        self.hub = hub
        self.channel = channel
        #: Starts this process's listener if needed (set by the World).
        self.session: Callable[[], Awaitable[int]] | None = None
        s = f'"{schema}"'
        self.s = s
        self.sql_write = (
            f"WITH st AS (INSERT INTO {s}.streams AS t (run_id, name_hash, name, chunks, closed) "
            "VALUES (%(run)s, %(hash)s, %(name)s, %(n)s, false) ON CONFLICT (run_id, name_hash) DO UPDATE "
            "SET chunks = t.chunks + %(n)s WHERE NOT t.closed RETURNING chunks), "
            f"ins AS (INSERT INTO {s}.stream_chunks (run_id, name_hash, idx, chunk) "
            "SELECT %(run)s, %(hash)s, st.chunks - %(n)s + c.i - 1, c.chunk::json "
            "FROM st, unnest(%(chunks)s::text[]) WITH ORDINALITY AS c(chunk, i) RETURNING 1) "
            "SELECT (SELECT chunks FROM st), (SELECT count(*) FROM ins), pg_notify(%(channel)s, %(key)s)")
        self.sql_close = (
            f"WITH st AS (INSERT INTO {s}.streams AS t (run_id, name_hash, name, chunks, closed) "
            "VALUES (%(run)s, %(hash)s, %(name)s, 0, true) ON CONFLICT (run_id, name_hash) DO UPDATE "
            "SET closed = true RETURNING 1) SELECT count(*), pg_notify(%(channel)s, %(key)s) FROM st")
        self.sql_read = (
            f"SELECT (SELECT closed FROM {s}.streams WHERE run_id = %(run)s AND name_hash = %(hash)s), "
            f"(SELECT array_agg(chunk::text ORDER BY idx) FROM {s}.stream_chunks "
            "WHERE run_id = %(run)s AND name_hash = %(hash)s AND idx >= %(start)s)")

    def _key(self, run_id: str, digest: bytes) -> str:
        return f"s:{run_id}:{digest[:12].hex()}"

    async def write(self, run_id: str, name: str, chunk: Any) -> int:
        """Append a chunk; return its index. EntityConflictError if the stream is closed."""
        return await self.write_many(run_id, name, [chunk])

    async def write_many(self, run_id: str, name: str, chunks: Sequence[Any]) -> int:
        """Append chunks in order atomically; return the index of the last one."""
        validate_id(run_id, "run id")
        raw = _name_bytes(name)
        digest = hashlib.sha256(raw).digest()
        encoded = _encode(list(chunks), run_id, name)
        if not encoded:
            info = await self._info(run_id, digest)
            if info is not None and info[1]:
                raise EntityConflictError(f"stream {name!r} of run {run_id} is closed")
            return (info[0] if info is not None else 0) - 1
        params = {"run": run_id, "hash": digest, "name": raw, "n": len(encoded), "chunks": encoded,
                  "channel": self.channel, "key": self._key(run_id, digest)}

        async def op(conn: AsyncConnection, attempt: int) -> int | None:
            async with conn.transaction():
                cur = await conn.execute(self.sql_write, params)
                row = await cur.fetchone()
                if row is None or row[0] is None:
                    return None
                return int(row[0])

        total = await self.db.run(op)
        if total is None:
            raise EntityConflictError(f"stream {name!r} of run {run_id} is closed")
        self.hub.fire(params["key"])
        return total - 1

    async def _info(self, run_id: str, digest: bytes) -> tuple[int, bool] | None:
        async def op(conn: AsyncConnection, attempt: int) -> tuple[int, bool] | None:
            cur = await conn.execute(f"SELECT chunks, closed FROM {self.s}.streams WHERE run_id = %s "
                                     "AND name_hash = %s", (run_id, digest))
            row = await cur.fetchone()
            return None if row is None else (int(row[0]), bool(row[1]))

        return await self.db.run(op)

    async def close(self, run_id: str, name: str) -> None:
        """Mark the stream ended (idempotent). Creates it empty if it does not exist."""
        validate_id(run_id, "run id")
        raw = _name_bytes(name)
        digest = hashlib.sha256(raw).digest()
        params = {"run": run_id, "hash": digest, "name": raw, "channel": self.channel, "key": self._key(run_id, digest)}

        async def op(conn: AsyncConnection, attempt: int) -> None:
            await conn.execute(self.sql_close, params)

        await self.db.run(op)
        self.hub.fire(params["key"])

    async def _read(self, run_id: str, digest: bytes, start: int) -> tuple[list[Any], bool]:
        async def op(conn: AsyncConnection, attempt: int) -> tuple[list[Any], bool]:
            cur = await conn.execute(self.sql_read, {"run": run_id, "hash": digest, "start": start})
            row = await cur.fetchone()
            assert row is not None
            closed, texts = row
            return [orjson.loads(t) for t in texts or ()], bool(closed)

        return await self.db.run(op)

    async def read(self, run_id: str, name: str, *, start: int = 0) -> tuple[list[Any], bool]:
        """The chunks from index `start` on, and whether the stream is closed."""
        validate_id(run_id, "run id")
        digest = hashlib.sha256(_name_bytes(name)).digest()
        return await self._read(run_id, digest, max(int(start), 0))

    async def tail(
        self, run_id: str, name: str, *, start: int = 0, timeout: float | None = None
    ) -> AsyncIterator[Any]:
        """Yield chunks from `start` live, until the stream closes or nothing comes for `timeout` s."""
        validate_id(run_id, "run id")
        digest = hashlib.sha256(_name_bytes(name)).digest()
        position = max(int(start), 0)
        if self.session is not None:
            await self.session()  # the listener, which wakes us
        with self.hub.subscribe(self._key(run_id, digest)) as waiter:
            quiet_since = time.monotonic()
            while True:
                chunks, closed = await self._read(run_id, digest, position)
                for chunk in chunks:
                    yield chunk
                position += len(chunks)
                if chunks:
                    quiet_since = time.monotonic()
                if closed:
                    return
                pause = jittered(POLL_SECONDS)
                if timeout is not None:
                    left = timeout - (time.monotonic() - quiet_since)
                    if left <= 0:
                        return
                    pause = min(pause, left)
                await waiter.wait(pause)

    async def list(self, run_id: str) -> list[StreamInfo]:
        """The run's streams, by name."""
        validate_id(run_id, "run id")

        async def op(conn: AsyncConnection, attempt: int) -> list[StreamInfo]:
            cur = await conn.execute(f"SELECT name, chunks, closed FROM {self.s}.streams WHERE run_id = %s",
                                     (run_id,))
            return [StreamInfo(run_id=run_id, name=bytes(r[0]).decode("utf-8"), chunks=int(r[1]), closed=bool(r[2]))
                    for r in await cur.fetchall()]

        return sorted(await self.db.run(op), key=lambda info: info.name)
