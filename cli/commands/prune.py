"""`wf prune --older-than 30d [--status ...] [--workflow NAME] [--dry-run]` (runtime/retention.py)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import typer

from ...runtime.durations import parse_duration
from ...runtime.retention import PruneReport, prune_runs
from ...runtime.world import World
from ..common import DATA_DIR, WORLD, console, fail, handle_errors, open_world, print_json, run_async


def register(app: typer.Typer) -> None:
    """Add `wf prune` to the app."""
    app.command("prune")(prune)


@handle_errors
def prune(
    older_than: str = typer.Option(..., "--older-than",
                                   help="Delete runs that ended longer ago than this: 30d, 12h, 0."),
    status: str = typer.Option("completed,failed,cancelled", "--status",
                               help="Comma-separated ended statuses to delete."),
    workflow: str = typer.Option(None, "--workflow", help="Only runs of this workflow (its full name)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="List what would be deleted; delete nothing."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
    data_dir: Path = DATA_DIR,
    world_url: str = WORLD,
) -> None:
    """Delete ended runs and everything of theirs (log, steps, streams, hook tokens, queue messages).

    Never touches a pending or running run; safe while workers run.
    """
    try:
        age = parse_duration(older_than)
    except ValueError as exc:
        fail(str(exc))
    statuses = [s.strip() for s in status.split(",") if s.strip()]
    bad = [s for s in statuses if s not in ("completed", "failed", "cancelled")]
    if bad or not statuses:
        fail(f"--status takes completed, failed and/or cancelled, not {', '.join(bad) or 'nothing'}")
    world = open_world(data_dir, world_url, create=False)
    report = run_async(_prune(world, age, statuses, workflow, dry_run))
    if as_json:
        print_json({"dry_run": dry_run, "run_ids": report.run_ids, "count": len(report.run_ids),
                    "skipped": report.skipped})
        return
    verb = "would delete" if dry_run else "deleted"
    for run_id in report.run_ids if dry_run else []:
        console.print(run_id, markup=False)
    line = f"{verb} {len(report.run_ids)} run(s) that ended more than {older_than} ago"
    if report.skipped:
        line += f" ({report.skipped} skipped: active again or gone meanwhile)"
    console.print(line, markup=False)


async def _prune(world: World, age: timedelta, statuses: list[str], workflow: str | None, dry_run: bool) -> PruneReport:
    try:
        if "prune" not in world.capabilities:
            fail(f"{type(world).__name__} cannot delete runs (the 'prune' capability)")
        return await prune_runs(world, older_than=age, statuses=statuses, workflow=workflow,
                                dry_run=dry_run)
    finally:
        await world.close()
