"""The checks run after a soak: outcomes, event logs, step results, timers, queues.

`audit()` reads a data directory through a `LocalWorld` and returns an `Audit` whose
counters go into RELIABILITY.md and whose `problems` list says exactly what is wrong
(an empty list is a pass).
"""

from __future__ import annotations

import collections
import itertools
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson

from wf.runtime.entities import Event, EventType, HookStatus
from wf.runtime.errors import WfError
from wf.runtime.registry import REGISTRY
from wf.runtime.serialization import deserialize
from wf.runtime.state_machine import RunState, apply, fold, plan
from wf.world_local.world import LocalWorld

E = EventType
_TERMINAL = (E.RUN_COMPLETED, E.RUN_FAILED, E.RUN_CANCELLED)


@dataclass
class Audit:
    runs: int = 0
    events: int = 0
    lost: int = 0  # runs not in their correct terminal state
    wrong_output: int = 0
    duplicate_completions: int = 0  # a step completed twice, or a run ended twice
    illegal_transitions: int = 0
    unexplained_results: int = 0  # a recorded step result no execution produced
    early_timers: int = 0
    timers: int = 0
    timers_across_kills: int = 0  # waits with a kill -9 between their creation and completion
    step_executions: int = 0
    steps_completed: int = 0
    reexecutions: int = 0  # completed executions beyond one per step (a kill after the work, before its record)
    interrupted_attempts: int = 0  # attempts started again because the worker running them died
    views_mismatched: int = 0
    queue_left: int = 0
    live_hooks_left: int = 0
    events_after_end: int = 0  # events recorded after the run's terminal event
    exhausted_by_kills: int = 0  # runs failed because kills interrupted a step's attempts until none was left
    over_budget: int = 0  # steps started more often than their attempt budget allows
    problems: list[str] = field(default_factory=list)

    def problem(self, text: str) -> None:
        if len(self.problems) < 50:
            self.problems.append(text)

    def summary(self) -> dict[str, int]:
        return {k: v for k, v in vars(self).items() if isinstance(v, int)}


def read_side_file(path: Path) -> list[dict[str, Any]]:
    """Every step execution the workflows logged (a torn last line, if any, is skipped)."""
    if not path.exists():
        return []
    records = []
    for line in path.read_bytes().splitlines():
        try:
            records.append(orjson.loads(line))
        except orjson.JSONDecodeError:
            continue
    return records


def replay_through_state_machine(events: list[Event]) -> str | None:
    """Feed a recorded log to `plan`/`apply` event by event; the first refusal, or None."""
    state = RunState()
    for ev in events:
        probe = Event(ev.run_id, ev.event_type, ev.correlation_id, ev.data, created_at=ev.created_at)
        try:
            planned = plan(state, probe, ev.created_at or datetime.now().astimezone())
        except WfError as exc:
            return f"event {ev.seq} {ev.event_type} {ev.correlation_id}: {type(exc).__name__}: {exc}"
        if [p.event_type for p in planned] != [ev.event_type]:
            would = [str(p.event_type) for p in planned]
            return f"event {ev.seq} {ev.event_type}: the state machine would record {would}"
        apply(state, ev)
    return None


#: What a run must end as: (status, output), or a list of such alternatives (e.g. a cancel that raced the end).
Expectation = tuple[str, Any] | list[tuple[str, Any]]


async def audit(
    world: LocalWorld,
    expectations: dict[str, Expectation],
    side_file: Path,
    kill_times: list[float] = (),  # type: ignore[assignment]
) -> Audit:
    """Check every run of `expectations` (run id -> (status, output)) and the World around them."""
    report = Audit()
    executions = read_side_file(side_file)
    report.step_executions = len(executions)
    nonces: set[tuple[str, str, int, str]] = {(r["run"], r["step"], r["attempt"], r["nonce"]) for r in executions}
    per_step = collections.Counter((r["run"], r["step"]) for r in executions)
    kills = sorted(kill_times)
    all_runs = await _all_run_ids(world)
    for run_id in sorted(all_runs):
        await _audit_run(world, run_id, expectations.get(run_id), nonces, per_step, kills, report)
    for run_id in expectations.keys() - all_runs:
        report.lost += 1
        report.problem(f"run {run_id} is missing from the data dir")
    left = await world.queue.list()
    report.queue_left = len(left)
    for m in left[:5]:
        report.problem(f"queue not empty: {m.queue} {m.payload} state={m.state}")
    live = (await world.hooks.list(status=HookStatus.ACTIVE)).data
    report.live_hooks_left = len(live)
    for h in live[:5]:
        report.problem(f"hook {h.token!r} of run {h.run_id} still active")
    return report


async def _all_run_ids(world: LocalWorld) -> set[str]:
    ids: set[str] = set()
    cursor = None
    while True:
        page = await world.runs.list(limit=1000, cursor=cursor, resolve_data=False)
        ids.update(r.run_id for r in page.data)
        if page.next_cursor is None:
            return ids
        cursor = page.next_cursor


async def _audit_run(
    world: LocalWorld, run_id: str, expect: Expectation | None,
    nonces: set[tuple[str, str, int, str]], per_step: collections.Counter[tuple[str, str]],
    kills: list[float], report: Audit,
) -> None:
    report.runs += 1
    events = await world.events.list(run_id)
    report.events += len(events)
    refusal = replay_through_state_machine(events)
    if refusal is not None:
        report.illegal_transitions += 1
        report.problem(f"run {run_id}: {refusal}")
        return
    state = fold(events)
    run = state.run
    assert run is not None
    # One terminal run event, one completion per step.
    ends = [e for e in events if e.event_type in _TERMINAL]
    completions = collections.Counter(e.correlation_id for e in events if e.event_type == E.STEP_COMPLETED)
    dup = sum(n - 1 for n in completions.values() if n > 1) + max(len(ends) - 1, 0)
    if dup:
        report.duplicate_completions += dup
        report.problem(f"run {run_id}: duplicate completions {dict(completions)} / {len(ends)} ends")
    # Nothing after the end.
    if ends and events[-1] is not ends[0]:
        report.events_after_end += 1
        after = len(events) - 1 - events.index(ends[0])
        report.problem(f"run {run_id}: {after} event(s) after its {ends[0].event_type}")
    # The run's outcome.
    if expect is not None:
        alternatives = expect if isinstance(expect, list) else [expect]
        statuses = [status for status, _ in alternatives]
        outputs = [output for status, output in alternatives if status == "completed"]
        if str(run.status) not in statuses and _exhausted_by_interruptions(run.error, events):
            report.exhausted_by_kills += 1  # what a step's attempt budget means: interrupted attempts count
        elif str(run.status) not in statuses:
            report.lost += 1
            report.problem(f"run {run_id} ({run.workflow_name}) is {run.status}, expected {' or '.join(statuses)}: "
                           f"{run.error}")
        elif str(run.status) == "completed" and deserialize(run.output) not in outputs:
            report.wrong_output += 1
            report.problem(f"run {run_id}: output {deserialize(run.output)!r}, expected {outputs!r}")
    elif not run.status.terminal:
        report.lost += 1
        report.problem(f"run {run_id} ({run.workflow_name}) is still {run.status}")
    # Step results come from real executions; count work redone after kills.
    attempts: dict[str, int] = collections.Counter()
    for ev in events:
        if ev.event_type == E.STEP_STARTED:
            attempts[ev.correlation_id or ""] += 1
        elif ev.event_type == E.STEP_COMPLETED:
            report.steps_completed += 1
            step = state.steps[ev.correlation_id or ""]
            if not step.step_name.startswith("soak."):
                continue  # wf's own steps (starting a child) log nothing
            result = deserialize(ev.data.get("result"))
            nonce = result.get("nonce") if isinstance(result, dict) else ""
            key = (run_id, step.step_id, attempts[step.step_id], nonce)
            if key not in nonces:
                report.unexplained_results += 1
                report.problem(f"run {run_id} step {step.step_id}: result {result!r} (attempt {key[2]}) never computed")
    for step in state.steps.values():
        budget = _attempt_budget(step.step_name)
        if budget is not None and attempts[step.step_id] > budget:
            report.over_budget += 1
            report.problem(f"run {run_id} step {step.step_id} ({step.step_name}): {attempts[step.step_id]} attempts "
                           f"started, its budget is {budget}")
        if step.step_name.startswith("soak.") and step.step_name != "soak.flaky_add":
            report.reexecutions += max(per_step[(run_id, step.step_id)] - 1, 0)
            report.interrupted_attempts += max(attempts[step.step_id] - 1, 0)
    # Timers: never before their time; note those that crossed a kill.
    for ev in events:
        if ev.event_type != E.WAIT_COMPLETED:
            continue
        wait = state.waits[ev.correlation_id or ""]
        report.timers += 1
        assert ev.created_at is not None and wait.created_at is not None
        if ev.created_at < wait.resume_at:
            report.early_timers += 1
            report.problem(f"run {run_id}: wait {wait.wait_id} completed at {ev.created_at}, due {wait.resume_at}")
        begin, end = wait.created_at.timestamp(), ev.created_at.timestamp()
        if any(begin < k < end for k in kills):
            report.timers_across_kills += 1
    # The materialized views equal the fold of the log.
    if not await _views_match(world, run_id, state):
        report.views_mismatched += 1
        report.problem(f"run {run_id}: materialized views differ from the fold of its log")


def _exhausted_by_interruptions(error: Any, events: list[Event]) -> bool:
    """Whether the run failed because its step's last attempt was cut off by a kill, its budget used up,
    and the log shows it: every attempt of that step started, some ended by nothing but a new start."""
    step_error = error.get("step_error") if isinstance(error, dict) else None
    if not isinstance(step_error, dict) or step_error.get("type") != "StepAttemptsExhausted":
        return False
    failed = [e for e in events if e.event_type == E.STEP_FAILED]
    if not failed:
        return False
    cid = failed[-1].correlation_id
    trail = [e.event_type for e in events if e.correlation_id == cid]
    interrupted = sum(1 for a, b in itertools.pairwise(trail) if a == b == E.STEP_STARTED)
    starts = trail.count(E.STEP_STARTED)
    name = next((e.data.get("step_name") for e in events if e.correlation_id == cid and e.event_type == E.STEP_CREATED),
                None)
    budget = _attempt_budget(str(name)) if name else None
    return interrupted >= 1 and trail[-2:] == [E.STEP_STARTED, E.STEP_FAILED] and starts == budget


def _attempt_budget(step_name: str) -> int | None:
    """How many attempts a step may start (None for a step this process does not know)."""
    try:
        return REGISTRY.step(step_name).max_attempts
    except WfError:
        return None


async def _views_match(world: LocalWorld, run_id: str, state: RunState) -> bool:
    run = await world.runs.get(run_id)
    steps = (await world.steps.list(run_id)).data
    hooks = (await world.hooks.list(run_id=run_id)).data
    waits = (await world.waits.list(run_id=run_id)).data
    return (
        run == state.run
        and {s.step_id: s for s in steps} == state.steps
        and {h.hook_id: h for h in hooks} == state.hooks
        and {w.wait_id: w for w in waits} == state.waits
    )
