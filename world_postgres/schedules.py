"""`PgSchedules`: schedule records in the schema's `schedules` table, one row each.

Every change is one statement; `advance` is a compare-and-set on `next_at`, so of workers
racing to fire the same slot exactly one moves the cursor. Times are the database clock.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import orjson
from psycopg import AsyncConnection, sql

from ..runtime.errors import NotFoundError
from ..runtime.flow_contract import ScheduleRecord, Schedules
from .database import Database

_COLUMNS = "schedule_id, spec, next_at, paused, created_at, updated_at"


def _check_id(schedule_id: object) -> str:
    if not isinstance(schedule_id, str) or not schedule_id or len(schedule_id) > 512:
        raise ValueError("a schedule id must be a non-empty string of at most 512 characters")
    return schedule_id


def _record(row: tuple[Any, ...]) -> ScheduleRecord:
    schedule_id, spec, next_at, paused, created_at, updated_at = row
    return ScheduleRecord(str(schedule_id), dict(spec), next_at, bool(paused), created_at, updated_at)


class PgSchedules(Schedules):
    """`Schedules` on one schema of a PostgreSQL database (see the module docs)."""

    def __init__(self, db: Database, schema: str) -> None:
        self.db = db

        def q(text: str) -> sql.Composed:
            return sql.SQL(text).format(s=sql.Identifier(schema), cols=sql.SQL(_COLUMNS))

        self._put = q("INSERT INTO {s}.schedules AS r ({cols}) VALUES (%s, %s::json, %s, false, now(), now()) "
                      "ON CONFLICT (schedule_id) DO UPDATE SET spec = EXCLUDED.spec, next_at = EXCLUDED.next_at, "
                      "updated_at = now() RETURNING {cols}")
        self._get = q("SELECT {cols} FROM {s}.schedules WHERE schedule_id = %s")
        self._list = q("SELECT {cols} FROM {s}.schedules ORDER BY schedule_id")
        self._delete = q("DELETE FROM {s}.schedules WHERE schedule_id = %s RETURNING 1")
        self._pause = q("UPDATE {s}.schedules SET paused = %s, updated_at = now() WHERE schedule_id = %s "
                        "RETURNING {cols}")
        self._advance = q("UPDATE {s}.schedules SET next_at = %s, updated_at = now() "
                          "WHERE schedule_id = %s AND next_at = %s RETURNING 1")

    async def _rows(self, query: sql.Composed, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        async def op(conn: AsyncConnection, attempt: int) -> list[tuple[Any, ...]]:
            cur = await conn.execute(query, params)
            return await cur.fetchall()

        return await self.db.run(op)

    async def put(self, schedule_id: str, spec: dict[str, Any], *, next_at: datetime) -> ScheduleRecord:
        _check_id(schedule_id)
        doc = orjson.dumps(spec).decode()  # a spec that is not JSON fails here, before anything is written
        (row,) = await self._rows(self._put, (schedule_id, doc, next_at))
        return _record(row)

    async def get(self, schedule_id: str) -> ScheduleRecord:
        found = await self._rows(self._get, (_check_id(schedule_id),))
        if not found:
            raise NotFoundError(f"no schedule {schedule_id!r}")
        return _record(found[0])

    async def list(self) -> list[ScheduleRecord]:
        return [_record(row) for row in await self._rows(self._list)]

    async def delete(self, schedule_id: str) -> bool:
        return bool(await self._rows(self._delete, (_check_id(schedule_id),)))

    async def set_paused(self, schedule_id: str, paused: bool) -> ScheduleRecord:
        found = await self._rows(self._pause, (bool(paused), _check_id(schedule_id)))
        if not found:
            raise NotFoundError(f"no schedule {schedule_id!r}")
        return _record(found[0])

    async def advance(self, schedule_id: str, *, expected: datetime, to: datetime) -> bool:
        return bool(await self._rows(self._advance, (to, _check_id(schedule_id), expected)))
