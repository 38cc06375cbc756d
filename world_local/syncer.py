"""fdatasync off the event loop, for many runs at once (group commit).

On ext4 every `fdatasync` of a file that grew forces a journal commit; calls made at the
same time from several threads share one. A worker driving many runs hands the syncs of
their commits to a small pool of threads and goes on with other runs meanwhile, instead of
blocking its event loop on each sync in turn.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Callable
from typing import Any

from .files import datasync

#: Threads that may wait on the disk at once (a sync costs no CPU: waiting is all they do).
SYNC_THREADS = 8


class Syncer:
    """Runs `fdatasync` calls on a thread pool, for coroutines to await."""

    def __init__(self) -> None:
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._lock = threading.Lock()
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
        return bool(getattr(loop, "_ready", None))  # callbacks waiting their turn (asyncio's own loop)

    async def sync(self, fd: int) -> None:
        """fdatasync `fd` on a pool thread; OSError as the call raised it."""
        await self.run(datasync, fd)

    async def run(self, fn: Callable[..., object], *args: Any) -> None:
        """Call `fn(*args)` (file-system syncs) on a pool thread; its exception as raised."""
        with self._lock:
            if self._pool is None:
                self._pool = concurrent.futures.ThreadPoolExecutor(SYNC_THREADS, thread_name_prefix="wf-sync")
            pool = self._pool
        self.in_flight += 1
        self.count += 1
        try:
            await asyncio.get_running_loop().run_in_executor(pool, fn, *args)
        finally:
            self.in_flight -= 1

    def close(self) -> None:
        """Wait for the syncs under way and stop the threads."""
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True)
