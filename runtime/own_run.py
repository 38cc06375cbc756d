"""The worker `wf start --wait` runs when no worker is live: it drives its own run (and its children) only.

Messages of other runs in the same store are handed back untouched for a while, without a
word: they are another worker's business. It does not announce itself as a live worker,
so a second `wf start --wait` or `wf doctor` does not count on it.
"""

from __future__ import annotations

from typing import Any

from .errors import NotFoundError
from .world import Message, World

#: How long a message of another run is handed back for.
FOREIGN_DELAY = 2.0


def own_run_worker(world: World, run_id: str, **options: Any) -> Any:
    """A Worker that drives `run_id` and the child runs it starts, nothing else."""
    from .worker import Worker

    class _OwnRunWorker(Worker):
        def __init__(self) -> None:
            super().__init__(world, **options)
            self.own = {run_id}

            async def not_announced(info: dict[str, Any]) -> str:
                return ""

            # This process's own World: the built-in worker is not one others may count on.
            world.announce_worker = not_announced  # type: ignore[method-assign]

        async def _mine(self, rid: str) -> bool:
            if rid in self.own:
                return True
            try:
                run = await self.world.runs.get(rid, resolve_data=False)
            except NotFoundError:
                return False
            if run.attributes.get("parent_run_id") in self.own:
                self.own.add(rid)
                return True
            return False

        async def _drive_message(self, message: Message) -> float | None:
            if not await self._mine(str(message.payload.get("run_id", ""))):
                return FOREIGN_DELAY
            return await super()._drive_message(message)

        async def _step_message(self, message: Message) -> float | None:
            if not await self._mine(str(message.payload.get("run_id", ""))):
                return FOREIGN_DELAY
            return await super()._step_message(message)

    return _OwnRunWorker()
