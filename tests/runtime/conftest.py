"""Fixtures for runtime tests: a fresh World per test, configured as wf's, and a worker on it.

The World is the local one on a temp dir, or whichever `WF_TEST_WORLD` names (CI runs the
suite again on PostgreSQL, each test on a schema of its own).

The suite runs in both replay modes: CI repeats it with WF_ALWAYS_REPLAY=1, where every
step of progress replays the workflow from the top of its log.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

import wf
from wf.runtime.config import started_world, world_from_url
from wf.runtime.errors import NotFoundError
from wf.runtime.worker import Worker
from wf.runtime.world import World
from wf.world_testing.stores import fresh_store


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    """A World on a fresh store: a local data dir, or per WF_TEST_WORLD (e.g. a new Postgres schema)."""
    store = fresh_store(tmp_path)
    w = world_from_url(store.url)
    wf.configure(world=w)
    await started_world(w)
    yield w
    await w.close()
    await store.drop()


@pytest.fixture
async def start_worker(world: World) -> AsyncIterator[Callable[..., Worker]]:
    """Start workers on the test's World (in this event loop); all are stopped at the end."""
    running: list[tuple[Worker, asyncio.Task[None]]] = []

    def start(**kwargs: object) -> Worker:
        worker = Worker(world, **kwargs)  # type: ignore[arg-type]
        running.append((worker, asyncio.create_task(worker.run())))
        return worker

    yield start
    for worker, _ in running:
        worker.stop()
    for _, task in running:
        await asyncio.wait_for(task, 30)


@pytest.fixture
async def worker(start_worker: Callable[..., Worker]) -> Worker:
    return start_worker()


@pytest.fixture
def hook_ready(world: World) -> Callable[[str], Awaitable[None]]:
    """`await hook_ready(token)`: wait until a live hook holds `token` (the run reached create_hook)."""

    async def wait(token: str, timeout: float = 5.0) -> None:
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            try:
                await world.hooks.get_by_token(token)
                return
            except NotFoundError:
                if asyncio.get_running_loop().time() > deadline:
                    raise AssertionError(f"no live hook holds {token!r} after {timeout} s") from None
                await asyncio.sleep(0.01)

    return wait
