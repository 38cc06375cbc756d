"""`wf inspect runs|steps|events|hooks|waits`: filtered, paginated listings, newest first.

Runs page by run id (the World's own cursor). Steps, events, hooks and waits are listed
run by run, newest run first and, within a run, newest first; their cursor is
`<run_id>:<n>`: carry on in run `run_id` after its first `n` items (in that order).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from ..runtime.entities import EventType, HookStatus, RunStatus, StepStatus, WaitStatus
from ..runtime.errors import InvalidIdError, NotFoundError
from ..runtime.ids import validate_id
from ..runtime.run_search import RunFilter, count_by_status, find_runs
from ..runtime.world import World
from .common import fail
from .run_story import all_pages, checked_run_id

KINDS = ("runs", "steps", "events", "hooks", "waits")

_STATUSES: dict[str, tuple[str, ...]] = {
    "runs": tuple(RunStatus),
    "steps": tuple(StepStatus),
    "hooks": tuple(HookStatus),
    "waits": tuple(WaitStatus),
}
_ACTIVE = (RunStatus.PENDING, RunStatus.RUNNING)


@dataclass(slots=True)
class Listing:
    kind: str
    items: list[Any] = field(default_factory=list)
    next_cursor: str | None = None
    #: Runs per status matching the filters (runs listings only).
    counts: dict[str, int] | None = None


@dataclass(frozen=True, slots=True)
class Filters:
    status: str | None = None
    workflow: str | None = None
    run: str | None = None
    event_type: str | None = None
    #: Runs only: time range, text search, tags.
    runs: RunFilter = field(default_factory=RunFilter)


def check_filters(kind: str, filters: Filters) -> None:
    """Exit 2 with one line for a filter that cannot apply to `kind`."""
    if filters.status is not None:
        allowed = _STATUSES.get(kind)
        if allowed is None:
            fail(f"--status does not apply to {kind}; use --type to choose event types")
        if filters.status not in allowed:
            fail(f"unknown {kind[:-1]} status {filters.status!r}; choose one of {', '.join(allowed)}")
    if filters.event_type is not None:
        if kind != "events":
            fail("--type applies to `wf inspect events` only")
        if filters.event_type not in tuple(EventType):
            fail(f"unknown event type {filters.event_type!r}; choose one of {', '.join(EventType)}")
    if filters.run is not None:
        if kind == "runs":
            fail("--run does not apply to `wf inspect runs`; use `wf inspect RUN_ID`")
        checked_run_id(filters.run)


async def list_kind(world: World, kind: str, filters: Filters, limit: int, cursor: str | None) -> Listing:
    """One page of `kind`, newest first."""
    check_filters(kind, filters)
    if limit < 1:
        fail(f"--limit must be at least 1, not {limit}")
    if kind == "runs":
        return await _list_runs(world, filters, limit, cursor)
    return await _list_per_run(world, kind, filters, limit, cursor)


async def _list_runs(world: World, filters: Filters, limit: int, cursor: str | None) -> Listing:
    bad_cursor = f"invalid cursor {cursor!r} (pass the next cursor a previous listing printed)"
    if cursor is not None:
        try:
            validate_id(cursor, "cursor")
        except InvalidIdError:
            fail(bad_cursor)
    try:
        found = await find_runs(world, status=RunStatus(filters.status) if filters.status else None,
                                workflow_name=filters.workflow, run_filter=filters.runs, limit=limit, cursor=cursor)
    except InvalidIdError:
        fail(bad_cursor)
    counts = await count_by_status(world, workflow_name=filters.workflow, run_filter=filters.runs)
    return Listing("runs", found.runs, found.next_cursor, counts)


def _parse_cursor(cursor: str) -> tuple[str, int]:
    run_id, _, n = cursor.rpartition(":")
    try:
        validate_id(run_id, "cursor")
        skip = int(n)
        if skip < 0:
            raise ValueError(n)
    except (InvalidIdError, ValueError):
        fail(f"invalid cursor {cursor!r} (pass the next cursor a previous listing printed)")
    return run_id, skip


async def _run_ids(world: World, kind: str, filters: Filters, after: str | None) -> AsyncIterator[str]:
    """Runs to look in, newest first, strictly older than `after`."""
    if filters.run is not None:
        if after is None:
            yield filters.run
        return
    # Live hooks and waiting waits only exist in active runs: no need to read the others.
    only_active = (kind == "hooks" and filters.status == HookStatus.ACTIVE) or (
        kind == "waits" and filters.status == WaitStatus.WAITING)
    cursor = after
    while True:
        page = await world.runs.list(status=_ACTIVE if only_active else None, workflow_name=filters.workflow,
                                     limit=200, cursor=cursor, resolve_data=False)
        for run in page.data:
            yield run.run_id
        if page.next_cursor is None:
            return
        cursor = page.next_cursor


async def _items(world: World, kind: str, run_id: str, filters: Filters) -> list[Any]:
    """The run's items of `kind` matching the filters, newest first."""
    try:
        if kind == "steps":
            items: list[Any] = await all_pages(lambda c: world.steps.list(run_id, cursor=c, resolve_data=False))
        elif kind == "events":
            items = await world.events.list(run_id, resolve_data=False)
        elif kind == "hooks":
            items = await all_pages(lambda c: world.hooks.list(run_id=run_id, cursor=c))
        else:
            items = await all_pages(lambda c: world.waits.list(run_id=run_id, cursor=c))
    except NotFoundError:
        if filters.run is not None:
            fail(f"no run with id {run_id!r}")
        return []  # deleted or half-created meanwhile
    keep: Callable[[Any], bool] = lambda _: True  # noqa: E731
    if filters.status is not None:
        keep = lambda item: str(item.status) == filters.status  # noqa: E731
    elif filters.event_type is not None:
        keep = lambda item: str(item.event_type) == filters.event_type  # noqa: E731
    return [item for item in reversed(items) if keep(item)]


async def _list_per_run(world: World, kind: str, filters: Filters, limit: int, cursor: str | None) -> Listing:
    listing = Listing(kind)
    start_run, skip = _parse_cursor(cursor) if cursor is not None else (None, 0)
    if start_run is not None and filters.run is not None and start_run != filters.run:
        fail(f"the cursor {cursor!r} belongs to another run than --run {filters.run}")
    if start_run is not None:
        runs = _chain(start_run, _run_ids(world, kind, filters, start_run))
    else:
        runs = _run_ids(world, kind, filters, None)
    async for run_id in runs:
        items = await _items(world, kind, run_id, filters)
        n = skip if run_id == start_run else 0
        for item in items[n:]:
            if len(listing.items) == limit:
                listing.next_cursor = f"{run_id}:{n}"
                return listing
            listing.items.append(item)
            n += 1
    return listing


async def _chain(first: str, rest: AsyncIterator[str]) -> AsyncIterator[str]:
    yield first
    async for item in rest:
        yield item
