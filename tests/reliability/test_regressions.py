"""Failures the reliability work found, each pinned by the test that first showed it.

See RELIABILITY.md ("Failures found") for the story of each.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest

import wf
from wf.world_local import faults
from wf.world_local.notify import Notifier
from wf.world_local.world import LocalWorld


@pytest.mark.parametrize("spins", [0, 1, 2, 3])
async def test_waiting_for_a_notification_can_be_cancelled_when_a_wake_up_races_the_cancel(
    tmp_path: Path, spins: int,
) -> None:
    # Found by the 1,000-run concurrent test under CPU load: a worker's drive hung for good
    # because cancelling its log watcher was swallowed (asyncio.wait_for on Python 3.11).
    notifier = Notifier(tmp_path / "notify")
    try:
        with notifier.subscribe("run:x") as sub:

            async def watch_forever() -> None:
                while True:
                    await sub.wait(1.0)

            task = asyncio.create_task(watch_forever())
            await asyncio.sleep(0.01)
            sub._wake()  # a commit's notification arrives...
            for _ in range(spins):
                await asyncio.sleep(0)
            task.cancel()  # ...just as the worker stops watching
            await asyncio.wait({task}, timeout=2.0)
            assert task.cancelled(), "the watcher ignored its cancellation"
    finally:
        notifier.close()


async def test_worker_survives_a_disk_error_while_taking_a_message(
    world: LocalWorld, side_file: Path, start_worker: Callable[..., tuple[object, asyncio.Task[None]]],
) -> None:
    # Found by the fault-injection test: ENOSPC writing a lease file escaped Worker.run and
    # killed the worker (it caught only WorldError).
    run = await wf.start_async("soak.chain", 1)
    faults.arm("enospc@queue:1")  # every lease (and message) file write fails
    _, task = start_worker()
    await asyncio.sleep(1.2)
    assert not task.done(), "the worker died on a disk error"
    faults.disarm()
    assert await run.result_async(timeout=20) == 7


async def test_parent_learns_the_outcome_of_a_child_even_if_the_first_notification_failed(
    world: LocalWorld, side_file: Path, monkeypatch: pytest.MonkeyPatch,
    start_worker: Callable[..., tuple[object, asyncio.Task[None]]],
) -> None:
    # A child's end is sent to its parent's hook right after the child's run_completed is
    # recorded. If that send fails (a disk error here; a kill -9 at that moment does the
    # same), the child is over, so nothing ever sends it again: the parent waited forever.
    monkeypatch.setenv("WF_SOAK_STEP_DELAY", "0.2")  # a child slow enough to arm the fault under it
    parent = await wf.start_async("soak.parent", 1)
    start_worker()
    child_id = await _child_of(world, parent.id)
    faults.arm("eio@append:1", where=lambda path: parent.id in path)  # the parent's log refuses writes
    child = await world.runs.get(child_id)
    for _ in range(200):
        child = await world.runs.get(child_id, resolve_data=False)
        if child.status.terminal:
            break
        await asyncio.sleep(0.02)
    assert child.status == "completed"
    await asyncio.sleep(0.3)
    faults.disarm()  # the disk is fine again
    assert await parent.result_async(timeout=15) == 9


async def _child_of(world: LocalWorld, parent_id: str) -> str:
    for _ in range(500):
        for run in (await world.runs.list(workflow_name="soak.chain", resolve_data=False)).data:
            if run.attributes.get("parent_run_id") == parent_id:
                return run.run_id
        await asyncio.sleep(0.01)
    raise AssertionError("the child run was never started")


async def test_a_suspended_parent_learns_the_child_outcome_when_the_first_notification_failed(
    world: LocalWorld, side_file: Path, monkeypatch: pytest.MonkeyPatch,
    start_worker: Callable[..., tuple[object, asyncio.Task[None]]],
) -> None:
    # Found by the crash soak with faults armed: the parent waited for its child with no
    # message queued; the child's end failed to reach it (EIO on the parent's log), and the
    # child's redelivered message found the child over and did nothing. Lost for good.
    monkeypatch.setenv("WF_SOAK_STEP_DELAY", "0.2")
    parent = await wf.start_async("soak.adopter", 1)
    start_worker()
    child_id = await _child_of(world, parent.id)
    for _ in range(200):  # the parent has recorded the child's start and suspended
        if any(e.event_type == "step_completed" for e in await world.events.list(parent.id)):
            break
        await asyncio.sleep(0.01)
    faults.arm("eio@append:1", where=lambda path: parent.id in path)
    for _ in range(300):
        if (await world.runs.get(child_id, resolve_data=False)).status.terminal:
            break
        await asyncio.sleep(0.02)
    await asyncio.sleep(0.3)
    faults.disarm()
    assert await parent.result_async(timeout=10) == 7


async def test_worker_runs_even_when_it_cannot_announce_itself(
    world: LocalWorld, side_file: Path, start_worker: Callable[..., tuple[object, asyncio.Task[None]]],
) -> None:
    # Found by the crash soak with faults: ENOSPC writing the worker's presence file ended
    # Worker.run at once, and `wf worker` then exited with status 0 having done nothing.
    faults.arm("enospc@atomic:1", where=lambda path: "/workers/" in path)
    run = await wf.start_async("soak.chain", 2)
    _, task = start_worker()
    assert await run.result_async(timeout=20) == 8
    assert not task.done()
