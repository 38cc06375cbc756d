"""`wf doctor [--fix]`: finds runs nothing will drive, views that disagree with their log, dead leases."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any

from wf.runtime.world import WORKFLOW_QUEUE
from wf.world_local.world import LocalWorld

from .conftest import Runs, ended, reached, start, start_worker_process, stop_process, until, wf_cli, worker_on


def doctor(data_dir: Path, *args: str) -> tuple[int, dict[str, Any]]:
    result = wf_cli(data_dir, "doctor", "--json", *args)
    assert result.returncode in (0, 1), result.stderr
    return result.returncode, json.loads(result.stdout)


def problems(report: dict[str, Any], key: str = "findings") -> list[tuple[str, str]]:
    return sorted((f["check"], f["run_id"]) for f in report[key])


def test_a_healthy_data_dir_has_no_findings(recorded: Runs) -> None:
    result = wf_cli(recorded.data_dir, "doctor")
    assert (result.returncode, result.stdout.strip()) == (0, "no problems found")


async def test_runs_whose_workflow_message_was_lost_are_found_and_requeued(fresh: Path) -> None:
    async with worker_on(fresh) as world:
        sleeping = await start(world, "sleeper", 3600)
        waiting = await start(world, "waiter", "tok-doctor")
        await reached(world, sleeping, "wait_created")
        await reached(world, waiting, "hook_created")
    async with worker_on(fresh, run_worker=False) as world:
        never_started = await start(world, "retrying", 1)
        for message in await world.queue.list(WORKFLOW_QUEUE):
            await world.queue.delete(message.message_id)

    code, report = doctor(fresh)
    assert code == 1
    # The run suspended on a live hook needs no message: resuming the hook enqueues it.
    assert problems(report) == sorted([("queue", sleeping), ("queue", never_started)])
    text = {f["run_id"]: f["problem"] for f in report["findings"]}
    assert "sleeping until" in text[sleeping] and "no delayed workflow message" in text[sleeping]
    assert "pending run with no workflow message" in text[never_started]
    table = wf_cli(fresh, "doctor")
    assert table.returncode == 1 and sleeping in table.stdout and "wf doctor --fix" in table.stdout

    code, report = doctor(fresh, "--fix")
    assert code == 0 and report["remaining"] == []
    assert all(f["fixed"] for f in report["findings"])
    world = LocalWorld(fresh, fsync=False)
    queued = sorted(m.payload["run_id"] for m in await world.queue.list(WORKFLOW_QUEUE))
    await world.close()
    assert queued == sorted([sleeping, never_started])
    async with worker_on(fresh) as world:
        await ended(world, never_started)  # the requeued run is driven again
    assert doctor(fresh)[0] == 0


async def test_views_edited_to_disagree_with_the_log_are_rebuilt(fresh: Path) -> None:
    async with worker_on(fresh) as world:
        run_id = await start(world, "retrying", 5)
        await ended(world, run_id)
    run_file = fresh / "runs" / run_id / "run.json"
    run = json.loads(run_file.read_text())
    run["output"] = {"forged": True}
    run_file.write_text(json.dumps(run))

    code, report = doctor(fresh)
    assert code == 1
    assert problems(report) == [("views", run_id)]
    assert "output" in report["findings"][0]["problem"]
    code, report = doctor(fresh, "--fix")
    assert code == 0 and report["findings"][0]["fixed"] and report["remaining"] == []
    story = json.loads(wf_cli(fresh, "inspect", run_id, "--json").stdout)
    assert story["run"]["output"]["total"] == 11
    assert (story["steps"][0]["status"], story["steps"][0]["attempt"]) == ("completed", 2)


async def test_a_lease_held_by_a_killed_worker_is_given_back(fresh: Path) -> None:
    async with worker_on(fresh, run_worker=False) as world:
        run_id = await start(world, "two_steps", 60)
    worker = start_worker_process(fresh)
    try:
        world = LocalWorld(fresh, fsync=False)

        async def slow_step_running() -> bool:
            steps = (await world.steps.list(run_id)).data
            return any(s.step_id == "step_2" and s.status == "running" for s in steps)

        await until(slow_step_running)
        await world.close()
        os.kill(worker.pid, signal.SIGKILL)
        worker.wait(10)
    finally:
        stop_process(worker)

    code, report = doctor(fresh)
    assert code == 1
    assert problems(report) == [("lease", run_id)]
    assert f"process {worker.pid}, which is dead" in report["findings"][0]["problem"]
    code, report = doctor(fresh, "--fix")
    assert code == 0 and report["remaining"] == []
    listed = json.loads(wf_cli(fresh, "queue", "ls", "--json").stdout)
    assert [(m["queue"], m["state"], m["payload"]["run_id"]) for m in listed] == [(WORKFLOW_QUEUE, "ready", run_id)]
