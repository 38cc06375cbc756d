"""Limits kept under real concurrency, measured from the recorded events of real worker processes."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from datetime import timedelta

import pytest

from wf.runtime.client import start_run
from wf.runtime.entities import RunStatus
from wf.runtime.world import World

from .conftest import E, Workers, all_events, attempt_intervals, most_at_once, names_of, require

pytestmark = pytest.mark.timeout(180)

#: How much later than its admission a rated start may be dated (see the rate test).
DATING_SLACK = timedelta(milliseconds=50)



def flow(name: str) -> str:
    return f"tests.flow_control.flows.{name}"


async def wait_all(world: World, run_ids: list[str], timeout: float = 90) -> None:
    for run_id in run_ids:
        run = await world.wait_for_end(run_id, timeout=timeout)
        assert run is not None, f"run {run_id} did not end in {timeout} s"
        assert run.status == RunStatus.COMPLETED, (run.status, run.error)


@pytest.mark.slow
async def test_four_workers_never_run_more_than_three_attempts_of_a_step_limited_to_three(
        store_world: tuple[World, Workers]) -> None:
    world, workers = store_world
    require(world, "limits")
    workers.start(4)
    runs = [await start_run(world, flow("fan"), [6, 0.15], {}) for _ in range(4)]
    await wait_all(world, [r.id for r in runs])
    events = await all_events(world, [r.id for r in runs])
    spans = attempt_intervals(events, flow("limited"), names_of(events))
    assert len(spans) == 24
    assert most_at_once(spans) == 3  # never more than 3, and the limit was used (not run one at a time)


@pytest.mark.slow
async def test_a_limit_per_key_holds_for_each_key_while_keys_run_side_by_side(
        store_world: tuple[World, Workers]) -> None:
    world, workers = store_world
    require(world, "limits")
    workers.start(2)
    run = await start_run(world, flow("customers"), [["ann", "bob"], 4, 0.1], {})
    await wait_all(world, [run.id])
    events = await all_events(world, [run.id])
    names = names_of(events)
    created = {(e.run_id, e.correlation_id): e.data for e in events if e.event_type == E.STEP_CREATED}
    by_customer: dict[str, dict[tuple[str, str], str]] = {}
    for key, name in names.items():
        text = str(created[key]["input"])
        by_customer.setdefault("ann" if "ann" in text else "bob", {})[key] = name
    overall = attempt_intervals(events, flow("per_customer"), names)
    assert most_at_once(overall) == 2  # one per customer, both customers at once
    for subset in by_customer.values():
        assert most_at_once(attempt_intervals(events, flow("per_customer"), subset)) == 1


@pytest.mark.slow
async def test_a_rate_limit_is_never_exceeded_in_any_window(store_world: tuple[World, Workers]) -> None:
    world, workers = store_world
    require(world, "limits")
    workers.start(3)
    runs = [await start_run(world, flow("burst"), [10], {}) for _ in range(2)]
    t0 = time.monotonic()
    await wait_all(world, [r.id for r in runs])
    elapsed = time.monotonic() - t0
    events = await all_events(world, [r.id for r in runs])
    names = names_of(events)
    starts = sorted(e.created_at for e in events if e.event_type == E.STEP_STARTED
                    and names.get((e.run_id, e.correlation_id or "")) == flow("rated"))
    assert len(starts) == 20
    # "5/1s": any 6 consecutive starts span at least one second, so no window of 1 s holds 6.
    # A start is dated at its admission, unless the run's log already holds a later event
    # (another worker finished a sibling step meanwhile): time in a run never goes back, so the
    # date then moves forward by that overlap, a few ms at most (CI measured 0.17 ms). Without the
    # limit, the 20 starts of this burst land within milliseconds of each other.
    gaps = [starts[i + 5] - starts[i] for i in range(len(starts) - 5)]
    assert min(gaps) >= timedelta(seconds=1) - DATING_SLACK, min(gaps)
    assert elapsed >= 3.0  # 20 starts at 5 per second cannot all be done before 3 s
    assert min(gaps) < timedelta(seconds=1.6)  # and the limit is used, not overshot by waiting


@pytest.mark.slow
async def test_a_killed_workers_slot_is_freed_within_seconds(store_world: tuple[World, Workers]) -> None:
    world, workers = store_world
    require(world, "limits")
    (victim,) = workers.start(1)
    held = [await start_run(world, flow("hold"), [60.0], {}) for _ in range(2)]  # both slots, for a minute
    deadline = time.monotonic() + 20
    while True:
        states = await world.limits.slots(f"step:{flow('blocking_sleep')}")
        if states and len(states[0].holders) == 2:
            break
        assert time.monotonic() < deadline, "the two attempts never took their slots"
        await asyncio.sleep(0.05)
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait()
    t_kill = time.monotonic()
    while (await world.limits.slots(f"step:{flow('blocking_sleep')}")) and time.monotonic() - t_kill < 30:
        await asyncio.sleep(0.05)
    freed_after = time.monotonic() - t_kill
    assert not await world.limits.slots(f"step:{flow('blocking_sleep')}")
    assert freed_after < 12, freed_after  # the local World at once; any World within its lease (10 s)
    for r in held:  # so that their redelivered attempts do not take the slots again
        await r.cancel_async()
    workers.start(1)
    quick = await start_run(world, flow("hold"), [0.0], {})
    run = await world.wait_for_end(quick.id, timeout=30)
    assert run is not None and run.status == RunStatus.COMPLETED


@pytest.mark.slow
async def test_a_workflow_limited_to_two_runs_never_has_three_in_progress_and_starts_them_in_order(
        store_world: tuple[World, Workers]) -> None:
    world, workers = store_world
    require(world, "limits")
    workers.start(2)
    runs = [await start_run(world, flow("exclusive"), [0.3], {}) for _ in range(6)]
    await wait_all(world, [r.id for r in runs])
    spans = []
    starts = []
    for r in runs:
        events = await world.events.list(r.id)
        begin = next(e.created_at for e in events if e.event_type == E.RUN_STARTED)
        end = next(e.created_at for e in events if e.event_type == E.RUN_COMPLETED)
        spans.append((begin, end))
        starts.append(begin)
    assert most_at_once(spans) == 2
    # The rest waited in order. Two runs granted slots at the same moment (the first two, or two
    # waiters when two slots free together) record run_started in whichever order their workers
    # get to it (a few ms apart on a loaded machine), so order is checked to within a fraction
    # of the 0.3 s a run holds its slot: a run served out of turn would start a whole hold earlier.
    late = [(i, j) for i in range(len(starts)) for j in range(i + 1, len(starts))
            if starts[j] < starts[i] - timedelta(seconds=0.1)]
    assert not late, late
