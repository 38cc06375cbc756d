"""Real `wf worker` processes on a fresh store (per `WF_TEST_WORLD`), and a World on it for the test."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path

import pytest
import pytest_asyncio

from wf.runtime.config import world_from_url
from wf.runtime.entities import Event, EventType
from wf.runtime.world import World
from wf.world_testing.stores import fresh_store

FLOWS = Path(__file__).resolve().parent / "flows.py"
REPO = FLOWS.parents[2]
E = EventType


class Workers:
    """`wf worker tests/flow_control/flows.py` processes on one store."""

    def __init__(self, url: str, root: Path) -> None:
        self.url = url
        self.root = root
        self.procs: list[subprocess.Popen[bytes]] = []

    def env(self, **extra: str) -> dict[str, str]:
        env = {**os.environ, "WF_WORLD": self.url, "WF_FSYNC": "0", **extra}
        env.pop("WF_DATA_DIR", None)
        return env

    def start(self, count: int = 1, *args: str, **extra_env: str) -> list[subprocess.Popen[bytes]]:
        """Start `count` workers (extra command-line `args`, environment `extra_env`) and wait until ready."""
        started = []
        for _ in range(count):
            log = open(self.root / f"worker-{len(self.procs)}.log", "wb")  # noqa: SIM115 - the child owns it
            proc = subprocess.Popen([sys.executable, "-m", "wf.cli", "worker", str(FLOWS), "--world", self.url, *args],
                                    cwd=REPO, env=self.env(**extra_env), stdout=log, stderr=subprocess.STDOUT)
            log.close()
            self.procs.append(proc)
            started.append(proc)
        for proc in started:
            self.wait_ready(proc, self.procs.index(proc))
        return started

    def log(self, index: int) -> str:
        return (self.root / f"worker-{index}.log").read_text(errors="replace")

    def wait_ready(self, proc: subprocess.Popen[bytes], index: int, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while "ready" not in self.log(index):
            if proc.poll() is not None:
                raise RuntimeError(f"wf worker exited with {proc.returncode}:\n{self.log(index)}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"wf worker not ready after {timeout} s:\n{self.log(index)}")
            time.sleep(0.02)

    def logs(self) -> str:
        return "\n".join(self.log(i) for i in range(len(self.procs)))

    def stop_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest_asyncio.fixture
async def store_world(tmp_path: Path) -> AsyncIterator[tuple[World, Workers]]:
    store = fresh_store(tmp_path)
    world = world_from_url(store.url)
    await world.start()
    workers = Workers(store.url, tmp_path)
    try:
        yield world, workers
    finally:
        workers.stop_all()
        await world.close()
        await store.drop()


def require(world: World, capability: str) -> None:
    if capability not in world.capabilities:
        pytest.skip(f"{type(world).__name__} does not declare {capability!r}")


async def all_events(world: World, run_ids: list[str]) -> list[Event]:
    events: list[Event] = []
    for run_id in run_ids:
        events.extend(await world.events.list(run_id))
    return events


def attempt_intervals(events: list[Event], step_name: str, step_names: dict[tuple[str, str], str]) -> list[
        tuple[datetime, datetime]]:
    """(started, ended) of every attempt of `step_name`, from step_started to its outcome event."""
    open_: dict[tuple[str, str], datetime] = {}
    spans = []
    for event in events:
        key = (event.run_id, event.correlation_id or "")
        if step_names.get(key) != step_name:
            continue
        assert event.created_at is not None
        if event.event_type == E.STEP_STARTED:
            open_[key] = event.created_at
        elif event.event_type in (E.STEP_COMPLETED, E.STEP_FAILED, E.STEP_RETRYING) and key in open_:
            spans.append((open_.pop(key), event.created_at))
    return spans


def most_at_once(spans: list[tuple[datetime, datetime]]) -> int:
    """The most intervals overlapping at any instant (an end at t comes before a start at t)."""
    points: list[tuple[datetime, int]] = [(s, 1) for s, _ in spans] + [(e, -1) for _, e in spans]
    points.sort(key=lambda p: (p[0], p[1]))
    most = current = 0
    for _, delta in points:
        current += delta
        most = max(most, current)
    return most


def names_of(events: list[Event]) -> dict[tuple[str, str], str]:
    return {(e.run_id, e.correlation_id or ""): e.data.get("step_name", "")
            for e in events if e.event_type == E.STEP_CREATED}
