"""Retention: removing ended runs older than a cutoff (`wf prune`, and workers' `WF_RETENTION`).

`prune_runs` pages through the ended runs, oldest first, and asks the World to delete each one
that ended before the cutoff (`World.delete_run`: log, entities, streams, tokens, index
entries, queue messages). The World refuses an active run, so a run that a cancel or a fork
made active meanwhile is never touched; pruning is safe while workers run.

A worker started with a retention period (`Worker(retention=...)`, or `WF_RETENTION=30d` in
its environment) prunes in the background every PRUNE_EVERY seconds (`prune_every`: sooner for
short periods; the first pass within a minute of its start), and clears the presence files of
workers that died without retiring.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from .durations import parse_duration
from .entities import RunStatus, utcnow
from .errors import EntityConflictError, NotFoundError, WorldError
from .world import World

log = logging.getLogger("wf.retention")

ENDED = (RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELLED)
#: A worker with a retention period prunes this often (more often for a retention shorter than
#: ten times this: a tenth of it, at least every second).
PRUNE_EVERY = 600.0


def prune_every(retention: timedelta) -> float:
    """Seconds between a worker's background prune passes for this retention period."""
    return max(min(PRUNE_EVERY, retention.total_seconds() / 10), 1.0)
#: Runs deleted per background pass at most (the next pass goes on).
PRUNE_BATCH = 5000


@dataclass
class PruneReport:
    """What `prune_runs` did (or, with dry_run, would do)."""

    run_ids: list[str] = field(default_factory=list)
    #: Runs that became active or went away between the listing and their deletion.
    skipped: int = 0
    dry_run: bool = False


def retention_from_env() -> timedelta | None:
    """`WF_RETENTION` ("30d", "12h"...), or None when unset or "0"; ValueError for a bad value."""
    value = os.environ.get("WF_RETENTION", "").strip()
    if not value or value == "0":
        return None
    return parse_duration(value)


def _statuses(statuses: Sequence[RunStatus | str] | None) -> list[RunStatus]:
    chosen = [RunStatus(s) for s in statuses] if statuses else list(ENDED)
    for status in chosen:
        if not status.terminal:
            raise ValueError(f"only ended runs can be pruned, not {status} ones (completed, failed, cancelled)")
    return chosen


async def prune_runs(world: World, *, older_than: timedelta, statuses: Sequence[RunStatus | str] | None = None,
                     workflow: str | None = None, dry_run: bool = False, limit: int | None = None,
                     now: datetime | None = None) -> PruneReport:
    """Delete the ended runs (of `statuses`, of `workflow`) that ended more than `older_than` ago."""
    if "prune" not in world.capabilities:
        raise WorldError(f"{type(world).__name__} cannot delete runs (the 'prune' capability)")
    chosen = _statuses(statuses)
    cutoff = (now or utcnow()) - older_than
    report = PruneReport(dry_run=dry_run)
    cursor: str | None = None
    while limit is None or len(report.run_ids) < limit:
        page = await world.runs.list(status=chosen, workflow_name=workflow, limit=500, cursor=cursor,
                                     resolve_data=False, newest_first=False)
        for run in page.data:  # (not stopping at the first young run: idempotent run ids are not time-ordered)
            ended = run.completed_at or run.updated_at
            if ended is None or ended > cutoff or not run.status.terminal:
                continue
            if not dry_run:
                try:
                    if not await world.delete_run(run.run_id):
                        report.skipped += 1
                        continue
                except (EntityConflictError, NotFoundError):
                    report.skipped += 1
                    continue
            report.run_ids.append(run.run_id)
            if limit is not None and len(report.run_ids) >= limit:
                return report
        if page.next_cursor is None:
            return report
        cursor = page.next_cursor
    return report


async def maintain(world: World, retention: timedelta) -> int:
    """One background pass: prune ended runs older than `retention`, forget dead workers; runs deleted."""
    deleted = 0
    try:
        if "prune" in world.capabilities:
            report = await prune_runs(world, older_than=retention, limit=PRUNE_BATCH)
            deleted = len(report.run_ids)
            if deleted:
                log.info("retention: deleted %d run(s) that ended more than %s ago", deleted, retention)
        await world.forget_dead_workers()
    except WorldError as exc:
        log.warning("retention pass failed: %s", exc)
    return deleted
