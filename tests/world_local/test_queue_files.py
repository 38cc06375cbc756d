"""The local World's queue files: corrupt messages, leftovers, the file pool, lease holders, the change log."""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from wf.runtime.world import World
from wf.world_local.world import LocalWorld

Q = "jobs"


@pytest.fixture
async def make_world(data_dir: Path) -> AsyncIterator[Callable[[], Awaitable[World]]]:
    """Open (and start) another LocalWorld on the test's data dir; all are closed at the end."""
    opened: list[World] = []

    async def make() -> World:
        world = LocalWorld(data_dir)
        await world.start()
        opened.append(world)
        return world

    yield make
    for world in reversed(opened):
        await world.close()


async def test_a_corrupt_message_file_is_skipped_with_a_warning(
    make_world: Callable[..., Any], data_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    world = await make_world()
    good = await world.queue.enqueue(Q, {"n": "good"})
    bad = await world.queue.enqueue(Q, {"n": "bad"})
    (data_dir / "queue" / "messages" / f"{bad}.json").write_bytes(b'{"v": 1, "id": "trunc')

    with caplog.at_level(logging.WARNING, logger="wf.world_local"):
        reopened = await make_world()
        listed = await reopened.queue.list()
        taken = await reopened.queue.take([Q])

    assert [m.message_id for m in listed] == [good]
    assert taken is not None and taken.message_id == good
    assert any(bad in r.getMessage() and "corrupt" in r.getMessage() for r in caplog.records)
    assert list((data_dir / "queue" / "corrupt").iterdir())  # moved aside, not deleted


async def test_acked_and_deleted_messages_leave_no_message_files_behind(
    make_world: Callable[..., Any], data_dir: Path
) -> None:
    world = await make_world()
    for n in range(20):
        await world.queue.enqueue(Q, {"n": n}, idempotency_key=f"k{n % 5}", delay=0.01 * (n % 2))
    victim = await world.queue.enqueue(Q, {"n": "deleted"})
    await world.queue.delete(victim)
    await asyncio.sleep(0.05)
    while (message := await world.queue.take([Q])) is not None:
        if message.attempts == 1 and message.payload["n"] == 0:
            await world.queue.nack(message)  # a rewritten file, then a removed one
        else:
            await world.queue.ack(message)
    await world.close()  # lets the background deletions finish

    leftovers = [str(p.relative_to(data_dir)) for p in (data_dir / "queue").rglob("*") if p.is_file()]
    # Removed files wait in spare/ to be reused (no more than were ever removed); nothing else stays.
    spares = [p for p in leftovers if p.startswith("queue/spare/")]
    assert sorted(set(leftovers) - set(spares)) == ["queue/changes.log", "queue/lock"]
    assert len(spares) <= 2 * 21


async def test_the_files_of_acked_messages_are_reused_for_new_ones(
    make_world: Callable[..., Any], data_dir: Path
) -> None:
    world = await make_world()
    messages = data_dir / "queue" / "messages"
    seen: set[int] = set()
    reused = 0
    for n in range(30):
        await world.queue.enqueue(Q, {"n": n})
        message = await world.queue.take([Q])
        assert message is not None and message.payload == {"n": n}
        inodes = {p.stat().st_ino for p in messages.iterdir()}
        assert len(inodes) == 2  # the message and its lease
        reused += len(inodes & seen)
        seen |= inodes
        await world.queue.ack(message)
    await world.close()
    assert reused >= 2 * 28  # after the first round trip, no file is created anew
    assert len(list((data_dir / "queue" / "spare").iterdir())) == 2


def test_a_lease_holder_is_dead_once_killed_even_unreaped_and_a_recycled_pid_is_not_it() -> None:
    from wf.world_local.leases import Holder, current_holder, is_alive

    child = subprocess.Popen(
        [sys.executable, "-c", "import json, time; from wf.world_local.leases import current_holder; "
         "print(json.dumps(current_holder().to_dict()), flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert child.stdout is not None
        holder = Holder.from_dict(json.loads(child.stdout.readline()))
        assert holder.pid == child.pid and is_alive(holder)
        assert not is_alive(Holder(holder.pid, holder.start + 1, holder.boot, holder.ns))  # a recycled pid
        assert not is_alive(Holder(holder.pid, holder.start, "another-boot", holder.ns))
        # another container's process cannot be looked up: only its lease time ends its lease
        assert is_alive(Holder(999_999_999, 1, holder.boot, holder.ns + 1))
        child.kill()  # and not waited for: a zombie
        deadline = time.monotonic() + 2
        while is_alive(holder) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not is_alive(holder)
        assert child.poll() is not None or Path(f"/proc/{child.pid}").exists()
    finally:
        child.kill()
        child.wait()
    assert is_alive(current_holder())


async def test_another_view_stays_exact_across_change_log_rotations(
    make_world: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    from wf.world_local import queue_log

    monkeypatch.setattr(queue_log, "ROTATE_BYTES", 1000)  # a rotation every ~25 changes
    monkeypatch.setenv("WF_FSYNC", "0")
    busy, idle, follower = await make_world(), await make_world(), await make_world()
    for n in range(40):
        await busy.queue.enqueue(Q, {"n": n})
    assert len(await follower.queue.list()) == 40  # follows each rotation as it happens

    for _ in range(30):  # ~100 changes: `idle` misses whole generations of the log
        message = await busy.queue.take([Q])
        assert message is not None
        await busy.queue.ack(message)
        assert (await follower.queue.list())[0].message_id != message.message_id
    log = busy.queue.root / "changes.log"  # type: ignore[attr-defined]
    generation = int(log.read_text().split("\n", 1)[0].removeprefix("#gen "))

    for view in (idle, follower):
        assert [m.payload["n"] for m in await view.queue.list()] == list(range(30, 40))
    taken = await idle.queue.take([Q])
    assert taken is not None and taken.payload == {"n": 30}
    assert generation >= 3  # the log was replaced several times


async def test_a_message_file_restored_behind_the_queues_back_is_found_by_the_safety_rescan(
    make_world: Callable[..., Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from wf.world_local import queue as local_queue
    from wf.world_local.world import LocalWorld

    monkeypatch.setattr(local_queue, "SAFETY_RESCAN_SECONDS", 0.3)
    world = await make_world()
    elsewhere = LocalWorld(tmp_path / "backup")
    await elsewhere.start()
    message_id = await elsewhere.queue.enqueue(Q, {"n": "restored"})
    await elsewhere.close()
    waiting = asyncio.create_task(world.queue.take([Q], timeout=5))
    await asyncio.sleep(0.05)

    name = f"{message_id}.json"
    source = tmp_path / "backup" / "queue" / "messages" / name
    (world.queue.root / "messages" / name).write_bytes(source.read_bytes())  # type: ignore[attr-defined]

    message = await waiting
    assert message is not None and message.message_id == message_id
