"""Removing an ended run from a data directory (`LocalWorld.delete_run`), for retention.

Under the run's lock (the lock every writer takes), the run's status is read from its log:
an active run is refused. Then its hook tokens, log and views (the run folder), status
markers, stream files and waiting queue messages go. A writer that comes later finds no log
(NotFoundError); one that held the old log's descriptor is refused by the state machine,
since the run had ended. A message another worker has leased is left to it: its handler
finds no run and drops it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import time
from typing import TYPE_CHECKING

from ..runtime.errors import EntityConflictError
from ..runtime.ids import validate_id
from ..runtime.world import step_message_key, workflow_message_key

if TYPE_CHECKING:
    from .world import LocalWorld


def _remove_tree(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        shutil.rmtree(path)


#: A run is deleted only once its log has been still this long: other processes write its views
#: behind their commits (within `views.VIEW_WRITE_DELAY`), and a late view write would bring a
#: `run.json` back into a deleted run's folder (`sweep_orphans` removes any that still appear).
SETTLE_SECONDS = 1.0
#: A run folder without a log, older than this, is an orphan (a view written after its deletion).
ORPHAN_SECONDS = 10.0
_last_sweep = [0.0]


async def delete_run(world: LocalWorld, run_id: str) -> bool:
    """Remove an ended run and everything of it (see `World.delete_run`)."""
    validate_id(run_id, "run id")
    while not isinstance(wait := _delete_settled(world, run_id), bool):
        await asyncio.sleep(wait)
    if time.monotonic() - _last_sweep[0] > ORPHAN_SECONDS:
        _last_sweep[0] = time.monotonic()
        sweep_orphans(world)
    return wait


def _delete_settled(world: LocalWorld, run_id: str) -> bool | float:
    """Delete the run if its log has settled; else the seconds to wait first."""
    store = world._store
    step_ids: list[str] = []
    with store.locked(run_id) as handle:
        if handle is None:
            store.index.set_only(run_id, None)
            _remove_tree(f"{store.runs_str}/{run_id}")  # an empty folder a failed creation left
            return False
        view = store.refresh(handle)
        run = view.state.run
        if run is None:
            return False
        if not run.status.terminal:
            raise EntityConflictError(f"run {run_id} is {run.status}: only ended runs can be deleted")
        still = time.time() - os.fstat(handle.fd).st_mtime
        if still < SETTLE_SECONDS:
            return SETTLE_SECONDS - still
        for hook in view.state.hooks.values():
            store.tokens.release(hook.token, run_id, hook.hook_id)
        step_ids = list(view.state.steps)
        os.unlink(handle.log_path)  # first: from here on the run is unknown to every reader
        store._discard_handle(handle)
        _remove_tree(handle.run_dir)
        store.index.set_only(run_id, None)
    _remove_tree(str(world.streams.root / run_id))
    _drop_messages(world, [workflow_message_key(run_id), *(step_message_key(run_id, s) for s in step_ids)])
    return True


def sweep_orphans(world: LocalWorld) -> int:
    """Remove run folders that hold no log and were last changed ORPHAN_SECONDS ago or more; how many."""
    runs = world._store.runs_dir
    removed = 0
    try:
        names = os.listdir(runs)
    except FileNotFoundError:
        return 0
    cutoff = time.time() - ORPHAN_SECONDS
    for name in names:
        folder = runs / name
        if name.startswith(".") or (folder / "events.jsonl").exists():
            continue
        try:
            if folder.stat().st_mtime > cutoff:
                continue
        except FileNotFoundError:
            continue
        with world._store.locked(name) as handle:  # a run being created holds its lock
            if handle is None and not (folder / "events.jsonl").exists():
                _remove_tree(str(folder))
                removed += 1
    return removed


def _drop_messages(world: LocalWorld, keys: list[str]) -> None:
    """Delete the waiting (not leased) messages holding these idempotency keys."""
    queue = world.queue
    with queue._mutex, queue._exclusive():
        doomed = []
        for key in keys:
            message_id = queue._index.by_key.get(key)
            record = None if message_id is None else queue._index.records.get(message_id)
            if record is not None and record.lease is None:
                doomed.append(message_id)
    for message_id in doomed:
        _delete_now(world, message_id)  # unless acked or taken meanwhile


def _delete_now(world: LocalWorld, message_id: str) -> None:
    queue = world.queue
    with queue._mutex, queue._exclusive():
        record = queue._index.records.get(message_id)
        if record is None or record.lease is not None:
            return
        with queue._changing(message_id):
            queue._files.remove(message_id)
            queue._index.drop(message_id)
        queue._log.maybe_rotate()


def forget_dead_workers(world: LocalWorld) -> int:
    """Remove the `workers/*.json` of workers whose process is gone; how many were removed."""
    root = world.workers.root
    try:
        names = [n for n in os.listdir(root) if n.endswith(".json") and not n.startswith(".")]
    except FileNotFoundError:
        return 0
    live = {doc.get("worker_id") for doc in world.workers.live()}  # removes the dead ones' files
    return sum(1 for n in names if n[:-5] not in live and not os.path.exists(root / n))
