"""Operators' actions on runs, through the World contract only: one place for the CLI, the web app and `wf.*`.

cancel (with the children a run still awaits), fork, fail-pending, recover, drain, and the
replay check. Doctor's checks and repairs are in `doctor.py`. Each function takes a started
World and returns plain data; rendering is the caller's business.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from . import telemetry
from .children import notify_parent
from .debugger import ReplayReport, replay_run
from .entities import Event, EventType, Page, Run, RunStatus
from .errors import EntityConflictError, InvalidIdError, NotFoundError, RunExpiredError, RunNotFoundError
from .ids import new_run_id, validate_id
from .messages import enqueue_workflow
from .registry import REGISTRY, Registry, WorkflowFunction
from .world import STEP_QUEUE, World

E = EventType
T = TypeVar("T")
TERMINAL_EVENTS = (E.RUN_COMPLETED, E.RUN_FAILED, E.RUN_CANCELLED)
#: The built-in step that starts a child run (its output is the child's id).
START_CHILD_STEP = "wf.start_child"
#: The error recorded on steps failed by `fail_pending`.
OPERATOR_ERROR_TYPE = "OperatorError"


async def all_pages(fetch: Callable[[str | None], Awaitable[Page[T]]]) -> list[T]:
    """Every item of a paged listing: `fetch(cursor)` returns a Page."""
    items: list[T] = []
    cursor = None
    while True:
        page = await fetch(cursor)
        items.extend(page.data)
        if page.next_cursor is None:
            return items
        cursor = page.next_cursor


async def get_run(world: World, run_id: str, *, resolve_data: bool = True) -> Run:
    """The run; RunNotFoundError (a user's error) for a malformed or unknown id."""
    try:
        validate_id(run_id, "run id")
        return await world.runs.get(run_id, resolve_data=resolve_data)
    except (NotFoundError, InvalidIdError):
        raise RunNotFoundError(f"no run with id {run_id!r}") from None


# --- cancel ---


@dataclass(frozen=True, slots=True)
class CancelResult:
    run_id: str
    #: The run's status after the attempt.
    status: RunStatus
    #: True when this call ended the run; False if it had ended already (see `status`).
    cancelled: bool
    #: Child runs this call cancelled too (at any depth).
    children: list[str] = field(default_factory=list)


async def child_run_ids(world: World, run_id: str) -> list[str]:
    """The runs that `run_id` started as children, in the order it started them."""
    steps = await all_pages(lambda c: world.steps.list(run_id, cursor=c))
    return [str(s.output) for s in steps
            if s.step_name == START_CHILD_STEP and s.status == "completed" and isinstance(s.output, str)]


async def cancel_run(world: World, run_id: str, *, reason: str | None = None, children: bool = True) -> CancelResult:
    """End the run as cancelled, and (with `children`) every child run it still awaits, depth first.

    The run ends first, then its children: a child cancelled first would tell its parent,
    whose code could end it as failed before it is cancelled. In-flight steps may finish;
    pending timers and hooks are dropped. A parent waiting on a cancelled child hears of it.
    Cancelling a run that already ended changes nothing.
    """
    run = await get_run(world, run_id, resolve_data=False)
    done: list[str] = []
    if run.status.terminal:
        return CancelResult(run_id, run.status, False)
    data = {"reason": reason} if reason else {}
    with contextlib.suppress(EntityConflictError, RunExpiredError):  # it ended meanwhile: say how
        result = await world.events.create(run_id, Event(run_id, E.RUN_CANCELLED, data=data))
        if telemetry.ON:
            telemetry.recorded([result])
    run = await world.runs.get(run_id, resolve_data=False)
    if run.status != RunStatus.CANCELLED:
        return CancelResult(run_id, run.status, False, done)
    if children:
        for child_id in await child_run_ids(world, run_id):
            with contextlib.suppress(RunNotFoundError):
                result = await cancel_run(world, child_id, reason=f"its parent {run_id} was cancelled")
                done.extend([child_id] if result.cancelled else [])
                done.extend(result.children)
    await notify_parent(world, run)  # a parent waiting on this child learns it now
    return CancelResult(run_id, run.status, True, done)


# --- fork ---


@dataclass(frozen=True, slots=True)
class ForkResult:
    run_id: str
    forked_from: str
    events_kept: int


def default_fork_point(events: list[Event]) -> int:
    """Just before the first failure (a step's or the run's), else before the run's end."""
    for event in events:
        if event.event_type in (E.STEP_FAILED, E.RUN_FAILED):
            return event.seq
    for event in events:
        if event.event_type in TERMINAL_EVENTS:
            return event.seq
    return len(events)


async def fork_run(world: World, run_id: str, *, at: int | None = None) -> ForkResult:
    """Start a new run that reuses the first `at` events of `run_id` and continues on the current code.

    The fork is a run of its own: created now (not at the original's time), with no
    idempotency key and no parent (a forked child never reports to the original's parent).
    ValueError if `at` is out of range.
    """
    run = await get_run(world, run_id)
    events = await world.events.list(run_id)
    limit = default_fork_point(events) if at is None else at
    if not 1 <= limit <= len(events):
        raise ValueError(f"the fork point must be between 1 and {len(events)} for this run, not {at}")
    kept = [e for e in events[:limit] if e.event_type not in TERMINAL_EVENTS]
    new_id = new_run_id()
    attributes = {k: v for k, v in run.attributes.items()
                  if k not in ("idempotency_key", "parent_run_id", "parent_token")}
    attributes["forked_from"] = {"run_id": run_id, "at": limit}
    first = Event(new_id, E.RUN_CREATED, data={"workflow_name": run.workflow_name, "input": run.input,
                                               "attributes": attributes})
    copies = [Event(new_id, e.event_type, e.correlation_id, e.data, created_at=e.created_at) for e in kept[1:]]
    await world.events.create(new_id, first)
    if copies:
        await world.events.create_batch(new_id, copies)
    await enqueue_workflow(world, new_id)
    return ForkResult(new_id, run_id, len(kept))


# --- replay check ---


def workflow_for(run: Run, registry: Registry = REGISTRY) -> WorkflowFunction:
    """The loaded workflow function of a run; WorkflowNotFoundError if no loaded code defines it."""
    return registry.workflow(run.workflow_name)


async def check_replay(world: World, run_id: str, *, registry: Registry | None = None,
                       until: int | None = None) -> ReplayReport:
    """Replay the run's log against the loaded code (no step runs, nothing is written)."""
    run = await get_run(world, run_id)
    events = await world.events.list(run_id)
    return replay_run(workflow_for(run, registry or REGISTRY), run, events, until=until)


# --- fail-pending ---


@dataclass(frozen=True, slots=True)
class FailedStep:
    run_id: str
    step_id: str
    message_id: str
    #: What happened: "failed", "left alone: running now on a live worker", ...
    outcome: str
    failed: bool


async def _fail_step(world: World, run_id: str, step_id: str) -> str:
    error = {
        "type": OPERATOR_ERROR_TYPE,
        "message": "failed by an operator with `wf queue fail-pending` while it waited in the queue",
        "traceback": "",
    }
    try:
        result = await world.events.create(run_id, Event(run_id, E.STEP_FAILED, correlation_id=step_id,
                                                         data={"error": error}))
    except EntityConflictError:
        return "step had already finished; message removed"
    except RunExpiredError:
        return "run already ended"
    except NotFoundError:
        return "no such step; message removed"
    if telemetry.ON:
        telemetry.recorded([result])
    return "failed"


async def fail_pending(world: World, *, run_id: str | None = None, workflow: str | None = None) -> list[FailedStep]:
    """Fail the queued steps (of one run, of one workflow's runs, or all) so that their runs end instead of hanging.

    Each matching step message that no live worker holds: the step is recorded failed with
    an operator error, the message removed, and the run's workflow message enqueued so that
    the workflow sees the failure. Leased ones are reported as left alone.
    """
    results: list[FailedStep] = []
    names: dict[str, str | None] = {}
    for message in await world.queue.list(STEP_QUEUE):
        rid = str(message.payload.get("run_id", ""))
        sid = str(message.payload.get("step_id", ""))
        if run_id is not None and rid != run_id:
            continue
        if workflow is not None:
            if rid not in names:
                try:
                    names[rid] = (await world.runs.get(rid, resolve_data=False)).workflow_name
                except (NotFoundError, InvalidIdError):
                    names[rid] = None
            if names[rid] != workflow:
                continue
        if message.state == "leased":
            results.append(FailedStep(rid, sid, message.message_id, "left alone: running now on a live worker", False))
            continue
        outcome = await _fail_step(world, rid, sid)
        with contextlib.suppress(NotFoundError):  # taken and finished meanwhile
            await world.queue.delete(message.message_id)
        if outcome != "run already ended":
            await enqueue_workflow(world, rid)
        results.append(FailedStep(rid, sid, message.message_id, outcome, True))
    return results


# --- recover, drain ---


async def active_runs(world: World) -> list[Run]:
    """Every pending or running run, oldest first."""
    return await all_pages(lambda c: world.runs.list(status=[RunStatus.PENDING, RunStatus.RUNNING], cursor=c,
                                                     limit=500, resolve_data=False, newest_first=False))


async def recover_runs(world: World) -> list[Run]:
    """Re-enqueue every active run (idempotent), after the World's own start-up recovery and a check of
    every run's status against its log (`World.verify_runs`); returns them."""
    await world.start()
    await world.verify_runs()
    active = await active_runs(world)
    for run in active:
        await enqueue_workflow(world, run.run_id)
    return active


@dataclass(frozen=True, slots=True)
class DrainResult:
    generation: int
    workers: int
    #: Workers still alive when the wait ended (None when not waited for).
    still_running: int | None


async def drain_workers(world: World, *, wait: float | None = None) -> DrainResult:
    """Ask every running worker to finish its in-flight work and exit; optionally wait for them.

    NotImplementedError from a World that cannot drain (no "drain" capability).
    """
    generation = await world.request_drain()
    workers = await world.live_workers()
    if wait is None:
        return DrainResult(generation, len(workers), None)
    remaining: list[dict[str, Any]] = workers
    deadline = time.monotonic() + wait
    while remaining and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
        remaining = await world.live_workers()
    return DrainResult(generation, len(workers), len(remaining))
