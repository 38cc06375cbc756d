"""Schedules fired by real workers (one run per slot, no gap), catch-up, priorities, and pruning while workers run."""

from __future__ import annotations

import asyncio
import itertools
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from wf.runtime.client import start_run
from wf.runtime.entities import RunStatus
from wf.runtime.errors import NotFoundError
from wf.runtime.retention import prune_runs
from wf.runtime.schedules import fire_due, make_spec, put_schedule
from wf.runtime.world import World

from .conftest import E, Workers, require

pytestmark = pytest.mark.timeout(180)


def flow(name: str) -> str:
    return f"tests.flow_control.flows.{name}"


async def scheduled_runs(world: World, schedule_id: str) -> list[tuple[datetime, str, RunStatus]]:
    """(slot, run id, status) of every run the schedule started, by slot."""
    found = []
    cursor = None
    while True:
        page = await world.runs.list(workflow_name=flow("tick"), limit=500, cursor=cursor, resolve_data=False)
        for run in page.data:
            if run.attributes.get("schedule_id") == schedule_id:
                found.append((datetime.fromisoformat(run.attributes["scheduled_for"]), run.run_id, run.status))
        if page.next_cursor is None:
            return sorted(found)
        cursor = page.next_cursor


@pytest.mark.slow
async def test_three_workers_fire_a_one_second_schedule_once_per_slot_without_a_gap(
        store_world: tuple[World, Workers]) -> None:
    world, workers = store_world
    require(world, "schedules")
    workers.start(3)
    record = await put_schedule(world, flow("tick"), [], {}, every="1s", schedule_id="tick")
    first_slot = record.next_at
    await asyncio.sleep(10.3)
    await world.schedules.set_paused("tick", True)
    await asyncio.sleep(1.5)
    runs = await scheduled_runs(world, "tick")
    slots = [slot for slot, _, _ in runs]
    assert len(slots) == len(set(slots))  # one run per slot
    assert len(runs) >= 9
    assert slots[0] == first_slot
    assert all(b - a == timedelta(seconds=1) for a, b in itertools.pairwise(slots))  # no gap
    for slot, run_id, _ in runs:
        run = await world.wait_for_end(run_id, timeout=30)
        assert run is not None and run.status == RunStatus.COMPLETED
        created = (await world.events.list(run_id))[0].created_at
        assert created is not None and timedelta(0) <= created - slot < timedelta(seconds=1.5)
    assert "Traceback" not in workers.logs()


@pytest.mark.parametrize(("catchup", "fired"), [("latest", [3]), ("all", [0, 1, 2, 3]), ("skip", [])])
async def test_missed_slots_are_fired_as_catchup_says(store_world: tuple[World, Workers], catchup: str,
                                                      fired: list[int]) -> None:
    world, _ = store_world
    require(world, "schedules")
    minute = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=10)
    spec = make_spec(flow("tick"), [], {}, cron="* * * * *", every=None, tz="UTC", catchup=catchup)
    await world.schedules.put("down", spec, next_at=minute)
    now = minute + timedelta(minutes=3, seconds=30)  # four slots passed while no worker ran
    await fire_due(world, now=now)
    runs = await scheduled_runs(world, "down")
    assert [slot for slot, _, _ in runs] == [minute + timedelta(minutes=i) for i in fired]
    assert (await world.schedules.get("down")).next_at == minute + timedelta(minutes=4)
    await fire_due(world, now=now)  # fired again (a second worker, a crash before advance): no new run
    assert len(await scheduled_runs(world, "down")) == len(fired)


@pytest.mark.slow
async def test_higher_priority_runs_start_first_and_each_priority_in_order(store_world: tuple[World, Workers]) -> None:
    world, workers = store_world
    low = [await start_run(world, flow("short"), [i], {}) for i in range(8)]
    high = [await start_run(world, flow("short"), [i], {}, priority=5) for i in range(8)]
    middle = [await start_run(world, flow("short"), [i], {}, priority=1) for i in range(4)]
    workers.start(1, "--concurrency", "1")
    for run in low + high + middle:
        ended = await world.wait_for_end(run.id, timeout=60)
        assert ended is not None and ended.status == RunStatus.COMPLETED
    started = {}
    for run in low + high + middle:
        events = await world.events.list(run.id)
        started[run.id] = next(e.created_at for e in events if e.event_type == E.RUN_STARTED)
    order = sorted(started, key=lambda run_id: started[run_id])
    assert order == [r.id for r in high + middle + low]


@pytest.mark.slow
async def test_pruning_while_workers_run_loses_no_active_run_and_leaves_nothing(
        store_world: tuple[World, Workers]) -> None:
    world, workers = store_world
    require(world, "prune")
    workers.start(2)
    long_runs = [await start_run(world, flow("napper"), [7.0], {}) for _ in range(6)]  # outlive the soak
    short_runs: list[str] = []
    deleted: set[str] = set()
    stop = time.monotonic() + 5

    async def prune_all_along() -> None:
        while time.monotonic() < stop:
            report = await prune_runs(world, older_than=timedelta(0))
            deleted.update(report.run_ids)
            await asyncio.sleep(0.2)

    pruner = asyncio.create_task(prune_all_along())
    i = 0
    while time.monotonic() < stop:
        for _ in range(5):
            short_runs.append((await start_run(world, flow("short"), [i], {})).id)
            i += 1
        await asyncio.sleep(0.2)
    await pruner
    for run in long_runs:  # active through many prune passes: never touched
        ended = await world.wait_for_end(run.id, timeout=60)
        assert ended is not None and ended.status == RunStatus.COMPLETED and ended.output == 3
    assert deleted and deleted <= set(short_runs)
    for run_id in short_runs:
        if run_id in deleted:
            continue
        try:
            ended = await world.wait_for_end(run_id, timeout=60)
        except NotFoundError:
            raise AssertionError(f"run {run_id} vanished without being pruned") from None
        assert ended is not None and ended.status == RunStatus.COMPLETED
    final = await prune_runs(world, older_than=timedelta(0))
    assert len(final.run_ids) == len(long_runs) + len(short_runs) - len(deleted)
    assert (await world.runs.list(limit=10)).data == []
    assert [m for m in await world.queue.list() if m.payload.get("run_id")] == []
    data_dir = getattr(world, "data_dir", None)
    if isinstance(data_dir, Path):  # the local World: not a file of any run is left
        left = [str(p.relative_to(data_dir)) for sub in ("runs", "index", "streams", "tokens")
                for p in (data_dir / sub).rglob("*") if p.is_file() and not p.name.startswith(".")]
        assert left == []
    assert "Traceback" not in workers.logs()


@pytest.mark.slow
async def test_a_worker_with_a_retention_period_prunes_ended_runs_and_dead_workers(
        store_world: tuple[World, Workers]) -> None:
    world, workers = store_world
    require(world, "prune")
    (doomed,) = workers.start(1)
    doomed.kill()  # dies without retiring: it leaves its presence behind
    doomed.wait()
    workers.start(1, WF_RETENTION="2s")  # prunes every second, runs that ended over 2 s ago
    runs = [await start_run(world, flow("short"), [i], {}) for i in range(5)]
    for run in runs:
        ended = await world.wait_for_end(run.id, timeout=30)
        assert ended is not None and ended.status == RunStatus.COMPLETED
    active = await start_run(world, flow("napper"), [30.0], {})
    deadline = time.monotonic() + 30
    while [r.run_id for r in (await world.runs.list(limit=10)).data] != [active.id]:
        assert time.monotonic() < deadline, [r.run_id for r in (await world.runs.list(limit=10)).data]
        await asyncio.sleep(0.3)
    assert await world.forget_dead_workers() == 0  # the killed worker's presence went with a pass
    assert len(await world.live_workers()) == 1
    await active.cancel_async()
