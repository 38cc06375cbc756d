"""The eight concurrent scenarios of seed 002, each with real concurrency against one World.

Two handlers (two Worker objects, each in its own `run()` loop as two processes would be) take
two deliveries of the same message at the same moment, through the queue. In every case: no
error is logged, no effect is recorded twice, the run ends once.

Two drivers of one run at once only happen when a live worker's lease runs out (it stalled):
the second driver then takes a step recorded as running for one whose runner is gone and
runs it again. Steps are at least once; what must hold is that each is recorded once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter

import pytest

import wf
from wf.runtime.entities import Event, EventType
from wf.runtime.worker import Worker
from wf.runtime.world import STEP_QUEUE, WORKFLOW_QUEUE

E = EventType
EXECUTED: Counter[str] = Counter()


@wf.step
async def work(key: str, delay: float = 0.0) -> str:
    EXECUTED[key] += 1
    await asyncio.sleep(delay)
    return key


@wf.workflow
async def one_step(key: str) -> str:
    return await work(key)


@wf.workflow
async def fails_after_a_step(key: str) -> None:
    await work(key)
    raise ValueError("planned failure")


@wf.workflow
async def sleeps(key: str) -> str:
    await asyncio.sleep(0.05)
    return key


@wf.workflow
async def hook_after_slow_step(key: str) -> str:
    await work(key, 0.3)
    return await wf.create_hook(token=f"late:{key}")


@pytest.fixture
def quiet(caplog: pytest.LogCaptureFixture):
    caplog.set_level(logging.WARNING)
    yield
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, [r.getMessage() for r in errors]


async def deliver_twice(world, queue: str, payload: dict) -> None:
    """Two deliveries of one message at once, as a redelivery (a lease that ran out) or a second
    enqueue without coalescing produces: distinct messages, taken by different workers."""
    for copy in ("a", "b"):
        await world.queue.enqueue(queue, payload, order_key=f"{payload['run_id']}-{copy}")


async def settled(world, timeout: float = 10.0) -> None:
    """Until no message is ready or leased (delayed ones, a sleep's wake-up, are left)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while any(m.state != "delayed" for m in await world.queue.list()):
        assert asyncio.get_running_loop().time() < deadline, await world.queue.list()
        await asyncio.sleep(0.01)


@contextlib.asynccontextmanager
async def two_workers(world):
    """Two Workers running as two processes would (each its own `run()` loop) on one World."""
    workers = [Worker(world), Worker(world)]
    tasks = [asyncio.create_task(w.run()) for w in workers]
    try:
        yield workers
        await settled(world)
    finally:
        for w in workers:
            w.stop()
        await asyncio.wait_for(asyncio.gather(*tasks), 30)


async def race(world, run_id: str, rounds: int = 1) -> None:
    """Two workers drive the same run at once (duplicate workflow messages), `rounds` times."""
    async with two_workers(world):
        for _ in range(rounds):
            await deliver_twice(world, WORKFLOW_QUEUE, {"run_id": run_id})
            await settled(world)


def count(events: list[Event], event_type: EventType) -> int:
    return sum(1 for e in events if e.event_type == event_type)


async def test_1_two_handlers_race_on_run_started(world, quiet):
    run = await wf.start_async(one_step, "s1")
    await race(world, run.id)
    await race(world, run.id)
    events = await run.events_async()
    assert count(events, E.RUN_STARTED) == 1
    assert await run.result_async(timeout=5) == "s1"


async def test_2_two_handlers_race_on_run_completed(world, quiet):
    EXECUTED.clear()
    run = await wf.start_async(one_step, "s2")  # its own message, and two more: three drivers at once
    await race(world, run.id, rounds=3)
    events = await run.events_async()
    assert count(events, E.RUN_COMPLETED) == 1 and events[-1].event_type == E.RUN_COMPLETED
    assert 1 <= EXECUTED["s2"] <= 2  # at least once; twice when the second driver restarts it (see top)


async def test_3_two_handlers_race_on_run_failed(world, quiet):
    EXECUTED.clear()
    run = await wf.start_async(fails_after_a_step, "s3")
    await race(world, run.id, rounds=3)
    events = await run.events_async()
    assert count(events, E.RUN_FAILED) == 1
    assert 1 <= EXECUTED["s3"] <= 2  # at least once; twice when the second driver restarts it (see top)
    with pytest.raises(wf.WorkflowRunFailedError, match="planned failure"):
        await run.result_async(timeout=5)


async def test_4_hook_creation_after_the_run_ended_is_dropped_quietly(world, quiet):
    async with two_workers(world):
        run = await wf.start_async(hook_after_slow_step, "s4")
        await asyncio.sleep(0.1)  # the slow step is running inline
        await run.cancel_async()  # the run ends while the driver is about to create the hook
    events = await run.events_async()
    assert events[-1].event_type == E.RUN_CANCELLED
    assert count(events, E.HOOK_CREATED) == 0
    with pytest.raises(wf.HookNotFoundError):
        await wf.resume_hook_async("late:s4", 1)


async def test_5_two_handlers_race_on_wait_completed(world, quiet):
    run = await wf.start_async(sleeps, "s5")
    await race(world, run.id)  # both create (one records) the wait
    await asyncio.sleep(0.1)  # the timer is due
    await race(world, run.id)  # both complete it
    events = await run.events_async()
    assert count(events, E.WAIT_CREATED) == 1
    assert count(events, E.WAIT_COMPLETED) == 1
    assert await run.result_async(timeout=5) == "s5"


async def test_6_two_handlers_race_on_step_completed(world, quiet):
    run = await wf.start_async(one_step, "s6")
    rid = run.id
    await world.events.create(rid, Event(rid, E.RUN_STARTED))
    await world.events.create(rid, Event(rid, E.STEP_CREATED, "step_1", {"step_name": work.name,
                                                                       "input": {"args": ["s6"], "kwargs": {}}}))
    await world.events.create(rid, Event(rid, E.STEP_STARTED, "step_1"))
    # The step is running and its runner is gone: two restart deliveries run it and race to record it.
    await deliver_twice(world, STEP_QUEUE, {"run_id": rid, "step_id": "step_1", "restart": True})
    async with two_workers(world):
        pass
    events = await world.events.list(rid)
    assert count(events, E.STEP_COMPLETED) == 1
    # The run completes once, even when driven twice more.
    await race(world, rid)
    assert count(await world.events.list(rid), E.RUN_COMPLETED) == 1
    assert await run.result_async(timeout=5) == "s6"


async def test_7_two_handlers_race_on_step_started(world, quiet):
    EXECUTED.clear()
    run = await wf.start_async(one_step, "s7")
    rid = run.id
    await world.events.create(rid, Event(rid, E.RUN_STARTED))
    await world.events.create(rid, Event(rid, E.STEP_CREATED, "step_1", {"step_name": work.name,
                                                                       "input": {"args": ["s7"], "kwargs": {}}}))
    await deliver_twice(world, STEP_QUEUE, {"run_id": rid, "step_id": "step_1"})
    async with two_workers(world):
        pass
    events = await world.events.list(rid)
    assert count(events, E.STEP_STARTED) == 1
    assert EXECUTED["s7"] == 1


async def test_8_duplicate_step_created_and_wait_created(world, quiet):
    EXECUTED.clear()
    run = await wf.start_async(sleeps, "s8")
    await race(world, run.id)
    run2 = await wf.start_async(one_step, "s8b")
    await race(world, run2.id)
    for r in (run, run2):
        events = await r.events_async()
        creations = [(e.event_type, e.correlation_id) for e in events
                     if e.event_type in (E.STEP_CREATED, E.WAIT_CREATED)]
        assert len(creations) == len(set(creations))
    assert 1 <= EXECUTED["s8b"] <= 2  # at least once; twice when the second driver restarts it (see top)
