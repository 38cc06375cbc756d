"""wf.patched: changing a workflow while runs are in flight, without divergence."""

from __future__ import annotations

import asyncio

import wf
from wf.runtime.entities import EventType

CALLS: list[str] = []


@wf.step
async def old_step(x: int) -> int:
    CALLS.append("old")
    return x + 1


@wf.step
async def new_step(x: int) -> int:
    CALLS.append("new")
    return x + 100


@wf.workflow(name="tests.patched_flow")
async def flow_v1(token: str) -> int:
    value = await old_step(1)
    await wf.create_hook(token=token)
    return await old_step(value)


async def flow_v2(token: str) -> int:
    value = await old_step(1)
    await wf.create_hook(token=token)
    if wf.patched("use-new-step"):
        return await new_step(value)
    return await old_step(value)


async def test_patched_is_false_for_history_and_true_for_new_runs(world, worker, hook_ready):
    CALLS.clear()
    old_run = await wf.start_async(flow_v1, "patch-old")
    await hook_ready("patch-old")
    await asyncio.sleep(0.05)  # the old run is suspended on old code, past the patch point's trigger
    patched = wf.workflow(name="tests.patched_flow")(flow_v2)  # deploy the patched code
    try:
        new_run = await wf.start_async(patched, "patch-new")
        await hook_ready("patch-new")
        await wf.resume_hook_async("patch-new", 1)
        assert await new_run.result_async(timeout=10) == 102  # took the new path
        await wf.resume_hook_async("patch-old", 1)
        # The old run resumes on new code: the hook payload is new history, so it reaches the
        # patch point live and takes the new path too (Temporal's semantics) - without diverging.
        assert await old_run.result_async(timeout=10) == 102
        markers = [e for e in await new_run.events_async() if e.event_type == EventType.MARKER_RECORDED]
        assert [m.data["name"] for m in markers] == ["use-new-step"]
    finally:
        wf.workflow(name="tests.patched_flow")(flow_v1.fn)


async def test_replaying_a_run_recorded_before_the_patch_keeps_the_old_path(world, worker, hook_ready):
    from wf.runtime.debugger import replay_run

    CALLS.clear()
    run = await wf.start_async(flow_v1, "patch-hist")
    await hook_ready("patch-hist")
    await wf.resume_hook_async("patch-hist", 1)
    assert await run.result_async(timeout=10) == 3
    patched = wf.workflow(name="tests.patched_flow")(flow_v2)
    try:
        report = replay_run(patched, await world.runs.get(run.id), await world.events.list(run.id))
    finally:
        wf.workflow(name="tests.patched_flow")(flow_v1.fn)
    assert report.clean, report.summary()
