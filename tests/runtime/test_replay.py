"""Replay: divergence detection, the instance cache, and handlers racing on one run (seed 002)."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter

import pytest

import wf
from wf.runtime.entities import Event, EventType
from wf.runtime.replay import WorkflowInstance
from wf.runtime.worker import Worker
from wf.runtime.world import WORKFLOW_QUEUE, Message

RUNS: Counter[str] = Counter()


@wf.step
async def count(key: str) -> str:
    RUNS[key] += 1
    return key


@wf.step
async def other_step(key: str) -> str:
    return key


@wf.workflow(name="tests.divergent")
async def divergent_v1(token: str) -> str:
    await count("v1")
    return await wf.create_hook(token=token)


async def divergent_v2(token: str) -> str:
    await other_step("v2")  # a different step where the log holds `count`
    return await wf.create_hook(token=token)


async def test_changed_code_fails_the_run_with_a_clear_divergence(world, worker, hook_ready):
    run = await wf.start_async(divergent_v1, "div-1")
    await hook_ready("div-1")
    before = len(await run.events_async())
    wf.workflow(name="tests.divergent")(divergent_v2)  # a code reload
    try:
        await wf.resume_hook_async("div-1", "go")
        with pytest.raises(wf.WorkflowRunFailedError) as err:
            await run.result_async(timeout=10)
    finally:
        wf.workflow(name="tests.divergent")(divergent_v1.fn)
    assert err.value.error_type == "ReplayDivergenceError"
    message = err.value.error_message
    assert "step_created step_1" in message and "count" in message
    assert "other_step" in message
    assert "test_replay.py:" in message
    assert "wf replay" in message
    events = await run.events_async()
    # Nothing from the new code was written: the log only gained the payload and the failure.
    assert [e.event_type for e in events[before:]] == [EventType.HOOK_RECEIVED, EventType.RUN_FAILED]


async def test_replaying_a_finished_log_gives_the_same_outcome_without_running_steps(world, worker, hook_ready):
    RUNS.clear()
    run = await wf.start_async(divergent_v1, "div-2")
    await hook_ready("div-2")
    await wf.resume_hook_async("div-2", "payload")
    assert await run.result_async(timeout=10) == "payload"
    assert RUNS["v1"] == 1
    info = await world.runs.get(run.id)
    instance = WorkflowInstance(divergent_v1, info)
    instance.feed_many(await world.events.list(run.id))
    assert instance.outcome is not None and instance.outcome.output == "payload"
    assert RUNS["v1"] == 1


# --- handlers racing on one run (seed 002): duplicates must be harmless and silent ---


@wf.workflow
async def three_counts(key: str) -> list[str]:
    a = await count(key)
    await wf.sleep(0.05)
    b, c = await asyncio.gather(count(key), count(key))
    return [a, b, c]


def _message(run_id: str, n: int) -> Message:
    from datetime import UTC, datetime

    return Message(message_id=f"m{n}", queue=WORKFLOW_QUEUE, payload={"run_id": run_id}, order_key=run_id,
                   available_at=datetime.now(UTC), attempts=1)


async def test_two_handlers_driving_one_run_at_once_record_each_effect_once(world, caplog):
    """Two workers handle duplicate messages for the same run concurrently, again and again:
    they race on run_started, step_created, step_started, wait_completed and run_completed."""
    RUNS.clear()
    run = await wf.start_async(three_counts, "race")
    workers = [Worker(world), Worker(world)]
    caplog.set_level(logging.WARNING)
    for round_ in range(40):
        await asyncio.gather(*(w._drive_message(_message(run.id, round_)) for w in workers))
        if (await world.runs.get(run.id)).status.terminal:
            break
        await asyncio.sleep(0.02)
    assert await run.result_async(timeout=5) == ["race", "race", "race"]
    events = await run.events_async()
    types = [e.event_type for e in events]
    assert types.count(EventType.RUN_STARTED) == 1
    assert types.count(EventType.RUN_COMPLETED) == 1
    assert types.count(EventType.STEP_CREATED) == 3
    assert types.count(EventType.STEP_COMPLETED) == 3
    assert types.count(EventType.WAIT_COMPLETED) == 1
    assert RUNS["race"] == 3  # no step ran twice
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_step_completed_twice_keeps_the_first_result(world):
    """Two handlers finish the same step: the second gets a quiet 409 and changes nothing."""
    run = await wf.start_async(three_counts, "dup")
    rid = run.id
    await world.events.create(rid, Event(rid, EventType.RUN_STARTED))
    await world.events.create(rid, Event(rid, EventType.STEP_CREATED, correlation_id="step_1",
                                         data={"step_name": count.name, "input": {"args": ["dup"], "kwargs": {}}}))
    await world.events.create(rid, Event(rid, EventType.STEP_STARTED, correlation_id="step_1"))
    worker = Worker(world)
    from wf.runtime.step_executor import AttemptOutcome

    outcomes = [AttemptOutcome(Event(rid, EventType.STEP_COMPLETED, correlation_id="step_1", data={"result": v}))
                for v in ("first", "second")]
    await asyncio.gather(*(worker._record_attempt(rid, "step_1", o, notify=False) for o in outcomes))
    step = await world.steps.get(rid, "step_1")
    assert step.status == "completed"
    completed = [e for e in await world.events.list(rid) if e.event_type == EventType.STEP_COMPLETED]
    assert len(completed) == 1 and completed[0].data["result"] == step.output


async def test_cached_and_replayed_drives_agree(world, start_worker):
    """The same workflow gives the same log shape with the instance cache on and off."""
    shapes = []
    for always in (False, True):
        w = start_worker(always_replay=always)
        run = await wf.start_async(three_counts, f"shape-{always}")
        await run.result_async(timeout=10)
        shapes.append([(e.event_type, e.correlation_id) for e in await run.events_async()
                       if e.event_type not in (EventType.STEP_STARTED,)])
        w.stop()
    assert shapes[0] == shapes[1]


async def test_a_run_whose_wake_up_was_lost_is_found_by_the_sweep(world):
    """A crash between recording a hook payload's run being created and enqueueing it leaves
    an active run that nothing drives: the sweep finds it and enqueues it, once."""
    from wf.runtime.liveness import sweep
    from wf.runtime.world import WORKFLOW_QUEUE

    run = await wf.start_async(divergent_v1, "lost-wakeup")
    for message in await world.queue.list():  # the wake-up is lost
        await world.queue.delete(message.message_id)
    assert await sweep(world) == [run.id]
    assert [m.payload["run_id"] for m in await world.queue.list(WORKFLOW_QUEUE)] == [run.id]
    assert await sweep(world) == []  # now something drives it
