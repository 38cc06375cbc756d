"""Workers on the Postgres World: separate processes sharing nothing but the database URL,
`kill -9`ed workers, and the server restarted under running workflows."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from pathlib import Path

import pytest

from wf.runtime.client import start_run
from wf.runtime.entities import EventType, RunStatus
from wf.runtime.errors import NotFoundError
from wf.world_postgres.world import PostgresWorld
from wf.world_testing.builders import assert_views_match_log

from ..pg_server import PgServer
from .helpers import Worker, load_flows


@pytest.fixture
async def pg_world(world_store):  # type: ignore[no-untyped-def]
    world = PostgresWorld(world_store.url)
    await world.start()
    yield world
    await world.close()
    await world_store.drop()


@pytest.fixture
def worker_pool(world_store, tmp_path: Path):  # type: ignore[no-untyped-def]
    started: list[Worker] = []

    def make(name: str) -> Worker:
        worker = Worker(world_store.url, tmp_path / name)
        started.append(worker)
        return worker

    yield make
    for worker in started:
        if worker.proc.poll() is None:
            worker.kill()


async def _start_chains(world: PostgresWorld, n: int, steps: int, pause: float) -> list[str]:
    flows = load_flows()
    return [(await start_run(world, flows.chain, [steps, pause], {})).id for _ in range(n)]


async def _wait_all(world: PostgresWorld, run_ids: list[str], timeout: float) -> dict[str, RunStatus]:
    deadline = time.monotonic() + timeout
    ended: dict[str, RunStatus] = {}
    for run_id in run_ids:
        while True:  # a run may be created lazily, by the worker that takes its message
            try:
                run = await world.wait_for_end(run_id, timeout=max(deadline - time.monotonic(), 0.1))
                break
            except NotFoundError:
                assert time.monotonic() < deadline, f"run {run_id} was never created"
                await asyncio.sleep(0.05)
        ended[run_id] = run.status if run is not None else (await world.runs.get(run_id)).status
    return ended


async def _audit(world: PostgresWorld, run_ids: list[str], steps: int) -> None:
    """0 lost, 0 stuck, 0 duplicate completions; every entity equals the fold of its log."""
    for run_id in run_ids:
        run = await world.runs.get(run_id)
        assert (run.status, run.output) == (RunStatus.COMPLETED, steps), run_id
        events = await world.events.list(run_id)
        types = Counter(e.event_type for e in events)
        assert types[EventType.RUN_COMPLETED] == 1
        assert types[EventType.STEP_COMPLETED] == steps
        completed = Counter(e.correlation_id for e in events if e.event_type == EventType.STEP_COMPLETED)
        assert set(completed.values()) == {1}
        assert events[-1].event_type == EventType.RUN_COMPLETED  # nothing after the end
        await assert_views_match_log(world, run_id)


def _files_under(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


async def test_two_worker_processes_share_only_the_url_and_write_no_files(
        pg_world: PostgresWorld, worker_pool, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    workers = [worker_pool("a"), worker_pool("b")]
    for worker in workers:
        await asyncio.to_thread(worker.wait_ready)
    run_ids = await _start_chains(pg_world, 12, 3, 0.05)

    ended = await _wait_all(pg_world, run_ids, 60)

    assert set(ended.values()) == {RunStatus.COMPLETED}, [w.log() for w in workers]
    await _audit(pg_world, run_ids, 3)
    live = await pg_world.live_workers()
    assert len(live) == 2
    for worker in workers:
        assert worker.stop() == 0, worker.log()
        assert _files_under(worker.cwd) == [], f"a worker wrote files in its working directory: {worker.cwd}"
    assert await pg_world.live_workers() == []


async def test_a_worker_killed_with_sigkill_has_its_runs_finished_by_another_within_seconds(
        pg_world: PostgresWorld, worker_pool) -> None:  # type: ignore[no-untyped-def]
    victim = worker_pool("victim")
    await asyncio.to_thread(victim.wait_ready)
    run_ids = await _start_chains(pg_world, 4, 6, 0.2)
    deadline = time.monotonic() + 30
    while not [m for m in await pg_world.queue.list() if m.state == "leased"]:
        assert time.monotonic() < deadline, victim.log()
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.5)  # mid-run: some steps done, some leased
    victim.kill()
    killed = time.monotonic()
    rescuer = worker_pool("rescuer")
    await asyncio.to_thread(rescuer.wait_ready)

    ended = await _wait_all(pg_world, run_ids, 60)
    took = time.monotonic() - killed

    print(f"\nruns of a kill -9'ed worker finished by another {took:.1f} s after the kill (leases were 60 s)")
    assert set(ended.values()) == {RunStatus.COMPLETED}, rescuer.log()
    assert took < 20
    await _audit(pg_world, run_ids, 6)
    assert rescuer.stop() == 0


async def test_the_server_restarted_mid_run_loses_and_sticks_nothing(
        pg_world: PostgresWorld, worker_pool, pg_server: PgServer | None) -> None:  # type: ignore[no-untyped-def]
    if pg_server is None:
        pytest.skip("WF_TEST_PG_URL names a server this test cannot restart (set WF_TEST_PG_DIR)")
    workers = [worker_pool("a"), worker_pool("b")]
    for worker in workers:
        await asyncio.to_thread(worker.wait_ready)
    run_ids = await _start_chains(pg_world, 8, 10, 0.05)
    await asyncio.sleep(0.7)

    await asyncio.to_thread(pg_server.restart)  # pg_ctl restart -m fast: every connection is cut

    more = await _start_chains(pg_world, 4, 3, 0.0)  # this World carries on too
    ended = await _wait_all(pg_world, run_ids + more, 90)
    assert set(ended.values()) == {RunStatus.COMPLETED}, [w.log() for w in workers]
    await _audit(pg_world, run_ids, 10)
    await _audit(pg_world, more, 3)
    assert len(await pg_world.live_workers()) == 2  # both still present after their reconnects
    for worker in workers:
        log = worker.log()
        assert "Traceback" not in log, log
        assert worker.stop() == 0, log
