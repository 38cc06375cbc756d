"""What operators rely on: every run id, waiting for a run's end, worker presence, drain, repair, dead leases."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import textwrap
import time

import pytest

from wf.runtime.entities import RunStatus
from wf.runtime.world import World

from .builders import assert_views_match_log, ev, new_run
from .fixtures import MakeWorld, require

Q = "ops-jobs"


def _child(url: str, body: str) -> subprocess.Popen[str]:
    """A process that opens the store at `url`, runs `body` (with `world` started), then sleeps until killed."""
    code = textwrap.dedent("""
        import asyncio, json, sys
        from wf.runtime.config import world_from_url

        async def main():
            world = world_from_url(sys.argv[1])
            await world.start()
        {body}
            print("ready", flush=True)
            await asyncio.sleep(3600)

        asyncio.run(main())
    """).replace("{body}", textwrap.indent(textwrap.dedent(body), "    "))
    return subprocess.Popen([sys.executable, "-c", code, url], stdout=subprocess.PIPE, text=True)


def _ready(proc: subprocess.Popen[str]) -> list[str]:
    assert proc.stdout is not None
    lines = []
    while (line := proc.stdout.readline().strip()) != "ready":
        assert line, f"the child process exited with {proc.wait()} before it was ready"
        lines.append(line)
    return lines


async def test_run_ids_lists_every_run_oldest_first(world: World) -> None:
    ids = [await new_run(world, started=i % 2 == 0) for i in range(5)]
    listed = await world.run_ids()
    assert [run_id for run_id in listed if run_id in ids] == ids


async def test_count_runs_counts_each_status(world: World) -> None:
    before = await world.count_runs()
    assert set(before) == set(RunStatus)
    pending = await new_run(world, started=False)
    running = await new_run(world)
    done = await new_run(world)
    await world.events.create(done, ev(done, "run_completed", output=1))
    cancelled = await new_run(world)
    await world.events.create(cancelled, ev(cancelled, "run_cancelled"))
    after = await world.count_runs()
    grew = {status: after[status] - before[status] for status in RunStatus}
    assert grew == {RunStatus.PENDING: 1, RunStatus.RUNNING: 1, RunStatus.COMPLETED: 1, RunStatus.FAILED: 0,
                    RunStatus.CANCELLED: 1}, (pending, running)


async def test_wait_for_end_returns_the_ended_run_or_none_on_timeout(world: World) -> None:
    run_id = await new_run(world)
    assert await world.wait_for_end(run_id, timeout=0.2) is None

    async def finish() -> None:
        await asyncio.sleep(0.1)
        await world.events.create(run_id, ev(run_id, "run_completed", output=7))

    finishing = asyncio.create_task(finish())
    started = time.monotonic()
    ended = await world.wait_for_end(run_id, timeout=10)
    await finishing
    assert ended is not None and ended.status == RunStatus.COMPLETED and ended.output == 7
    assert time.monotonic() - started < 5


async def test_an_announced_worker_is_live_until_retired(world: World, make_world: MakeWorld) -> None:
    require(world, "workers")
    worker_id = await world.announce_worker({"kind": "worker", "concurrency": 7})
    other = await make_world()
    mine = [w for w in await other.live_workers() if w.get("concurrency") == 7]
    assert len(mine) == 1
    await world.retire_worker(worker_id)
    assert [w for w in await other.live_workers() if w.get("concurrency") == 7] == []


async def test_a_killed_workers_presence_ends_within_seconds(world: World, world_url: str) -> None:
    require(world, "workers")
    proc = _child(world_url, """
        await world.announce_worker({"kind": "worker", "marker": "doomed"})
    """)
    try:
        _ready(proc)
        assert [w for w in await world.live_workers() if w.get("marker") == "doomed"]
        proc.kill()
        proc.wait()
        deadline = time.monotonic() + 15
        while [w for w in await world.live_workers() if w.get("marker") == "doomed"]:
            assert time.monotonic() < deadline, "a killed worker still counts as live after 15 s"
            await asyncio.sleep(0.2)
    finally:
        proc.kill()
        proc.wait()


async def test_a_drain_request_is_seen_by_every_process(world: World, make_world: MakeWorld) -> None:
    require(world, "drain")
    other = await make_world()
    before = await other.drain_generation()
    generation = await world.request_drain()
    assert generation > before
    assert await other.drain_generation() == generation


async def test_repair_run_answers_for_known_runs_and_leaves_them_true_to_their_log(world: World) -> None:
    require(world, "repair")
    assert await world.repair_run("wrun_01NOSUCHRUN0000000000000000") is False
    run_id = await new_run(world)
    await world.events.create(run_id, ev(run_id, "step_created", "s1", step_name="x", input=None))
    assert await world.repair_run(run_id) is True
    await assert_views_match_log(world, run_id)


async def test_a_message_leased_by_a_killed_process_comes_back(world: World, world_url: str) -> None:
    """Either the World hands it to the next taker within seconds, or it lists it in
    `dead_leases` and `release` gives it back at once: never stuck for the lease's 600 s."""
    await world.queue.enqueue(Q, {"n": 1})
    proc = _child(world_url, f"""
        message = await world.queue.take([{Q!r}], lease=600, timeout=10)
        print(json.dumps({{"id": message.message_id}}), flush=True)
    """)
    try:
        (line,) = _ready(proc)
        taken_id = json.loads(line)["id"]
        proc.kill()
        proc.wait()
        deadline = time.monotonic() + 10
        again = None
        while again is None and time.monotonic() < deadline:
            for dead in await world.queue.dead_leases():
                assert dead.message_id == taken_id and dead.state == "leased"
                assert await world.queue.release(dead) is True
            again = await world.queue.take([Q], timeout=0.5)
        assert again is not None and again.message_id == taken_id, "the dead process's message never came back"
        await world.queue.ack(again)
        assert await world.queue.dead_leases() == []
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.parametrize("bad", ["../x", "", "a/b"])
async def test_repair_and_wait_refuse_malformed_run_ids(world: World, bad: str) -> None:
    from wf.runtime.errors import InvalidIdError, NotFoundError

    require(world, "repair")
    try:
        repaired = await world.repair_run(bad)
    except (InvalidIdError, NotFoundError):
        repaired = False
    assert repaired is False
    with pytest.raises((InvalidIdError, NotFoundError)):
        await world.wait_for_end(bad, timeout=0.1)
