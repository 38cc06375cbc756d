"""add-ten, gather, race, any: the shapes of control flow, through the API."""

from __future__ import annotations

from types import ModuleType

from .conftest import E2E


async def test_add_ten_runs_three_steps(e2e: E2E, workflows: ModuleType) -> None:
    run = await e2e.env.start(workflows.add_ten, 123)
    assert await run.result_async(timeout=20) == 133
    steps = await e2e.env.steps(run)
    assert [(s.short_name, s.output, s.attempt) for s in steps] == [("add", 125, 1), ("add", 128, 1), ("add", 133, 1)]
    await e2e.env.assert_replays(run)


async def test_gather_keeps_the_order_of_its_arguments(e2e: E2E, workflows: ModuleType) -> None:
    run = await e2e.env.start(workflows.gather_keeps_order)
    assert await run.result_async(timeout=20) == ["a", "b", "c", "d"]
    completed = [e.correlation_id for e in await e2e.env.events(run) if e.event_type == "step_completed"]
    assert completed[0] == "step_4" and completed[-1] == "step_1"  # they finished in another order


async def test_race_picks_the_fastest_and_the_losers_still_land_in_the_log(e2e: E2E, workflows: ModuleType) -> None:
    run = await e2e.env.start(workflows.race_fastest)
    assert await run.result_async(timeout=20) == {"winner": "fast", "losers": ["mid", "slow"]}
    steps = await e2e.env.steps(run)
    assert sorted((s.output, s.status) for s in steps) == [("fast", "completed"), ("mid", "completed"),
                                                           ("slow", "completed")]
    completed = [e.correlation_id for e in await e2e.env.events(run) if e.event_type == "step_completed"]
    assert completed == ["step_2", "step_3", "step_1"]
    await e2e.env.assert_replays(run)


async def test_any_skips_a_fatal_step(e2e: E2E, workflows: ModuleType) -> None:
    run = await e2e.env.start(workflows.any_skips_fatal)
    assert await run.result_async(timeout=20) == "second"
    statuses = {s.step_id: (s.status, s.attempt) for s in await e2e.env.steps(run)}
    assert statuses["step_1"] == ("failed", 1)
    await e2e.env.assert_replays(run)
