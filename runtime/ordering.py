"""`wf.wait` and `wf.as_completed`: like asyncio's, but results come in the event log's order.

Inside a workflow, futures complete in the order their events appear in the log, so
these helpers hand them back in that order: the same order on every replay.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Iterable
from typing import Any

FIRST_COMPLETED = asyncio.FIRST_COMPLETED
FIRST_EXCEPTION = asyncio.FIRST_EXCEPTION
ALL_COMPLETED = asyncio.ALL_COMPLETED


async def wait(
    aws: Iterable[Awaitable[Any]], *, return_when: str = ALL_COMPLETED, timeout: float | None = None
) -> tuple[list[asyncio.Future[Any]], list[asyncio.Future[Any]]]:
    """Wait for awaitables; return (done, pending) as lists, `done` in completion (log) order.

    `timeout` (seconds) is a durable timer inside workflows; on timeout the pending ones are
    returned, not cancelled, as with `asyncio.wait`.
    """
    futures = [asyncio.ensure_future(a) for a in aws]
    if not futures:
        return [], []
    done: list[asyncio.Future[Any]] = []
    finished = asyncio.get_running_loop().create_future()

    def on_done(fut: asyncio.Future[Any]) -> None:
        done.append(fut)
        if finished.done():
            return
        if (
            return_when == FIRST_COMPLETED
            or len(done) == len(futures)
            or (return_when == FIRST_EXCEPTION and not fut.cancelled() and fut.exception() is not None)
        ):
            finished.set_result(None)

    for fut in futures:
        if fut.done():
            on_done(fut)
        else:
            fut.add_done_callback(on_done)
    try:
        if timeout is None:
            await finished
        else:
            try:
                async with asyncio.timeout(timeout):
                    await asyncio.shield(finished)
            except TimeoutError:
                pass
    finally:
        for fut in futures:
            fut.remove_done_callback(on_done)
    snapshot = list(done)
    pending = [f for f in futures if f not in snapshot]
    return snapshot, pending


async def as_completed(aws: Iterable[Awaitable[Any]]) -> AsyncIterator[Any]:
    """Yield each result as it completes, in log order (`async for result in wf.as_completed(...)`).

    A failed awaitable raises its error at its turn.
    """
    futures = [asyncio.ensure_future(a) for a in aws]
    queue: asyncio.Queue[asyncio.Future[Any]] = asyncio.Queue()
    for fut in futures:
        fut.add_done_callback(queue.put_nowait)
    for _ in futures:
        fut = await queue.get()
        yield fut.result()
