"""Recovery trusts the log, not the unsynced status index: a run whose log lost its tail (a power
loss with `WF_FSYNC=0`) while its marker still says "completed" is active, and is driven again."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import orjson

import wf
from wf.runtime.entities import EventType, RunStatus
from wf.runtime.worker import Worker
from wf.world_local.leases import boot_id
from wf.world_local.world import VERIFIED_BOOT, LocalWorld

E = EventType


async def finished_run(data_dir: Path) -> str:
    """A completed `wl.chain(1)` run, driven by an in-process worker on its own World."""
    world = LocalWorld(data_dir, fsync=False)
    wf.configure(world=world)
    await world.start()
    worker = Worker(world)
    task = asyncio.create_task(worker.run())
    try:
        run = await wf.start_async("wl.chain", 1)
        assert await run.result_async(timeout=20) == 7
    finally:
        worker.stop()
        await asyncio.wait_for(task, 30)
        await world.close()
    return run.id


def tear_last_step(data_dir: Path, run_id: str) -> None:
    """Cut the log at its last step_completed (the run_completed after it goes too), leaving half a line."""
    path = data_dir / "runs" / run_id / "events.jsonl"
    data = path.read_bytes()
    at = data.rfind(b'"event_type":"step_completed"')
    line_start = data.rfind(b"\n", 0, at) + 1
    with open(path, "r+b") as f:
        f.truncate(line_start + 17)  # a torn write of the line
    assert (data_dir / "index" / "status" / "completed" / run_id).exists()


def pretend_reboot(data_dir: Path) -> None:
    """What a power loss also does: the machine boots again (its boot id changes)."""
    (data_dir / VERIFIED_BOOT).write_bytes(orjson.dumps({"boot_id": "an-earlier-boot"}))


async def drive_to_end(world: LocalWorld, run_id: str) -> None:
    wf.configure(world=world)
    worker = Worker(world)
    task = asyncio.create_task(worker.run())
    try:
        assert await world.wait_for_end(run_id, timeout=20) is not None
    finally:
        worker.stop()
        await asyncio.wait_for(task, 30)


async def test_the_first_start_after_a_reboot_drives_a_run_whose_log_lost_its_end(data_dir: Path) -> None:
    run_id = await finished_run(data_dir)
    tear_last_step(data_dir, run_id)
    pretend_reboot(data_dir)
    world = LocalWorld(data_dir, fsync=False)  # a fresh worker's start-up
    try:
        await world.start()
        run = await world.runs.get(run_id)
        assert run.status == RunStatus.RUNNING
        assert run_id in world._store.index.run_ids([RunStatus.RUNNING])
        assert [m.payload["run_id"] for m in await world.queue.list()] == [run_id]
        await drive_to_end(world, run_id)
        run = await world.runs.get(run_id)
        assert run.status == RunStatus.COMPLETED and run.output is not None
        events = await world.events.list(run_id)
        assert [e.event_type for e in events].count(E.RUN_COMPLETED) == 1
        assert os.listdir(data_dir / "index" / "status" / "running") == []
    finally:
        await world.close()
    assert orjson.loads((data_dir / VERIFIED_BOOT).read_bytes()) == {"boot_id": boot_id()}


async def test_verify_runs_reactivates_runs_whose_log_does_not_end_them_whatever_the_boot(data_dir: Path) -> None:
    torn = await finished_run(data_dir)
    unmarked = await finished_run(data_dir)
    intact = await finished_run(data_dir)
    tear_last_step(data_dir, torn)
    tear_last_step(data_dir, unmarked)
    os.unlink(data_dir / "index" / "status" / "completed" / unmarked)  # its marker never reached the disk
    world = LocalWorld(data_dir, fsync=False)
    try:
        await world.start()  # same boot: start() alone does not read ended runs' logs
        assert sorted(await world.verify_runs()) == sorted([torn, unmarked])
        assert {m.payload["run_id"] for m in await world.queue.list()} == {torn, unmarked}
        assert (await world.runs.get(intact)).status == RunStatus.COMPLETED
        for run_id in (torn, unmarked):
            await drive_to_end(world, run_id)
            assert (await world.runs.get(run_id)).status == RunStatus.COMPLETED
    finally:
        await world.close()


async def test_wf_recover_trusts_the_log_within_the_same_boot(data_dir: Path) -> None:
    from wf.runtime.operations import recover_runs

    run_id = await finished_run(data_dir)
    tear_last_step(data_dir, run_id)
    world = LocalWorld(data_dir, fsync=False)
    try:
        active = await recover_runs(world)  # what `wf recover` does
        assert [run.run_id for run in active] == [run_id]
        await drive_to_end(world, run_id)
        assert (await world.runs.get(run_id)).status == RunStatus.COMPLETED
    finally:
        await world.close()


async def test_a_marker_the_log_contradicts_is_corrected_both_ways(data_dir: Path) -> None:
    run_id = await finished_run(data_dir)
    completed = data_dir / "index" / "status" / "completed" / run_id
    os.link(completed, data_dir / "index" / "status" / "failed" / run_id)  # two markers
    world = LocalWorld(data_dir, fsync=False)
    try:
        assert await world.verify_runs() == []
        assert completed.exists() and not (data_dir / "index" / "status" / "failed" / run_id).exists()
    finally:
        await world.close()
