"""The eight concurrent scenarios of seed 002, each with real concurrency against one World.

Two handlers (two Worker objects, as two processes would be) act on the same run at the
same moment. In every case: no error is logged, no effect is recorded twice, the run ends once.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from datetime import UTC, datetime

import pytest

import wf
from wf.runtime.entities import Event, EventType
from wf.runtime.worker import Worker
from wf.runtime.world import STEP_QUEUE, WORKFLOW_QUEUE, Message

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


def msg(queue: str, payload: dict, n: int = 0) -> Message:
    return Message(message_id=f"m{n}", queue=queue, payload=payload, order_key=payload["run_id"],
                   available_at=datetime.now(UTC), attempts=1)


@pytest.fixture
def quiet(caplog: pytest.LogCaptureFixture):
    caplog.set_level(logging.WARNING)
    yield
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, [r.getMessage() for r in errors]


async def race(world, run_id: str, rounds: int = 1) -> None:
    """Two workers drive the same run at once (duplicate messages), `rounds` times."""
    workers = [Worker(world), Worker(world)]
    for i in range(rounds):
        await asyncio.gather(*(w._drive_message(msg(WORKFLOW_QUEUE, {"run_id": run_id}, i)) for w in workers))


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
    run = await wf.start_async(one_step, "s2")
    await Worker(world)._drive_message(msg(WORKFLOW_QUEUE, {"run_id": run.id}))  # runs the step, completes
    # Both now see a log that ends with the run's last step and race to record its end.
    await race(world, run.id, rounds=3)
    events = await run.events_async()
    assert count(events, E.RUN_COMPLETED) == 1 and events[-1].event_type == E.RUN_COMPLETED
    assert EXECUTED["s2"] == 1


async def test_3_two_handlers_race_on_run_failed(world, quiet):
    EXECUTED.clear()
    run = await wf.start_async(fails_after_a_step, "s3")
    await race(world, run.id, rounds=3)
    events = await run.events_async()
    assert count(events, E.RUN_FAILED) == 1
    assert EXECUTED["s3"] == 1
    with pytest.raises(wf.WorkflowRunFailedError, match="planned failure"):
        await run.result_async(timeout=5)


async def test_4_hook_creation_after_the_run_ended_is_dropped_quietly(world, quiet):
    run = await wf.start_async(hook_after_slow_step, "s4")
    driver = asyncio.create_task(Worker(world)._drive_message(msg(WORKFLOW_QUEUE, {"run_id": run.id})))
    await asyncio.sleep(0.1)  # the slow step is running inline
    await run.cancel_async()  # the run ends while the driver is about to create the hook
    await driver
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
    from wf.runtime.step_executor import AttemptOutcome

    a, b = Worker(world), Worker(world)
    done = [AttemptOutcome(Event(rid, E.STEP_COMPLETED, "step_1", {"result": r})) for r in ("first", "second")]
    await asyncio.gather(a._record_attempt(rid, "step_1", done[0], notify=True),
                         b._record_attempt(rid, "step_1", done[1], notify=True))
    events = await world.events.list(rid)
    assert count(events, E.STEP_COMPLETED) == 1
    # Exactly one workflow message woke the run (the winner's), and the run completes once.
    await race(world, rid)
    assert count(await world.events.list(rid), E.RUN_COMPLETED) == 1


async def test_7_two_handlers_race_on_step_started(world, quiet):
    EXECUTED.clear()
    run = await wf.start_async(one_step, "s7")
    rid = run.id
    await world.events.create(rid, Event(rid, E.RUN_STARTED))
    await world.events.create(rid, Event(rid, E.STEP_CREATED, "step_1", {"step_name": work.name,
                                                                       "input": {"args": ["s7"], "kwargs": {}}}))
    a, b = Worker(world), Worker(world)
    step_message = {"run_id": rid, "step_id": "step_1"}
    await asyncio.gather(a._step_message(msg(STEP_QUEUE, step_message, 1)),
                         b._step_message(msg(STEP_QUEUE, step_message, 2)))
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
    assert EXECUTED["s8b"] == 1
