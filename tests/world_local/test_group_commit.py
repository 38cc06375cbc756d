"""The local World's group commit: many runs committing at once share syncs, status markers end right."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from wf.runtime.entities import RunStatus
from wf.world_local.world import LocalWorld
from wf.world_testing.builders import assert_views_match_log, ev, new_run, new_step


async def test_many_runs_committing_at_once_share_syncs_and_every_status_marker_ends_right(
        tmp_path: Path) -> None:
    # With fsync on and other commits ready to run, commits are synced on the sync threads
    # (group commit); a status marker must still move only after its commit, and end right.
    world = LocalWorld(tmp_path / "data", fsync=True)
    await world.start()

    async def lifecycle(i: int) -> str:
        run_id = await new_run(world, started=False)
        await world.events.create(run_id, ev(run_id, "run_started"))
        for j in range(3):
            await new_step(world, run_id, f"s{j}", started=True)
            await world.events.create(run_id, ev(run_id, "step_completed", f"s{j}", result=j))
        if i % 3 == 0:
            return run_id  # stays running
        end = "run_completed" if i % 3 == 1 else "run_failed"
        data: dict[str, Any] = {"output": i} if end == "run_completed" else {"error": {"message": "no"}}
        await world.events.create(run_id, ev(run_id, end, **data))
        return run_id

    run_ids = await asyncio.gather(*(lifecycle(i) for i in range(30)))
    store = world._store  # type: ignore[attr-defined]
    assert store.syncer.count > 0, "no commit was synced off the event loop"
    expected = {RunStatus.RUNNING: set(run_ids[0::3]), RunStatus.COMPLETED: set(run_ids[1::3]),
                RunStatus.FAILED: set(run_ids[2::3])}
    for status in RunStatus:
        assert store.index.run_ids([status]) == expected.get(status, set()), status
    for run_id in run_ids[:3]:
        await assert_views_match_log(world, run_id)
    await world.close()
