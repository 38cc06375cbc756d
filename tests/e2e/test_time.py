"""Durable time: the workflow clock, parallel sleeps, cancelling a sleeping run."""

from __future__ import annotations

import asyncio
import time
from types import ModuleType

import pytest

import wf

from .conftest import E2E


async def test_sleep_advances_the_workflow_clock_by_at_least_its_duration(e2e: E2E, workflows: ModuleType) -> None:
    started = time.monotonic()
    run = await e2e.env.start(workflows.sleep_clock, 1.0)
    assert await run.result_async(timeout=20) >= 1.0
    assert time.monotonic() - started >= 1.0


async def test_ten_parallel_one_second_sleeps_take_about_one_second(e2e: E2E, workflows: ModuleType) -> None:
    started = time.monotonic()
    run = await e2e.env.start(workflows.parallel_sleeps, 10, 1.0)
    assert await run.result_async(timeout=20) == 10
    elapsed = time.monotonic() - started
    assert 1.0 <= elapsed < 3.0, elapsed
    assert (await e2e.env.event_types(run)).count("wait_completed") == 10


async def test_cancelling_a_sleeping_run(e2e: E2E, workflows: ModuleType) -> None:
    run = await e2e.env.start(workflows.sleep_forever)
    deadline = time.monotonic() + 10
    while not [w for w in (await e2e.env.world.waits.list(run_id=run.id)).data if w.status == "waiting"]:
        assert time.monotonic() < deadline, "the run never started sleeping"
        await asyncio.sleep(0.02)
    await run.cancel_async()
    with pytest.raises(wf.WorkflowRunCancelledError):
        await run.result_async(timeout=5)
    assert await run.status_async() == "cancelled"
    waits = (await e2e.env.world.waits.list(run_id=run.id)).data
    assert waits and all(w.status != "waiting" for w in waits)
