"""The storage half of the World contract on the file system: runs, steps, events, hooks, waits.

Writes go through `RunStore.commit` (see `run_store.py` for the layout and the commit
protocol); everything here reads: the event logs, the entity files written after each
commit (`views.py`), the run-status index and the token index. A corrupt entity file is
skipped (with a warning on the `wf.world_local` logger) by listings and raised as
CorruptDataError by `get`.

Cursors: runs page by creation time, then run id (the cursor is the last id of the page).
Steps, hooks and waits of one run page by creation order, the cursor being the `created_seq` of the last item; listings
across runs use `<run_id>:<created_seq>`.
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Callable, Sequence
from typing import TypeVar

from ..runtime.entities import Event, Hook, HookStatus, Page, Run, RunStatus, Step, Wait, WaitStatus
from ..runtime.errors import CorruptDataError, InvalidIdError, NotFoundError
from ..runtime.ids import validate_id
from ..runtime.world import EventResult, EventsStorage, HooksStorage, RunsStorage, StepsStorage, WaitsStorage
from .boundary import storage_boundary
from .event_log import parse_line, without_payloads
from .run_store import RunStore, run_channel

log = logging.getLogger("wf.world_local")

T = TypeVar("T")
_ACTIVE_RUN = (RunStatus.PENDING, RunStatus.RUNNING)


def _check_limit(limit: int) -> int:
    if not isinstance(limit, int) or limit < 1:
        raise ValueError(f"limit must be a positive integer, got {limit!r}")
    return limit


def _page(items: list[tuple[tuple[str, int], T]], cursor: tuple[str, int] | None, limit: int,
          cursor_text: Callable[[tuple[str, int]], str]) -> Page[T]:
    """One page of `items` (sorted by key) after `cursor`."""
    if cursor is not None:
        items = [item for item in items if item[0] > cursor]
    page = items[:limit]
    more = len(items) > limit
    return Page([value for _, value in page], cursor_text(page[-1][0]) if more and page else None)


def _seq_cursor(cursor: str | None) -> tuple[str, int] | None:
    if cursor is None:
        return None
    try:
        return ("", int(cursor))
    except ValueError:
        raise InvalidIdError(f"invalid cursor {cursor!r}") from None


def _run_seq_cursor(cursor: str | None) -> tuple[str, int] | None:
    if cursor is None:
        return None
    run_id, _, seq = cursor.rpartition(":")
    try:
        return (validate_id(run_id, "cursor run id"), int(seq))
    except ValueError:
        raise InvalidIdError(f"invalid cursor {cursor!r}") from None


class _Reader:
    """Shared read helpers over one RunStore."""

    def __init__(self, store: RunStore) -> None:
        self.store = store

    def entities(self, run_id: str, kind: str, cls: type[T]) -> list[tuple[int, T]]:
        """A run's steps, hooks or waits in creation order (from its log). NotFoundError if the run is unknown."""
        return self.store.entities(run_id, kind)  # type: ignore[return-value]

    def entity(self, run_id: str, kind: str, entity_id: str, cls: type[T]) -> T:
        validate_id(entity_id, kind[:-1] + " id")
        found = self.store.entity(run_id, kind, entity_id)
        if found is None:
            raise NotFoundError(f"{kind[:-1]} {entity_id} not found in run {run_id}")
        return found[1]  # type: ignore[return-value]


@storage_boundary
class LocalRuns(RunsStorage):
    def __init__(self, store: RunStore) -> None:
        self._store = store
        #: Creation time keys of runs whose id does not carry it (they never change).
        self._created: dict[str, str] = {}

    async def get(self, run_id: str, *, resolve_data: bool = True) -> Run:
        """The run. NotFoundError if unknown; CorruptDataError if its file is unreadable."""
        run = self._store.run(run_id)
        return run if resolve_data else run.evolve(input=None, output=None)

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
        """Runs matching the filters, a page at a time, newest (or oldest) first by creation time, then run id.

        The cursor is the last run id of the page. A ULID run id carries its creation time;
        other ids (`wrun_k…`: idempotency keys, child runs) are placed by their run's
        `created_at`, read once per process.
        """
        _check_limit(limit)
        statuses: set[RunStatus] | None = None
        if status is not None:
            statuses = {RunStatus(status)} if isinstance(status, str) else {RunStatus(s) for s in status}
            ids = self._store.index.run_ids(statuses)
        else:
            ids = {name for name in os.listdir(self._store.runs_dir) if not name.startswith(".")}
        keyed = [(self._order_key(i), i) for i in ids]
        if cursor is not None:
            validate_id(cursor, "cursor")
            after = self._order_key(cursor, strict=True)
            keyed = [item for item in keyed if (item[0] < after if newest_first else item[0] > after)]
        found: list[Run] = []
        for _, run_id in sorted(keyed, reverse=newest_first):
            try:
                run = self._store.run(run_id)
            except (NotFoundError, InvalidIdError):
                continue  # being created, or not a run folder
            except CorruptDataError as exc:
                log.warning("skipping run %s in listing: %s", run_id, exc)
                continue
            if statuses is not None and run.status not in statuses:
                continue  # index marker ahead of or behind the view
            if workflow_name is not None and run.workflow_name != workflow_name:
                continue
            found.append(run if resolve_data else run.evolve(input=None, output=None))
            if len(found) > limit:
                break
        more = len(found) > limit
        page = found[:limit]
        return Page(page, page[-1].run_id if more else None)

    def _order_key(self, run_id: str, *, strict: bool = False) -> tuple[str, str]:
        """(creation time as 10 sortable characters, run id). `strict`: InvalidIdError for an unknown run."""
        if _ULID_RUN.fullmatch(run_id):
            return run_id[5:15], run_id
        created = self._created.get(run_id)
        if created is None:
            try:
                at = self._store.run(run_id).created_at
            except (NotFoundError, InvalidIdError, CorruptDataError):
                if strict:
                    raise InvalidIdError(f"invalid cursor {run_id!r}: no such run") from None
                return "", run_id  # unreadable: listed last (and skipped, with a warning, if it stays so)
            created = _time_key(int(at.timestamp() * 1000)) if at is not None else ""
            self._created[run_id] = created
        return created, run_id


_ULID_RUN = re.compile(r"wrun_[0-9A-HJKMNP-TV-Z]{26}(?:_[A-Za-z0-9_-]*)?")  # a suffix (priority) keeps the time
_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def _time_key(ms: int) -> str:
    """Milliseconds since the epoch as the 10 characters a ULID starts with (so both sort together)."""
    return "".join(_CROCKFORD[(ms >> shift) & 31] for shift in range(45, -5, -5))


@storage_boundary
class LocalSteps(StepsStorage):
    def __init__(self, store: RunStore) -> None:
        self._read = _Reader(store)

    async def get(self, run_id: str, step_id: str, *, resolve_data: bool = True) -> Step:
        """The step. NotFoundError if the run or step is unknown."""
        step = self._read.entity(run_id, "steps", step_id, Step)
        return step if resolve_data else step.evolve(input=None, output=None)

    async def list(
        self, run_id: str, *, limit: int = 1000, cursor: str | None = None, resolve_data: bool = True
    ) -> Page[Step]:
        """The run's steps in creation order; the cursor is the created_seq of the last one."""
        _check_limit(limit)
        items = [(("", seq), s if resolve_data else s.evolve(input=None, output=None))
                 for seq, s in self._read.entities(run_id, "steps", Step)]
        return _page(items, _seq_cursor(cursor), limit, lambda key: str(key[1]))


@storage_boundary
class LocalEvents(EventsStorage):
    def __init__(self, store: RunStore) -> None:
        self._store = store

    async def create(self, run_id: str, event: Event) -> EventResult:
        """Validate and record one event atomically, then update the materialized entities."""
        return (await self._store.commit_async(run_id, [event]))[0]

    async def create_batch(
        self, run_id: str, events: Sequence[Event], *, skip_conflicts: bool = False, expected_seq: int | None = None
    ) -> list[EventResult]:
        """Record several events of one run with one atomic append (all or none)."""
        return await self._store.commit_async(run_id, events, skip_conflicts=skip_conflicts, expected_seq=expected_seq)

    async def list(
        self, run_id: str, *, after_seq: int = -1, limit: int | None = None, resolve_data: bool = True
    ) -> list[Event]:
        """The run's events with seq > after_seq, oldest first. NotFoundError for an unknown run."""
        start = max(after_seq + 1, 0)
        stop = None if limit is None else start + max(limit, 0)
        data, spans, path = self._store.read_lines(run_id, start, stop)
        events = [parse_line(data, span, path, start + i + 1) for i, span in enumerate(spans)]
        return events if resolve_data else [without_payloads(e) for e in events]

    async def list_by_correlation_id(self, run_id: str, correlation_id: str) -> list[Event]:
        """The run's events for one step, hook or wait, oldest first."""
        validate_id(correlation_id, "correlation id")
        data, spans, path = self._store.read_log(run_id)
        needle = b'"correlation_id":"%s"' % correlation_id.encode()
        events = []
        for i, (start, end) in enumerate(spans):
            if data.find(needle, start, end) >= 0:
                event = parse_line(data, (start, end), path, i + 1)
                if event.correlation_id == correlation_id:
                    events.append(event)
        return events

    async def wait(self, run_id: str, *, after_seq: int, timeout: float | None) -> bool:
        """Block until the log holds an event with seq > after_seq (True) or timeout (False)."""
        validate_id(run_id, "run id")
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._store.notifier.subscribe(run_channel(run_id)) as sub:
            while True:
                if self._store.event_count(run_id) > after_seq + 1:
                    return True
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                # Look again at least every second, even if a wake-up was lost (a writer killed
                # between its commit and its notification).
                await sub.wait(1.0 if remaining is None else min(remaining, 1.0))


@storage_boundary
class LocalHooks(HooksStorage):
    def __init__(self, store: RunStore) -> None:
        self._store = store
        self._read = _Reader(store)

    async def get(self, run_id: str, hook_id: str) -> Hook:
        """The hook. NotFoundError if unknown."""
        return self._read.entity(run_id, "hooks", hook_id, Hook)

    async def get_by_token(self, token: str) -> Hook:
        """The live hook holding `token`. NotFoundError if no live hook holds it."""
        if not isinstance(token, str) or not token:
            raise InvalidIdError(f"invalid hook token {token!r}: use a non-empty string")
        try:
            entry = self._store.tokens.read(token)
        except CorruptDataError as exc:
            log.warning("hook token file damaged, rebuilding it from the logs: %s", exc)
            self._store.repair_token(token)
            try:
                entry = self._store.tokens.read(token)
            except CorruptDataError:
                raise NotFoundError("no live hook holds this token (its file is damaged and being repaired)") from None
        if entry is not None and entry.token == token:
            try:
                found = self._store.entity(entry.run_id, "hooks", entry.hook_id)
            except (NotFoundError, InvalidIdError):
                found = None
            hook = found[1] if found is not None else None
            if hook is not None and hook.status == HookStatus.ACTIVE and hook.token == token:
                return hook
        raise NotFoundError("no live hook holds this token")

    async def list(
        self, *, run_id: str | None = None, status: HookStatus | None = None, limit: int = 1000,
        cursor: str | None = None,
    ) -> Page[Hook]:
        """Hooks of one run (creation order), or all live hooks when run_id is None."""
        _check_limit(limit)
        if run_id is not None:
            items = [(("", seq), h) for seq, h in self._read.entities(run_id, "hooks", Hook)
                     if status is None or h.status == status]
            return _page(items, _seq_cursor(cursor), limit, lambda key: str(key[1]))
        found: list[tuple[tuple[str, int], Hook]] = []
        if status in (None, HookStatus.ACTIVE):
            for entry in self._store.tokens.entries():
                try:
                    item = self._store.entity(entry.run_id, "hooks", entry.hook_id)
                except (NotFoundError, InvalidIdError):
                    continue
                except CorruptDataError as exc:
                    log.warning("skipping hook in listing: %s", exc)
                    continue
                if item is None:
                    continue
                seq, hook = item  # type: ignore[assignment]
                if hook.status == HookStatus.ACTIVE and hook.token == entry.token:
                    found.append(((hook.run_id, seq), hook))
        else:
            for rid in sorted(os.listdir(self._store.runs_dir)):
                try:
                    found.extend(((rid, seq), h) for seq, h in self._read.entities(rid, "hooks", Hook)
                                 if h.status == status)
                except (NotFoundError, InvalidIdError):
                    continue
        found.sort(key=lambda item: item[0])
        return _page(found, _run_seq_cursor(cursor), limit, lambda key: f"{key[0]}:{key[1]}")


@storage_boundary
class LocalWaits(WaitsStorage):
    def __init__(self, store: RunStore) -> None:
        self._store = store
        self._read = _Reader(store)

    async def list(
        self, *, run_id: str | None = None, status: WaitStatus | None = None, limit: int = 1000,
        cursor: str | None = None,
    ) -> Page[Wait]:
        """Waits of one run (creation order), or all waiting ones (of active runs) when run_id is None."""
        _check_limit(limit)
        if run_id is not None:
            items = [(("", seq), w) for seq, w in self._read.entities(run_id, "waits", Wait)
                     if status is None or w.status == status]
            return _page(items, _seq_cursor(cursor), limit, lambda key: str(key[1]))
        wanted = WaitStatus.WAITING if status is None else status
        if wanted == WaitStatus.WAITING:
            run_ids = sorted(self._store.index.run_ids(_ACTIVE_RUN))
        else:
            run_ids = sorted(os.listdir(self._store.runs_dir))
        found: list[tuple[tuple[str, int], Wait]] = []
        for rid in run_ids:
            try:
                found.extend(((rid, seq), w) for seq, w in self._read.entities(rid, "waits", Wait)
                             if w.status == wanted)
            except (NotFoundError, InvalidIdError):
                continue
        return _page(found, _run_seq_cursor(cursor), limit, lambda key: f"{key[0]}:{key[1]}")
