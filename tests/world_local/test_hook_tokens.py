"""A damaged hook-token file (empty or garbage, as a power loss leaves an unsynced new file) is rebuilt
from the logs wherever it is met: resuming the hook, claiming the token again, `repair_run`, `wf doctor --fix`."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest

import wf
from wf.runtime.errors import NotFoundError
from wf.world_local.world import LocalWorld

from .conftest import wf_cli_async


def token_file(data_dir: Path, token: str) -> Path:
    return data_dir / "tokens" / (hashlib.sha256(token.encode()).hexdigest() + ".json")


async def hook_ready(world: LocalWorld, token: str, timeout: float = 10.0) -> str:
    """The id of the run whose live hook holds `token`, once there is one."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        try:
            return (await world.hooks.get_by_token(token)).run_id
        except NotFoundError:
            if loop.time() > deadline:
                raise
            await asyncio.sleep(0.02)


DAMAGE = {"empty": b"", "garbage": b"\x00\x17{not json", "wrong shape": b'{"token": 5}'}


@pytest.mark.parametrize("damage", list(DAMAGE))
async def test_a_hook_whose_token_file_is_damaged_can_still_be_resumed_from_another_process(
    world: LocalWorld, data_dir: Path, start_worker: Callable[..., object], damage: str,
) -> None:
    start_worker()
    token = f"relh-5-{damage.replace(' ', '-')}"
    run = await wf.start_async("wl.hold", token)
    await hook_ready(world, token)
    token_file(data_dir, token).write_bytes(DAMAGE[damage])
    resumed = await wf_cli_async(data_dir, "hook", "resume", token, '{"ok": 1}')
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert await run.result_async(timeout=20) == {"ok": 1}


async def test_a_damaged_token_file_that_no_live_hook_holds_does_not_block_a_new_hook(
    world: LocalWorld, data_dir: Path, start_worker: Callable[..., object],
) -> None:
    start_worker()
    token = "relh-6"
    path = token_file(data_dir, token)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")  # left by a hook whose run is gone
    run = await wf.start_async("wl.hold", token)
    assert await hook_ready(world, token) == run.id  # not a HookConflictError
    await wf.resume_hook_async(token, "x")
    assert await run.result_async(timeout=20) == "x"


async def test_repair_run_rewrites_the_damaged_token_file_of_its_live_hook(
    world: LocalWorld, data_dir: Path, start_worker: Callable[..., object],
) -> None:
    start_worker()
    run = await wf.start_async("wl.hold", "relh-7")
    await hook_ready(world, "relh-7")
    hook = (await world.hooks.list(run_id=run.id)).data[0]
    path = token_file(data_dir, "relh-7")
    path.write_bytes(b"")
    other = LocalWorld(data_dir, fsync=False)  # what `wf doctor --fix` opens
    try:
        assert await other.repair_run(run.id)
    finally:
        await other.close()
    assert orjson.loads(path.read_bytes()) == {"token": "relh-7", "run_id": run.id, "hook_id": hook.hook_id}


async def test_a_world_start_rewrites_damaged_and_lost_token_files_of_active_runs(
    world: LocalWorld, data_dir: Path, start_worker: Callable[..., object],
) -> None:
    start_worker()
    first = await wf.start_async("wl.hold", "relh-8")
    second = await wf.start_async("wl.hold", "relh-9")
    await hook_ready(world, "relh-8")
    await hook_ready(world, "relh-9")
    token_file(data_dir, "relh-8").write_bytes(b"{")
    token_file(data_dir, "relh-9").unlink()  # never reached the disk
    other = LocalWorld(data_dir, fsync=False)
    try:
        await other.start()
    finally:
        await other.close()
    assert orjson.loads(token_file(data_dir, "relh-8").read_bytes())["run_id"] == first.id
    assert orjson.loads(token_file(data_dir, "relh-9").read_bytes())["run_id"] == second.id


async def test_wf_doctor_fix_leaves_a_damaged_hook_resumable(
    world: LocalWorld, data_dir: Path, start_worker: Callable[..., object],
) -> None:
    start_worker()
    run = await wf.start_async("wl.hold", "relh-10")
    await hook_ready(world, "relh-10")
    token_file(data_dir, "relh-10").write_bytes(b"garbage")
    fixed = await wf_cli_async(data_dir, "doctor", "--fix")
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr
    assert orjson.loads(token_file(data_dir, "relh-10").read_bytes())["run_id"] == run.id
    await wf.resume_hook_async("relh-10", 3)
    assert await run.result_async(timeout=20) == 3
