"""Fixtures for the CLI tests: data dirs holding real runs, and `wf` run as a subprocess.

Runs are produced by the workflows of `flows.py`, driven by a real Worker on a LocalWorld in
this process (imported under the same name `wf worker tests/cli/flows.py` gives it), or by
`wf worker` subprocesses.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from wf.runtime.client import resume_hook_in, start_run
from wf.runtime.entities import Event
from wf.runtime.loader import import_path
from wf.runtime.worker import Worker
from wf.world_local.world import LocalWorld

FLOWS = Path(__file__).with_name("flows.py")
#: The module name `wf worker tests/cli/flows.py` imports the flows under.
MODULE = import_path(FLOWS).__name__
REPO = FLOWS.parents[2]
WIDTH = 120


def flow(name: str) -> str:
    """The registered name of a workflow of flows.py."""
    return f"{MODULE}.{name}"


def cli_env(data_dir: Path) -> dict[str, str]:
    return {**os.environ, "WF_FSYNC": "0", "WF_DATA_DIR": str(data_dir), "COLUMNS": str(WIDTH),
            "TERM": "dumb", "NO_COLOR": "1"}


def wf_cli(data_dir: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """`wf ARGS...` on `data_dir`, as a user runs it."""
    return subprocess.run([sys.executable, "-m", "wf.cli", *args], cwd=REPO, env=cli_env(data_dir),
                          capture_output=True, text=True, timeout=timeout)


def start_worker_process(data_dir: Path) -> subprocess.Popen[str]:
    """`wf worker tests/cli/flows.py`, returned once it said it is ready."""
    proc = subprocess.Popen([sys.executable, "-m", "wf.cli", "worker", str(FLOWS.relative_to(REPO))], cwd=REPO,
                            env=cli_env(data_dir), stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    assert proc.stderr is not None
    line = proc.stderr.readline()
    assert "ready" in line, line
    return proc


def stop_process(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.kill()
        proc.wait(10)


@dataclass
class Runs:
    """A data dir and the ids of the runs recorded in it, by label."""

    data_dir: Path
    ids: dict[str, str]


@contextlib.asynccontextmanager
async def worker_on(data_dir: Path, *, run_worker: bool = True) -> AsyncIterator[LocalWorld]:
    """A started LocalWorld on `data_dir`, with a real Worker driving it while inside."""
    world = LocalWorld(data_dir, fsync=False)
    await world.start()
    worker = Worker(world)
    task = asyncio.create_task(worker.run()) if run_worker else None
    try:
        yield world
    finally:
        worker.stop()
        if task is not None:
            await task
        await world.close()


async def start(world: LocalWorld, name: str, *args: Any) -> str:
    """Start a run of flows.py's workflow `name`; its id."""
    return (await start_run(world, flow(name), list(args), {})).id


async def until(check: Callable[[], Awaitable[bool]], timeout: float = 15.0) -> None:
    """Poll `check` until it is true."""
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)


async def ended(world: LocalWorld, *run_ids: str) -> None:
    """Wait until every run has ended."""

    async def check() -> bool:
        runs = [await world.runs.get(r, resolve_data=False) for r in run_ids]
        return all(run.status.terminal for run in runs)

    await until(check)


async def reached(world: LocalWorld, run_id: str, event_type: str) -> None:
    """Wait until the run's log holds an event of this type."""

    async def check() -> bool:
        events: list[Event] = await world.events.list(run_id, resolve_data=False)
        return any(e.event_type == event_type for e in events)

    await until(check)


@pytest.fixture(scope="session")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> Runs:
    """A read-only data dir with finished runs: a retry, two failures, a stream, a hook."""
    data_dir = tmp_path_factory.mktemp("recorded") / "data"

    async def build() -> dict[str, str]:
        async with worker_on(data_dir) as world:
            ids = {
                "retrying": await start(world, "retrying", 3),
                "bad": await start(world, "failing", "bad"),
                "step_failed": await start(world, "failing", "ok"),
                "stream": await start(world, "streamer", ["a", "b"]),
                "hook": await start(world, "waiter", "tok-recorded"),
            }
            await reached(world, ids["hook"], "hook_created")
            await resume_hook_in(world, "tok-recorded", {"approved": True})
            await ended(world, *ids.values())
        return ids

    ids = asyncio.run(build())
    return Runs(data_dir, ids)


@pytest.fixture
def fresh(tmp_path: Path) -> Iterator[Path]:
    """An empty data dir of this test's own."""
    yield tmp_path / "data"
