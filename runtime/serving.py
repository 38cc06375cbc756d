"""Who will run the active runs: notes for `wf doctor`, `wf start` and `wf stream` when nothing will.

A World that tracks worker presence ("workers" capability) says which workers are alive; a
worker that lists the workflows it loaded (`workflows` in its announcement) says which it
serves. These are notes, not damage: nothing is wrong with the runs, they wait for a worker.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

from .entities import Run
from .loader import ORIGIN_ATTRIBUTE
from .operations import active_runs
from .world import World


def code_path(run: Run | None) -> str:
    """Where a run's code is, as a worker command takes it (relative to the current folder when under it)."""
    origin = run.attributes.get(ORIGIN_ATTRIBUTE) if run is not None else None
    file = origin.get("file") if isinstance(origin, dict) else None
    if not isinstance(file, str):
        return "PATH"
    try:
        return str(Path(file).relative_to(Path.cwd()))
    except ValueError:
        return file


def no_worker_hint(run: Run | None = None) -> str:
    """`no worker is running: start ...`, naming the run's code when it is known."""
    where = code_path(run)
    return f"no worker is running: start `wf worker {where}` or `wf dev {where}`"


async def no_live_worker(world: World) -> bool:
    """True when the World tracks workers and none is alive (False when it cannot tell)."""
    return "workers" in world.capabilities and not await world.live_workers()


def served_workflows(workers: list[dict[str, Any]]) -> set[str] | None:
    """The workflows the live workers serve; None if a worker process does not say (it may serve any).

    Workers of one process share its loaded code, so one entry of a process that lists its
    workflows speaks for the others (`wf dev` lists them; its worker may not).
    """
    by_process: dict[str, set[str] | None] = {}
    for worker in workers:
        holder = worker.get("holder")
        process = repr(sorted(holder.items())) if isinstance(holder, dict) else str(worker.get("worker_id"))
        names = worker.get("workflows")
        known = by_process.get(process)
        if isinstance(names, list):
            by_process[process] = (known or set()) | {str(n) for n in names}
        elif process not in by_process:
            by_process[process] = None
    served: set[str] = set()
    for names in by_process.values():
        if names is None:
            return None
        served |= names
    return served


#: A worker whose clock is further than this (seconds) from the World's is named by doctor.
CLOCK_SKEW_NOTE = 1.0


def clock_notes(workers: list[dict[str, Any]]) -> list[str]:
    """One line per live worker whose clock disagrees with the World's by more than CLOCK_SKEW_NOTE."""
    notes = []
    for info in workers:
        skew = info.get("clock_skew")
        if isinstance(skew, int | float) and abs(skew) > CLOCK_SKEW_NOTE:
            who = f"worker {info.get('worker_id') or '?'}"
            notes.append(f"{who}: its clock is {abs(skew):.1f} s {'ahead of' if skew > 0 else 'behind'} the World's; "
                         "events it records carry its clock: fix the machine's time (NTP)")
    return notes


async def worker_notes(world: World) -> list[str]:
    """One line per workflow whose active runs no live worker will run, and per worker whose clock is off."""
    if "workers" not in world.capabilities:
        return []
    skewed = clock_notes(await world.live_workers())
    return skewed + await _unserved_notes(world)


async def _unserved_notes(world: World) -> list[str]:
    active = await active_runs(world)
    if not active:
        return []
    by_workflow: dict[str, list[Run]] = defaultdict(list)
    for run in active:
        by_workflow[run.workflow_name].append(run)
    workers = await world.live_workers()
    notes = []
    if not workers:
        for name, runs in sorted(by_workflow.items()):
            notes.append(f"{len(runs)} active run(s) of {name} wait, and {no_worker_hint(runs[0])}")
        return notes
    served = served_workflows(workers)
    if served is None:
        return []
    for name, runs in sorted(by_workflow.items()):
        if name not in served:
            notes.append(f"no live worker serves workflow {name} ({len(runs)} active run(s), e.g. {runs[0].run_id}): "
                         f"start a worker that loads {code_path(runs[0])}")
    return notes
