"""Operator commands on real runs: cancel, queue ls / fail-pending / drain, stream, hook resume, recover."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

from wf.runtime.client import resume_hook_in
from wf.runtime.world import STEP_QUEUE, WORKFLOW_QUEUE
from wf.world_local.world import LocalWorld

from .conftest import (
    REPO,
    Runs,
    cli_env,
    ended,
    reached,
    start,
    start_worker_process,
    stop_process,
    wf_cli,
    worker_on,
)


async def test_cancel_a_sleeping_run(fresh: Path) -> None:
    async with worker_on(fresh) as world:
        sleeping = await start(world, "sleeper", 3600)
        done = await start(world, "retrying", 1)
        await reached(world, sleeping, "wait_created")
        await ended(world, done)
    # The sleeper's wake-up is a delayed workflow message.
    listed = wf_cli(fresh, "queue", "ls", "--json")
    assert listed.returncode == 0, listed.stderr
    wake = [m for m in json.loads(listed.stdout) if m["payload"]["run_id"] == sleeping]
    assert [(m["queue"], m["state"]) for m in wake] == [(WORKFLOW_QUEUE, "delayed")]
    table = wf_cli(fresh, "queue", "ls").stdout
    assert sleeping in table and "delayed" in table and "0 ready, 1 delayed, 0 leased" in table

    result = wf_cli(fresh, "cancel", sleeping, "--reason", "no longer needed")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"cancelled run {sleeping}"
    doc = json.loads(wf_cli(fresh, "inspect", sleeping, "--json").stdout)
    assert doc["run"]["status"] == "cancelled"
    assert [w["status"] for w in doc["waits"]] == ["disposed"]
    assert doc["events"][-1]["data"] == {"reason": "no longer needed"}
    again = wf_cli(fresh, "cancel", sleeping)
    assert (again.returncode, again.stdout.strip()) == (0, f"run {sleeping} was already cancelled")
    finished = wf_cli(fresh, "cancel", done)
    assert finished.returncode == 1
    assert finished.stderr.strip() == f"run {done} already completed: nothing to cancel"


async def test_fail_pending_ends_a_run_whose_step_waits_in_the_queue(fresh: Path) -> None:
    async with worker_on(fresh) as world:
        stuck = await start(world, "stalled")
        other = await start(world, "stalled")
        await reached(world, stuck, "step_retrying")
        await reached(world, other, "step_retrying")
    # No worker runs now; each run's step waits an hour in the queue.
    world = LocalWorld(fresh, fsync=False)
    steps = [m for m in await world.queue.list(STEP_QUEUE)]
    assert sorted(m.payload["run_id"] for m in steps) == sorted([stuck, other])
    assert {m.state for m in steps} == {"delayed"}
    await world.close()

    result = wf_cli(fresh, "queue", "fail-pending", "--run", stuck, "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert [(f["run_id"], f["step_id"], f["outcome"]) for f in report["failed"]] == [(stuck, "step_1", "failed")]

    async with worker_on(fresh) as world:
        await ended(world, stuck)
        run = await world.runs.get(stuck)
        assert run.status == "failed"
        assert run.error is not None and run.error["step_error"]["type"] == "OperatorError"
        assert (await world.runs.get(other)).status == "running", "the other run was left alone"
        remaining = await world.queue.list(STEP_QUEUE)
        assert [m.payload["run_id"] for m in remaining] == [other]


async def test_stream_prints_chunks_live_until_the_stream_closes(fresh: Path) -> None:
    async with worker_on(fresh, run_worker=False) as world:
        run_id = await start(world, "chatty", "more")
    proc = subprocess.Popen([sys.executable, "-m", "wf.cli", "stream", run_id], cwd=REPO, env=cli_env(fresh),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        async with worker_on(fresh) as world:
            await reached(world, run_id, "hook_created")
        assert proc.stdout is not None
        # The first chunk is printed while the run still waits for its hook: live, not at the end.
        assert await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), 30) == "first\n"
        assert proc.poll() is None
        async with worker_on(fresh) as world:
            await resume_hook_in(world, "more", None)
            await ended(world, run_id)
        out, err = proc.communicate(timeout=30)
    finally:
        stop_process(proc)
    assert proc.returncode == 0, err
    assert out == "second\n"


async def test_stream_shows_bytes_and_values(recorded: Runs) -> None:
    run_id = recorded.ids["stream"]
    text = wf_cli(recorded.data_dir, "stream", run_id)
    assert text.returncode == 0
    assert text.stdout == 'abraw-bytes\n{"k": 1}\n'
    as_json = wf_cli(recorded.data_dir, "stream", run_id, "--json")
    assert [json.loads(line) for line in as_json.stdout.splitlines()] == [
        {"index": 0, "chunk": "a"}, {"index": 1, "chunk": "b"}, {"index": 2, "chunk": "raw-bytes"},
        {"index": 3, "chunk": {"k": 1}}]


async def test_hook_resume_delivers_a_payload(fresh: Path) -> None:
    async with worker_on(fresh) as world:
        run_id = await start(world, "waiter", "approve-42")
        await reached(world, run_id, "hook_created")
    result = wf_cli(fresh, "hook", "resume", "approve-42", '{"ok": true, "by": "ops"}')
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"delivered to hook hook_1 of run {run_id}"
    async with worker_on(fresh) as world:
        await ended(world, run_id)
        run = await world.runs.get(run_id)
    assert run.status == "completed" and run.output == {"got": {"ok": True, "by": "ops"}}
    gone = wf_cli(fresh, "hook", "resume", "approve-42", "1")
    assert gone.returncode == 2 and "no live hook" in gone.stderr


async def test_recover_enqueues_every_active_run(fresh: Path) -> None:
    async with worker_on(fresh, run_worker=False) as world:
        first = await start(world, "retrying", 1)
        second = await start(world, "retrying", 2)
        for message in await world.queue.list():
            await world.queue.delete(message.message_id)
    result = wf_cli(fresh, "recover", "--json")
    assert result.returncode == 0, result.stderr
    assert sorted(json.loads(result.stdout)["run_ids"]) == sorted([first, second])
    world = LocalWorld(fresh, fsync=False)
    queued = sorted(m.payload["run_id"] for m in await world.queue.list(WORKFLOW_QUEUE))
    await world.close()
    assert queued == sorted([first, second])


def test_drain_makes_a_running_worker_exit(fresh: Path) -> None:
    fresh.mkdir(parents=True)
    wf_cli(fresh, "start", "tests/cli/flows.py:retrying", "1")  # creates the data dir
    worker = start_worker_process(fresh)
    try:
        result = wf_cli(fresh, "queue", "drain", "--wait", "20")
        assert result.returncode == 0, result.stderr
        assert "1 live worker(s)" in result.stdout and "all workers have exited" in result.stdout
        assert worker.wait(timeout=10) == 0
    finally:
        stop_process(worker)


def test_start_wait_leaves_the_run_view_written_and_no_inbox_behind(fresh: Path) -> None:
    done = wf_cli(fresh, "start", "tests/cli/flows.py:sleeper", "0", "--wait", "--json")
    assert done.returncode == 0, done.stderr
    run_id = json.loads(done.stdout)["run_id"]
    view = json.loads((fresh / "runs" / run_id / "run.json").read_text())
    assert (view["status"], view["output"]) == ("completed", "woke")
    assert list((fresh / "notify" / "inbox").iterdir()) == []  # the command closed its World
