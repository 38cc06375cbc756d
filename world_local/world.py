"""`LocalWorld`: the World on one data directory, shared safely by threads and processes.

    <data>/wf-data.json      format marker (see data_dir.py)
    <data>/runs, index, tokens    storage (run_store.py, views.py, tokens.py)
    <data>/queue             LocalQueue        <data>/streams    LocalStreams
    <data>/notify            Notifier inboxes and interest maps (cross-process wake-ups)

`WF_DATA_DIR` picks the directory (default `./.wf`). `WF_FSYNC=0` turns fsync off: much
faster, and safe against a crash of the process, but a power loss or kernel crash may
then lose the last committed events (never corrupt the log: a torn tail is cut off).

What fsync covers: the run logs (every commit is durable when it returns) and the new-run
index. Views, status-marker moves and the queue are never synced: all three are derived
from the logs, and `start()` derives them again after a crash or power loss (views are
rewritten, each active run is re-enqueued, and its replay re-sends its unfinished steps).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import os
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson

from ..runtime.entities import Run, RunStatus
from ..runtime.errors import WfError
from ..runtime.ids import validate_id
from ..runtime.world import WORKFLOW_QUEUE, World, run_order_key, workflow_message_key
from .boundary import storage_boundary
from .clock import WorldClock
from .data_dir import default_data_dir, open_data_dir
from .files import write_bytes_atomic
from .leases import boot_id
from .limits import LocalLimits
from .notify import Notifier
from .pruning import delete_run, forget_dead_workers
from .queue import LocalQueue
from .run_store import RunStore, run_end_channel
from .schedules import LocalSchedules
from .storage import LocalEvents, LocalHooks, LocalRuns, LocalSteps, LocalWaits
from .streams import LocalStreams
from .workers import DrainFlag, WorkerRegistry

log = logging.getLogger("wf.world_local")
#: The boot id of the machine when every run's status was last checked against its log.
VERIFIED_BOOT = "verified-boot.json"
#: Workers whose clock disagrees with the World's by more than this many seconds are warned (and doctor reports them).
CLOCK_SKEW_WARNING = 1.0


def _env_fsync() -> bool:
    return os.environ.get("WF_FSYNC", "1").strip() != "0"


@storage_boundary
class LocalWorld(World):
    """Storage, queue and streams on the file system under `data_dir`."""

    capabilities = frozenset({"workers", "drain", "repair", "processes", "limits", "schedules", "prune"})

    def __init__(self, data_dir: str | Path | None = None, *, fsync: bool | None = None, create: bool = True) -> None:
        """Open (with `create`, make) the data directory; DataDirError if it is not a wf data directory."""
        self.fsync = _env_fsync() if fsync is None else fsync
        root = Path(data_dir) if data_dir is not None else default_data_dir()
        self.data_dir = open_data_dir(root, fsync=self.fsync, create=create)
        self.notifier = Notifier(self.data_dir / "notify")
        self.clock = WorldClock(self.data_dir)
        self._store = RunStore(self.data_dir, self.notifier, fsync=self.fsync, clock=self.clock.now)
        self.runs = LocalRuns(self._store)
        self.steps = LocalSteps(self._store)
        self.events = LocalEvents(self._store)
        self.hooks = LocalHooks(self._store)
        self.waits = LocalWaits(self._store)
        # The queue is never synced, even with fsync on: every message it holds can be derived
        # from the (synced) run logs, and start() derives them after a crash or power loss
        # (each active run gets its workflow message; its replay re-sends unfinished steps).
        self.queue = LocalQueue(self.data_dir / "queue", self.notifier, fsync=False, clock=self.clock.time)
        self.streams = LocalStreams(self.data_dir / "streams", self.notifier, fsync=self.fsync)
        self.workers = WorkerRegistry(self.data_dir / "workers")
        self.drain_flag = DrainFlag(self.data_dir / "drain.json")
        self.limits = LocalLimits(self.data_dir / "limits")
        self.schedules = LocalSchedules(self.data_dir / "schedules", fsync=self.fsync)

    async def start(self) -> None:
        """Repair what a crash left behind and enqueue a workflow message for every active run.

        Visits the runs indexed as pending or running: where a run's views lag behind its
        log they are rewritten; an active run gets its (idempotent) workflow message. A
        run that cannot be read is logged and skipped: it never stops the World starting.
        The first start after a reboot (the only time unsynced data can have been lost)
        first checks every run's status marker against its log (`verify_runs`).
        """
        open_data_dir(self.data_dir, fsync=self.fsync)
        if self._boot_unverified():
            await self.verify_runs()
        index = self._store.index
        for run_id in sorted(index.run_ids((RunStatus.PENDING, RunStatus.RUNNING))):
            try:
                run = self._store.recover(run_id)
            except (WfError, OSError) as exc:
                log.warning("start: skipping run %s, which cannot be recovered: %s", run_id, exc)
                continue
            if run is None or run.status.terminal:
                continue
            try:
                await self.queue.enqueue(
                    WORKFLOW_QUEUE, {"run_id": run_id}, idempotency_key=workflow_message_key(run_id),
                    order_key=run_order_key(run_id),
                )
            except (WfError, OSError) as exc:
                log.warning("start: could not enqueue run %s: %s", run_id, exc)

    async def verify_runs(self) -> list[str]:
        """Trust the logs over the status index: every run whose log does not end it is made active
        again (views, marker, hook tokens rebuilt) and enqueued; returns those runs' ids.

        With `WF_FSYNC=0` a power loss may keep a run's "completed" marker and lose its log's
        tail. Reads the last line of every run's log; `start()` calls it once per boot, and
        `wf recover` should call it always.
        """
        reactivated = self._store.verify_index()
        for run_id in reactivated:
            try:
                await self.queue.enqueue(
                    WORKFLOW_QUEUE, {"run_id": run_id}, idempotency_key=workflow_message_key(run_id),
                    order_key=run_order_key(run_id),
                )
            except (WfError, OSError) as exc:
                log.warning("could not enqueue run %s: %s", run_id, exc)
        with contextlib.suppress(OSError):
            write_bytes_atomic(self.data_dir / VERIFIED_BOOT, orjson.dumps({"boot_id": boot_id()}), fsync=self.fsync)
        return reactivated

    def _boot_unverified(self) -> bool:
        """Whether the machine rebooted since the runs were last checked against their logs."""
        try:
            return orjson.loads((self.data_dir / VERIFIED_BOOT).read_bytes()).get("boot_id") != boot_id()
        except (OSError, ValueError, AttributeError):
            return True

    async def wait_for_end(self, run_id: str, *, timeout: float | None) -> Run | None:
        """Wait for the run's end, woken only by it (not by every event of the run)."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        with self.notifier.subscribe(run_end_channel(run_id)) as sub:
            while True:
                run = await self.runs.get(run_id, resolve_data=False)
                if run.status.terminal:
                    return await self.runs.get(run_id)
                remaining = None if deadline is None else deadline - loop.time()
                if remaining is not None and remaining <= 0:
                    return None
                # Look again at least every second, in case a writer died before notifying.
                await sub.wait(1.0 if remaining is None else min(remaining, 1.0))

    async def run_ids(self) -> list[str]:
        """Every run folder's id, oldest first: read from the folder, so damaged runs are not skipped."""
        try:
            names = os.listdir(self.data_dir / "runs")
        except FileNotFoundError:
            return []
        return sorted(name for name in names if not name.startswith("."))

    async def now(self) -> datetime:
        """The World's time: the kernel's clock, whatever this process's clock says (`clock.py`)."""
        return self.clock.now()

    async def count_runs(self) -> dict[RunStatus, int]:
        """Runs per status, from the status index (a directory listing per status, no run read)."""
        index = self._store.index
        return {status: len(index.run_ids([status])) for status in RunStatus}

    async def announce_worker(self, info: dict[str, Any]) -> str:
        """Record this process as a live worker (a file under `<data>/workers/`), with its clock's
        skew: `clock_skew` = this process's clock minus the World's, in seconds."""
        skew = self.clock.skew
        if abs(skew) > CLOCK_SKEW_WARNING:
            log.warning("this process's clock is %.1f s %s the World's (the kernel's): due times use the World's "
                        "clock, but the events this worker records are dated by its own", abs(skew),
                        "ahead of" if skew > 0 else "behind")
        return self.workers.announce({**info, "clock_skew": round(skew, 3)})

    async def retire_worker(self, worker_id: str) -> None:
        self.workers.retire(worker_id)

    async def live_workers(self) -> list[dict[str, Any]]:
        """Live workers on this data dir; files left by dead ones are removed."""
        return self.workers.live()

    async def forget_dead_workers(self) -> int:
        """Remove the `workers/*.json` of workers that died without retiring."""
        return forget_dead_workers(self)

    async def delete_run(self, run_id: str) -> bool:
        """Remove an ended run's log, views, markers, tokens, streams and waiting messages (`pruning.py`)."""
        return await delete_run(self, run_id)

    async def drain_generation(self) -> int:
        return self.drain_flag.generation()

    async def request_drain(self) -> int:
        """Bump the drain generation: running workers finish in-flight work and exit."""
        return self.drain_flag.bump()

    async def repair_run(self, run_id: str) -> bool:
        """Rewrite every view, status marker and token of the run that disagrees with its log.

        False if the run has no log. CorruptDataError if the log itself is unreadable;
        InvalidIdError for an id that is no run id.
        """
        validate_id(run_id, "run id")
        return self._store.recover(run_id) is not None

    async def close(self) -> None:
        """Close the queue, streams, log descriptors and notifier FIFOs."""
        self.queue.close()
        closing = self.streams.close()
        if inspect.isawaitable(closing):
            await closing
        self._store.close()
        self.limits.close()
        self.notifier.close()
