"""Replaying a recorded run against the current code, offline: the engine of `wf replay`.

Nothing runs but the workflow code itself: steps resolve from the log, nothing is written.
The report says whether the code still fits the log, and where it stops fitting.
"""

from __future__ import annotations

import asyncio
import types
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .calls import RUNTIME_DIR
from .entities import Event, EventType, Run, RunStatus
from .errors import ReplayDivergenceError
from .registry import WorkflowFunction
from .replay import Outcome, WorkflowInstance, describe_command

E = EventType


@dataclass
class ReplayReport:
    """What replaying a run's log with the current code found."""

    run_id: str
    events: int
    #: How many events were fed (all of them unless the replay stopped early).
    fed: int
    divergence: ReplayDivergenceError | None = None
    #: Code outcome vs the recorded one, when both exist and differ.
    outcome_mismatch: str | None = None
    #: Calls the code makes after the end of the log (for a finished run: a divergence).
    pending_calls: list[str] = field(default_factory=list)
    instance: WorkflowInstance | None = None

    @property
    def clean(self) -> bool:
        return self.divergence is None and self.outcome_mismatch is None

    def summary(self) -> str:
        if self.divergence is not None:
            return str(self.divergence)
        if self.outcome_mismatch is not None:
            return self.outcome_mismatch
        return f"replays cleanly ({self.fed} of {self.events} events)"


def replay_run(
    workflow: WorkflowFunction,
    run: Run,
    events: list[Event],
    *,
    until: int | None = None,
    on_event: Callable[[Event, WorkflowInstance], None] | None = None,
) -> ReplayReport:
    """Feed `events` (optionally only those with seq <= until) to a fresh instance of `workflow`."""
    instance = WorkflowInstance(workflow, run)
    instance.on_event = on_event
    instance.expect_history(events)
    report = ReplayReport(run.run_id, len(events), 0, instance=instance)
    chosen = [e for e in events if until is None or e.seq <= until]
    try:
        for event in chosen:
            instance.feed(event)
            report.fed += 1
    except ReplayDivergenceError as exc:
        report.divergence = exc
        return report
    if until is not None and until < len(events) - 1:
        return report
    report.pending_calls = [describe_command(c) for c in instance.new_commands()]
    if run.status.terminal:
        _compare_outcome(report, run, instance.outcome, events)
    return report


def _compare_outcome(report: ReplayReport, run: Run, outcome: Outcome | None, events: list[Event]) -> None:
    last = events[-1].seq if events else 0
    if run.status == RunStatus.CANCELLED:
        return  # cancelled from outside: the code had no say
    if outcome is None:
        if report.pending_calls:
            report.divergence = ReplayDivergenceError(
                last, f"the run's end ({run.status})", report.pending_calls[0],
            )
        else:
            report.outcome_mismatch = (
                f"the log ends with the run {run.status}, but the code is still waiting after event {last}"
            )
        return
    recorded_failed = run.status == RunStatus.FAILED
    if outcome.failed != recorded_failed:
        now = "fails" if outcome.failed else "completes"
        report.outcome_mismatch = f"the run was recorded as {run.status}, but the code now {now}"
        if outcome.failed and outcome.error:
            report.outcome_mismatch += f" ({outcome.error.get('type')}: {outcome.error.get('message')})"
    elif not outcome.failed and outcome.output != run.output:
        report.outcome_mismatch = "the code now returns a different value than the one recorded"
    elif outcome.failed:
        recorded = ((run.error or {}).get("type"), (run.error or {}).get("message"))
        replayed = ((outcome.error or {}).get("type"), (outcome.error or {}).get("message"))
        if recorded != replayed:
            report.outcome_mismatch = (f"the run failed with {recorded[0]}: {recorded[1]}, "
                                       f"the code now fails with {replayed[0]}: {replayed[1]}")


def user_frames(instance: WorkflowInstance) -> list[tuple[str, types.FrameType]]:
    """(task name, frame) of the innermost user-code frame of each live workflow task."""
    found = []
    for task in asyncio.all_tasks(instance.loop):
        coro = task.get_coro()
        frame = None
        while coro is not None:
            f = getattr(coro, "cr_frame", None) or getattr(coro, "ag_frame", None)
            if f is not None and not f.f_code.co_filename.startswith(RUNTIME_DIR):
                frame = f
            coro = getattr(coro, "cr_await", None)
            if not isinstance(coro, types.CoroutineType):
                break
        if frame is not None:
            found.append((task.get_name(), frame))
    return found


def frame_locals(frame: types.FrameType) -> dict[str, Any]:
    """A frame's local variables, without dunder names."""
    return {k: v for k, v in frame.f_locals.items() if not (k.startswith("__") and k.endswith("__"))}
