"""The workflow-side hook: an awaitable, async-iterable inbox of payloads, fed from the event log."""

from __future__ import annotations

import asyncio
import collections
from collections.abc import AsyncIterator, Generator
from typing import Any

from .errors import HookConflictError


class Hook:
    """Payloads sent to `token` arrive here in the order the log recorded them."""

    def __init__(self, hook_id: str, token: str, metadata: Any, loop: asyncio.AbstractEventLoop) -> None:
        self.hook_id = hook_id
        self.token = token
        self.metadata = metadata
        self._loop = loop
        self._payloads: collections.deque[Any] = collections.deque()
        self._waiters: collections.deque[asyncio.Future[Any]] = collections.deque()
        self._conflict = False

    # --- fed by the replay engine ---

    def _deliver(self, payload: Any) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(payload)
                return
        self._payloads.append(payload)

    def _mark_conflict(self) -> None:
        self._conflict = True
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_exception(self._conflict_error())

    def _conflict_error(self) -> HookConflictError:
        return HookConflictError(f"hook token {self.token!r} is already held by another live run")

    # --- the user's side ---

    async def next(self) -> Any:
        """The next payload (waits durably until one is sent)."""
        if self._payloads:
            return self._payloads.popleft()
        if self._conflict:
            raise self._conflict_error()
        waiter: asyncio.Future[Any] = self._loop.create_future()
        self._waiters.append(waiter)
        return await waiter

    def __await__(self) -> Generator[Any, None, Any]:
        return self.next().__await__()

    def __aiter__(self) -> AsyncIterator[Any]:
        return self

    async def __anext__(self) -> Any:
        return await self.next()

    def __repr__(self) -> str:
        return f"<wf hook {self.token!r}>"
