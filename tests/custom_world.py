"""A World defined outside wf, as a user would write one: `WF_WORLD=tests.custom_world:factory`.

It wraps a LocalWorld under another name and reaches it only through the World contract, so
a test that passes here shows that wf's CLI, workers and suites need nothing but the
contract. Its data directory is `WF_CUSTOM_WORLD_DIR` (default `./.wf-custom`).
"""

from __future__ import annotations

import os
from typing import Any

from wf.runtime.world import World
from wf.world_local import LocalWorld


class WrappedWorld(World):
    """Every part delegates to an inner World; nothing of the local World shows through."""

    def __init__(self, inner: World) -> None:
        self._inner = inner
        self.capabilities = inner.capabilities
        self.runs, self.steps, self.events = inner.runs, inner.steps, inner.events
        self.hooks, self.waits, self.queue, self.streams = inner.hooks, inner.waits, inner.queue, inner.streams
        if "limits" in inner.capabilities:
            self.limits = inner.limits
        if "schedules" in inner.capabilities:
            self.schedules = inner.schedules

    async def start(self) -> None:
        await self._inner.start()

    async def close(self) -> None:
        await self._inner.close()

    async def run_ids(self) -> list[str]:
        return await self._inner.run_ids()

    async def wait_for_end(self, run_id: str, *, timeout: float | None) -> Any:
        return await self._inner.wait_for_end(run_id, timeout=timeout)

    async def announce_worker(self, info: dict[str, Any]) -> str:
        return await self._inner.announce_worker(info)

    async def retire_worker(self, worker_id: str) -> None:
        await self._inner.retire_worker(worker_id)

    async def live_workers(self) -> list[dict[str, Any]]:
        return await self._inner.live_workers()

    async def drain_generation(self) -> int:
        return await self._inner.drain_generation()

    async def request_drain(self) -> int:
        return await self._inner.request_drain()

    async def repair_run(self, run_id: str) -> bool:
        return await self._inner.repair_run(run_id)

    async def delete_run(self, run_id: str) -> bool:
        return await self._inner.delete_run(run_id)

    async def forget_dead_workers(self) -> int:
        return await self._inner.forget_dead_workers()


def factory(create: bool = True) -> World:
    """The World `WF_WORLD=tests.custom_world:factory` names."""
    return WrappedWorld(LocalWorld(os.environ.get("WF_CUSTOM_WORLD_DIR", ".wf-custom"), create=create))
