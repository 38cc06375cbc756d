"""Helpers shared by the storage tests of the conformance suite: events, runs, and the
check that every materialized entity equals the fold of the run's log."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from wf.runtime.entities import Event, EventType
from wf.runtime.ids import new_run_id
from wf.runtime.state_machine import fold
from wf.runtime.world import World

WORKFLOW = "tests.sample_workflow"


def ev(run_id: str, event_type: str, correlation_id: str | None = None, **data: Any) -> Event:
    """An event as the runtime sends it (the World fills event_id, seq and created_at)."""
    return Event(run_id=run_id, event_type=EventType(event_type), correlation_id=correlation_id, data=data)


def iso(delta_seconds: float) -> str:
    """An ISO datetime `delta_seconds` from now."""
    return (datetime.now(UTC) + timedelta(seconds=delta_seconds)).isoformat()


async def new_run(world: World, *, started: bool = True, workflow_name: str = WORKFLOW, input: Any = None,
                  run_id: str | None = None) -> str:
    """Create a run (and start it unless `started=False`); return its id."""
    run_id = run_id or new_run_id()
    await world.events.create(run_id, ev(run_id, "run_created", workflow_name=workflow_name, input=input))
    if started:
        await world.events.create(run_id, ev(run_id, "run_started"))
    return run_id


async def new_step(world: World, run_id: str, step_id: str, *, started: bool = False) -> None:
    await world.events.create(run_id, ev(run_id, "step_created", step_id, step_name="tests.step", input=[1, 2]))
    if started:
        await world.events.create(run_id, ev(run_id, "step_started", step_id))


async def event_types(world: World, run_id: str) -> list[str]:
    return [e.event_type.value for e in await world.events.list(run_id)]


async def assert_views_match_log(world: World, run_id: str) -> None:
    """Every entity the World shows for the run equals the fold of its event log."""
    events = await world.events.list(run_id)
    assert [e.seq for e in events] == list(range(len(events)))
    assert [e.event_id for e in events] == sorted({e.event_id for e in events})
    state = fold(events)
    assert await world.runs.get(run_id) == state.run
    assert (await world.steps.list(run_id)).data == list(state.steps.values())
    for step in state.steps.values():
        assert await world.steps.get(run_id, step.step_id) == step
    assert (await world.hooks.list(run_id=run_id)).data == list(state.hooks.values())
    for hook in state.hooks.values():
        assert await world.hooks.get(run_id, hook.hook_id) == hook
    assert (await world.waits.list(run_id=run_id)).data == list(state.waits.values())
