"""Starting and observing runs: `wf.start`, `wf.run`, `wf.get_run`, `wf.resume_hook` and `Run`.

Every blocking call has an async twin (`start_async`, `Run.result_async`, ...).
"""

from __future__ import annotations

import asyncio
import queue as _queue
import threading
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

from .config import blocking, started_world
from .entities import Event, EventType, RunStatus
from .errors import (
    InvalidIdError,
    NotFoundError,
    RunNotFoundError,
    WorkflowRunCancelledError,
    WorkflowRunFailedError,
)
from .ids import validate_id
from .operations import cancel_run
from .registry import REGISTRY, WorkflowFunction
from .serialization import deserialize
from .starting import idempotent_run_id, record_run, resume_hook_in  # noqa: F401 - idempotent_run_id, resume_hook_in re-exported
from .streams import DEFAULT_STREAM
from .worker import Worker
from .world import World

E = EventType
#: How long `result()` waits for a run whose creation was deferred to the worker (seed 001).
LAZY_CREATION_GRACE = 10.0


class Run:
    """A handle on one run. Cheap to create; every property reads the World afresh."""

    def __init__(self, run_id: str, world: World | None = None, *, lazy: bool = False) -> None:
        self.id = run_id
        self._world = world
        self._lazy_until = time.monotonic() + LAZY_CREATION_GRACE if lazy else 0.0

    def __repr__(self) -> str:
        return f"<wf.Run {self.id}>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Run) and other.id == self.id

    def __hash__(self) -> int:
        return hash(self.id)

    async def _w(self) -> World:
        return await started_world(self._world)

    async def _get(self, *, resolve_data: bool = True) -> Any:
        world = await self._w()
        while True:
            try:
                return await world.runs.get(self.id, resolve_data=resolve_data)
            except NotFoundError:
                if time.monotonic() >= self._lazy_until:
                    raise RunNotFoundError(f"no run with id {self.id!r}") from None
                await world.events.wait(self.id, after_seq=-1, timeout=0.05)

    # --- status ---

    async def status_async(self) -> str:
        return str((await self._get(resolve_data=False)).status)

    @property
    def status(self) -> str:
        """"pending" | "running" | "completed" | "failed" | "cancelled"."""
        return blocking(self.status_async())

    async def info_async(self) -> Any:
        """The materialized Run entity (wf.runtime.entities.Run)."""
        return await self._get()

    # --- result ---

    async def result_async(self, timeout: float | None = None) -> Any:
        """Wait for the run to end and return its output (raises its failure or cancellation)."""
        world = await self._w()
        try:
            run = await world.wait_for_end(self.id, timeout=timeout)
        except NotFoundError:
            await self._get(resolve_data=False)  # unknown id: RunNotFoundError (after a lazy start's grace)
            run = await world.wait_for_end(self.id, timeout=timeout)
        if run is None:
            status = (await self._get(resolve_data=False)).status
            raise TimeoutError(f"run {self.id} is still {status} after {timeout} s")
        if run.status == RunStatus.COMPLETED:
            return deserialize(run.output)
        if run.status == RunStatus.FAILED:
            raise WorkflowRunFailedError(self.id, run.error)
        raise WorkflowRunCancelledError(self.id)

    def result(self, timeout: float | None = None) -> Any:
        return blocking(self.result_async(timeout))

    # --- cancel ---

    async def cancel_async(self, *, children: bool = True) -> None:
        """End the run as cancelled: in-flight steps may finish, pending timers and hooks are dropped.

        Child runs it still awaits are cancelled too (`children=False` leaves them running).
        Nothing happens to a run that has already ended.
        """
        await cancel_run(await self._w(), self.id, children=children)

    def cancel(self, *, children: bool = True) -> None:
        """Blocking twin of `cancel_async`."""
        blocking(self.cancel_async(children=children))

    # --- events ---

    async def events_async(self) -> list[Event]:
        world = await self._w()
        await self._get(resolve_data=False)
        return await world.events.list(self.id)

    def events(self) -> list[Event]:
        """The run's event log, oldest first."""
        return blocking(self.events_async())

    # --- streams ---

    async def stream_async(self, namespace: str | None = None, *, start: int = 0) -> AsyncIterator[Any]:
        """Yield the chunks of a stream live, in order, until it is closed (or the run ends and it is drained)."""
        world = await self._w()
        name = namespace or DEFAULT_STREAM
        index = start
        while True:
            got = False
            async for chunk in world.streams.tail(self.id, name, start=index, timeout=0.5):
                got = True
                index += 1
                yield deserialize(chunk)
            chunks, closed = await world.streams.read(self.id, name, start=index)
            for chunk in chunks:
                index += 1
                yield deserialize(chunk)
            if closed:
                return
            if not got and not chunks:
                run = await self._get(resolve_data=False)
                if run.status.terminal:
                    return

    def stream(self, namespace: str | None = None) -> Iterator[Any]:
        """Blocking iteration over a stream (see `stream_async`)."""
        q: _queue.Queue[tuple[str, Any]] = _queue.Queue(maxsize=1024)

        async def pump() -> None:
            try:
                async for chunk in self.stream_async(namespace):
                    await asyncio.to_thread(q.put, ("chunk", chunk))
                q.put(("end", None))
            except BaseException as exc:  # noqa: BLE001 - handed over to the reading thread
                q.put(("error", exc))

        threading.Thread(target=lambda: blocking(pump()), daemon=True).start()
        while True:
            kind, value = q.get()
            if kind == "chunk":
                yield value
            elif kind == "end":
                return
            else:
                raise value


# --- starting runs ---


async def start_run(
    world: World,
    workflow: WorkflowFunction | str,
    args: list[Any] | tuple[Any, ...],
    kwargs: dict[str, Any],
    *,
    idempotency_key: str | None = None,
    attributes: dict[str, Any] | None = None,
    tags: dict[str, str] | None = None,
    priority: int = 0,
) -> Run:
    """Record a run and queue it for a worker (see `start_async`); its handle.

    A name the loaded code defines is started as that function (its arguments checked).
    """
    if isinstance(workflow, str):
        workflow = REGISTRY.workflows.get(workflow, workflow)
    if tags:
        attributes = {**(attributes or {}), "tags": checked_tags(tags)}
    run_id, lazy = await record_run(world, workflow, args, kwargs, idempotency_key=idempotency_key,
                                    attributes=attributes, priority=priority)
    return Run(run_id, world, lazy=lazy)


def checked_tags(tags: Any) -> dict[str, str]:
    """Tags as stored with a run: a dict of non-empty string keys to string values; TypeError otherwise."""
    if not isinstance(tags, dict) or not all(isinstance(k, str) and k and isinstance(v, str) for k, v in tags.items()):
        raise TypeError(f"tags must be a dict of strings to strings, got {tags!r}")
    return dict(tags)


async def start_async(workflow: WorkflowFunction | str, *args: Any, idempotency_key: str | None = None,
                      tags: dict[str, str] | None = None, priority: int = 0, **kwargs: Any) -> Run:
    """Record a new run of `workflow` and queue it; a worker executes it. Returns its handle.

    TypeError (nothing recorded) if the arguments do not fit the workflow's signature.
    `tags` are stored with the run (its attributes), shown and filterable by `wf inspect runs --tag`.
    `priority` (-1000..1000, default 0): higher runs are served first, FIFO within a priority; a
    run is overtaken only by runs started less than (their priority - its) x 60 s after it.
    """
    world = await started_world()
    return await start_run(world, workflow, args, kwargs, idempotency_key=idempotency_key, tags=tags,
                           priority=priority)


def start(workflow: WorkflowFunction | str, *args: Any, idempotency_key: str | None = None,
          tags: dict[str, str] | None = None, priority: int = 0, **kwargs: Any) -> Run:
    """Blocking twin of `start_async`."""
    return blocking(start_async(workflow, *args, idempotency_key=idempotency_key, tags=tags, priority=priority,
                                **kwargs))


async def get_run_async(run_id: str) -> Run:
    """The handle of an existing run; RunNotFoundError for an unknown (or malformed) id."""
    world = await started_world()
    try:
        validate_id(run_id, "run id")
        await world.runs.get(run_id, resolve_data=False)
    except (NotFoundError, InvalidIdError):
        raise RunNotFoundError(f"no run with id {run_id!r}") from None
    return Run(run_id, world)


def get_run(run_id: str) -> Run:
    return blocking(get_run_async(run_id))


async def run_async(workflow: WorkflowFunction | str, *args: Any, idempotency_key: str | None = None,
                    **kwargs: Any) -> Any:
    """Start a run and drive it to completion with a worker in this process; return its result."""
    world = await started_world()
    handle = await start_run(world, workflow, args, kwargs, idempotency_key=idempotency_key)
    worker = Worker(world)
    task = asyncio.create_task(worker.run())
    try:
        return await handle.result_async()
    finally:
        worker.stop()
        await task


def run(workflow: WorkflowFunction | str, *args: Any, idempotency_key: str | None = None, **kwargs: Any) -> Any:
    """Blocking twin of `run_async`."""
    return blocking(run_async(workflow, *args, idempotency_key=idempotency_key, **kwargs))


# --- hooks ---


async def resume_hook_async(token: str, payload: Any = None) -> None:
    """Send `payload` to the hook holding `token`; HookNotFoundError if no live hook holds it."""
    await resume_hook_in(await started_world(), token, payload)


def resume_hook(token: str, payload: Any = None) -> None:
    blocking(resume_hook_async(token, payload))
