"""The step-side stream writer: plain `write()`/`close()` calls, in async and sync steps alike."""

from __future__ import annotations

import asyncio
from typing import Any

from .serialization import serialize
from .world import World

DEFAULT_STREAM = "default"


class StreamWriter:
    """Writes chunks (bytes, str or any serializable value) to one stream of a run, in order.

    In an async step a write is handed to the worker's event loop and the step goes on at
    once; in a sync step (a worker thread) the write completes before `write()` returns.
    The executor flushes every writer before it records the step's result.
    """

    def __init__(self, world: World, run_id: str, name: str, loop: asyncio.AbstractEventLoop) -> None:
        self._world = world
        self.run_id = run_id
        self.name = name
        self._loop = loop
        self._tail: asyncio.Future[Any] | None = None
        self.closed = False

    def _submit(self, op: str, payload: Any) -> None:
        async def do(prev: asyncio.Future[Any] | None) -> None:
            if prev is not None:
                await asyncio.shield(prev)
            if op == "write":
                await self._world.streams.write(self.run_id, self.name, payload)
            else:
                await self._world.streams.close(self.run_id, self.name)

        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self._loop:
            self._tail = self._loop.create_task(do(self._tail))
        else:  # a worker thread: wait for the write itself, so order holds without a tail
            asyncio.run_coroutine_threadsafe(do(None), self._loop).result()

    def write(self, chunk: Any) -> None:
        """Append a chunk to the stream."""
        if self.closed:
            raise RuntimeError(f"stream {self.name!r} is closed")
        self._submit("write", serialize(chunk, where=f"a chunk of stream {self.name!r}"))

    def close(self) -> None:
        """End the stream: readers stop after the last chunk."""
        if self.closed:
            return
        self.closed = True
        self._submit("close", None)

    async def flush(self) -> None:
        """Wait until every chunk written so far is stored (called by the executor)."""
        if self._tail is not None:
            await self._tail
