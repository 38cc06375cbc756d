"""The local World's cache of open run logs: a handle in use is never closed under its user."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest

from wf.runtime.entities import Event, EventType
from wf.runtime.ids import new_run_id
from wf.world_local import run_handles
from wf.world_local.world import LocalWorld


async def test_a_new_handle_is_not_evicted_while_every_older_one_is_busy(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With more runs in flight than the cache holds, the newest handle was the only idle one
    and was closed before its caller used it: flock on a closed (or reused!) descriptor."""
    monkeypatch.setattr(run_handles, "MAX_OPEN_RUNS", 2)
    world = LocalWorld(data_dir, fsync=False)
    await world.start()
    try:
        busy = [new_run_id() for _ in range(2)]
        for run_id in busy:
            await world.events.create(run_id, Event(run_id, EventType.RUN_CREATED, data={"workflow_name": "x"}))
        store = world._store
        with contextlib.ExitStack() as stack:
            for run_id in busy:  # both cached handles in use (as by commits in flight on other threads)
                stack.enter_context(store.locked(run_id))
            fresh = new_run_id()
            result = await world.events.create(fresh, Event(fresh, EventType.RUN_CREATED, data={"workflow_name": "x"}))
            assert [e.event_type for e in result.events] == [EventType.RUN_CREATED]
        assert [e.event_type for e in await world.events.list(fresh)] == [EventType.RUN_CREATED]
        for run_id in busy:
            assert len(await world.events.list(run_id)) == 1
    finally:
        await world.close()
