"""The runs page's data: a page of runs for filters and a search, counts per status, change detection.

Every request reads at most one World page for plain listings; filters the World cannot
apply (time range, text search: `wf.runtime.run_search.RunFilter`) scan pages within a
budget and hand back a cursor to go on. A cursor is the id of the last run shown, which the
World's listing takes as its own cursor.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from ..runtime.entities import Run, RunStatus
from ..runtime.errors import InvalidIdError, NotFoundError
from ..runtime.ids import validate_id
from ..runtime.run_search import RunFilter, parse_tag_filters
from ..runtime.world import World
from .limits import HttpError

PAGE_SIZE = 50
MAX_PAGE = 200
#: A search or time-filtered listing reads at most this many runs, or World pages for this long, per request
#: (then it answers with what it found and a cursor to search on): every runs page stays within ~200 ms.
SCAN_RUNS = 5000
SCAN_SECONDS = 0.12
#: Runs per World page while scanning.
SCAN_PAGE = 200
STATUSES = [s.value for s in RunStatus]


@dataclass
class RunsQuery:
    status: str | None = None
    workflow: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    q: str | None = None
    cursor: str | None = None
    limit: int = PAGE_SIZE
    #: `KEY=VALUE` or `KEY` (any value), as `wf inspect runs --tag` takes them.
    tags: list[str] = field(default_factory=list)

    @classmethod
    def from_params(cls, params: Any) -> RunsQuery:
        """From query parameters; HttpError 400 naming the bad one."""
        status = params.get("status") or None
        if status is not None and status not in STATUSES:
            raise HttpError(400, f"status must be one of {', '.join(STATUSES)}")
        try:
            limit = int(params.get("limit") or PAGE_SIZE)
        except ValueError:
            raise HttpError(400, "limit must be a number") from None
        if not 1 <= limit <= MAX_PAGE:
            raise HttpError(400, f"limit must be between 1 and {MAX_PAGE}")
        q = (params.get("q") or "").strip() or None
        cursor = params.get("cursor") or None
        if cursor is not None:
            try:
                validate_id(cursor, "cursor")
            except InvalidIdError:
                raise HttpError(400, "invalid cursor") from None
        tags = [t.strip() for t in params.getlist("tag") if t.strip()] if hasattr(params, "getlist") else []
        try:
            parse_tag_filters(tags)
        except ValueError as exc:
            raise HttpError(400, str(exc).replace("--tag", "tag")) from None
        return cls(status, params.get("workflow") or None, _time(params, "since"), _time(params, "until"),
                   q, cursor, limit, tags)

    @property
    def run_filter(self) -> RunFilter:
        return RunFilter(since=self.since, until=self.until, search=self.q, tags=parse_tag_filters(self.tags))

    @property
    def plain(self) -> bool:
        """Whether the World's own listing answers it (no time range, no search)."""
        return self.since is None and self.until is None and self.q is None and not self.tags


def _time(params: Any, name: str) -> datetime | None:
    text = params.get(name)
    if not text:
        return None
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise HttpError(400, f"{name} must be an ISO time like 2026-01-31T12:00") from None
    return value if value.tzinfo is not None else value.astimezone()


@dataclass
class RunsPage:
    runs: list[Run]
    next_cursor: str | None
    scanned: int = 0
    #: True when the scan budget ran out before the page filled (the cursor goes on).
    partial: bool = False


async def list_runs(world: World, query: RunsQuery) -> RunsPage:
    """One page of runs, newest first."""
    status = RunStatus(query.status) if query.status else None
    if query.q and query.cursor is None:
        exact = await _by_id(world, query.q)
        if exact is not None:
            return RunsPage([exact], None, 1)
    try:
        if query.plain:
            page = await world.runs.list(status=status, workflow_name=query.workflow, limit=query.limit,
                                         cursor=query.cursor, resolve_data=False)
            return RunsPage(page.data, page.next_cursor, len(page.data))
        return await _scan(world, query, status)
    except InvalidIdError:
        raise HttpError(400, "invalid cursor (it names no run)") from None


async def _by_id(world: World, text: str) -> Run | None:
    try:
        validate_id(text, "run id")
        return await world.runs.get(text, resolve_data=False)
    except (InvalidIdError, NotFoundError):
        return None


async def _scan(world: World, query: RunsQuery, status: RunStatus | None) -> RunsPage:
    run_filter = query.run_filter
    found: list[Run] = []
    scanned = 0
    cursor = query.cursor
    deadline = time.monotonic() + SCAN_SECONDS
    while True:
        page = await world.runs.list(status=status, workflow_name=query.workflow, limit=SCAN_PAGE, cursor=cursor,
                                     resolve_data=run_filter.needs_data)
        for index, run in enumerate(page.data):
            scanned += 1
            if run_filter.too_old(run):
                return RunsPage(found, None, scanned)  # newest first: nothing older can match
            if not run_filter.matches(run):
                continue
            found.append(run.evolve(input=None, output=None))
            if len(found) == query.limit:
                more = index + 1 < len(page.data) or page.next_cursor is not None
                return RunsPage(found, run.run_id if more else None, scanned)
        if page.next_cursor is None:
            return RunsPage(found, None, scanned)
        cursor = page.next_cursor
        if scanned >= SCAN_RUNS or time.monotonic() > deadline:
            return RunsPage(found, cursor, scanned, partial=True)


@dataclass
class StatusCounts:
    """Runs per status, from the World's `count_runs()` when it has one, else counted in the background.

    Counting by listing reads every run, so it never runs on a request: a request gets the
    last counts (or None at first) and, when they are older than `max_age`, starts a recount.
    Between recounts, `observe` keeps them current from what the runs watcher sees change
    among the newest runs (new runs, status changes).
    """

    max_age: float = 120.0
    counts: dict[str, int] | None = None
    counted_at: float = 0.0
    _task: asyncio.Task[None] | None = field(default=None, repr=False)

    async def get(self, world: World) -> dict[str, int] | None:
        direct = getattr(world, "count_runs", None)
        if callable(direct):
            result = await direct()
            return {str(k): int(v) for k, v in result.items()}
        if time.monotonic() - self.counted_at > self.max_age and (self._task is None or self._task.done()):
            self._task = asyncio.create_task(self._recount(world))
        return self.counts

    def observe(self, before: list[Run], after: list[Run]) -> None:
        """Move the counts by the difference between two readings of the newest runs."""
        if self.counts is None:
            return
        old = {r.run_id: str(r.status) for r in before}
        newest = max((r.created_at for r in before if r.created_at is not None), default=None)
        for run in after:
            status = str(run.status)
            was = old.get(run.run_id)
            if was is not None and was != status:
                self.counts[was] = max(0, self.counts.get(was, 0) - 1)
                self.counts[status] = self.counts.get(status, 0) + 1
            elif was is None and (newest is None or (run.created_at is not None and run.created_at > newest)):
                self.counts[status] = self.counts.get(status, 0) + 1

    async def _recount(self, world: World) -> None:
        counts: dict[str, int] = {}
        with contextlib.suppress(Exception):
            for status in RunStatus:
                total, cursor = 0, None
                while True:  # pages, yielding between them: requests are served meanwhile
                    page = await world.runs.list(status=status, limit=500, cursor=cursor, resolve_data=False)
                    total += len(page.data)
                    if page.next_cursor is None:
                        break
                    cursor = page.next_cursor
                    await asyncio.sleep(0)
                counts[status.value] = total
            self.counts = counts
        self.counted_at = time.monotonic()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
