"""Doctor's checks (`wf doctor`): check that no run can hang and that every view agrees with its log; repair both.

The invariant that keeps a run moving (what check "queue" verifies). A run is *active*
while its log does not end it (pending or running). Something must eventually drive every
active run, and only these can:

1. a **workflow message** for the run (queue "workflow", key `run:<id>`), in any state:
   ready, delayed (a sleep: the worker suspends a run whose code waits on timers by
   enqueueing it delayed until the first one is due) or leased (a worker is driving it,
   inline steps included: the worker holds the message until they are recorded);
2. a **step message** of the run (queue "step"), in any state: whoever handles it records
   the attempt's outcome, or finds the step already finished, and then enqueues the
   run's workflow message (a retry waits as a delayed step message);
3. a **live hook** when nothing else is awaited: the run has no unfinished step, no wait
   still waiting, and at least one active hook whose token the World still resolves to
   it (`hooks.get_by_token`); `wf hook resume` / `resume_hook` record the payload and
   enqueue the workflow message. (A child run's parent waits this way on its child.)

An active run with none of the three is stuck: no process will ever look at it again.
The fix is to enqueue its workflow message (always safe: a worker replays the run and
re-issues whatever it waits for). A limitation: if a process died between recording a
hook payload and enqueueing the run, the run still has its live hook and passes check 3,
yet the payload waits unseen until the next one; `wf recover` re-enqueues every active run.

Check "views": the run, steps, hooks and waits the World serves equal
`state_machine.fold()` of the run's log; a run that disagrees is repaired with
`World.repair_run` (rebuilt from the log, which is the source of truth).

Check "lease": a queue message leased by a holder that is gone (`Queue.dead_leases`). The
queue gives such a message to the next worker that asks, so it is only stuck while no
worker runs; the fix hands it back at once (`Queue.release`).

A finding is reported only if it is still there when looked at again a moment later, so
that a worker's write in progress is not mistaken for damage.
"""

from __future__ import annotations

import asyncio
from dataclasses import asdict, dataclass
from typing import Any

from .entities import Event
from .errors import CorruptDataError, NotFoundError, WfError
from .liveness import QueuedRuns, queued_runs, stuck_reason
from .messages import enqueue_workflow
from .operations import all_pages
from .state_machine import RunState, fold
from .world import STEP_QUEUE, World

#: How long to wait before looking again at a suspect run.
RECHECK_SECONDS = 0.3


@dataclass(slots=True)
class Finding:
    check: str  # "queue", "views", "log" or "lease"
    run_id: str
    problem: str
    fix: str
    message_id: str | None = None
    fixed: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


async def _fold(world: World, run_id: str) -> tuple[list[Event], RunState]:
    events = await world.events.list(run_id)
    return events, fold(events)


def _first_difference(what: str, view: dict[str, Any] | None, truth: dict[str, Any] | None) -> str | None:
    if view == truth:
        return None
    if view is None:
        return f"{what} is in the log but has no view"
    if truth is None:
        return f"{what} has a view but is not in the log"
    for key in truth:
        if view.get(key) != truth.get(key):
            return f"{what}: {key} is {_short(view.get(key))} in its view, {_short(truth.get(key))} in the log"
    return f"{what}: its view differs from the log"


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:39] + "…"


async def _view_problem(world: World, run_id: str, state: RunState) -> str | None:
    """The first way the World's entities of the run differ from the fold of its log."""
    assert state.run is not None
    try:
        run = await world.runs.get(run_id)
    except NotFoundError:
        return "the run is in its log but has no view"
    problem = _first_difference("run", run.to_dict(), state.run.to_dict())
    if problem:
        return problem
    groups = (
        ("step", await all_pages(lambda c: world.steps.list(run_id, cursor=c)), state.steps, "step_id"),
        ("hook", await all_pages(lambda c: world.hooks.list(run_id=run_id, cursor=c)), state.hooks, "hook_id"),
        ("wait", await all_pages(lambda c: world.waits.list(run_id=run_id, cursor=c)), state.waits, "wait_id"),
    )
    for kind, served, truth, key in groups:
        views = {getattr(item, key): item.to_dict() for item in served}
        for entity_id in sorted(set(views) | set(truth)):
            wanted = truth[entity_id].to_dict() if entity_id in truth else None
            problem = _first_difference(f"{kind} {entity_id}", views.get(entity_id), wanted)
            if problem:
                return problem
    return None


async def _check_run(world: World, run_id: str, queued: QueuedRuns) -> list[Finding]:
    try:
        events, state = await _fold(world, run_id)
    except NotFoundError:
        return []  # being created right now, or a stray folder
    except (CorruptDataError, WfError) as exc:
        return [Finding("log", run_id, f"its event log cannot be read: {exc}", "none (restore the log)")]
    if state.run is None:
        return []
    found: list[Finding] = []
    problem = await _view_problem(world, run_id, state)
    if problem and await world.events.list(run_id, after_seq=len(events) - 1, resolve_data=False):
        problem = None  # the log moved while we read: a write in progress, not damage
    if problem:
        found.append(Finding("views", run_id, problem, "rebuild the views from the log"))
    stuck = await stuck_reason(world, run_id, state, queued)
    if stuck:
        found.append(Finding("queue", run_id, stuck, "enqueue its workflow message"))
    return found


async def _lease_findings(world: World) -> list[Finding]:
    found = []
    for message in await world.queue.dead_leases():
        what = "step" if message.queue == STEP_QUEUE else "workflow"
        holder = message.extra.get("holder", "a holder")
        found.append(Finding(
            "lease", str(message.payload.get("run_id", "")),
            f"{what} message {message.message_id} is leased by {holder}, which is dead",
            "give the message back to the queue", message_id=message.message_id))
    return found


async def diagnose(world: World, run_ids: list[str] | None = None) -> list[Finding]:
    """Every problem found twice, RECHECK_SECONDS apart (so that work in progress is not reported)."""
    ids = run_ids if run_ids is not None else await world.run_ids()
    queued = await queued_runs(world)
    suspects: list[Finding] = []
    for run_id in ids:
        suspects.extend(await _check_run(world, run_id, queued))
    suspects.extend(await _lease_findings(world))
    if not suspects:
        return []
    await asyncio.sleep(RECHECK_SECONDS)
    queued = await queued_runs(world)
    again: list[Finding] = []
    for run_id in sorted({f.run_id for f in suspects if f.check != "lease"}):
        again.extend(await _check_run(world, run_id, queued))
    lease_ids = {f.message_id for f in suspects if f.check == "lease"}
    again.extend(f for f in await _lease_findings(world) if f.message_id in lease_ids)
    keys = {(f.check, f.run_id, f.message_id) for f in suspects}
    return [f for f in again if (f.check, f.run_id, f.message_id) in keys]


async def repair(world: World, findings: list[Finding]) -> None:
    """Apply each finding's fix; mark those done `fixed`. Views first: they may change what the queue needs."""
    order = {"views": 0, "lease": 1, "queue": 2, "log": 3}
    for finding in sorted(findings, key=lambda f: order.get(f.check, 9)):
        if finding.check == "views":
            try:
                finding.fixed = await world.repair_run(finding.run_id)
            except NotImplementedError:
                finding.fix = f"none: {type(world).__name__} cannot repair runs"
        elif finding.check == "queue":
            await enqueue_workflow(world, finding.run_id)
            finding.fixed = True
        elif finding.check == "lease" and finding.message_id is not None:
            finding.fixed = await _release_lease(world, finding.message_id)


async def _release_lease(world: World, message_id: str) -> bool:
    for message in await world.queue.dead_leases():
        if message.message_id == message_id:
            await world.queue.release(message)
    return True  # released now, or no longer held by the dead (taken over, acked)
