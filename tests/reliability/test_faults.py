"""Fault injection: disk errors, torn writes and vanishing files under a working World.

The seam (`wf.world_local.faults`) makes the World's own writes fail with ENOSPC/EIO,
tear (a prefix written, then EIO) or lose the file afterwards. Under it the worker must
keep running, each affected operation must be retried or its run fail with a clear error,
and the World must still start afterwards.
"""

from __future__ import annotations

import asyncio
import errno
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import wf
from wf.runtime.entities import Event, EventType
from wf.runtime.errors import StorageUnavailableError
from wf.runtime.serialization import deserialize
from wf.runtime.worker import Worker
from wf.world_local import faults
from wf.world_local.world import LocalWorld

from . import soak_workflows as sw
from .audit import audit

E = EventType
WORKFLOWS_FILE = Path(__file__).with_name("soak_workflows.py")
KINDS = ("chain", "fan", "sleeper", "flaky", "parent", "doomed")


async def _start_mix(n: int) -> dict[str, tuple[str, object]]:
    expectations = {}
    for x in range(1, n + 1):
        kind = KINDS[x % len(KINDS)]
        run = await wf.start_async(f"soak.{kind}", x)
        expectations[run.id] = sw.expected(kind, x)
    return expectations


async def _wait_all_ended(world: LocalWorld, run_ids: list[str], timeout: float) -> list[str]:
    deadline = time.monotonic() + timeout
    left = list(run_ids)
    while left and time.monotonic() < deadline:
        left = [r for r in left if not (await world.runs.get(r, resolve_data=False)).status.terminal]
        await asyncio.sleep(0.05)
    return left


# --- the seam itself -----------------------------------------------------------------


def test_seam_is_disarmed_unless_asked() -> None:
    assert "WF_FAULTS" in os.environ or faults.ARMED is False


@pytest.mark.parametrize("spec", ["boom:0.1", "eio", "eio:2", "eio@nowhere:0.1", "eio:x"])
def test_a_bad_fault_spec_is_one_clear_error(spec: str) -> None:
    with pytest.raises(ValueError, match="bad fault"):
        faults.parse(spec)


def test_armed_seam_fails_writes_with_real_errnos(tmp_path: Path) -> None:
    from wf.world_local.files import create_file_exclusive, write_bytes_atomic

    faults.arm("enospc@atomic:1")
    with pytest.raises(OSError) as info:
        write_bytes_atomic(tmp_path / "a.json", b"{}", fsync=False)
    assert info.value.errno == errno.ENOSPC
    assert list(tmp_path.iterdir()) == []  # no temporary file left behind
    faults.arm("vanish@exclusive:1")
    assert create_file_exclusive(tmp_path / "b.json", b"{}", fsync=False)
    assert not (tmp_path / "b.json").exists()
    faults.disarm()
    write_bytes_atomic(tmp_path / "a.json", b"{}", fsync=False)
    assert (tmp_path / "a.json").read_bytes() == b"{}"


# --- the log: a failed or torn append commits nothing ------------------------------------


async def test_failed_append_commits_nothing_and_the_next_one_succeeds(world: LocalWorld) -> None:
    run = await wf.start_async("soak.chain", 1)
    before = await world.events.list(run.id)
    faults.arm("eio@append:1")
    with pytest.raises(StorageUnavailableError, match="injected fault") as info:
        await world.events.create(run.id, Event(run.id, E.RUN_STARTED))
    assert info.value.errno == errno.EIO  # type: ignore[attr-defined]
    faults.disarm()
    assert await world.events.list(run.id) == before
    await world.events.create(run.id, Event(run.id, E.RUN_STARTED))
    assert [e.event_type for e in await world.events.list(run.id)] == [E.RUN_CREATED, E.RUN_STARTED]


async def test_torn_append_is_cut_off_and_never_read_as_an_event(world: LocalWorld, data_dir: Path) -> None:
    run = await wf.start_async("soak.chain", 1)
    log_file = data_dir / "runs" / run.id / "events.jsonl"
    size = log_file.stat().st_size
    faults.arm("tear@append:1")
    with pytest.raises(StorageUnavailableError):
        await world.events.create(run.id, Event(run.id, E.RUN_STARTED))
    faults.disarm()
    assert log_file.stat().st_size > size  # the torn prefix is on disk...
    other = LocalWorld(data_dir, fsync=False)  # ...and another process does not see it as an event
    try:
        assert [e.event_type for e in await other.events.list(run.id)] == [E.RUN_CREATED]
        await other.events.create(run.id, Event(run.id, E.RUN_STARTED))  # nor trips over it when writing
        events = await world.events.list(run.id)
    finally:
        await other.close()
    assert [(e.event_type, e.seq) for e in events] == [(E.RUN_CREATED, 0), (E.RUN_STARTED, 1)]


# --- a worker under faults ---------------------------------------------------------------

FAULT_MIX = "enospc:0.02,eio:0.02,tear:0.01,vanish@queue:0.01"


@pytest.mark.slow
async def test_worker_keeps_running_under_faults_and_every_run_ends_correctly(
    world: LocalWorld, data_dir: Path, side_file: Path,
) -> None:
    expectations = await _start_mix(30)
    worker = Worker(world, concurrency=20)
    task = asyncio.create_task(worker.run())
    faults.arm(FAULT_MIX, seed=3)
    await asyncio.sleep(4.0)
    assert not task.done(), "the worker died under faults"
    injected = sum(faults.counts.values())
    faults.disarm()
    # A vanished message is only found again by a World start (as after a restart).
    await LocalWorld(data_dir, fsync=False).start()
    left = await _wait_all_ended(world, list(expectations), 60)
    worker.stop()
    await asyncio.wait_for(task, 30)
    assert injected > 10
    assert left == []
    report = await audit(world, expectations, side_file)
    # Storage errors are retried until they pass: every run ends exactly as its workflow says.
    assert report.problems == []
    assert report.lost == report.wrong_output == 0
    assert report.illegal_transitions == report.duplicate_completions == report.unexplained_results == 0
    assert report.views_mismatched == 0


@pytest.mark.slow
def test_worker_process_with_faults_armed_by_env_keeps_running(tmp_path: Path) -> None:
    data = tmp_path / "data"
    env = dict(os.environ, WF_FSYNC="0", WF_FAULTS="eio:0.03,enospc:0.03,tear@append:0.02", WF_FAULTS_SEED="5",
               **{sw.SIDE_FILE_ENV: str(tmp_path / "steps.jsonl"), sw.STEP_DELAY_ENV: "0"})
    starter = subprocess.run(
        [sys.executable, "-c", _START_SCRIPT, str(data)], capture_output=True, text=True, timeout=60,
        env=dict(os.environ, WF_FSYNC="0"),
    )
    assert starter.returncode == 0, starter.stderr
    run_ids = starter.stdout.split()
    worker = subprocess.Popen(
        [str(Path(sys.executable).with_name("wf")), "worker", str(WORKFLOWS_FILE), "--data-dir", str(data)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 40
        check = LocalWorld(data, fsync=False)
        ended: set[str] = set()
        while time.monotonic() < deadline and len(ended) < len(run_ids):
            assert worker.poll() is None, "the worker exited under faults"
            for run_id in set(run_ids) - ended:
                if asyncio.run(check.runs.get(run_id, resolve_data=False)).status.terminal:
                    ended.add(run_id)
            time.sleep(0.2)
        assert worker.poll() is None
    finally:
        worker.send_signal(signal.SIGTERM)
        out, _ = worker.communicate(timeout=30)
    log = out.decode()
    assert len(ended) == len(run_ids), log[-3000:]
    for x, run_id in enumerate(run_ids):  # each ended as its workflow says, not just ended
        run = asyncio.run(check.runs.get(run_id))
        status, output = sw.expected(("chain", "fan", "flaky")[x % 3], x)
        assert (str(run.status), deserialize(run.output)) == (status, output), (run_id, run.error)
    assert "injected fault" in log  # the faults hit, and the worker said so...
    assert "Traceback" not in log, log[-3000:]  # ...in one line each: no error escaped unhandled


_START_SCRIPT = """
import sys, wf
from wf.world_local.world import LocalWorld
wf.configure(world=LocalWorld(sys.argv[1]))
for x in range(12):
    print(wf.start(("soak.chain", "soak.fan", "soak.flaky")[x % 3], x).id)
"""


# --- recovery never blocked by one bad run -----------------------------------------------


async def test_world_starts_and_recovers_the_rest_when_one_run_log_is_corrupt(
    data_dir: Path, side_file: Path,
) -> None:
    first = LocalWorld(data_dir, fsync=False)
    wf.configure(world=first)
    runs = [await wf.start_async("soak.chain", x) for x in range(5)]
    await first.close()
    bad = data_dir / "runs" / runs[2].id / "events.jsonl"
    bad.write_bytes(b'{"not": "an event"\n' + bad.read_bytes())  # garbage at the top of one log
    for msg_file in (data_dir / "queue").rglob("*.json"):  # and every queued message lost
        msg_file.unlink()
    world = LocalWorld(data_dir, fsync=False)
    wf.configure(world=world)
    await world.start()  # must not raise
    worker = Worker(world)
    task = asyncio.create_task(worker.run())
    try:
        good = [r for i, r in enumerate(runs) if i != 2]
        assert await _wait_all_ended(world, [r.id for r in good], 20) == []
        for x, r in enumerate(runs):
            if x != 2:
                assert await r.result_async(timeout=5) == x + 6
    finally:
        worker.stop()
        await asyncio.wait_for(task, 30)
        await world.close()
