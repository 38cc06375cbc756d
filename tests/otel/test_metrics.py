"""Step metrics (counters, duration and queue-wait histograms), runs in progress and queue depth."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

import wf
from wf.runtime import telemetry
from wf.runtime import worker as worker_module
from wf.runtime.errors import NotFoundError
from wf.runtime.world import WORKFLOW_QUEUE, World

from .conftest import Otel


async def eventually(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition never held"
        await asyncio.sleep(0.02)


def total(otel: Otel, name: str, **attributes: str) -> float:
    wanted = set(attributes.items())
    return sum(value for key, value in otel.metric(name).items() if wanted <= set(key))


async def test_step_counters_and_durations(otel: Otel, flows: Any, start_worker: Any) -> None:
    labels = {"wf.workflow.name": flows.sequential.name, "wf.step.name": flows.add.name}
    before = {name: total(otel, name, **labels) for name in ("wf.steps.started", "wf.steps.completed",
                                                              "wf.step.duration", "wf.steps.failed")}
    start_worker()
    assert await wf.run_async(flows.sequential, 3) == 3
    await eventually(lambda: total(otel, "wf.steps.completed", **labels) - before["wf.steps.completed"] >= 3)
    assert total(otel, "wf.steps.started", **labels) - before["wf.steps.started"] == 3
    assert total(otel, "wf.steps.completed", **labels) - before["wf.steps.completed"] == 3
    assert total(otel, "wf.step.duration", **labels) - before["wf.step.duration"] == 3  # histogram counts
    assert total(otel, "wf.steps.failed", **labels) == before["wf.steps.failed"]


async def test_queue_wait_is_measured_for_queued_steps(otel: Otel, flows: Any, start_worker: Any) -> None:
    labels = {"wf.workflow.name": flows.fanout.name}
    before = total(otel, "wf.step.queue_wait", **labels)
    start_worker(concurrency=1)  # one step slot: the others wait in the queue
    assert await wf.run_async(flows.fanout, 4) == 10
    await eventually(lambda: total(otel, "wf.step.queue_wait", **labels) - before >= 3)


async def test_runs_in_progress(otel: Otel, flows: Any, start_worker: Any, world: World) -> None:
    labels = {"wf.workflow.name": flows.hooked.name}
    before = total(otel, "wf.runs.in_progress", **labels)
    start_worker()
    runs = [await wf.start_async(flows.hooked, f"in-progress-{i}") for i in range(3)]
    for i in range(3):
        while True:
            try:
                await world.hooks.get_by_token(f"in-progress-{i}")
                break
            except NotFoundError:  # until the run reaches its hook
                await asyncio.sleep(0.01)
    # (the hook may be seen a moment before its commit's spans and metrics are emitted)
    await eventually(lambda: total(otel, "wf.runs.in_progress", **labels) - before == 3)
    for i, run in enumerate(runs):
        await wf.resume_hook_async(f"in-progress-{i}", i)
        await run.result_async(timeout=30)
    await eventually(lambda: total(otel, "wf.runs.in_progress", **labels) == before)


async def test_queue_depth_sampled_by_workers(otel: Otel, flows: Any, start_worker: Any, world: World,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(telemetry, "QUEUE_DEPTH_SECONDS", 0.0)  # (at most one sample a minute otherwise)
    runs = [await wf.start_async(flows.sequential, 1) for _ in range(3)]  # no worker yet: they wait
    await telemetry.sample_queue_depth(world)
    ready = {"wf.queue": WORKFLOW_QUEUE, "wf.queue.state": "ready"}
    assert total(otel, "wf.queue.depth", **ready) == 3
    monkeypatch.setattr(worker_module, "HEARTBEAT_SECONDS", 0.05)
    start_worker()
    for run in runs:
        await run.result_async(timeout=30)
    deadline = asyncio.get_running_loop().time() + 10
    while total(otel, "wf.queue.depth", **ready) != 0:  # the worker's heartbeat samples it again
        assert asyncio.get_running_loop().time() < deadline, "queue depth never sampled by the worker"
        await asyncio.sleep(0.05)
