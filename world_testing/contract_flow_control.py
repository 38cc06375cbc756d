"""Flow control: concurrency slots with leases, rate windows, schedule records, deleting runs, dead workers.

The capabilities "limits", "schedules" and "prune" (see `wf.runtime.flow_contract` and
`World.delete_run`); tests of one a World does not declare are skipped, naming it.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import textwrap
import time
from datetime import UTC, datetime, timedelta

import pytest

from wf.runtime.entities import RunStatus
from wf.runtime.errors import EntityConflictError, NotFoundError
from wf.runtime.world import World, step_message_key, workflow_message_key

from .builders import ev, new_run, new_step
from .fixtures import MakeWorld, require


def _child(url: str, body: str, *, stay: bool = True) -> subprocess.Popen[str]:
    """A process that opens the store at `url`, runs `body` (`world` started), prints "ready", and stays
    (until killed) unless `stay=False`."""
    code = textwrap.dedent("""
        import asyncio, json, sys, time
        from wf.runtime.config import world_from_url

        async def main():
            world = world_from_url(sys.argv[1])
            await world.start()
        {body}
            print("ready", flush=True)
            if {stay}:
                await asyncio.sleep(3600)
            await world.close()

        asyncio.run(main())
    """).replace("{body}", textwrap.indent(textwrap.dedent(body), "    ")).replace("{stay}", str(stay))
    return subprocess.Popen([sys.executable, "-c", code, url], stdout=subprocess.PIPE, text=True)


def _lines_until_ready(proc: subprocess.Popen[str], timeout: float = 60) -> list[str]:
    assert proc.stdout is not None
    lines = []
    deadline = time.monotonic() + timeout
    while (line := proc.stdout.readline().strip()) != "ready":
        assert line, f"the child process exited with {proc.wait()} before it was ready"
        assert time.monotonic() < deadline
        lines.append(line)
    return lines


def _kill(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait()


# --- concurrency slots ---


async def test_at_most_limit_holders_and_a_release_lets_the_next_one_in(world: World) -> None:
    require(world, "limits")
    limits = world.limits
    assert await limits.acquire("k", 2, holder="a", lease=30)
    assert await limits.acquire("k", 2, holder="b", lease=30)
    assert not await limits.acquire("k", 2, holder="c", lease=30)
    assert await limits.acquire("other", 1, holder="c", lease=30)  # keys are independent
    await limits.release("k", "a")
    assert await limits.acquire("k", 2, holder="c", lease=30)
    assert not await limits.acquire("k", 2, holder="d", lease=30)


async def test_acquire_is_idempotent_per_holder_and_release_of_a_stranger_is_a_no_op(world: World) -> None:
    require(world, "limits")
    limits = world.limits
    assert await limits.acquire("k", 2, holder="a", lease=30)
    assert await limits.acquire("k", 2, holder="a", lease=30)
    assert await limits.acquire("k", 2, holder="b", lease=30)  # "a" counted once
    assert await limits.release("k", "nobody") == []
    assert await limits.release("k", "a") == []  # nobody waits
    assert await limits.release("k", "a") == []
    (state,) = await limits.slots("k")
    assert [h.holder for h in state.holders] == ["b"]


async def test_waiters_are_served_in_order_and_release_names_the_first_in_line(world: World) -> None:
    require(world, "limits")
    limits = world.limits
    assert await limits.acquire("k", 1, holder="a", lease=30)
    assert not await limits.acquire("k", 1, holder="late", lease=30, order="2", info={"n": "late"})
    assert not await limits.acquire("k", 1, holder="early", lease=30, order="1", info={"n": "early"})
    (state,) = await limits.slots("k")
    assert [w.holder for w in state.waiters] == ["early", "late"]
    assert state.waiters[0].info == {"n": "early"}
    (first,) = await limits.release("k", "a")
    assert (first.holder, first.info, first.order) == ("early", {"n": "early"}, "1")
    assert not await limits.acquire("k", 1, holder="late", lease=30, order="2")  # "early" is ahead
    assert await limits.acquire("k", 1, holder="early", lease=30, order="1")
    (state,) = await limits.slots("k")
    assert [h.holder for h in state.holders] == ["early"] and [w.holder for w in state.waiters] == ["late"]


async def test_a_waiter_not_seen_again_loses_its_place(world: World) -> None:
    require(world, "limits")
    limits = world.limits
    assert await limits.acquire("k", 1, holder="a", lease=30)
    assert not await limits.acquire("k", 1, holder="gone", lease=30, order="1", wait_lease=0.3)
    await limits.release("k", "a")
    await asyncio.sleep(0.5)
    assert await limits.acquire("k", 1, holder="b", lease=30, order="2")


async def test_a_lease_runs_out_unless_extended(world: World) -> None:
    require(world, "limits")
    limits = world.limits
    assert await limits.acquire("k", 1, holder="kept", lease=0.6)
    assert await limits.acquire("j", 1, holder="lapsed", lease=0.6)
    for _ in range(4):
        await asyncio.sleep(0.3)
        assert await limits.extend("k", "kept", lease=0.6)
    assert not await limits.acquire("k", 1, holder="other", lease=30)
    assert await limits.acquire("j", 1, holder="other", lease=30)  # "lapsed" ran out
    assert not await limits.extend("j", "lapsed", lease=30)
    await limits.release("k", "kept")
    assert not await limits.extend("k", "kept", lease=30)


async def test_a_slot_without_lease_is_held_until_released(world: World) -> None:
    require(world, "limits")
    limits = world.limits
    assert await limits.acquire("k", 1, holder="run:1", lease=None)
    await asyncio.sleep(0.3)
    assert not await limits.acquire("k", 1, holder="run:2", lease=None)
    await limits.release("k", "run:1")
    assert await limits.acquire("k", 1, holder="run:2", lease=None)


async def test_bad_limits_are_refused(world: World) -> None:
    require(world, "limits")
    with pytest.raises(ValueError):
        await world.limits.acquire("k", 0, holder="a", lease=30)
    with pytest.raises(ValueError):
        await world.limits.rate("k", 0, 1.0)
    with pytest.raises(ValueError):
        await world.limits.rate("k", 1, 0.0)


async def test_slots_are_shared_by_every_world_on_the_store(world: World, make_world: MakeWorld) -> None:
    require(world, "limits")
    other = await make_world()
    assert await world.limits.acquire("k", 1, holder="a", lease=30, info={"run_id": "r1"})
    assert not await other.limits.acquire("k", 1, holder="b", lease=30)
    (state,) = await other.limits.slots()
    assert state.key == "k" and state.limit == 1 and state.holders[0].info == {"run_id": "r1"}
    await other.limits.release("k", "a")
    assert await other.limits.acquire("k", 1, holder="b", lease=30)


async def test_a_dead_processs_slot_is_freed_within_its_lease_and_one_without_lease_is_not(
        world: World, world_url: str) -> None:
    require(world, "limits")
    child = _child(world_url, """
        assert await world.limits.acquire("leased", 1, holder="dies", lease=5)
        assert await world.limits.acquire("held", 1, holder="run:dies", lease=None)
    """)
    try:
        _lines_until_ready(child)
        assert not await world.limits.acquire("leased", 1, holder="me", lease=30)
    finally:
        _kill(child)
    killed = time.monotonic()
    while not await world.limits.acquire("leased", 1, holder="me", lease=30):
        assert time.monotonic() - killed < 8, "a dead process's slot was not freed within its 5 s lease"
        await asyncio.sleep(0.1)
    assert not await world.limits.acquire("held", 1, holder="run:me", lease=None)


async def test_processes_racing_for_slots_never_hold_more_than_the_limit(world: World, world_url: str) -> None:
    require(world, "limits")
    body = """
        import os
        spans = []
        me = str(os.getpid())
        for i in range(25):
            while not await world.limits.acquire("race", 2, holder=f"{me}-{i}", lease=30):
                await asyncio.sleep(0.002)
            t0 = time.time()
            await asyncio.sleep(0.003)
            t1 = time.time()
            await world.limits.release("race", f"{me}-{i}")
            spans.append([t0, t1])
        print(json.dumps(spans), flush=True)
    """
    children = [_child(world_url, body, stay=False) for _ in range(4)]
    spans: list[list[float]] = []
    try:
        for child in children:
            spans.extend(json.loads(_lines_until_ready(child, timeout=120)[-1]))
    finally:
        for child in children:
            _kill(child)
    points = sorted([(t0, 1) for t0, _ in spans] + [(t1, -1) for _, t1 in spans])
    most = current = 0
    for _, delta in points:
        current += delta
        most = max(most, current)
    assert len(spans) == 100
    # Never more than the limit (the property). Whether two overlapped depends on scheduling: on a
    # loaded machine four processes can take turns; that both slots are usable is tested above.
    assert most <= 2, f"{most} holders at once with a limit of 2"


# --- rate windows ---


async def test_a_rate_admits_limit_starts_per_window_and_says_when_the_next_fits(world: World) -> None:
    require(world, "limits")
    limits = world.limits
    admitted = [await limits.rate("r", 3, 0.5) for _ in range(3)]
    assert all(d.admitted for d in admitted)
    refused = await limits.rate("r", 3, 0.5)
    assert not refused.admitted
    assert refused.at == admitted[0].at + timedelta(seconds=0.5)
    assert (await limits.rate("other", 1, 0.5)).admitted  # keys are independent
    await asyncio.sleep(max((refused.at - datetime.now(UTC)).total_seconds(), 0) + 0.05)
    again = await limits.rate("r", 3, 0.5)
    assert again.admitted and again.at - admitted[0].at >= timedelta(seconds=0.5)


async def test_processes_sharing_a_rate_never_exceed_it_in_any_window(world: World, world_url: str) -> None:
    require(world, "limits")
    body = """
        starts = []
        deadline = time.time() + 1.5
        while time.time() < deadline:
            decision = await world.limits.rate("shared", 4, 0.25)
            if decision.admitted:
                starts.append(decision.at.isoformat())
            else:
                await asyncio.sleep(0.005)
        print(json.dumps(starts), flush=True)
    """
    children = [_child(world_url, body, stay=False) for _ in range(3)]
    starts: list[datetime] = []
    try:
        for child in children:
            starts.extend(datetime.fromisoformat(s) for s in json.loads(_lines_until_ready(child)[-1]))
    finally:
        for child in children:
            _kill(child)
    starts.sort()
    assert len(starts) >= 8
    assert all(starts[i + 4] - starts[i] >= timedelta(seconds=0.25) for i in range(len(starts) - 4))


# --- schedules ---


async def test_schedules_are_put_listed_paused_and_deleted(world: World, make_world: MakeWorld) -> None:
    require(world, "schedules")
    schedules = world.schedules
    at = datetime(2030, 1, 1, tzinfo=UTC)
    record = await schedules.put("nightly", {"workflow_name": "w", "cron": "0 3 * * *"}, next_at=at)
    assert record.schedule_id == "nightly" and record.next_at == at and not record.paused
    await schedules.put("b-every", {"every_us": 10_000_000}, next_at=at)
    paused = await schedules.set_paused("nightly", True)
    assert paused.paused
    replaced = await schedules.put("nightly", {"workflow_name": "w", "cron": "0 4 * * *"}, next_at=at)
    assert replaced.paused and replaced.spec["cron"] == "0 4 * * *"  # put keeps paused
    other = await make_world()
    assert [r.schedule_id for r in await other.schedules.list()] == ["b-every", "nightly"]
    assert (await other.schedules.get("nightly")).spec == {"workflow_name": "w", "cron": "0 4 * * *"}
    assert await other.schedules.delete("nightly")
    assert not await other.schedules.delete("nightly")
    with pytest.raises(NotFoundError):
        await schedules.get("nightly")
    with pytest.raises(NotFoundError):
        await schedules.set_paused("nightly", False)


async def test_advance_moves_the_cursor_once_when_workers_race(world: World, make_world: MakeWorld) -> None:
    require(world, "schedules")
    first = datetime(2030, 1, 1, tzinfo=UTC)
    await world.schedules.put("s", {"every_us": 1_000_000}, next_at=first)
    others = [await make_world() for _ in range(3)]
    results = await asyncio.gather(*(w.schedules.advance("s", expected=first, to=first + timedelta(seconds=1))
                                     for w in [world, *others]))
    assert sorted(results) == [False, False, False, True]
    assert (await world.schedules.get("s")).next_at == first + timedelta(seconds=1)
    assert not await world.schedules.advance("gone", expected=first, to=first)


# --- deleting runs ---


async def test_delete_run_refuses_an_active_run_and_leaves_it_whole(world: World) -> None:
    require(world, "prune")
    for started in (False, True):
        run_id = await new_run(world, started=started)
        before = await world.events.list(run_id)
        with pytest.raises(EntityConflictError):
            await world.delete_run(run_id)
        assert await world.events.list(run_id) == before
    assert not await world.delete_run("wrun_00000000000000000000000000")


async def test_a_deleted_run_leaves_nothing_behind(world: World, make_world: MakeWorld) -> None:
    require(world, "prune")
    run_id = await new_run(world, input={"x": 1})
    await new_step(world, run_id, "step_1", started=True)
    await world.events.create(run_id, ev(run_id, "hook_created", "hook_1", token="tok-prune", metadata=None))
    await world.streams.write(run_id, "out", "chunk")
    await world.queue.enqueue("workflow", {"run_id": run_id}, idempotency_key=workflow_message_key(run_id))
    await world.queue.enqueue("step", {"run_id": run_id, "step_id": "step_1"},
                              idempotency_key=step_message_key(run_id, "step_1"))
    keep = await new_run(world)
    await world.events.create(run_id, ev(run_id, "run_cancelled"))
    assert await world.delete_run(run_id)
    for w in (world, await make_world()):
        with pytest.raises(NotFoundError):
            await w.runs.get(run_id)
        with pytest.raises(NotFoundError):
            await w.events.list(run_id)
        with pytest.raises(NotFoundError):
            await w.steps.get(run_id, "step_1")
        with pytest.raises(NotFoundError):
            await w.hooks.get_by_token("tok-prune")
        assert await w.streams.list(run_id) == []
        assert run_id not in await w.run_ids()
        listed = await w.runs.list(status=RunStatus.CANCELLED, limit=1000)
        assert run_id not in [r.run_id for r in listed.data]
        assert [m for m in await w.queue.list() if m.payload.get("run_id") == run_id] == []
        assert (await w.runs.get(keep)).status == RunStatus.RUNNING
    assert not await world.delete_run(run_id)
    again = await new_run(world)  # the token is free for a new hook
    await world.events.create(again, ev(again, "hook_created", "hook_1", token="tok-prune", metadata=None))
    assert (await world.hooks.get_by_token("tok-prune")).run_id == again


async def test_a_run_id_can_be_reused_after_its_run_was_deleted(world: World) -> None:
    require(world, "prune")
    run_id = await new_run(world)
    await world.events.create(run_id, ev(run_id, "run_completed", output=1))
    assert await world.delete_run(run_id)
    await new_run(world, run_id=run_id)
    assert (await world.runs.get(run_id)).status == RunStatus.RUNNING


# --- workers that died ---


async def test_forget_dead_workers_removes_a_killed_worker(world: World, world_url: str) -> None:
    require(world, "workers")
    require(world, "prune")  # retention: delete_run and forget_dead_workers
    child = _child(world_url, """
        await world.announce_worker({"kind": "worker", "concurrency": 41})
    """)
    try:
        _lines_until_ready(child)
        assert any(w.get("concurrency") == 41 for w in await world.live_workers())
    finally:
        _kill(child)
    deadline = time.monotonic() + 30
    while not await world.forget_dead_workers():  # it counts what it removed
        assert time.monotonic() < deadline, "a killed worker was not forgotten within 30 s"
        await asyncio.sleep(0.2)
    assert not any(w.get("concurrency") == 41 for w in await world.live_workers())
    assert await world.forget_dead_workers() == 0
