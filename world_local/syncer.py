"""fdatasync off the event loop, for many runs at once (group commit).

On ext4 every `fdatasync` of a file that grew forces a journal commit, which also writes
out the data of every other file in that transaction: the syncs that follow find little
left to do. A worker driving many runs therefore collects the syncs its commits need
during one turn of its event loop and hands them to a pool thread as one batch, then goes
on with other runs meanwhile instead of blocking its loop on each sync in turn. Batches of
consecutive turns run on different threads, so they overlap too.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
from collections.abc import Callable
from typing import Any

from .files import datasync

#: Threads that may wait on the disk at once (a sync costs no CPU: waiting is all they do).
SYNC_THREADS = 8
#: Defer a sync only when at least this many callbacks wait on the loop: a lone run (one or
#: two callbacks of its own) syncs inline, which is ~0.1-0.3 ms faster than a hand-off.
DEFER_WHEN_READY = 2

_Job = tuple[Callable[..., object], tuple[Any, ...], "asyncio.Future[None]"]


class Syncer:
    """Runs file-system syncs on a thread pool, in one batch per event-loop turn."""

    def __init__(self) -> None:
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._lock = threading.Lock()
        #: The batch being collected, per event loop (a World may serve several threads' loops).
        self._batches: dict[asyncio.AbstractEventLoop, list[_Job]] = {}
        self.in_flight = 0
        #: Syncs run on the pool so far.
        self.count = 0

    def worth_deferring(self) -> bool:
        """Whether the calling event loop has other work to do during a sync (or syncs to join)."""
        if self.in_flight:
            return True
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return False
        ready = getattr(loop, "_ready", None)  # callbacks waiting their turn (asyncio's own loop)
        return ready is not None and len(ready) >= DEFER_WHEN_READY

    async def sync(self, fd: int) -> None:
        """fdatasync `fd` on a pool thread; OSError as the call raised it."""
        await self.run(datasync, fd)

    async def run(self, fn: Callable[..., object], *args: Any) -> None:
        """Call `fn(*args)` (a file-system sync) on a pool thread, batched with the other calls
        made during this turn of the event loop; its exception as raised."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        with self._lock:
            batch = self._batches.get(loop)
            if batch is None:
                batch = self._batches[loop] = []
                loop.call_soon(self._submit, loop)
            batch.append((fn, args, done))
        self.in_flight += 1
        self.count += 1
        try:
            await done
        finally:
            self.in_flight -= 1

    def _submit(self, loop: asyncio.AbstractEventLoop) -> None:
        with self._lock:
            batch = self._batches.pop(loop, [])
            if self._pool is None:
                self._pool = concurrent.futures.ThreadPoolExecutor(SYNC_THREADS, thread_name_prefix="wf-sync")
            pool = self._pool
        try:
            pool.submit(_run_batch, loop, batch)
        except RuntimeError as exc:  # shut down meanwhile
            _settle([(done, exc) for _, _, done in batch])

    def close(self) -> None:
        """Wait for the syncs under way and stop the threads."""
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True)


def _run_batch(loop: asyncio.AbstractEventLoop, batch: list[_Job]) -> None:
    # In a pool thread: run every call, then settle all their futures in one loop callback.
    outcomes: list[tuple[asyncio.Future[None], Exception | None]] = []
    for fn, args, done in batch:
        try:
            fn(*args)
            outcomes.append((done, None))
        except Exception as exc:  # noqa: BLE001 - any failure is handed to its waiter, never lost
            outcomes.append((done, exc))
    with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits any more
        loop.call_soon_threadsafe(_settle, outcomes)


def _settle(outcomes: list[tuple[asyncio.Future[None], Exception | None]]) -> None:
    for done, exc in outcomes:
        if done.done():  # its waiter was cancelled
            continue
        if exc is None:
            done.set_result(None)
        else:
            done.set_exception(exc)
