"""Testing workflows with pytest: an isolated data dir and an in-process worker per test.

    # test_orders.py
    from shop import fulfil_order

    async def test_an_order_ships(wf_env):
        run = await wf_env.start(fulfil_order, "o-1", "4242")
        assert (await run.result_async())["status"] == "shipped"
        steps = await wf_env.steps(run)
        assert steps[1].attempt == 3                 # two retries, no waiting: time is skipped
        await wf_env.assert_replays(run)             # the log still fits the current code

The `wf_env` fixture comes with wf's pytest plugin, registered when wf is installed (if your
setup does not load plugins from entry points, add `pytest_plugins = ["wf.testing"]` to your
top-level conftest.py). Tests are `async def` and need pytest-asyncio (`asyncio_mode = "auto"`,
or mark them `@pytest.mark.asyncio`). Outside pytest, `async with WorkflowEnv(path) as env:`
gives the same object.

What `wf_env` gives each test:
- a fresh store: a data directory under the test's `tmp_path` (fsync off), or, when the
  environment sets `WF_TEST_WORLD=postgresql://…`, a new schema of that database (dropped
  after the test); configured as wf's World, so
  `wf.start_async`, `wf.get_run_async` and `wf.resume_hook_async` in the code under test use it;
- a Worker running in the test's event loop, with **time skipping** on: when a run waits only
  for timers (no step of it is running), its next timer fires at once, recorded at its due
  time, so `await wf.sleep("1d")` returns immediately while `wf.now()` moves on by one day;
  retry delays (backoff, `RetryableError(retry_after=...)`) are skipped too. Set
  `wf_env.skip_time = False` before starting a run that races a hook against a timer
  (`asyncio.timeout` around `await hook`): with skipping on, the timer fires before the
  test can deliver the payload.

Its methods (all async):
- `start(workflow, *args, **kwargs) -> wf.Run`; `run(...)` starts and returns the result;
- `resume_hook(token, payload)`: waits until a live hook holds `token`, then delivers;
  `wait_for_hook(token)` returns that hook (its `metadata`, `run_id`...);
- `steps(run)`: the run's steps (`StepRecord`: name, status, attempt, output, error);
  `events(run)` and `event_types(run)`: the event log;
- `wait_for_status(run, "running")`, `wait_for_steps(run, n)`: synchronise with the worker;
- `assert_replays(run)`: replays the run's log against the current code in a fresh
  `WorkflowInstance` and fails on a divergence or a different outcome;
- `WorkflowEnv(store, run_worker=False)` observes a store (a data dir, or any World URL) that
  another process (`wf worker`) serves: the same helpers, no worker here;
- `world` and `worker` for anything else (`wf.runtime.world.World`, `wf.runtime.worker.Worker`).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any

from wf.runtime.client import Run, resume_hook_in, start_run
from wf.runtime.config import configure, local_path, started_world, world_from_url
from wf.runtime.debugger import replay_run
from wf.runtime.entities import Event, Hook
from wf.runtime.errors import NotFoundError
from wf.runtime.registry import REGISTRY, Registry, WorkflowFunction
from wf.runtime.serialization import deserialize
from wf.runtime.worker import Worker
from wf.runtime.world import World

__all__ = ["StepRecord", "WorkflowEnv", "wf_env"]

#: How long the helpers wait for the worker by default (seconds).
DEFAULT_TIMEOUT = 30.0


@dataclass(frozen=True, slots=True)
class StepRecord:
    """One step of a run as a test sees it: values deserialized, `short_name` without the module."""

    step_id: str
    name: str
    status: str
    attempt: int
    output: Any
    error: dict[str, Any] | None
    started_at: datetime | None
    completed_at: datetime | None

    @property
    def short_name(self) -> str:
        return self.name.rsplit(".", 1)[-1]


def _run_id(run: Run | str) -> str:
    return run if isinstance(run, str) else run.id


def _new_world(store: str | Path | World) -> World:
    """A World for a test: a local data dir (fsync off: a test needs no power-loss safety) or any World URL."""
    if isinstance(store, World):
        return store
    if isinstance(store, Path):
        store = f"file:{store}"
    return world_from_url(store, fsync=False)


class WorkflowEnv:
    """A private World on `data_dir` with a Worker in the current event loop (see the module docs)."""

    def __init__(self, store: str | Path | World, *, skip_time: bool = True, concurrency: int = 100,
                 always_replay: bool | None = None, registry: Registry = REGISTRY, run_worker: bool = True) -> None:
        """`store`: a data dir (Path), a World URL (str) or a World. `run_worker=False` only observes:
        runs are executed by another process on the same store."""
        self.run_worker = run_worker
        self.world = _new_world(store)
        self.url = store if isinstance(store, str) else (f"file:{store}" if isinstance(store, Path) else None)
        self.data_dir = local_path(self.url) if self.url is not None else getattr(self.world, "data_dir", None)
        self.worker = Worker(self.world, registry=registry, concurrency=concurrency,
                             always_replay=always_replay, skip_time=skip_time)
        self.registry = registry
        self._task: asyncio.Task[None] | None = None

    @property
    def skip_time(self) -> bool:
        """Whether timers and retry delays are skipped (see the module docs). Settable at any time."""
        return self.worker.skip_time

    @skip_time.setter
    def skip_time(self, value: bool) -> None:
        self.worker.skip_time = value

    async def __aenter__(self) -> WorkflowEnv:
        configure(world=self.world)
        await started_world(self.world)
        if self.run_worker:
            self._task = asyncio.create_task(self.worker.run(), name="wf.testing worker")
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        if self._task is not None:
            self.worker.stop()
            await asyncio.wait_for(self._task, DEFAULT_TIMEOUT)
        await self.world.close()
        with contextlib.suppress(RuntimeError):
            configure()  # forget the closed World: later wf calls use WF_DATA_DIR again

    # --- runs ---

    async def start(self, workflow: WorkflowFunction | str, *args: Any, idempotency_key: str | None = None,
                    **kwargs: Any) -> Run:
        """Start a run on this env's World; the env's worker executes it."""
        return await start_run(self.world, workflow, args, kwargs, idempotency_key=idempotency_key)

    async def run(self, workflow: WorkflowFunction | str, *args: Any, **kwargs: Any) -> Any:
        """Start a run and return its result (raises wf.WorkflowRunFailedError if it fails)."""
        run = await self.start(workflow, *args, **kwargs)
        return await run.result_async(timeout=DEFAULT_TIMEOUT)

    async def wait_for_status(self, run: Run | str, *statuses: str, timeout: float = DEFAULT_TIMEOUT) -> str:
        """Wait until the run's status is one of `statuses`; return it. TimeoutError otherwise."""
        run_id = _run_id(run)
        deadline = time.monotonic() + timeout
        while True:
            info = await self.world.runs.get(run_id, resolve_data=False)
            if str(info.status) in statuses:
                return str(info.status)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"run {run_id} is {info.status}, not {' or '.join(statuses)}, after {timeout} s")
            await self.world.events.wait(run_id, after_seq=info.event_count - 1, timeout=min(remaining, 0.5))

    async def wait_for_steps(self, run: Run | str, count: int, *, status: str | None = None,
                             timeout: float = DEFAULT_TIMEOUT) -> list[StepRecord]:
        """Wait until the run has at least `count` steps (with `status`, if given); return them all."""
        run_id = _run_id(run)
        deadline = time.monotonic() + timeout
        while True:
            steps = await self.steps(run_id)
            if sum(1 for s in steps if status is None or s.status == status) >= count:
                return steps
            if time.monotonic() >= deadline:
                raise TimeoutError(f"run {run_id} has {len(steps)} step(s), waited for {count} after {timeout} s")
            info = await self.world.runs.get(run_id, resolve_data=False)
            await self.world.events.wait(run_id, after_seq=info.event_count - 1, timeout=0.2)

    # --- hooks ---

    async def wait_for_hook(self, token: str, *, timeout: float = DEFAULT_TIMEOUT) -> Hook:
        """The live hook holding `token`, once a run has created it (TimeoutError if none does in time)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                return await self.world.hooks.get_by_token(token)
            except NotFoundError:
                if time.monotonic() >= deadline:
                    raise TimeoutError(f"no run created a hook with token {token!r} within {timeout} s") from None
                await asyncio.sleep(0.01)

    async def resume_hook(self, token: str, payload: Any = None, *, timeout: float = DEFAULT_TIMEOUT) -> None:
        """Deliver `payload` to the hook `token`, first waiting until a run has created it."""
        await self.wait_for_hook(token, timeout=timeout)
        await resume_hook_in(self.world, token, payload)

    # --- reading a run ---

    async def events(self, run: Run | str) -> list[Event]:
        """The run's event log, oldest first."""
        return await self.world.events.list(_run_id(run))

    async def event_types(self, run: Run | str) -> list[str]:
        """The run's event types in log order, e.g. ["run_created", "run_started", "step_created", ...]."""
        return [str(e.event_type) for e in await self.events(run)]

    async def steps(self, run: Run | str) -> list[StepRecord]:
        """The run's steps in creation order, outputs deserialized."""
        page = await self.world.steps.list(_run_id(run))
        return [
            StepRecord(s.step_id, s.step_name, str(s.status), s.attempt,
                       deserialize(s.output) if s.output is not None else None, s.error, s.started_at,
                       s.completed_at)
            for s in page.data
        ]

    async def assert_replays(self, run: Run | str) -> None:
        """Replay the run's log against the current code; fail on divergence or a different outcome.

        Raises wf.ReplayDivergenceError when the code no longer matches the log, and
        AssertionError when it replays to a different result or error than the one recorded.
        """
        run_id = _run_id(run)
        info = await self.world.runs.get(run_id)
        report = replay_run(self.registry.workflow(info.workflow_name), info, await self.world.events.list(run_id))
        if report.instance is not None:
            report.instance.close()
        if report.divergence is not None:
            raise report.divergence
        assert report.outcome_mismatch is None, f"run {run_id}: {report.outcome_mismatch}"
        if not info.status.terminal:
            assert not report.pending_calls, (
                f"replaying run {run_id} asks for {report.pending_calls} that the log does not hold yet"
            )


def _pytest_fixture() -> Any:
    """`wf_env` as a pytest-asyncio fixture (only defined when pytest-asyncio is installed)."""
    try:
        import pytest_asyncio
    except ImportError:  # pragma: no cover - the plugin is inert without pytest-asyncio
        return None

    @pytest_asyncio.fixture
    async def wf_env(tmp_path: Path) -> AsyncIterator[WorkflowEnv]:
        """A WorkflowEnv on a fresh store (`tmp_path/"wf-data"`, or per WF_TEST_WORLD), with a worker."""
        from wf.world_testing.stores import fresh_store

        store = fresh_store(tmp_path, "wf-data")
        try:
            async with WorkflowEnv(store.url) as env:
                yield env
        finally:
            await store.drop()

    return wf_env


wf_env = _pytest_fixture()
