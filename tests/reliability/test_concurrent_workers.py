"""Several `wf worker` processes on one data dir: a thousand runs, none lost, none doubled."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from wf.runtime.client import start_run
from wf.world_local.world import LocalWorld

from . import soak_workflows as sw
from .audit import audit, read_side_file
from .soak import WorkerPool, worker_env

RUNS = 1000
WORKERS = 3


@pytest.mark.slow
async def test_a_thousand_runs_on_three_worker_processes(tmp_path: Path) -> None:
    data, side_file = tmp_path / "data", tmp_path / "steps.jsonl"
    (tmp_path / "logs").mkdir()
    world = LocalWorld(data, fsync=False)
    pool = WorkerPool(data, tmp_path / "logs", worker_env(side_file, fsync=False, step_delay=0), WORKERS, 50)
    pool.start_all()
    expectations = {}
    began = time.monotonic()
    try:
        for x in range(RUNS):
            run = await start_run(world, "soak.quick", [x], {})
            expectations[run.id] = sw.expected("quick", x)
        deadline = time.monotonic() + 120
        left = list(expectations)
        while left and time.monotonic() < deadline:
            left = [r for r in left if not (await world.runs.get(r, resolve_data=False)).status.terminal]
            await asyncio.sleep(0.2)
        seconds = time.monotonic() - began
        assert pool.exited() == [], "a worker died"
    finally:
        pool.stop_all()
        await world.close()
    checker = LocalWorld(data, fsync=False)
    try:
        report = await audit(checker, expectations, side_file)
    finally:
        await checker.close()
    print(f"\n{RUNS} runs x 2 steps on {WORKERS} workers: {seconds:.1f} s")
    assert report.problems == []
    assert report.runs == RUNS and report.lost == 0 and report.wrong_output == 0
    assert report.duplicate_completions == 0 and report.illegal_transitions == 0
    assert report.steps_completed == 2 * RUNS
    executions = read_side_file(side_file)
    assert len(executions) == 2 * RUNS  # no step ran twice: leases held without a crash
    pids = {r["pid"] for r in executions}
    assert len(pids) == WORKERS  # the work was shared
