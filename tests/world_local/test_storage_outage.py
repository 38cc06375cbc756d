"""After a full or read-only disk, work goes on within a couple of seconds of the disk coming back (not
after a lease or the sweep period), and the worker's log says it waits on storage."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

import pytest

import wf
from wf.world_local import faults
from wf.world_local.world import LocalWorld

OUTAGE_SECONDS = 4.0


@pytest.mark.parametrize("spec", ["enospc:1", "eio@append:1"])
async def test_runs_caught_mid_flight_by_a_storage_outage_finish_soon_after_it(
    world: LocalWorld, start_worker: Callable[..., object], caplog: pytest.LogCaptureFixture, spec: str,
) -> None:
    caplog.set_level(logging.WARNING)
    start_worker()
    runs = [await wf.start_async("wl.slow_chain", x) for x in range(6)]
    runs += [await wf.start_async("wl.nap", 0.5) for _ in range(3)]
    await asyncio.sleep(0.1)  # steps and sleeps under way
    faults.arm(spec)
    await asyncio.sleep(OUTAGE_SECONDS)
    faults.disarm()
    back = time.monotonic()
    results = [await run.result_async(timeout=30) for run in runs]
    took = time.monotonic() - back
    assert results[:6] == [x + 3 for x in range(6)]
    assert took < 5.0, f"work resumed {took:.1f} s after storage came back"
    messages = [r.getMessage() for r in caplog.records if r.name == "wf.worker"]
    assert any(m.startswith("waiting on storage:") for m in messages), messages
    assert any(m.startswith("storage is back after") for m in messages), messages
    assert not any("unexpected error" in m for m in messages)
