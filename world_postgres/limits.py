"""`PgLimits`: concurrency slots and rate windows in the schema's `slots` and `rate_starts` tables.

One key's changes are serialized by a row lock on its `slot_keys` (or `rate_keys`) row, taken
first in each transaction; times are the database clock read once after that lock
(`clock_timestamp()`), so every process sees one order of acquisitions and starts. A holder
with a lease (and every waiter) records the session number of its process: once that
process's session lock (notify.py) is gone, its entries are dropped at the next look, within
a fraction of a second of its death; a holder without lease records none and stays until
released.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any

import orjson
from psycopg import AsyncConnection, sql

from ..runtime.flow_contract import Limits, RateDecision, SlotEntry, SlotState, check_key, check_limit
from .database import Database

#: SQL: the entry `s` is not expired at %(now)s (its time left, its process alive or none named).
_LIVE = ("(s.until IS NULL OR s.until >= %(now)s) AND (s.session_no IS NULL OR s.session_no = %(me)s OR EXISTS ("
         "SELECT 1 FROM pg_locks l WHERE l.locktype = 'advisory' AND l.classid = %(space)s::oid "
         "AND l.objid = s.session_no::oid AND l.objsubid = 2 AND l.granted "
         "AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())))")


def _seconds(value: float) -> timedelta:
    return timedelta(microseconds=int(value * 1e6))


class PgLimits(Limits):
    """`Limits` on one schema of a PostgreSQL database (see the module docs)."""

    def __init__(self, db: Database, schema: str, lock_space: int, session: Callable[[], Awaitable[int]]) -> None:
        self.db = db
        self.lock_space = lock_space
        self.session = session

        def q(text: str) -> sql.Composed:
            return sql.SQL(text).format(s=sql.Identifier(schema))

        self._lock_key = q("INSERT INTO {s}.slot_keys AS k (key, lim) VALUES (%(key)s, %(limit)s) "
                           "ON CONFLICT (key) DO UPDATE SET lim = EXCLUDED.lim RETURNING k.lim")
        self._lock_existing = q("SELECT lim FROM {s}.slot_keys WHERE key = %(key)s FOR UPDATE")
        self._expire = q("DELETE FROM {s}.slots s WHERE s.key = %(key)s AND NOT (" + _LIVE + ")")
        self._entry = q("SELECT waiting, since, until FROM {s}.slots WHERE key = %(key)s AND holder = %(holder)s")
        self._renew = q("UPDATE {s}.slots SET until = CASE WHEN until IS NULL THEN NULL "
                        "ELSE %(now)s + %(lease)s * interval '1 second' END, "
                        "session_no = CASE WHEN until IS NULL THEN session_no ELSE %(me)s END "
                        "WHERE key = %(key)s AND holder = %(holder)s AND NOT waiting")
        self._ahead = q("SELECT count(*) FILTER (WHERE NOT waiting), count(*) FILTER (WHERE waiting "
                        "AND holder <> %(holder)s AND (ord, since, holder) < (%(order)s, %(since)s, %(holder)s)) "
                        "FROM {s}.slots WHERE key = %(key)s")
        self._put = q("INSERT INTO {s}.slots (key, holder, waiting, since, until, session_no, ord, info) "
                      "VALUES (%(key)s, %(holder)s, %(waiting)s, %(since)s, %(until)s, %(session)s, %(order)s, "
                      "%(info)s::json) ON CONFLICT (key, holder) DO UPDATE SET waiting = EXCLUDED.waiting, "
                      "since = EXCLUDED.since, until = EXCLUDED.until, session_no = EXCLUDED.session_no, "
                      "ord = EXCLUDED.ord, info = EXCLUDED.info")
        self._remove = q("DELETE FROM {s}.slots WHERE key = %(key)s AND holder = %(holder)s")
        self._counts = q("SELECT count(*) FILTER (WHERE NOT waiting), count(*) FILTER (WHERE waiting) "
                         "FROM {s}.slots WHERE key = %(key)s")
        self._line = q("SELECT holder, info, since, ord FROM {s}.slots WHERE key = %(key)s AND waiting "
                       "ORDER BY ord, since, holder LIMIT %(n)s")
        self._list = q("SELECT k.key, k.lim, s.holder, s.waiting, s.info, s.since, s.ord FROM {s}.slots s "
                       "JOIN {s}.slot_keys k ON k.key = s.key WHERE (%(key)s::text IS NULL OR s.key = %(key)s) "
                       "AND " + _LIVE + " ORDER BY k.key, s.waiting, s.ord, s.since, s.holder")
        self._lock_rate = q("INSERT INTO {s}.rate_keys (key) VALUES (%(key)s) "
                            "ON CONFLICT (key) DO UPDATE SET key = EXCLUDED.key")
        self._forget_starts = q("DELETE FROM {s}.rate_starts WHERE key = %(key)s AND at <= %(since)s")
        self._starts = q("SELECT at FROM {s}.rate_starts WHERE key = %(key)s AND at > %(since)s "
                         "ORDER BY at DESC LIMIT %(limit)s")
        self._add_start = q("INSERT INTO {s}.rate_starts (key, at) VALUES (%(key)s, %(now)s)")

    async def _params(self, key: str, **more: Any) -> dict[str, Any]:
        return {"key": key, "me": await self.session(), "space": self.lock_space, **more}

    @staticmethod
    async def _clock(conn: AsyncConnection) -> datetime:
        cur = await conn.execute("SELECT clock_timestamp()")
        row = await cur.fetchone()
        assert row is not None
        return row[0]

    async def _locked(self, conn: AsyncConnection, p: dict[str, Any]) -> int | None:
        """Lock the key's row (created by acquire), read the clock into `p`, drop expired entries; its limit."""
        cur = await conn.execute(self._lock_key if "limit" in p else self._lock_existing, p)
        row = await cur.fetchone()
        if row is None:
            return None
        p["now"] = await self._clock(conn)
        await conn.execute(self._expire, p)
        return int(row[0])

    async def acquire(
        self,
        key: str,
        limit: int,
        *,
        holder: str,
        lease: float | None,
        order: str = "",
        info: dict[str, Any] | None = None,
        wait_lease: float = 30.0,
    ) -> bool:
        check_key(key, "slot key")
        check_key(holder, "slot holder")
        check_limit(limit, "concurrency limit")
        doc = orjson.dumps(info or {}).decode()
        base = await self._params(key, limit=limit, holder=holder, lease=lease, order=order, info=doc)

        async def op(conn: AsyncConnection, attempt: int) -> bool:
            p = dict(base)
            async with conn.transaction():
                await self._locked(conn, p)
                now: datetime = p["now"]
                cur = await conn.execute(self._entry, p)
                entry = await cur.fetchone()
                if entry is not None and not entry[0]:
                    if lease is not None:
                        await conn.execute(self._renew, p)
                    return True
                p["since"] = entry[1] if entry is not None else now
                cur = await conn.execute(self._ahead, p)
                counts = await cur.fetchone()
                assert counts is not None
                free = limit - int(counts[0])
                if free > 0 and free > int(counts[1]):
                    p.update(waiting=False, since=now, order="", until=None if lease is None else now + _seconds(lease),
                             session=None if lease is None else p["me"])
                    await conn.execute(self._put, p)
                    return True
                p.update(waiting=True, until=now + _seconds(wait_lease), session=p["me"])
                await conn.execute(self._put, p)
                return False

        return await self.db.run(op)

    async def release(self, key: str, holder: str) -> list[SlotEntry]:
        check_key(key, "slot key")
        p = await self._params(key, holder=holder)

        async def op(conn: AsyncConnection, attempt: int) -> list[SlotEntry]:
            async with conn.transaction():
                limit = await self._locked(conn, p)
                if limit is None:
                    return []
                await conn.execute(self._remove, p)
                cur = await conn.execute(self._counts, p)
                counts = await cur.fetchone()
                assert counts is not None
                if not counts[1]:
                    return []
                p["n"] = max(limit - int(counts[0]), 1)
                cur = await conn.execute(self._line, p)
                return [SlotEntry(h, dict(i), since, o) for h, i, since, o in await cur.fetchall()]

        return await self.db.run(op)

    async def extend(self, key: str, holder: str, *, lease: float) -> bool:
        check_key(key, "slot key")
        p = await self._params(key, holder=holder, lease=lease)

        async def op(conn: AsyncConnection, attempt: int) -> bool:
            async with conn.transaction():
                if await self._locked(conn, p) is None:
                    return False
                cur = await conn.execute(self._renew, p)
                return cur.rowcount > 0

        return await self.db.run(op)

    async def slots(self, key: str | None = None) -> list[SlotState]:
        if key is not None:
            check_key(key, "slot key")
        p = await self._params(key)  # type: ignore[arg-type]

        async def op(conn: AsyncConnection, attempt: int) -> list[SlotState]:
            p["now"] = await self._clock(conn)
            cur = await conn.execute(self._list, p)
            return _states(await cur.fetchall())

        return await self.db.run(op)

    async def rate(self, key: str, limit: int, window: float) -> RateDecision:
        check_key(key, "rate key")
        check_limit(limit, "rate limit")
        span = _seconds(window)
        if span <= timedelta(0):
            raise ValueError(f"a rate window must be positive, got {window!r}")
        p: dict[str, Any] = {"key": key, "limit": limit}

        async def op(conn: AsyncConnection, attempt: int) -> RateDecision:
            async with conn.transaction():
                await conn.execute(self._lock_rate, p)
                now = p["now"] = await self._clock(conn)
                p["since"] = now - span
                await conn.execute(self._forget_starts, p)
                cur = await conn.execute(self._starts, p)
                starts = [row[0] for row in await cur.fetchall()]
                if len(starts) < limit:
                    await conn.execute(self._add_start, p)
                    return RateDecision(True, now)
                return RateDecision(False, starts[-1] + span)

        return await self.db.run(op)


def _states(found: list[tuple[Any, ...]]) -> list[SlotState]:
    states: list[SlotState] = []
    for key, limit, holder, waiting, info, since, order in found:
        if not states or states[-1].key != key:
            states.append(SlotState(key, int(limit)))
        state = states[-1]
        if waiting:
            state.waiters.append(SlotEntry(holder, dict(info), since, order))
        else:
            state.holders.append(SlotEntry(holder, dict(info), since))
    return states
