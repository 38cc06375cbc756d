"""Stuck states built by hand, and the start-up that repairs them.

Each test leaves an active run in a state no worker would move on its own — its workflow
message lost, its message leased by a worker that died, its timer's wake-up lost — and
shows that starting a World (`LocalWorld.start()`, as every worker does) re-enqueues it
and a worker then finishes it correctly.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import wf
from wf.runtime.entities import EventType, RunStatus
from wf.runtime.world import WORKFLOW_QUEUE
from wf.world_local.world import LocalWorld

E = EventType


async def _clear_queue(world: LocalWorld) -> None:
    for message in await world.queue.list():
        await world.queue.delete(message.message_id)
    assert await world.queue.list() == []


async def _events_until(world: LocalWorld, run_id: str, event_type: EventType, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(e.event_type == event_type for e in await world.events.list(run_id)):
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"run {run_id} never recorded {event_type}")


async def test_active_run_whose_workflow_message_was_lost_is_reenqueued_at_start(
    world: LocalWorld, data_dir: Path, side_file: Path, start_worker: Callable[..., object],
) -> None:
    run = await wf.start_async("soak.chain", 5)
    await _clear_queue(world)  # the stuck state: pending, and nothing will ever drive it
    assert (await world.runs.get(run.id)).status == RunStatus.PENDING

    await LocalWorld(data_dir, fsync=False).start()

    messages = await world.queue.list(WORKFLOW_QUEUE)
    assert [m.payload["run_id"] for m in messages] == [run.id]
    start_worker()
    assert await run.result_async(timeout=20) == 11


LEASE_HOLDER = """
import asyncio, sys
from wf.world_local.world import LocalWorld

async def main():
    world = LocalWorld(sys.argv[1], fsync=False)
    message = await world.queue.take(["workflow"], lease=600, timeout=10)
    print(message.payload["run_id"], flush=True)
    await asyncio.sleep(600)

asyncio.run(main())
"""


async def test_message_leased_by_a_dead_worker_is_delivered_again(
    world: LocalWorld, data_dir: Path, side_file: Path, start_worker: Callable[..., object],
) -> None:
    run = await wf.start_async("soak.chain", 1)
    holder = subprocess.Popen([sys.executable, "-c", LEASE_HOLDER, str(data_dir)], stdout=subprocess.PIPE,
                              env=dict(os.environ, WF_FSYNC="0"))
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().decode().strip() == run.id  # leased for ten minutes
        assert [m.state for m in await world.queue.list()] == ["leased"]
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    await LocalWorld(data_dir, fsync=False).start()
    start_worker()
    began = time.monotonic()
    assert await run.result_async(timeout=20) == 7
    assert time.monotonic() - began < 10  # not after the ten-minute lease


async def test_wait_whose_timer_message_was_lost_still_fires_after_start(
    world: LocalWorld, data_dir: Path, side_file: Path, start_worker: Callable[..., object],
) -> None:
    run = await wf.start_async("soak.sleeper", 4)  # sleeps 1.1 s between two steps
    worker, task = start_worker()  # type: ignore[misc]
    await _events_until(world, run.id, E.WAIT_CREATED)
    worker.stop()
    await asyncio.wait_for(task, 10)
    await _clear_queue(world)  # the delayed wake-up is gone: nothing would ever complete the wait
    assert (await world.waits.list(run_id=run.id)).data[0].status == "waiting"

    await LocalWorld(data_dir, fsync=False).start()
    start_worker()
    assert await run.result_async(timeout=20) == 6
    events = await world.events.list(run.id)
    created = next(e for e in events if e.event_type == E.WAIT_CREATED)
    completed = next(e for e in events if e.event_type == E.WAIT_COMPLETED)
    assert completed.created_at is not None
    assert completed.created_at.isoformat() >= created.data["resume_at"]  # never early


async def test_start_skips_a_run_whose_log_is_unreadable(
    world: LocalWorld, data_dir: Path, side_file: Path, start_worker: Callable[..., object],
) -> None:
    bad = await wf.start_async("soak.chain", 1)
    good = await wf.start_async("soak.chain", 2)
    await _clear_queue(world)
    (data_dir / "runs" / bad.id / "events.jsonl").write_bytes(b"\x00garbage\n")

    await LocalWorld(data_dir, fsync=False).start()  # logs a warning for `bad`, never raises

    assert [m.payload["run_id"] for m in await world.queue.list()] == [good.id]
    start_worker()
    assert await good.result_async(timeout=20) == 8


async def test_doctor_reports_a_lost_timer_and_fix_repairs_it(
    world: LocalWorld, data_dir: Path, side_file: Path, start_worker: Callable[..., object],
) -> None:
    run = await wf.start_async("soak.sleeper", 4)
    worker, task = start_worker()  # type: ignore[misc]
    await _events_until(world, run.id, E.WAIT_CREATED)
    worker.stop()
    await asyncio.wait_for(task, 10)
    await _clear_queue(world)
    wf_bin = str(Path(sys.executable).with_name("wf"))
    env = dict(os.environ, WF_FSYNC="0")

    check = subprocess.run([wf_bin, "doctor", "--data-dir", str(data_dir)], capture_output=True, text=True,
                           timeout=60, env=env)
    assert check.returncode == 1 and run.id in check.stdout + check.stderr
    fix = subprocess.run([wf_bin, "doctor", "--fix", "--data-dir", str(data_dir)], capture_output=True,
                         text=True, timeout=60, env=env)
    assert fix.returncode == 0, fix.stdout + fix.stderr
    assert [m.payload["run_id"] for m in await world.queue.list(WORKFLOW_QUEUE)] == [run.id]
    start_worker()
    assert await run.result_async(timeout=20) == 6
