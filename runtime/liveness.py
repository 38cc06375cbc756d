"""What keeps a run moving, and finding the runs that nothing will ever drive again.

An active run (pending or running) is driven by one of: a workflow message for it in any
state (ready, delayed for a timer, leased by the worker driving it); a step message of
it (whoever handles it enqueues the workflow message); or, when it awaits nothing else, a
live hook whose token still reaches it (resuming the hook enqueues the run). A run with
none of these is stuck; enqueueing its workflow message is always safe (replay is
idempotent). `wf doctor` reports such runs; every worker sweeps for them now and then,
so a wake-up lost to a crash between recording an event and enqueueing it heals itself.
"""

from __future__ import annotations

from dataclasses import dataclass

from .entities import HookStatus, RunStatus, WaitStatus
from .errors import NotFoundError, WfError
from .messages import enqueue_workflow
from .state_machine import RunState, fold
from .world import STEP_QUEUE, WORKFLOW_QUEUE, World


@dataclass(slots=True)
class QueuedRuns:
    """The runs that have a workflow message, and those that have a step message, queued."""

    workflow: set[str]
    steps: set[str]

    def drives(self, run_id: str) -> bool:
        return run_id in self.workflow or run_id in self.steps


async def queued_runs(world: World) -> QueuedRuns:
    """Which runs have messages in the queue right now."""
    messages = await world.queue.list()
    workflow = {str(m.payload.get("run_id")) for m in messages if m.queue == WORKFLOW_QUEUE}
    steps = {str(m.payload.get("run_id")) for m in messages if m.queue == STEP_QUEUE}
    return QueuedRuns(workflow, steps)


async def stuck_reason(world: World, run_id: str, state: RunState, queued: QueuedRuns) -> str | None:
    """Why nothing will ever drive this active run (None if something will)."""
    run = state.run
    assert run is not None
    if run.status.terminal or queued.drives(run_id):
        return None
    unfinished = sorted(s.step_id for s in state.steps.values() if not s.status.terminal)
    waiting = sorted(state.waits.values(), key=lambda w: w.resume_at)
    waiting = [w for w in waiting if w.status == WaitStatus.WAITING]
    hooks = [h for h in state.hooks.values() if h.status == HookStatus.ACTIVE]
    if unfinished:
        return f"{run.status} run: step {', '.join(unfinished)} unfinished, but no step or workflow message queued"
    if waiting:
        return (f"sleeping until {waiting[0].resume_at.isoformat(timespec='seconds')}, "
                "but no delayed workflow message will wake it")
    if hooks:
        dead = []
        for hook in hooks:
            try:
                live = await world.hooks.get_by_token(hook.token)
            except (NotFoundError, WfError):
                live = None
            if live is None or (live.run_id, live.hook_id) != (run_id, hook.hook_id):
                dead.append(hook.hook_id)
        if not dead:
            return None  # suspended on a live hook: resuming it enqueues the run
        return f"waits on hook {', '.join(dead)} whose token no longer reaches it, and no workflow message"
    return f"{run.status} run with no workflow message queued: no worker will pick it up"




async def sweep(world: World) -> list[str]:
    """Enqueue the workflow message of every active run that nothing drives; return their ids."""

    queued = await queued_runs(world)
    woken: list[str] = []
    cursor = None
    while True:
        page = await world.runs.list(status=[RunStatus.PENDING, RunStatus.RUNNING], limit=500, cursor=cursor,
                                     resolve_data=False)
        for run in page.data:
            if queued.drives(run.run_id):
                continue
            try:
                state = fold(await world.events.list(run.run_id, resolve_data=False))
            except WfError:
                continue
            if state.run is None or await stuck_reason(world, run.run_id, state, queued) is None:
                continue
            await enqueue_workflow(world, run.run_id)
            woken.append(run.run_id)
        if page.next_cursor is None:
            return woken
        cursor = page.next_cursor
