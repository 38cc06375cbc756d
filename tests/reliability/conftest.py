"""Fixtures for the reliability tests: a World on a temp data dir, configured as wf's,
an in-process worker on it, and the side file the soak workflows log executions to."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

import wf
from wf.runtime.config import started_world
from wf.runtime.worker import Worker
from wf.world_local import faults
from wf.world_local.world import LocalWorld

from . import soak_workflows as sw


@pytest.fixture
def side_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Where the soak workflows' steps log their executions (in this process)."""
    path = tmp_path / "steps.jsonl"
    monkeypatch.setenv(sw.SIDE_FILE_ENV, str(path))
    monkeypatch.setenv(sw.STEP_DELAY_ENV, "0")
    return path


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
async def world(data_dir: Path) -> AsyncIterator[LocalWorld]:
    w = LocalWorld(data_dir, fsync=False)
    wf.configure(world=w)
    await started_world(w)
    yield w
    await w.close()


@pytest.fixture
async def start_worker(world: LocalWorld) -> AsyncIterator[Callable[..., tuple[Worker, asyncio.Task[None]]]]:
    """Start in-process workers on the test's World; all are stopped at the end."""
    running: list[tuple[Worker, asyncio.Task[None]]] = []

    def start(**kwargs: object) -> tuple[Worker, asyncio.Task[None]]:
        worker = Worker(world, **kwargs)  # type: ignore[arg-type]
        running.append((worker, asyncio.create_task(worker.run())))
        return running[-1]

    yield start
    for worker, _ in running:
        worker.stop()
    for _, task in running:
        await asyncio.wait_for(task, 30)


@pytest.fixture(autouse=True)
def disarmed_faults() -> Iterator[None]:
    """No test leaves the fault seam armed behind it."""
    yield
    faults.disarm()
