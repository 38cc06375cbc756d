"""A start that fails (a full disk, a value that cannot be encoded) leaves nothing behind, and fails with a
typed error; empty run folders that older versions left are removed by the World's checks."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

import wf
from wf.runtime.entities import Event, EventType, RunStatus
from wf.runtime.errors import SerializationError, StorageUnavailableError
from wf.world_local import faults
from wf.world_local.world import LocalWorld

E = EventType


def leftovers(data_dir: Path) -> list[str]:
    """Run folders and status markers in the data dir."""
    found = [f"runs/{name}" for name in os.listdir(data_dir / "runs")]
    for status in RunStatus:
        found += [f"index/{status}/{name}" for name in os.listdir(data_dir / "index" / "status" / status)
                  if not name.startswith(".")]
    return found


async def test_a_start_whose_input_cannot_be_encoded_fails_typed_and_leaves_no_folder(
    world: LocalWorld, data_dir: Path,
) -> None:
    with pytest.raises(SerializationError):
        await wf.start_async("wl.hold", "\ud800")
    run_id = "wrun_direct"
    data = {"workflow_name": "wl.chain", "input": None, "attributes": {"idempotency_key": "\ud800"}}
    with pytest.raises(SerializationError):
        await world.events.create(run_id, Event(run_id, E.RUN_CREATED, data=data))
    assert leftovers(data_dir) == []


async def test_a_start_on_a_full_disk_fails_with_storage_unavailable_and_leaves_no_folder(
    world: LocalWorld, data_dir: Path,
) -> None:
    faults.arm("enospc:1")
    for _ in range(3):
        with pytest.raises(StorageUnavailableError, match="No space left"):
            await wf.start_async("wl.chain", 1)
    faults.disarm()
    assert leftovers(data_dir) == []
    assert await world.queue.list() == []


async def test_a_start_whose_log_cannot_be_written_leaves_no_folder_and_runs_later(
    world: LocalWorld, data_dir: Path, start_worker: Callable[..., object],
) -> None:
    faults.arm("enospc@append:1")  # the run logs' disk is full; the queue's is not
    run = await wf.start_async("wl.chain", 1)  # the worker creates it from its message later
    faults.disarm()
    assert leftovers(data_dir) == []
    start_worker()
    assert await run.result_async(timeout=20) == 7


async def test_empty_run_folders_left_by_older_versions_are_removed(world: LocalWorld, data_dir: Path) -> None:
    for name, marker in (("wrun_old1", "pending"), ("wrun_old2", None)):
        (data_dir / "runs" / name).mkdir()
        (data_dir / "runs" / name / "events.jsonl").write_bytes(b"")
        if marker:
            (data_dir / "index" / "status" / marker / name).write_bytes(b"")
    (data_dir / "runs" / "wrun_old3").mkdir()
    (data_dir / "runs" / "wrun_old3" / "events.jsonl").write_bytes(b'{"run_id": "wrun_old3", "ev')  # torn
    real = await wf.start_async("wl.chain", 1)
    other = LocalWorld(data_dir, fsync=False)
    try:
        await other.start()  # the active-marked one
        assert not (data_dir / "runs" / "wrun_old1").exists()
        assert (data_dir / "runs" / "wrun_old2").exists()  # not marked active: start() alone does not look
        assert await other.verify_runs() == []  # (what the first start after a reboot and `wf recover` run)
    finally:
        await other.close()
    assert leftovers(data_dir) == [f"runs/{real.id}", f"index/pending/{real.id}"]
