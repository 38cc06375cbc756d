"""Clock skew: due times are compared on one clock (the kernel's, read through the data dir's file stamps),
event times in a run never go backwards, and workers announce how far their clock is off.

The skewed workers are real `wf worker` processes whose `time.time()` / `time.time_ns()` are shifted
before wf is imported, as a faked clock (libfaketime, a bad NTP step) would shift them.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest

import wf
from wf.runtime.entities import Event, EventType
from wf.runtime.serving import worker_notes
from wf.world_local.world import LocalWorld

from .conftest import FLOWS, REPO

E = EventType
TWO_HOURS = 7200.0

_SKEWED_WORKER = r"""
import sys, time
_time, _time_ns, skew = time.time, time.time_ns, float(sys.argv[1])
time.time = lambda: _time() + skew
time.time_ns = lambda: _time_ns() + int(skew * 1e9)
from wf.cli.app import main
sys.argv = ["wf", "worker", sys.argv[2], "--data-dir", sys.argv[3]]
main()
"""


@pytest.fixture
async def skewed_worker(data_dir: Path, world: LocalWorld, tmp_path: Path) -> AsyncIterator[object]:
    """Start a `wf worker` whose clock is off by `skew` seconds; yields a starter returning its log path."""
    procs: list[subprocess.Popen[bytes]] = []

    async def start(skew: float) -> Path:
        log = tmp_path / f"worker{len(procs)}.log"
        with open(log, "wb") as out:
            procs.append(subprocess.Popen(
                [sys.executable, "-c", _SKEWED_WORKER, str(skew), str(FLOWS), str(data_dir)], cwd=REPO,
                env={**os.environ, "WF_FSYNC": "0", "PYTHONUNBUFFERED": "1"}, stdout=out, stderr=subprocess.STDOUT,
            ))
        deadline = time.monotonic() + 30
        while b"ready" not in log.read_bytes():
            assert procs[-1].poll() is None and time.monotonic() < deadline, log.read_text()
            await asyncio.sleep(0.05)
        return log

    yield start
    for proc in procs:
        proc.terminate()
    for proc in procs:
        proc.wait(30)


@pytest.mark.parametrize("skew", [-TWO_HOURS, TWO_HOURS])
async def test_a_worker_whose_clock_is_off_by_hours_takes_work_when_it_is_due(
    world: LocalWorld, skewed_worker: object, skew: float,
) -> None:
    log = await skewed_worker(skew)  # type: ignore[operator]
    run = await wf.start_async("wl.chain", 1)
    assert await run.result_async(timeout=20) == 7  # ready at once for a worker behind, too
    nap = await wf.start_async("wl.nap", 1.5)
    began = time.monotonic()
    before, after = await nap.result_async(timeout=20)
    took = time.monotonic() - began
    assert after >= before  # wf.now() in the run moved forward
    assert took >= 1.4, f"the sleep ended after {took:.2f} s"  # not early for a worker ahead
    assert took < 8, f"the sleep ended after {took:.2f} s"
    workers = await world.live_workers()
    assert len(workers) == 1 and abs(workers[0]["clock_skew"] - skew) < 5, workers
    assert "clock is" in log.read_text() and ("behind" if skew < 0 else "ahead of") in log.read_text()
    notes = await worker_notes(world)  # what wf doctor prints
    assert [n for n in notes if "clock is" in n and ("behind" if skew < 0 else "ahead of") in n], notes


async def test_a_correct_clock_announces_no_skew(world: LocalWorld) -> None:
    assert abs(world.clock.skew) < 0.25
    worker_id = await world.announce_worker({"kind": "worker"})
    try:
        [info] = [w for w in await world.live_workers() if w["worker_id"] == worker_id]
        assert abs(info["clock_skew"]) < 0.25
        assert not [n for n in await worker_notes(world) if "clock is" in n]
    finally:
        await world.retire_worker(worker_id)


async def test_event_times_in_a_run_never_go_backwards(world: LocalWorld) -> None:
    run = await wf.start_async("wl.hold", "clock-1")
    rid = run.id
    started = (await world.events.create(rid, Event(rid, E.RUN_STARTED))).events[0]
    assert started.created_at is not None
    behind = started.created_at - timedelta(hours=2)  # written by a process whose clock is 2 h behind
    hook = (await world.events.create(rid, Event(rid, E.HOOK_CREATED, "h1", {"token": "clock-1"},
                                                 created_at=behind))).events[0]
    ended = (await world.events.create(rid, Event(rid, E.RUN_CANCELLED, created_at=behind))).events[0]
    times = [e.created_at for e in await world.events.list(rid)]
    assert times == sorted(times)
    assert hook.created_at == ended.created_at == started.created_at
