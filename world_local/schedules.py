"""`LocalSchedules`: one JSON file per schedule under `<data>/schedules/`, changed under one lock.

    schedules/<sha256(id)>.json   {"schedule_id", "spec", "next_at", "paused", "created_at", "updated_at"}
    schedules/lock                flock held for every change (put, advance, pause, delete)

Changes are few (a schedule fires at most every second or so), so one lock for all is plenty;
reads take no lock (files are replaced atomically).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson

from ..runtime.entities import utcnow
from ..runtime.errors import NotFoundError
from ..runtime.flow_contract import ScheduleRecord, Schedules
from .boundary import storage_boundary
from .files import write_bytes_atomic


def _record(doc: Any) -> ScheduleRecord | None:
    if not isinstance(doc, dict):
        return None
    try:
        return ScheduleRecord(
            schedule_id=str(doc["schedule_id"]), spec=dict(doc["spec"]),
            next_at=datetime.fromisoformat(doc["next_at"]), paused=bool(doc.get("paused")),
            created_at=datetime.fromisoformat(doc["created_at"]) if doc.get("created_at") else None,
            updated_at=datetime.fromisoformat(doc["updated_at"]) if doc.get("updated_at") else None,
        )
    except (KeyError, TypeError, ValueError):
        return None


def _doc(record: ScheduleRecord) -> dict[str, Any]:
    return {
        "schedule_id": record.schedule_id, "spec": record.spec, "next_at": record.next_at.isoformat(),
        "paused": record.paused, "created_at": record.created_at.isoformat() if record.created_at else None,
        "updated_at": record.updated_at.isoformat() if record.updated_at else None,
    }


@storage_boundary
class LocalSchedules(Schedules):
    """`Schedules` on the file system (see the module docs)."""

    def __init__(self, root: Path, *, fsync: bool) -> None:
        self.root = root
        self._fsync = fsync
        root.mkdir(parents=True, exist_ok=True)

    def _path(self, schedule_id: str) -> Path:
        if not isinstance(schedule_id, str) or not schedule_id or len(schedule_id) > 512:
            raise ValueError("a schedule id must be a non-empty string of at most 512 characters")
        return self.root / f"{hashlib.sha256(schedule_id.encode()).hexdigest()[:40]}.json"

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        fd = os.open(self.root / "lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _read(self, path: Path) -> ScheduleRecord | None:
        try:
            return _record(orjson.loads(path.read_bytes()))
        except FileNotFoundError:
            return None
        except orjson.JSONDecodeError:
            return None

    def _write(self, record: ScheduleRecord) -> None:
        write_bytes_atomic(self._path(record.schedule_id), orjson.dumps(_doc(record)), fsync=self._fsync)

    async def put(self, schedule_id: str, spec: dict[str, Any], *, next_at: datetime) -> ScheduleRecord:
        path = self._path(schedule_id)
        orjson.dumps(spec)  # a spec that is not JSON fails here, before anything is written
        with self._locked():
            old = self._read(path)
            now = utcnow()
            record = ScheduleRecord(schedule_id, dict(spec), next_at, old.paused if old else False,
                                    old.created_at if old and old.created_at else now, now)
            self._write(record)
        return record

    async def get(self, schedule_id: str) -> ScheduleRecord:
        record = self._read(self._path(schedule_id))
        if record is None:
            raise NotFoundError(f"no schedule {schedule_id!r}")
        return record

    async def list(self) -> list[ScheduleRecord]:
        try:
            names = sorted(n for n in os.listdir(self.root) if n.endswith(".json") and not n.startswith("."))
        except FileNotFoundError:
            return []
        records = [r for n in names if (r := self._read(self.root / n)) is not None]
        return sorted(records, key=lambda r: r.schedule_id)

    async def delete(self, schedule_id: str) -> bool:
        path = self._path(schedule_id)
        with self._locked():
            try:
                os.unlink(path)
            except FileNotFoundError:
                return False
        return True

    async def set_paused(self, schedule_id: str, paused: bool) -> ScheduleRecord:
        path = self._path(schedule_id)
        with self._locked():
            old = self._read(path)
            if old is None:
                raise NotFoundError(f"no schedule {schedule_id!r}")
            record = ScheduleRecord(old.schedule_id, old.spec, old.next_at, bool(paused), old.created_at, utcnow())
            self._write(record)
        return record

    async def advance(self, schedule_id: str, *, expected: datetime, to: datetime) -> bool:
        path = self._path(schedule_id)
        with self._locked():
            old = self._read(path)
            if old is None or old.next_at != expected:
                return False
            self._write(ScheduleRecord(old.schedule_id, old.spec, to, old.paused, old.created_at, utcnow()))
        return True
