"""The replay engine: one `WorkflowInstance` runs one run's code against its event log.

Events are fed one at a time, in log order; after each, the deterministic loop runs until
every workflow task is blocked again. Because live execution and replay both consume the
log this way, the code takes the same path on every replay. Each step call, timer and hook
gets a correlation id from its position (`step_3`, `wait_1`, `hook_2`); creation events in
the log must match the calls the code made, or the instance raises ReplayDivergenceError.

The instance never touches storage: the worker feeds it events and records the commands
it issues (`new_commands()`), and decides what to do with its `outcome`.
"""

from __future__ import annotations

import hashlib
import random as _random
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from .calls import RUNTIME_DIR, error_info, serialize_call_input, split_input
from .children import run_child
from .deterministic_loop import DeterministicLoop, DurableTimer
from .entities import Event, EventType, Run
from .errors import (
    ReplayDivergenceError,
    SerializationError,
    StepFailedError,
)
from .hooks import Hook
from .registry import StepFunction, WorkflowFunction
from .serialization import deserialize, serialize
from .workflow_context import WorkflowMetadata

E = EventType


def _user_location() -> str | None:
    """file:line of the innermost caller outside wf itself (for divergence reports)."""
    frame = sys._getframe(2)
    while frame is not None:
        filename = frame.f_code.co_filename
        if not filename.startswith(RUNTIME_DIR) and "asyncio" not in filename:
            return f"{filename}:{frame.f_lineno}"
        frame = frame.f_back  # type: ignore[assignment]
    return None


@dataclass(slots=True)
class Command:
    """Something the code asked for that the log must record (step, wait or hook creation)."""

    kind: str  # "step" | "wait" | "hook"
    cid: str
    name: str  # step name, or the hook token, or "" for waits
    data: dict[str, Any]
    location: str | None = None
    recorded: bool = False


@dataclass(slots=True)
class StepCall:
    command: Command
    future: Any  # asyncio.Future on the deterministic loop
    step: StepFunction


@dataclass(slots=True)
class Outcome:
    """How the workflow code ended: `output` (serialized) or `error` ({type, message, traceback})."""

    output: Any = None
    error: dict[str, Any] | None = None

    @property
    def failed(self) -> bool:
        return self.error is not None


def describe_event(event: Event) -> str:
    data = event.data
    if event.event_type == E.STEP_CREATED:
        return f"step_created {event.correlation_id} ({data.get('step_name')})"
    if event.event_type == E.HOOK_CREATED:
        return f"hook_created {event.correlation_id} (token {data.get('token')!r})"
    if event.event_type == E.WAIT_CREATED:
        return f"wait_created {event.correlation_id} (until {data.get('resume_at')})"
    if event.event_type == E.MARKER_RECORDED:
        return f"marker for patch {data.get('name')!r}"
    return f"{event.event_type} {event.correlation_id or ''}".strip()


def describe_command(command: Command | None) -> str:
    if command is None:
        return "nothing at this point"
    if command.kind == "step":
        return f"call step {command.name} as {command.cid}"
    if command.kind == "hook":
        return f"create hook {command.cid} (token {command.name!r})"
    if command.kind == "marker":
        return f"take patch {command.name!r} (wf.patched)"
    return f"sleep until {command.data.get('resume_at')} as {command.cid}"


class WorkflowInstance:
    """One run's workflow code, suspended between events."""

    def __init__(self, workflow: WorkflowFunction, run: Run) -> None:
        self.workflow = workflow
        self.run_id = run.run_id
        self.workflow_name = run.workflow_name
        self.input = run.input
        seed = str(run.attributes.get("seed") or run.run_id)
        self._seed = seed.encode()
        self.rng = _random.Random(int.from_bytes(hashlib.sha256(self._seed).digest()[:8], "big"))
        self.loop = DeterministicLoop(clock=0.0, on_timer=self._on_timer)
        self.loop.owner = self  # type: ignore[attr-defined]
        self.fed_seq = -1
        #: The workflow's line of a call made for it by the runtime (a child's start), when set.
        self.call_site: str | None = None
        self.started_at: datetime | None = None
        self.ended: EventType | None = None  # terminal run event seen in the log
        self.outcome: Outcome | None = None
        self._counters = {"step": 0, "wait": 0, "hook": 0, "child": 0}
        self._pending: dict[str, Command] = {}  # issued, not yet matched by a creation event
        self.steps: dict[str, StepCall] = {}
        #: Steps issued whose result the code may not have got yet (`awaited_steps` prunes it).
        self._open_steps: set[str] = set()
        self.timers: dict[str, DurableTimer] = {}
        self.wait_resume: dict[str, datetime] = {}
        self.hooks: dict[str, Hook] = {}
        self.received_hooks: set[str] = set()
        self._main: Any = None
        #: Called with (event, instance) after each event is consumed (used by `wf replay --trace`).
        self.on_event: Any = None
        #: Patch markers fed so far, those of the log being replayed, and where that log ends.
        self.markers: set[str] = set()
        self._patch_results: dict[str, bool] = {}
        self.history_markers: set[str] = set()
        self.history_end = -1

    # --- feeding the log ---

    def feed(self, event: Event) -> None:
        """Consume the next event of the log and run the code until it blocks again."""
        if event.seq != self.fed_seq + 1:
            raise RuntimeError(f"run {self.run_id}: expected event {self.fed_seq + 1}, got {event.seq}")
        self.fed_seq = event.seq
        if event.created_at is not None:
            self.loop.advance_clock(event.created_at.timestamp())
        self._consume(event)
        self.loop.run_until_quiescent()
        self._check_main()
        if self.on_event is not None:
            self.on_event(event, self)

    def feed_many(self, events: list[Event]) -> None:
        if events and events[-1].seq > self.history_end:
            self.expect_history(events)
        for event in events:
            self.feed(event)

    def _consume(self, event: Event) -> None:
        et = event.event_type
        cid = event.correlation_id or ""
        data = event.data
        if et == E.RUN_STARTED:
            self.started_at = event.created_at
            self._start_main()
        elif et in (E.RUN_COMPLETED, E.RUN_FAILED, E.RUN_CANCELLED):
            self.ended = et
        elif et == E.STEP_CREATED:
            self._match(event, "step", data.get("step_name", ""))
        elif et == E.STEP_COMPLETED:
            call = self.steps.get(cid)
            if call is not None and not call.future.done():
                try:
                    value = deserialize(data.get("result"))
                except SerializationError as exc:
                    call.future.set_exception(exc)
                else:
                    call.future.set_result(value)
        elif et == E.STEP_FAILED:
            call = self.steps.get(cid)
            if call is not None and not call.future.done():
                err = data.get("error") or {}
                call.future.set_exception(StepFailedError(
                    call.step.name, str(err.get("type", "Error")), str(err.get("message", "")),
                    str(err.get("traceback", "")),
                ))
        elif et == E.WAIT_CREATED:
            self._match(event, "wait", "")
        elif et == E.WAIT_COMPLETED:
            timer = self.timers.get(cid)
            if timer is not None:
                self.loop.fire(timer)
        elif et in (E.HOOK_CREATED, E.HOOK_CONFLICT):
            self._match(event, "hook", data.get("token", ""))
            if et == E.HOOK_CONFLICT and cid in self.hooks:
                self.hooks[cid]._mark_conflict()
        elif et == E.HOOK_RECEIVED:
            self.received_hooks.add(cid)
            hook = self.hooks.get(cid)
            if hook is not None:
                hook._deliver(deserialize(data.get("payload")))
        elif et == E.MARKER_RECORDED:
            self._match(event, "marker", str(data.get("name", "")))
        # run_created, step_started, step_retrying, hook_disposed: nothing for the code to see

    def call_site_of(self, correlation_id: str) -> str | None:
        """"file:line" of the workflow's call that issued `correlation_id`, while it waits to be matched
        (after the code reached the call and before the event recording it is fed)."""
        command = self._pending.get(correlation_id)
        return command.location if command is not None else None

    def _match(self, event: Event, kind: str, name: str) -> None:
        if kind == "marker":
            self.markers.add(name)
        cid = event.correlation_id or ""
        command = self._pending.get(cid)
        if command is None or command.kind != kind or command.name != name:
            if command is None and self._pending:
                # Show what the code is doing instead, when it issued something else.
                command = next(iter(self._pending.values()))
            raise ReplayDivergenceError(
                event.seq, describe_event(event), describe_command(command), command.location if command else None
            )
        del self._pending[cid]
        command.recorded = True

    def _start_main(self) -> None:
        if self._main is not None:
            return

        async def main() -> Any:
            args, kwargs = split_input(self.input)  # an unreadable input fails the run, never the worker
            return await self.workflow.fn(*args, **kwargs)

        self._main = self.loop.create_task(main(), name=f"workflow {self.workflow_name}")

    def _check_main(self) -> None:
        main = self._main
        if main is None or not main.done() or self.outcome is not None:
            return
        if main.cancelled():
            self.outcome = Outcome(error={"type": "CancelledError", "message": "the workflow task was cancelled",
                                          "traceback": ""})
            return
        exc = main.exception()
        if exc is not None:
            self.outcome = Outcome(error=error_info(exc))
            return
        try:
            self.outcome = Outcome(output=serialize(main.result(), where="the workflow's return value"))
        except SerializationError as err:
            self.outcome = Outcome(error=error_info(err))

    # --- what the code asks for (called from workflow code on the deterministic loop) ---

    def _next_cid(self, kind: str) -> str:
        self._counters[kind] += 1
        return f"{kind}_{self._counters[kind]}"

    def call_step(self, step: StepFunction, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        data = {"step_name": step.name,
                "input": serialize_call_input(args, kwargs, where=f"the arguments of step {step.name}")}
        cid = self._next_cid("step")
        command = Command("step", cid, step.name, data, self.call_site or _user_location())
        future = self.loop.create_future()
        self._pending[cid] = command
        self.steps[cid] = StepCall(command, future, step)
        self._open_steps.add(cid)

        async def result() -> Any:
            return await future

        return result()

    def call_child(self, workflow: WorkflowFunction, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:

        return run_child(self, workflow, args, kwargs, location=_user_location())

    def _on_timer(self, timer: DurableTimer) -> None:
        cid = self._next_cid("wait")
        timer.wait_id = cid
        resume_at = datetime.fromtimestamp(timer.when(), UTC)
        self.timers[cid] = timer
        self.wait_resume[cid] = resume_at
        self._pending[cid] = Command("wait", cid, "", {"resume_at": resume_at.isoformat()}, _user_location())

    def create_hook(self, token: str | None, metadata: Any) -> Hook:
        cid = self._next_cid("hook")
        if token is None:
            token = "hk_" + self.secret_token(cid)
        elif not isinstance(token, str) or not token or len(token) > 512:
            raise ValueError("a hook token must be a non-empty string of at most 512 characters")
        data = {"token": token, "metadata": serialize(metadata, where="the hook's metadata")}
        hook = Hook(cid, token, metadata, self.loop)
        self.hooks[cid] = hook
        self._pending[cid] = Command("hook", cid, token, data, self.call_site or _user_location())
        return hook

    def secret_token(self, label: str) -> str:
        """160 bits derived from the run's secret seed and `label`: the same on every replay, unguessable."""
        return hashlib.blake2b(label.encode(), key=self._seed[:64], digest_size=20).hexdigest()

    def patched(self, patch_id: str) -> bool:
        """Temporal's patching: True on code that reaches this point new, False when replaying
        history recorded before the patch. The first True is recorded as a marker."""
        from .ids import validate_id

        validate_id(patch_id, "patch id")
        known = self._patch_results.get(patch_id)
        if known is not None:  # one answer per run, however often it is asked
            return known
        taken = patch_id in self.history_markers or self.fed_seq >= self.history_end
        self._patch_results[patch_id] = taken
        if taken:  # replaying a marker, or reaching the patch new: (re)record the marker
            cid = f"patch_{patch_id}"
            self._pending[cid] = Command("marker", cid, patch_id, {"kind": "patch", "name": patch_id},
                                         _user_location())
        return taken

    def expect_history(self, events: list[Event]) -> None:
        """Tell the instance which log it is about to replay (needed by `patched`)."""
        self.history_end = events[-1].seq if events else -1
        self.history_markers = {str(e.data.get("name")) for e in events if e.event_type == E.MARKER_RECORDED}

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.loop.time(), UTC)

    def metadata(self) -> WorkflowMetadata:
        return WorkflowMetadata(self.run_id, self.workflow_name, self.started_at)

    # --- what the worker reads ---

    def awaited_steps(self) -> list[str]:
        """Recorded steps whose result the code has not got yet (cost: the steps still open)."""
        steps = self.steps
        done = [cid for cid in self._open_steps if steps[cid].future.done()]
        self._open_steps.difference_update(done)
        return [cid for cid in self._open_steps if steps[cid].command.recorded]

    def new_commands(self) -> list[Command]:
        """Commands issued by the code and not yet in the log, in the order they were issued."""
        return list(self._pending.values())

    def live_timers(self) -> dict[str, datetime]:
        """Recorded waits whose timers are still armed: wait id -> resume_at."""
        return {
            cid: self.wait_resume[cid]
            for cid, timer in self.timers.items()
            if not timer.fired and not timer.cancelled() and cid not in self._pending
        }

    def close(self) -> None:
        """Drop the code's state (cancel its tasks without running them further)."""
        self.loop.close()
