"""Server-sent events: the runs list changing, a run's log growing, a stream's chunks arriving."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson

from ..runtime.entities import Run
from ..runtime.errors import NotFoundError
from ..runtime.serialization import deserialize
from ..runtime.world import World
from .values import jsonable

#: A comment line this often keeps proxies and the browser from timing the connection out.
HEARTBEAT = 15.0
POLL = 1.0
WATCHED = 50


async def until_set(source: AsyncIterator[bytes], stop: asyncio.Event) -> AsyncIterator[bytes]:
    """The items of `source` until it ends or `stop` is set (then `source` is closed and this ends)."""
    iterator = aiter(source)
    stopping = asyncio.ensure_future(stop.wait())
    try:
        while True:
            following = asyncio.ensure_future(anext(iterator))
            await asyncio.wait({following, stopping}, return_when=asyncio.FIRST_COMPLETED)
            if not following.done():
                following.cancel()
                with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
                    await following
                return
            try:
                yield following.result()
            except StopAsyncIteration:
                return
    finally:
        stopping.cancel()
        with contextlib.suppress(Exception):
            await source.aclose()  # type: ignore[attr-defined]


def sse(data: Any, event: str | None = None) -> bytes:
    head = f"event: {event}\n" if event else ""
    return (head + "data: " + orjson.dumps(data, default=str).decode() + "\n\n").encode()


class RunsWatch:
    """One poller for every open runs page: reads the newest runs' statuses once a second, while watched."""

    def __init__(self, world: World, on_change: Callable[[list[Run], list[Run]], None] | None = None) -> None:
        self.world = world
        self.on_change = on_change
        self.version = 0
        self._fingerprint: tuple[Any, ...] | None = None
        self._window: list[Run] = []
        self._changed = asyncio.Event()
        self._watchers = 0
        self._task: asyncio.Task[None] | None = None

    async def _poll(self) -> None:
        while self._watchers > 0:
            with contextlib.suppress(Exception):
                page = await self.world.runs.list(limit=WATCHED, resolve_data=False)
                fingerprint = tuple((r.run_id, str(r.status), r.event_count) for r in page.data)
                if fingerprint != self._fingerprint:
                    if self._fingerprint is not None:
                        if self.on_change is not None:
                            self.on_change(self._window, page.data)
                        self.version += 1
                        changed, self._changed = self._changed, asyncio.Event()
                        changed.set()
                    self._fingerprint = fingerprint
                    self._window = page.data
            await asyncio.sleep(POLL)
        self._task = None

    async def stream(self) -> AsyncIterator[bytes]:
        """`event: runs` each time the newest runs change; heartbeats between."""
        self._watchers += 1
        if self._task is None:
            self._task = asyncio.create_task(self._poll())
        try:
            yield b": watching runs\n\n"
            while True:
                waiter = self._changed
                try:
                    await asyncio.wait_for(waiter.wait(), HEARTBEAT)
                    yield sse({"version": self.version}, "runs")
                except TimeoutError:
                    yield b": heartbeat\n\n"
        finally:
            self._watchers -= 1

    async def close(self) -> None:
        self._watchers = 0
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task


async def run_events(world: World, run_id: str, after_seq: int) -> AsyncIterator[bytes]:
    """`event: run` with the new event count and status whenever the run's log grows; `end` once it is over."""
    yield b": watching run\n\n"
    seq = after_seq
    while True:
        try:
            grew = await world.events.wait(run_id, after_seq=seq, timeout=HEARTBEAT)
            run = await world.runs.get(run_id, resolve_data=False)
        except NotFoundError:
            return
        if grew or run.event_count - 1 > seq:
            seq = run.event_count - 1
            yield sse({"event_count": run.event_count, "status": str(run.status)}, "run")
        else:
            yield b": heartbeat\n\n"
        if run.status.terminal and seq >= run.event_count - 1:
            yield sse({"status": str(run.status)}, "end")
            return


async def stream_chunks(world: World, run_id: str, name: str, start: int) -> AsyncIterator[bytes]:
    """Each chunk of a run's stream as `event: chunk` (from `start`), then `end` when it is closed."""
    yield b": tailing\n\n"
    index = start
    while True:
        async for chunk in world.streams.tail(run_id, name, start=index, timeout=HEARTBEAT):
            yield sse({"index": index, "chunk": _show(chunk)}, "chunk")
            index += 1
        chunks, closed = await world.streams.read(run_id, name, start=index)
        for chunk in chunks:
            yield sse({"index": index, "chunk": _show(chunk)}, "chunk")
            index += 1
        if closed:
            yield sse({"chunks": index}, "end")
            return
        run = await world.runs.get(run_id, resolve_data=False)
        if run.status.terminal and not chunks:
            yield sse({"chunks": index}, "end")
            return
        yield b": heartbeat\n\n"


def _show(chunk: Any) -> Any:
    try:
        return jsonable(deserialize(chunk))
    except Exception:  # noqa: BLE001 - a chunk this process cannot rebuild is shown raw
        return chunk
