"""Finding runs: a time range, a text search, tags, and counts per status (`wf inspect runs`).

Runs are read newest first through the World's listing; the filters the World does not
apply are applied here, page after page. The next cursor is the id of the last run returned,
which the World's listing takes as its own cursor.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from .durations import parse_duration
from .entities import Run, RunStatus
from .serialization import deserialize
from .world import World

#: Runs read per World page while filtering.
SCAN_PAGE = 200


def parse_when(text: str, now: datetime | None = None) -> datetime:
    """A point in time: an ISO date or time (local time unless it says otherwise), or a duration ago (`2h`, `30m`).

    ValueError with a reason for anything else.
    """
    now = now or datetime.now(UTC)
    text = text.strip()
    try:
        return now - parse_duration(text)
    except ValueError:
        pass
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{text!r} is neither a duration (2h, 30m, 1d) nor a time (2026-01-31T12:00)") from None
    return value if value.tzinfo is not None else value.astimezone()


def parse_tag_filters(pairs: list[str]) -> dict[str, str | None]:
    """`KEY=VALUE` (that value) or `KEY` (any value) filters; ValueError for an empty key."""
    tags: dict[str, str | None] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not key.strip():
            raise ValueError(f"--tag takes KEY=VALUE or KEY, not {pair!r}")
        tags[key.strip()] = value if sep else None
    return tags


@dataclass(frozen=True)
class RunFilter:
    """What `runs.list` cannot filter by itself."""

    since: datetime | None = None
    until: datetime | None = None
    search: str | None = None
    tags: dict[str, str | None] = field(default_factory=dict)

    @property
    def needs_data(self) -> bool:
        return self.search is not None

    @property
    def empty(self) -> bool:
        return self.since is None and self.until is None and self.search is None and not self.tags

    def too_old(self, run: Run) -> bool:
        """Created before `since`: so is every run after it in a newest-first listing."""
        return self.since is not None and run.created_at is not None and run.created_at < self.since

    def matches(self, run: Run) -> bool:
        if self.too_old(run):
            return False
        if self.until is not None and run.created_at is not None and run.created_at > self.until:
            return False
        run_tags = run.attributes.get("tags") or {}
        for key, value in self.tags.items():
            if key not in run_tags or (value is not None and run_tags[key] != value):
                return False
        return self.search is None or self.search.lower() in searchable_text(run)


def searchable_text(run: Run) -> str:
    """The run's id, workflow, input, output and error as one lower-case text."""
    parts = [run.run_id, run.workflow_name]
    for value in (run.input, run.output):
        if value is not None:
            parts.append(_text(value))
    if run.error:
        parts.append(json.dumps(run.error, default=str, ensure_ascii=False))
    return "\n".join(parts).lower()


def _text(value: Any) -> str:
    with contextlib.suppress(Exception):  # an undecodable payload is searched as stored
        value = deserialize(value)
    if isinstance(value, str):
        return value
    return json.dumps(value, default=repr, ensure_ascii=False)


@dataclass
class FoundRuns:
    runs: list[Run]
    next_cursor: str | None


async def find_runs(world: World, *, status: RunStatus | None = None, workflow_name: str | None = None,
                    run_filter: RunFilter | None = None, limit: int = 20, cursor: str | None = None) -> FoundRuns:
    """One page of runs, newest first, matching the World's filters and `run_filter`."""
    run_filter = run_filter or RunFilter()
    if run_filter.empty:
        page = await world.runs.list(status=status, workflow_name=workflow_name, limit=limit, cursor=cursor,
                                     resolve_data=False)
        return FoundRuns(list(page.data), page.next_cursor)
    found: list[Run] = []
    while True:
        page = await world.runs.list(status=status, workflow_name=workflow_name, limit=SCAN_PAGE, cursor=cursor,
                                     resolve_data=run_filter.needs_data)
        for index, run in enumerate(page.data):
            if run_filter.too_old(run):
                return FoundRuns(found, None)
            if not run_filter.matches(run):
                continue
            found.append(run.evolve(input=None, output=None))
            if len(found) == limit:
                more = index + 1 < len(page.data) or page.next_cursor is not None
                return FoundRuns(found, run.run_id if more else None)
        if page.next_cursor is None:
            return FoundRuns(found, None)
        cursor = page.next_cursor


async def count_by_status(world: World, *, workflow_name: str | None = None,
                          run_filter: RunFilter | None = None) -> dict[str, int]:
    """How many runs (matching the filters) have each status; every status is a key.

    Without filters the World counts (`World.count_runs`: an index where it has one).
    """
    run_filter = run_filter or RunFilter()
    if workflow_name is None and run_filter.empty:
        return {str(status): n for status, n in (await world.count_runs()).items()}
    counts = {status.value: 0 for status in RunStatus}
    cursor = None
    while True:
        page = await world.runs.list(workflow_name=workflow_name, limit=500, cursor=cursor,
                                     resolve_data=run_filter.needs_data)
        for run in page.data:
            if run_filter.too_old(run):
                return counts
            if run_filter.empty or run_filter.matches(run):
                counts[str(run.status)] += 1
        if page.next_cursor is None:
            return counts
        cursor = page.next_cursor
