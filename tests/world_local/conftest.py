"""Fixtures for the local World's own tests: a World on a temp data dir, configured as wf's, in-process
workers on it, and `wf` run as a subprocess on the same data dir."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

import wf
from wf.runtime.config import started_world
from wf.runtime.worker import Worker
from wf.world_local import faults
from wf.world_local.world import LocalWorld

from . import flows  # noqa: F401 - registers the workflows the in-process workers run

REPO = Path(__file__).resolve().parents[2]
FLOWS = Path(__file__).with_name("flows.py")


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
async def start_worker(world: LocalWorld) -> AsyncIterator[Callable[..., Worker]]:
    """Start in-process workers on the test's World; all are stopped at the end."""
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


def wf_cli(
    data_dir: Path, *args: str, timeout: float = 60, env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """`wf ARGS...` on `data_dir`, as a user runs it (blocking: call it through `asyncio.to_thread`)."""
    full_env = {**os.environ, "WF_FSYNC": "0", "WF_DATA_DIR": str(data_dir), "COLUMNS": "160", "NO_COLOR": "1",
                **(env or {})}
    full_env.pop("WF_WORLD", None)
    return subprocess.run([sys.executable, "-m", "wf.cli", *args], cwd=REPO, env=full_env,
                          capture_output=True, text=True, timeout=timeout)


async def wf_cli_async(data_dir: Path, *args: str, **kwargs: object) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(wf_cli, data_dir, *args, **kwargs)  # type: ignore[arg-type]


@pytest.fixture(autouse=True)
def disarmed_faults() -> Iterator[None]:
    yield
    faults.disarm()
