"""`wf schedule ...`, `wf prune` and the "waiting for a slot" line of `wf inspect`, run as subprocesses."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time

import pytest

from wf.runtime.client import start_run
from wf.runtime.entities import RunStatus
from wf.runtime.schedules import put_schedule
from wf.runtime.world import World

from .conftest import REPO, Workers, require

pytestmark = pytest.mark.timeout(120)


def flow(name: str) -> str:
    return f"tests.flow_control.flows.{name}"


async def wf_cli(workers: Workers, *args: str) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(subprocess.run, [sys.executable, "-m", "wf.cli", *args, "--world", workers.url],
                                   cwd=REPO, env=workers.env(COLUMNS="200"), capture_output=True, text=True,
                                   timeout=60)


async def test_schedule_ls_pause_resume_trigger_rm(store_world: tuple[World, Workers]) -> None:
    world, workers = store_world
    require(world, "schedules")
    await put_schedule(world, flow("tick"), [], {}, cron="*/5 * * * *", schedule_id="five", tz="Europe/Paris")
    listed = await wf_cli(workers, "schedule", "ls")
    assert listed.returncode == 0, listed.stderr
    assert "five" in listed.stdout and "cron */5 * * * * (Europe/Paris)" in listed.stdout and "active" in listed.stdout
    assert (await wf_cli(workers, "schedule", "pause", "five")).returncode == 0
    (doc,) = json.loads((await wf_cli(workers, "schedule", "ls", "--json")).stdout)
    assert doc["paused"] is True and doc["workflow"] == flow("tick")
    assert (await wf_cli(workers, "schedule", "resume", "five")).returncode == 0
    assert not (await world.schedules.get("five")).paused
    triggered = await wf_cli(workers, "schedule", "trigger", "five", "--json")
    assert triggered.returncode == 0, triggered.stderr
    run = await world.runs.get(json.loads(triggered.stdout)["run_id"])
    assert run.workflow_name == flow("tick") and run.attributes["schedule_id"] == "five"
    assert (await wf_cli(workers, "schedule", "rm", "five")).returncode == 0
    missing = await wf_cli(workers, "schedule", "pause", "five")
    assert missing.returncode == 2 and missing.stderr.startswith("error: no schedule 'five'")
    assert "Traceback" not in missing.stderr
    assert (await wf_cli(workers, "schedule", "ls")).stdout.strip() == "no schedules"


async def test_prune_dry_run_then_prune_keeps_active_runs(store_world: tuple[World, Workers]) -> None:
    world, workers = store_world
    require(world, "prune")
    workers.start(1)
    done = [await start_run(world, flow("short"), [i], {}) for i in range(3)]
    for run in done:
        assert (await world.wait_for_end(run.id, timeout=30)).status == RunStatus.COMPLETED  # type: ignore[union-attr]
    active = await start_run(world, flow("napper"), [30.0], {})
    await asyncio.sleep(1.1)  # the local World deletes a run once its log has been still for a second
    dry = await wf_cli(workers, "prune", "--older-than", "0", "--dry-run", "--json")
    assert dry.returncode == 0, dry.stderr
    assert sorted(json.loads(dry.stdout)["run_ids"]) == sorted(r.id for r in done)
    assert len((await world.runs.list(limit=10)).data) == 4  # a dry run deletes nothing
    kept = await wf_cli(workers, "prune", "--older-than", "1h")
    assert kept.returncode == 0 and "deleted 0 run(s)" in kept.stdout
    real = await wf_cli(workers, "prune", "--older-than", "0s", "--status", "completed")
    assert real.returncode == 0 and "deleted 3 run(s)" in real.stdout, real.stdout + real.stderr
    assert [r.run_id for r in (await world.runs.list(limit=10)).data] == [active.id]
    bad = await wf_cli(workers, "prune", "--older-than", "0", "--status", "running")
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    await active.cancel_async()


@pytest.mark.slow
async def test_inspect_says_which_slot_a_step_waits_for(store_world: tuple[World, Workers]) -> None:
    world, workers = store_world
    require(world, "limits")
    workers.start(1)
    runs = [await start_run(world, flow("hold"), [20.0], {}) for _ in range(3)]  # a limit of 2
    deadline = time.monotonic() + 20
    while True:
        states = await world.limits.slots(f"step:{flow('blocking_sleep')}")
        if states and len(states[0].holders) == 2 and states[0].waiters:
            break
        assert time.monotonic() < deadline, states
        await asyncio.sleep(0.1)
    waiting = runs[2].id
    shown = await wf_cli(workers, "inspect", waiting)
    assert shown.returncode == 0, shown.stderr
    assert f"waiting for a slot of step {flow('blocking_sleep')} (step_1): 2/2 taken, 1 in line" in shown.stdout
    doc = json.loads((await wf_cli(workers, "inspect", waiting, "--json")).stdout)
    assert doc["waiting_for_slots"] == [f"waiting for a slot of step {flow('blocking_sleep')} (step_1): 2/2 taken, "
                                        "1 in line"]
    holding = json.loads((await wf_cli(workers, "inspect", runs[0].id, "--json")).stdout)
    assert holding["waiting_for_slots"] == []
    for run in runs:
        await run.cancel_async()

