"""The one place that decides whether an event is legal, and what it does to a run's entities.

Every World calls `plan()` under its per-run lock to validate an incoming event against
the run's current state (raising the typed `WorldError` the runtime relies on) and to get
the events actually to record, then `apply()` to fold each recorded event into the state.
`fold()` rebuilds the whole state from a log: materialized entities must always equal it.

Event data, by type (payload values are serialized tagged JSON):

    run_created     {workflow_name, input, attributes?}
    run_started     {} or, for lazy creation, {workflow_name, input, attributes?}
    run_completed   {output}
    run_failed      {error: {type, message, traceback}}
    run_cancelled   {reason?}
    step_created    {step_name, input}                        correlation_id = step id
    step_started    {attempt?}   with `attempt`, only if it is the step's next attempt (else 409)
    step_completed  {result}
    step_retrying   {error, retry_after (ISO datetime)}
    step_failed     {error}
    hook_created    {token, metadata}                         correlation_id = hook id
    hook_received   {payload}
    hook_disposed   {}
    hook_conflict   {token}        recorded instead of hook_created when the token is taken
    wait_created    {resume_at (ISO datetime)}                correlation_id = wait id
    wait_completed  {}
    marker_recorded {kind, name}   a replayed decision (wf.patched); correlation_id = "patch_<name>"
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from .entities import (
    HOOK_EVENTS,
    RUN_EVENTS,
    STEP_EVENTS,
    WAIT_EVENTS,
    Event,
    EventType,
    Hook,
    HookStatus,
    Run,
    RunStatus,
    Step,
    StepStatus,
    Wait,
    WaitStatus,
)
from .errors import EntityConflictError, InvalidIdError, NotFoundError, RunExpiredError, TooEarlyError
from .ids import validate_id

E = EventType


class RunState:
    """A run and everything that hangs off it, as of some point in its log.

    Step, hook and wait events only bump the run's `event_count`/`updated_at`; those are
    applied to `run` when it is read (one copy per read, not one per event).
    """

    __slots__ = ("_count", "_run", "_stale", "_updated", "hooks", "steps", "waits")

    def __init__(self, run: Run | None = None, steps: dict[str, Step] | None = None,
                 hooks: dict[str, Hook] | None = None, waits: dict[str, Wait] | None = None) -> None:
        self._run = run
        self.steps: dict[str, Step] = steps if steps is not None else {}
        self.hooks: dict[str, Hook] = hooks if hooks is not None else {}
        self.waits: dict[str, Wait] = waits if waits is not None else {}
        self._stale = False
        self._count = run.event_count if run is not None else 0
        self._updated = run.updated_at if run is not None else None

    @property
    def run(self) -> Run | None:
        """The run, with its event count and update time as of the last applied event."""
        if self._stale and self._run is not None:
            self._run = self._run.evolve(event_count=self._count, updated_at=self._updated)
            self._stale = False
        return self._run

    @run.setter
    def run(self, value: Run | None) -> None:
        self._run = value
        self._stale = False
        self._count = value.event_count if value is not None else 0
        self._updated = value.updated_at if value is not None else None

    @property
    def base_run(self) -> Run | None:
        """The run as last changed by a run event: status and ids are current, counters may lag."""
        return self._run

    def copy(self) -> RunState:
        state = RunState(self.run, dict(self.steps), dict(self.hooks), dict(self.waits))
        return state

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, RunState) and self.run == other.run and self.steps == other.steps
                and self.hooks == other.hooks and self.waits == other.waits)

    def __repr__(self) -> str:
        return f"RunState(run={self.run!r}, steps={self.steps!r}, hooks={self.hooks!r}, waits={self.waits!r})"


def _dt(value: Any) -> datetime | None:
    if value is None or isinstance(value, datetime):
        return value
    return datetime.fromisoformat(value)


def _require_correlation(event: Event) -> str:
    if not event.correlation_id:
        raise NotFoundError(f"{event.event_type} needs a correlation_id")
    return event.correlation_id


def plan(state: RunState, event: Event, now: datetime, *, token_in_use: bool = False) -> list[Event]:
    """Validate `event` against `state`; return the events to record (possibly none).

    Raises EntityConflictError (409), RunExpiredError (410), NotFoundError (404) or
    TooEarlyError (425). `token_in_use` tells whether a hook_created's token is held by
    another live hook (the caller knows the cross-run token index; this module does not).
    """
    et = event.event_type
    run = state.base_run

    if et == E.RUN_CREATED:
        if run is not None:
            raise EntityConflictError(f"run {event.run_id} already exists")
        if not event.data.get("workflow_name"):
            raise NotFoundError("run_created needs a workflow_name")
        return [event]

    if et == E.RUN_STARTED:
        if run is None:
            if event.data.get("workflow_name"):  # lazy creation: the first writer wins
                created = event.evolve(event_type=E.RUN_CREATED, data=dict(event.data))
                started = event.evolve(data={})
                return [created, started]
            raise NotFoundError(f"run {event.run_id} not found")
        if run.status == RunStatus.PENDING:
            return [event.evolve(data={})]
        if run.status == RunStatus.RUNNING:
            return []
        raise RunExpiredError(f"run {run.run_id} is already {run.status}")

    if run is None:
        raise NotFoundError(f"run {event.run_id} not found")

    if et in RUN_EVENTS:
        if et == E.RUN_CANCELLED:
            if run.status == RunStatus.CANCELLED:
                return []
            if run.status.terminal:
                raise EntityConflictError(f"run {run.run_id} is already {run.status}")
            return [event]
        # run_completed / run_failed
        if run.status != RunStatus.RUNNING:
            raise EntityConflictError(f"{et} on run {run.run_id} that is {run.status}")
        return [event]

    cid = _require_correlation(event)

    if run.status.terminal:
        if et == E.HOOK_RECEIVED:  # the run's end disposed every hook
            raise NotFoundError(f"hook {cid} was disposed when run {run.run_id} ended")
        raise RunExpiredError(f"{et} on run {run.run_id} that is already {run.status}")

    if et in STEP_EVENTS:
        step = state.steps.get(cid)
        if et == E.STEP_CREATED:
            if step is not None:
                raise EntityConflictError(f"step {cid} already exists")
            if not event.data.get("step_name"):
                raise NotFoundError("step_created needs a step_name")
            return [event]
        if step is None:
            raise NotFoundError(f"step {cid} not found in run {run.run_id}")
        if step.status.terminal:
            raise EntityConflictError(f"step {cid} is already {step.status}")
        if et == E.STEP_STARTED:
            expected = event.data.get("attempt")
            if expected is not None and expected != step.attempt + 1:
                # Compare-and-set: another handler started this attempt first.
                raise EntityConflictError(f"step {cid} attempt {expected} is already taken (at {step.attempt})")
            at = event.created_at or now  # a test clock may date the event ahead (time skipping)
            if step.status == StepStatus.PENDING and step.retry_after is not None and at < step.retry_after:
                raise TooEarlyError(f"step {cid} may not start before {step.retry_after.isoformat()}", step.retry_after)
            return [event]  # pending -> running, or running again after a crash
        if et == E.STEP_FAILED:
            return [event]  # pending or running -> failed
        if step.status != StepStatus.RUNNING:
            raise EntityConflictError(f"{et} on step {cid} that is {step.status}")
        if et == E.STEP_RETRYING and _dt(event.data.get("retry_after")) is None:
            raise EntityConflictError("step_retrying needs retry_after")
        return [event]

    if et in HOOK_EVENTS:
        hook = state.hooks.get(cid)
        if et == E.HOOK_CREATED:
            if hook is not None:
                raise EntityConflictError(f"hook {cid} already exists")
            if token_in_use:
                return [Event(run_id=event.run_id, event_type=E.HOOK_CONFLICT, correlation_id=cid,
                              data={"token": event.data.get("token")})]
            return [event]
        if et == E.HOOK_CONFLICT:
            return [event]
        if hook is None or hook.status == HookStatus.DISPOSED:
            if et == E.HOOK_DISPOSED and hook is not None:
                raise EntityConflictError(f"hook {cid} is already disposed")
            raise NotFoundError(f"hook {cid} not found or disposed")
        return [event]

    if et == E.MARKER_RECORDED:
        if run.status != RunStatus.RUNNING:
            raise EntityConflictError(f"marker_recorded on run {run.run_id} that is {run.status}")
        return [event]

    if et in WAIT_EVENTS:
        wait = state.waits.get(cid)
        if et == E.WAIT_CREATED:
            if wait is not None:
                raise EntityConflictError(f"wait {cid} already exists")
            if _dt(event.data.get("resume_at")) is None:
                raise EntityConflictError("wait_created needs resume_at")
            return [event]
        if wait is None:
            raise NotFoundError(f"wait {cid} not found in run {run.run_id}")
        if wait.status != WaitStatus.WAITING:
            raise EntityConflictError(f"wait {cid} is already {wait.status}")
        return [event]

    raise NotFoundError(f"unknown event type {et!r}")  # pragma: no cover - enum is closed


def apply(state: RunState, event: Event) -> RunState:
    """Fold one recorded event (with `seq` and `created_at` set) into `state`, in place."""
    et = event.event_type
    at = event.created_at
    data = event.data
    run = state.base_run  # run events set event_count and updated_at themselves

    if et == E.RUN_CREATED:
        state.run = Run(
            run_id=event.run_id,
            workflow_name=data["workflow_name"],
            input=data.get("input"),
            attributes=dict(data.get("attributes") or {}),
            created_at=at,
            updated_at=at,
            event_count=event.seq + 1,
        )
        return state
    assert run is not None, "event before run_created"
    if et not in RUN_EVENTS:  # the run itself is unchanged: only its counters move
        state._count = event.seq + 1
        state._updated = at
        state._stale = True
    else:
        run = run.evolve(event_count=event.seq + 1, updated_at=at)

    if et == E.RUN_STARTED:
        run = run.evolve(status=RunStatus.RUNNING, started_at=at)
    elif et in (E.RUN_COMPLETED, E.RUN_FAILED, E.RUN_CANCELLED):
        status = {E.RUN_COMPLETED: RunStatus.COMPLETED, E.RUN_FAILED: RunStatus.FAILED,
                  E.RUN_CANCELLED: RunStatus.CANCELLED}[et]
        run = run.evolve(status=status, completed_at=at, output=data.get("output"), error=data.get("error"))
        for hid, hook in state.hooks.items():
            if hook.status == HookStatus.ACTIVE:
                state.hooks[hid] = hook.evolve(status=HookStatus.DISPOSED, disposed_at=at)
        for wid, wait in state.waits.items():
            if wait.status == WaitStatus.WAITING:
                state.waits[wid] = wait.evolve(status=WaitStatus.DISPOSED, completed_at=at)
    elif et in STEP_EVENTS:
        cid = event.correlation_id or ""
        if et == E.STEP_CREATED:
            state.steps[cid] = Step(run_id=event.run_id, step_id=cid, step_name=data["step_name"],
                                    input=data.get("input"), created_at=at, updated_at=at)
        else:
            step = state.steps[cid]
            if et == E.STEP_STARTED:
                step = step.evolve(status=StepStatus.RUNNING, attempt=step.attempt + 1, retry_after=None,
                                   started_at=step.started_at or at, updated_at=at)
            elif et == E.STEP_COMPLETED:
                step = step.evolve(status=StepStatus.COMPLETED, output=data.get("result"), completed_at=at,
                                   updated_at=at)
            elif et == E.STEP_RETRYING:
                step = step.evolve(status=StepStatus.PENDING, error=data.get("error"),
                                   retry_after=_dt(data.get("retry_after")), updated_at=at)
            elif et == E.STEP_FAILED:
                step = step.evolve(status=StepStatus.FAILED, error=data.get("error"), completed_at=at,
                                   updated_at=at)
            state.steps[cid] = step
    elif et in HOOK_EVENTS:
        cid = event.correlation_id or ""
        if et == E.HOOK_CREATED:
            state.hooks[cid] = Hook(run_id=event.run_id, hook_id=cid, token=data["token"],
                                    metadata=data.get("metadata"), created_at=at)
        elif et == E.HOOK_RECEIVED:
            hook = state.hooks[cid]
            state.hooks[cid] = hook.evolve(received_count=hook.received_count + 1)
        elif et == E.HOOK_DISPOSED:
            state.hooks[cid] = state.hooks[cid].evolve(status=HookStatus.DISPOSED, disposed_at=at)
        # hook_conflict creates no entity: the token belongs to someone else.
    elif et in WAIT_EVENTS:
        cid = event.correlation_id or ""
        if et == E.WAIT_CREATED:
            resume_at = _dt(data["resume_at"])
            assert resume_at is not None
            state.waits[cid] = Wait(run_id=event.run_id, wait_id=cid, resume_at=resume_at, created_at=at)
        else:
            state.waits[cid] = state.waits[cid].evolve(status=WaitStatus.COMPLETED, completed_at=at)
    if et in RUN_EVENTS:
        state.run = run
    return state


def fold(events: list[Event]) -> RunState:
    """The state a log describes: what every World's materialized entities must equal."""
    state = RunState()
    for event in events:
        apply(state, event)
    return state


#: What a correlation id names, by the kind `event_kind` gives.
_ID_WHAT = {"steps": "step id", "hooks": "hook id", "waits": "wait id"}


def event_kind(event_type: EventType) -> str | None:
    """"steps", "hooks" or "waits": which entity an event's correlation id names (None: the run)."""
    if event_type in STEP_EVENTS:
        return "steps"
    if event_type in HOOK_EVENTS:
        return "hooks"
    if event_type in WAIT_EVENTS:
        return "waits"
    return None


def checked_event(run_id: str, event: Event) -> Event:
    """An incoming event checked for shape before any World applies it (InvalidIdError if it is
    malformed: an unknown type, another run's id, data that is not a dict, an unsafe correlation
    id, a hook without a token), with its type and run id normalized."""
    try:
        event_type = EventType(event.event_type)
    except ValueError:
        raise InvalidIdError(f"unknown event type {event.event_type!r}") from None
    if event.run_id and event.run_id != run_id:
        raise InvalidIdError(f"event of run {event.run_id!r} sent to run {run_id!r}")
    if not isinstance(event.data, dict):
        raise InvalidIdError(f"event data must be a dict, got {type(event.data).__name__}")
    kind = event_kind(event_type)
    if kind is not None and event.correlation_id is not None:
        validate_id(event.correlation_id, _ID_WHAT[kind])
    if event_type == EventType.HOOK_CREATED:
        token = event.data.get("token")
        if not isinstance(token, str) or not token:
            raise InvalidIdError(f"hook_created needs a non-empty string token, got {token!r}")
    if event_type is not event.event_type or event.run_id != run_id:
        event = event.evolve(event_type=event_type, run_id=run_id)
    return event
