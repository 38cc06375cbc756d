"""Hooks (external input), output streams, child workflows and cancellation."""

from __future__ import annotations

import asyncio

import pytest

import wf
from wf.runtime.entities import EventType


@wf.workflow
async def three_payloads(token: str) -> dict:
    hook = wf.create_hook(token=token, metadata={"purpose": "test"})
    received = []
    async for payload in hook:
        received.append(payload)
        if len(received) == 3:
            break
    return {"received": received, "token": hook.token}


@wf.workflow
async def hold_token(token: str) -> str:
    return await wf.create_hook(token=token)


@wf.workflow
async def generated_token() -> str:
    hook = wf.create_hook()
    return hook.token


async def test_hook_receives_three_payloads_in_order_with_metadata(world, worker, hook_ready):
    run = await wf.start_async(three_payloads, "order:1")
    await hook_ready("order:1")
    hook = await world.hooks.get_by_token("order:1")
    assert hook.metadata == {"purpose": "test"}
    for i in range(3):
        await wf.resume_hook_async("order:1", {"n": i})
    result = await run.result_async(timeout=10)
    assert result == {"received": [{"n": 0}, {"n": 1}, {"n": 2}], "token": "order:1"}


async def test_resume_of_an_unknown_token_raises_hook_not_found(world):
    with pytest.raises(wf.HookNotFoundError):
        await wf.resume_hook_async("nobody-holds-this", 1)


async def test_token_held_by_a_live_run_conflicts_and_is_freed_when_it_ends(world, worker, hook_ready):
    first = await wf.start_async(hold_token, "shared")
    await hook_ready("shared")
    second = await wf.start_async(hold_token, "shared")
    with pytest.raises(wf.WorkflowRunFailedError) as err:
        await second.result_async(timeout=10)
    assert err.value.error_type == "HookConflictError"
    await wf.resume_hook_async("shared", "done")
    assert await first.result_async(timeout=10) == "done"
    # The first run ended: its token is free for a new run.
    third = await wf.start_async(hold_token, "shared")
    await hook_ready("shared")
    await wf.resume_hook_async("shared", "again")
    assert await third.result_async(timeout=10) == "again"


async def test_generated_tokens_are_long_and_random(worker):
    a = await (await wf.start_async(generated_token)).result_async(timeout=10)
    b = await (await wf.start_async(generated_token)).result_async(timeout=10)
    assert a != b
    assert len(a) >= 32  # 160 bits of keyed hash, in hex


# --- streams ---


@wf.step
async def stream_tokens(n: int) -> int:
    writer = wf.get_writable()
    for i in range(n):
        writer.write(f"tok{i} ")
    writer.write(b"\x00\x01")
    writer.write({"done": True})
    writer.close()
    return n


@wf.step
def stream_from_thread(n: int) -> int:
    writer = wf.get_writable("logs")
    for i in range(n):
        writer.write(i)
    writer.close()
    return n


@wf.workflow
async def streaming(n: int) -> int:
    await stream_from_thread(n)
    return await stream_tokens(n)


async def test_streams_from_async_and_sync_steps_arrive_in_order(worker):
    run = await wf.start_async(streaming, 5)
    chunks = [c async for c in run.stream_async()]
    assert chunks == [f"tok{i} " for i in range(5)] + [b"\x00\x01", {"done": True}]
    assert [c async for c in run.stream_async("logs")] == list(range(5))
    assert await run.result_async(timeout=10) == 5


# --- child workflows ---


@wf.step
async def triple(x: int) -> int:
    return 3 * x


@wf.workflow
async def child(x: int) -> int:
    return await triple(x)


@wf.workflow
async def failing_child() -> None:
    raise RuntimeError("child broke")


@wf.workflow
async def parent(x: int) -> dict:
    a, b = await asyncio.gather(child(x), child(x + 1))
    try:
        await failing_child()
    except wf.WorkflowRunFailedError as exc:
        error = exc.error_message
    return {"sum": a + b, "child_error": error}


async def test_a_parent_awaits_child_runs_durably(world, worker):
    run = await wf.start_async(parent, 1)
    assert await run.result_async(timeout=15) == {"sum": 9, "child_error": "child broke"}
    runs = (await world.runs.list()).data
    children = [r for r in runs if r.attributes.get("parent_run_id") == run.id]
    assert len(children) == 3


# --- cancellation ---


@wf.workflow
async def long_sleep() -> str:
    await wf.sleep("1d")
    return "woke"


async def test_cancelling_a_sleeping_run(world, worker):
    run = await wf.start_async(long_sleep)
    for _ in range(200):
        if (await world.waits.list(run_id=run.id)).data:
            break
        await asyncio.sleep(0.01)
    await run.cancel_async()
    with pytest.raises(wf.WorkflowRunCancelledError):
        await run.result_async(timeout=5)
    waits = (await world.waits.list(run_id=run.id)).data
    assert [w.status for w in waits] == ["disposed"]
    assert (await run.events_async())[-1].event_type == EventType.RUN_CANCELLED


@wf.step
async def slow_step(seconds: float) -> str:
    await asyncio.sleep(seconds)
    return "done"


@wf.workflow
async def two_slow_steps() -> str:
    await slow_step(0.4)
    return await slow_step(0.4)


@wf.workflow
async def hook_or_slow_step(token: str) -> str:
    hook = asyncio.ensure_future(wf.create_hook(token=token))
    step = asyncio.ensure_future(slow_step(5.0))
    done, _ = await asyncio.wait([hook, step], return_when=asyncio.FIRST_COMPLETED)
    return "hook" if hook in done else "step"


async def test_a_hook_payload_reaches_the_code_while_a_step_of_the_run_still_runs(world, worker, hook_ready):
    run = await wf.start_async(hook_or_slow_step, "while-a-step-runs")
    await hook_ready("while-a-step-runs")
    started = asyncio.get_running_loop().time()
    await wf.resume_hook_async("while-a-step-runs", 1)
    assert await run.result_async(timeout=10) == "hook"
    # The driver watches the log during the 5 s step: the payload is fed at once, not after it.
    assert asyncio.get_running_loop().time() - started < 2.5


async def test_cancelling_a_run_while_its_step_runs_ends_it_before_the_next_step(world, worker):
    run = await wf.start_async(two_slow_steps)
    for _ in range(200):
        if [s.status for s in (await world.steps.list(run.id)).data] == ["running"]:
            break
        await asyncio.sleep(0.01)
    await run.cancel_async()
    with pytest.raises(wf.WorkflowRunCancelledError):
        await run.result_async(timeout=5)
    await asyncio.sleep(0.6)  # the first step finishes meanwhile: the run must not go on
    assert [s.step_id for s in (await world.steps.list(run.id)).data] == ["step_1"]
    assert (await world.runs.get(run.id)).status == "cancelled"


async def test_a_child_that_ended_while_nobody_told_the_parent_is_picked_up(world, start_worker):
    """The worker that recorded the child's end died before resuming the parent's hook:
    the parent's next replay finds the ended child and takes its outcome."""
    from wf.runtime import run_driver as worker_module

    real = worker_module.notify_parent
    lost: list[str] = []

    async def crash_before_notifying(world_, run):
        lost.append(run.run_id)  # the process "dies" here: nothing is delivered

    worker_module.notify_parent = crash_before_notifying
    worker = start_worker()
    try:
        run = await wf.start_async(parent, 2)
        for _ in range(500):
            if len(lost) >= 2:
                break
            await asyncio.sleep(0.01)
    finally:
        worker_module.notify_parent = real
        worker.stop()
    assert len(lost) >= 2
    start_worker()  # a fresh worker: replays the parent from its log
    from wf.runtime.messages import enqueue_workflow

    await enqueue_workflow(world, run.id)
    assert (await run.result_async(timeout=15))["sum"] == 15
