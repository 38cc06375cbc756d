"""Races: threads sharing one World, and real processes sharing one data directory, doing the
same thing at the same moment. Exactly one wins; the others get 409 (or a no-op); the log
holds no duplicate."""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
import textwrap
import threading
import time
from collections import Counter
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest

from wf.runtime.entities import Event, EventType, StepStatus
from wf.runtime.errors import WorldError
from wf.runtime.ids import new_run_id
from wf.runtime.world import World

from .builders import WORKFLOW, assert_views_match_log, ev, event_types, new_run, new_step
from .fixtures import MakeWorld

THREADS = 8
PROCESSES = 3


def _in_threads(n: int, make: Callable[[int], Coroutine[Any, Any, Any]]) -> list[Any]:
    """Run make(i) in n threads, each with its own event loop, released at the same moment.

    Returns each thread's result, or the WorldError it raised.
    """
    barrier = threading.Barrier(n)
    results: list[Any] = [None] * n

    def body(i: int) -> None:
        async def run() -> Any:
            barrier.wait()
            try:
                return await make(i)
            except WorldError as exc:
                return exc

        results[i] = asyncio.run(run())

    threads = [threading.Thread(target=body, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    return results


def _statuses(results: list[Any]) -> Counter[int]:
    return Counter(r.status if isinstance(r, WorldError) else 200 for r in results)


# --- threads sharing one World object ---


async def test_threads_creating_the_same_step_one_wins(world: World) -> None:
    run_id = await new_run(world)
    results = _in_threads(THREADS, lambda i: world.events.create(
        run_id, ev(run_id, "step_created", "s1", step_name=f"by-{i}", input=i)))
    assert _statuses(results) == {200: 1, 409: THREADS - 1}
    assert await event_types(world, run_id) == ["run_created", "run_started", "step_created"]
    await assert_views_match_log(world, run_id)


async def test_threads_completing_the_same_step_one_wins(world: World) -> None:
    run_id = await new_run(world)
    await new_step(world, run_id, "s1", started=True)
    results = _in_threads(THREADS, lambda i: world.events.create(
        run_id, ev(run_id, "step_completed", "s1", result=i)))
    assert _statuses(results) == {200: 1, 409: THREADS - 1}
    [winner] = [r for r in results if not isinstance(r, WorldError)]
    step = await world.steps.get(run_id, "s1")
    assert step.status == StepStatus.COMPLETED and step.output == winner.events[0].data["result"]
    assert (await event_types(world, run_id)).count("step_completed") == 1


async def test_threads_lazily_starting_the_same_run_create_it_once(world: World) -> None:
    run_id = new_run_id()
    results = _in_threads(THREADS, lambda i: world.events.create(
        run_id, ev(run_id, "run_started", workflow_name=WORKFLOW, input=i)))
    assert _statuses(results) == {200: THREADS}
    created = [r for r in results if len(r.events) == 2]
    assert len(created) == 1 and all(r.events == [] for r in results if r not in created)
    assert await event_types(world, run_id) == ["run_created", "run_started"]


async def test_threads_appending_different_steps_lose_nothing(world: World) -> None:
    run_id = await new_run(world)

    async def steps(i: int) -> None:
        for j in range(10):
            await new_step(world, run_id, f"t{i}-{j}", started=True)

    _in_threads(THREADS, steps)
    events = await world.events.list(run_id)
    assert len(events) == 2 + THREADS * 10 * 2
    await assert_views_match_log(world, run_id)


async def test_two_worlds_writing_one_run_in_turn_keep_its_views_equal_to_its_log(make_world: MakeWorld) -> None:
    """What one instance remembers of a run it wrote must never outlive another's write to it:
    each instance here writes right after the other did (a stale memory would plan on an old
    state), a step another instance created is completed, and a hook one made is disposed by the
    run's end that the other records."""
    a, b = await make_world(), await make_world()
    run_id = await new_run(a)
    for i in range(6):
        first, second = (a, b) if i % 2 == 0 else (b, a)
        await first.events.create(run_id, ev(run_id, "step_created", f"s{i}", step_name="tests.step", input=i))
        await second.events.create(run_id, ev(run_id, "step_started", f"s{i}"))
        await first.events.create(run_id, ev(run_id, "step_completed", f"s{i}", result=i * 10))
        with pytest.raises(WorldError):  # already completed, whoever asks
            await second.events.create(run_id, ev(run_id, "step_completed", f"s{i}", result=-1))
    await a.events.create(run_id, ev(run_id, "hook_created", "h1", token="turns", metadata=None))
    await a.events.create(run_id, ev(run_id, "step_created", "last", step_name="tests.step", input=None))
    await b.events.create(run_id, ev(run_id, "run_completed", output="done"))
    with pytest.raises(WorldError):  # a's memory says running; the log says completed
        await a.events.create(run_id, ev(run_id, "step_started", "last"))
    for world in (a, b):
        await assert_views_match_log(world, run_id)
        assert (await world.steps.get(run_id, "s5")).output == 50
        assert (await world.hooks.get(run_id, "h1")).status.value == "disposed"
    other = await new_run(b)  # the ended run's token is free again
    result = await a.events.create(other, ev(other, "hook_created", "h1", token="turns", metadata=None))
    assert result.events[0].event_type == EventType.HOOK_CREATED


async def test_threads_claiming_one_token_from_different_runs_one_gets_it(world: World) -> None:
    runs = [await new_run(world) for _ in range(THREADS)]
    results = _in_threads(THREADS, lambda i: world.events.create(
        runs[i], ev(runs[i], "hook_created", "h1", token="contested", metadata=None)))
    kinds = Counter(r.events[0].event_type for r in results)
    assert kinds == {EventType.HOOK_CREATED: 1, EventType.HOOK_CONFLICT: THREADS - 1}
    [winner] = [r for r in results if r.events[0].event_type == EventType.HOOK_CREATED]
    assert (await world.hooks.get_by_token("contested")).run_id == winner.run.run_id


@pytest.mark.parametrize("input_size", [10, 50_000], ids=["small-view", "large-view"])
async def test_readers_never_see_a_half_written_view(world: World, input_size: int) -> None:
    run_id = await new_run(world)
    await world.events.create(run_id, ev(run_id, "step_created", "s1", step_name="x", input="x" * input_size))
    stop = threading.Event()
    seen: list[int] = []

    async def read() -> None:
        while not stop.is_set():
            step = await world.steps.get(run_id, "s1")  # raises CorruptDataError on a torn file
            assert step.input == "x" * input_size
            seen.append(step.attempt)
            run = await world.runs.get(run_id)
            assert run.event_count >= 3

    async def write() -> None:
        for _ in range(150):
            await world.events.create(run_id, ev(run_id, "step_started", "s1"))
        stop.set()

    results = _in_threads(4, lambda i: write() if i == 0 else read())
    assert results == [None] * 4
    assert (await world.steps.get(run_id, "s1")).attempt == 150
    assert len(seen) > 10


# --- real processes sharing one store (each child opens it by its URL) ---


_CHILD = textwrap.dedent("""
    import asyncio, json, os, sys, time
    from pathlib import Path
    from wf.runtime.entities import Event, EventType
    from wf.runtime.errors import WorldError
    from wf.runtime.config import world_from_url

    url, go, ready, spec = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]), json.loads(sys.argv[4])

    async def main():
        world = world_from_url(url)
        ready.touch()
        while not go.exists():
            time.sleep(0.0005)
        time.sleep(spec.get("delay", 0))
        out = []
        for op in spec["ops"]:
            event = Event(run_id=op["run_id"], event_type=EventType(op["event_type"]),
                          correlation_id=op.get("cid"), data=op.get("data", {}))
            written_at = time.time()
            try:
                result = await world.events.create(op["run_id"], event)
                out.append({"status": 200, "events": [e.event_type.value for e in result.events],
                            "written_at": written_at})
            except WorldError as exc:
                out.append({"status": exc.status, "error": str(exc)})
        print(json.dumps(out))
        await world.close()

    asyncio.run(main())
""")


def _processes(tmp_path: Path, url: str, specs: list[dict[str, Any]]) -> list[subprocess.Popen[str]]:
    """Start one process per spec; each opens the World, then acts when `go` appears."""
    go = tmp_path / "go"
    procs = []
    readies = []
    for i, spec in enumerate(specs):
        ready = tmp_path / f"ready-{i}"
        readies.append(ready)
        procs.append(subprocess.Popen(
            [sys.executable, "-c", _CHILD, url, str(go), str(ready), json.dumps(spec)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    deadline = time.monotonic() + 60
    while not all(r.exists() for r in readies):
        assert time.monotonic() < deadline, "children did not start"
        assert all(p.poll() is None for p in procs), [p.communicate() for p in procs]
        time.sleep(0.01)
    go.touch()
    return procs


def _outcomes(procs: list[subprocess.Popen[str]]) -> list[list[dict[str, Any]]]:
    outs = []
    for p in procs:
        stdout, stderr = p.communicate(timeout=60)
        assert p.returncode == 0, stderr
        outs.append(json.loads(stdout))
    return outs


def _op(run_id: str, event_type: str, cid: str | None = None, **data: Any) -> dict[str, Any]:
    return {"run_id": run_id, "event_type": event_type, "cid": cid, "data": data}


async def test_processes_creating_the_same_step_one_wins(world: World, world_url: str, tmp_path: Path) -> None:
    run_id = await new_run(world)
    procs = _processes(tmp_path, world_url, [
        {"ops": [_op(run_id, "step_created", "s1", step_name=f"p{i}", input=None)]} for i in range(PROCESSES)])
    statuses = Counter(out[0]["status"] for out in _outcomes(procs))
    assert statuses == {200: 1, 409: PROCESSES - 1}
    assert await event_types(world, run_id) == ["run_created", "run_started", "step_created"]
    await assert_views_match_log(world, run_id)


async def test_processes_completing_the_same_step_one_wins(world: World, world_url: str, tmp_path: Path) -> None:
    run_id = await new_run(world)
    await new_step(world, run_id, "s1", started=True)
    procs = _processes(tmp_path, world_url, [
        {"ops": [_op(run_id, "step_completed", "s1", result=i)]} for i in range(PROCESSES)])
    outs = _outcomes(procs)
    assert Counter(out[0]["status"] for out in outs) == {200: 1, 409: PROCESSES - 1}
    winner = next(i for i, out in enumerate(outs) if out[0]["status"] == 200)
    assert (await world.steps.get(run_id, "s1")).output == winner
    assert (await event_types(world, run_id)).count("step_completed") == 1
    await assert_views_match_log(world, run_id)


async def test_processes_lazily_starting_the_same_run_create_it_once(
        world: World, world_url: str, tmp_path: Path) -> None:
    run_id = new_run_id()
    procs = _processes(tmp_path, world_url, [
        {"ops": [_op(run_id, "run_started", workflow_name=WORKFLOW, input=i)]} for i in range(PROCESSES)])
    outs = [out[0] for out in _outcomes(procs)]
    assert all(o["status"] == 200 for o in outs)
    assert sorted(len(o["events"]) for o in outs) == [0] * (PROCESSES - 1) + [2]
    assert await event_types(world, run_id) == ["run_created", "run_started"]
    await assert_views_match_log(world, run_id)


async def test_processes_claiming_one_token_from_different_runs_one_gets_it(
        world: World, world_url: str, tmp_path: Path) -> None:
    runs = [await new_run(world) for _ in range(PROCESSES)]
    procs = _processes(tmp_path, world_url, [
        {"ops": [_op(r, "hook_created", "h1", token="contested", metadata=None)]} for r in runs])
    kinds = Counter(out[0]["events"][0] for out in _outcomes(procs))
    assert kinds == {"hook_created": 1, "hook_conflict": PROCESSES - 1}


async def test_processes_appending_to_one_run_lose_nothing(world: World, world_url: str, tmp_path: Path) -> None:
    run_id = await new_run(world)
    per_process = 15
    procs = _processes(tmp_path, world_url, [
        {"ops": [_op(run_id, "step_created", f"p{i}-{j}", step_name="x", input=j) for j in range(per_process)]}
        for i in range(PROCESSES)])
    assert all(o["status"] == 200 for out in _outcomes(procs) for o in out)
    events = await world.events.list(run_id)
    assert len(events) == 2 + PROCESSES * per_process
    assert len({e.correlation_id for e in events[2:]}) == PROCESSES * per_process
    await assert_views_match_log(world, run_id)


async def test_events_wait_wakes_when_another_process_appends(world: World, world_url: str, tmp_path: Path) -> None:
    run_id = await new_run(world)
    procs = _processes(tmp_path, world_url, [
        {"delay": 0.3, "ops": [_op(run_id, "step_created", "s1", step_name="x", input=None)]}])
    assert await world.events.wait(run_id, after_seq=1, timeout=20) is True
    woke_at = time.time()
    [[out]] = _outcomes(procs)
    latency = woke_at - out["written_at"]
    print(f"\nevents.wait woke {latency * 1000:.1f} ms after another process started its write")
    assert latency < 0.5
    assert [e.correlation_id for e in await world.events.list(run_id, after_seq=1)] == ["s1"]


async def test_many_processes_and_threads_race_on_many_steps(world: World, world_url: str, tmp_path: Path) -> None:
    run_id = await new_run(world)
    ops: list[dict[str, Any]] = []
    for j in range(40):
        ops += [_op(run_id, "step_created", f"s{j}", step_name="x", input=None), _op(run_id, "step_started", f"s{j}"),
                _op(run_id, "step_completed", f"s{j}", result=j)]
    procs = _processes(tmp_path, world_url, [{"ops": ops} for _ in range(4)])

    async def mine(i: int) -> None:
        for op in ops:
            event = Event(run_id=run_id, event_type=EventType(op["event_type"]), correlation_id=op["cid"],
                          data=op["data"])
            with contextlib.suppress(WorldError):
                await world.events.create(run_id, event)

    _in_threads(4, mine)
    _outcomes(procs)
    types = await event_types(world, run_id)
    assert types.count("step_created") == 40 and types.count("step_completed") == 40
    await assert_views_match_log(world, run_id)
