"""The worker: the message loop that takes queue messages and hands them on.

Two kinds of message (see `world.py`): "replay workflow run R", handed to the run driver
(`run_driver.py`: holding the message gives exclusive charge of the run), and "run step S of
run R", executed here. The loop also announces the worker, sweeps for runs nothing drives,
follows drain requests, and backs off while storage is unavailable.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from datetime import timedelta
from typing import Any

from . import telemetry
from .entities import Event, EventType, StepStatus, utcnow
from .errors import (
    EntityConflictError,
    NotFoundError,
    RunExpiredError,
    StorageUnavailableError,
    TooEarlyError,
    WorkflowNotFoundError,
    WorldError,
)
from .flow_control import Grant
from .liveness import sweep
from .messages import enqueue_workflow
from .registry import REGISTRY, Registry
from .retention import maintain, prune_every, retention_from_env
from .run_driver import RunDriver
from .schedules import POLL_SECONDS, fire_due
from .step_executor import AttemptOutcome, exhausted_error
from .workflow_context import WorkflowMetadata
from .world import STEP_QUEUE, WORKFLOW_QUEUE, Message, World

log = logging.getLogger("wf.worker")
E = EventType

LEASE_SECONDS = 60.0
HEARTBEAT_SECONDS = 15.0
#: How often a worker looks whether an operator asked workers to drain.
DRAIN_CHECK_SECONDS = 0.5
#: How often (on average) a worker looks for active runs that nothing drives.
SWEEP_SECONDS = 60.0
#: After a storage error the worker tries again after this long, doubling up to STORAGE_RETRY_MAX.
STORAGE_RETRY_MIN = 0.05
STORAGE_RETRY_MAX = 2.0




class Worker(RunDriver):
    """Executes workflows and steps from the World's queue until stopped.

    `concurrency` bounds the steps running at once in this worker (inline or from the queue)
    and the messages it holds.
    """

    def __init__(
        self,
        world: World,
        *,
        registry: Registry = REGISTRY,
        concurrency: int = 100,
        always_replay: bool | None = None,
        threads: int = 64,
        skip_time: bool = False,
        retention: timedelta | None = None,
    ) -> None:
        """`retention`: prune runs that ended longer ago than this in the background (default:
        `WF_RETENTION`, unset: never; see `retention.py`)."""
        super().__init__(world, registry=registry, concurrency=concurrency, always_replay=always_replay,
                         threads=threads, skip_time=skip_time)
        self.concurrency = concurrency
        self.retention = retention if retention is not None else retention_from_env()
        self._messages = asyncio.Semaphore(concurrency)
        self._held: dict[str, Message] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._take: asyncio.Future[Message | None] | None = None
        #: Storage outage: the current backoff (0: none), when it began, and messages whose nack failed.
        self._storage_wait = 0.0
        self._storage_since = self._storage_swept = 0.0
        self._give_back: list[Message] = []

    # --- lifecycle ---

    async def run(self) -> None:
        """Take and process messages until `stop()`; then finish in-flight work and return."""
        heartbeat = asyncio.create_task(self._heartbeat())
        sweeper = asyncio.create_task(self._sweep_now_and_then())
        # Flow control (flow_control.py, schedules.py, retention.py): slot leases, schedules, retention.
        background = [heartbeat, sweeper, asyncio.create_task(self.flow.renew_forever())]
        if "schedules" in self.world.capabilities:
            background.append(asyncio.create_task(self._fire_schedules()))
        if self.retention is not None:
            background.append(asyncio.create_task(self._prune_now_and_then(self.retention)))
        generation = await self.world.drain_generation()
        try:
            presence = await self.world.announce_worker({"kind": "worker", "concurrency": self.concurrency,
                                                         "workflows": sorted(self.registry.workflows)})
        except WorldError as exc:  # presence only informs observers: never a reason to stop
            log.warning("could not announce this worker: %s", exc)
            presence = ""
        drain_checked = time.monotonic()
        try:
            while not self._stopping.is_set():
                # A drain is an operator's request: looking twice a second, not per message, is soon enough.
                if time.monotonic() - drain_checked >= DRAIN_CHECK_SECONDS:
                    drain_checked = time.monotonic()
                    if await self.world.drain_generation() != generation:
                        log.warning("drain requested: finishing in-flight work, taking nothing new")
                        self._stopping.set()
                        break
                await self._messages.acquire()
                if self._stopping.is_set():
                    self._messages.release()
                    break
                self._take = asyncio.ensure_future(
                    self.world.queue.take([WORKFLOW_QUEUE, STEP_QUEUE], lease=LEASE_SECONDS, timeout=1.0)
                )
                try:
                    message = await self._take
                except asyncio.CancelledError:
                    self._messages.release()
                    if self._stopping.is_set():
                        break  # stop() interrupted the wait (take is cancellation-safe)
                    raise
                except WorldError as exc:  # a full or failing disk: wait, never die
                    self._messages.release()
                    await asyncio.sleep(self._storage_failed(exc))
                    continue
                if self._storage_wait or self._give_back:
                    await self._storage_back()
                if message is None:
                    self._messages.release()
                    continue
                task = asyncio.create_task(self._handle(message))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
            if self._tasks:
                await asyncio.gather(*self._tasks, return_exceptions=True)
        finally:
            for task in background:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            self.executor.shutdown()
            with contextlib.suppress(WorldError):
                await self.world.retire_worker(presence)

    def _storage_failed(self, exc: BaseException) -> float:
        """Note a storage error; how long to wait before trying again (capped exponential backoff)."""
        if not self._storage_wait:
            self._storage_since = asyncio.get_running_loop().time()
            log.warning("waiting on storage: %s (trying again every %.2f-%.0f s)", exc, STORAGE_RETRY_MIN,
                        STORAGE_RETRY_MAX)
        self._storage_wait = min(max(self._storage_wait * 2, STORAGE_RETRY_MIN), STORAGE_RETRY_MAX)
        return self._storage_wait

    async def _storage_back(self) -> None:
        """Storage answered again: give back the messages we could not, and wake the runs a lost
        wake-up would leave waiting for the sweep (once per outage)."""
        for message in list(self._give_back):
            try:
                await self.world.queue.nack(message)
            except NotFoundError:
                pass  # its lease ran out meanwhile: the queue has redelivered it
            except WorldError:
                return
            self._give_back.remove(message)
        if self._storage_wait:
            now = asyncio.get_running_loop().time()
            log.warning("storage is back after %.1f s", now - self._storage_since)
            self._storage_wait = 0.0
            if now - self._storage_swept >= STORAGE_RETRY_MAX * 5:  # not on every flap of a failing disk
                self._storage_swept = now

                with contextlib.suppress(WorldError):
                    await sweep(self.world)

    def stop(self) -> None:
        """Stop taking messages; `run()` returns once in-flight work is done."""
        self._stopping.set()
        if self._take is not None and not self._take.done():
            self._take.cancel()

    async def _sweep_now_and_then(self) -> None:
        """Every minute or so, wake active runs that nothing drives (a wake-up lost to a crash)."""

        while True:
            await asyncio.sleep(SWEEP_SECONDS * (0.75 + 0.5 * random.random()))
            try:
                woken = await sweep(self.world)
            except WorldError as exc:
                log.warning("sweep for stuck runs failed: %s", exc)
                continue
            if woken:
                log.warning("woke %d run(s) nothing was driving: %s", len(woken), ", ".join(woken[:10]))

    async def _fire_schedules(self) -> None:
        """Start the runs of due schedule slots (every worker does; each slot gives one run)."""
        while not self._stopping.is_set():
            try:
                wait = await fire_due(self.world)
            except WorldError as exc:
                log.warning("firing schedules failed: %s", exc)
                wait = POLL_SECONDS
            await asyncio.sleep(wait)

    async def _prune_now_and_then(self, retention: timedelta) -> None:
        """Every so often (`prune_every`), delete runs that ended more than `retention` ago."""
        every = prune_every(retention)
        await asyncio.sleep(min(every, 60.0) * random.random())
        while True:
            await maintain(self.world, retention)
            await asyncio.sleep(every * (0.75 + 0.5 * random.random()))

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(HEARTBEAT_SECONDS)
            if telemetry.ON:
                await telemetry.sample_queue_depth(self.world)
            for key, message in list(self._held.items()):
                try:
                    self._held[key] = await self.world.queue.extend(message, lease=LEASE_SECONDS)
                except WorldError as exc:
                    log.warning("lost the lease of message %s: %s", message.message_id, exc)

    async def _handle(self, message: Message) -> None:
        self._held[message.message_id] = message
        try:
            if message.queue == WORKFLOW_QUEUE:
                retry_in = await self._drive_message(message)
            else:
                retry_in = await self._step_message(message)
            current = self._held.get(message.message_id, message)
            if retry_in is None:
                await self.world.queue.ack(current)
            else:
                await self.world.queue.nack(current, delay=retry_in)
        except NotFoundError as exc:
            log.warning("message %s: lease lost (%s)", message.message_id, exc)
        except StorageUnavailableError as exc:  # retried soon, not after 2**attempts s (up to a minute)
            delay = self._storage_failed(exc)
            current = self._held.get(message.message_id, message)
            try:
                await self.world.queue.nack(current, delay=delay)
            except WorldError:
                self._give_back.append(current)  # nacked once storage answers, not when the lease runs out
        except Exception:
            log.exception("unexpected error handling message %s %s", message.queue, message.payload)
            with contextlib.suppress(WorldError):
                await self.world.queue.nack(self._held.get(message.message_id, message),
                                            delay=min(2.0 ** message.attempts, 60.0))
        finally:
            self._held.pop(message.message_id, None)
            self._messages.release()

    # --- steps from the queue ---

    async def _step_message(self, message: Message) -> float | None:
        run_id = str(message.payload.get("run_id", ""))
        step_id = str(message.payload.get("step_id", ""))
        world = self.world
        try:
            step = await world.steps.get(run_id, step_id)
            run = await world.runs.get(run_id, resolve_data=False)
        except NotFoundError:
            log.warning("step message for unknown step %s/%s dropped", run_id, step_id)
            return None
        if run.status.terminal:
            return None
        if step.status.terminal:
            await enqueue_workflow(world, run_id)  # make sure the run saw it
            return None
        try:
            step_fn = self.registry.step(step.step_name)
        except WorkflowNotFoundError as exc:
            if step.step_name not in self._missing_logged:
                self._missing_logged.add(step.step_name)
                log.error("cannot run step %s of run %s: %s", step_id, run_id, exc)
            return 5.0
        if step.status == StepStatus.RUNNING and message.attempts <= 1 and not message.payload.get("restart"):
            # A first delivery finding the step running: another handler is on it (it records the
            # result and wakes the run). Only a redelivery (its holder died) or a restart retries it.
            return None
        if step.status == StepStatus.RUNNING and step.attempt >= step_fn.max_attempts:
            # Redelivered after a crash during the last attempt: fail it cleanly.
            event = Event(run_id, E.STEP_FAILED, correlation_id=step_id,
                          data={"error": exhausted_error(step.step_name, step.attempt)})
            await self._record_attempt(run_id, step_id, AttemptOutcome(event), notify=True)
            return None
        while self._step_slots <= 0:
            await asyncio.sleep(0.005)
        grant: Grant | None = None
        self._step_slots -= 1
        try:
            try:
                try:
                    at = None
                    if self.skip_time and step.retry_after is not None:
                        at = max(step.retry_after, utcnow())
                    if step_fn.limits is not None:  # a slot and/or a rate window first (flow_control.py)
                        if step.retry_after is not None and step.retry_after > utcnow() and not self.skip_time:
                            return (step.retry_after - utcnow()).total_seconds()  # too early: take no slot yet
                        admitted = await self.flow.admit_step(step_fn.limits, run_id, step_id, step.input,
                                                              message.payload)
                        if not isinstance(admitted, Grant):
                            return admitted
                        grant = admitted
                        at = grant.started_at or at
                    started = await world.events.create(
                        run_id, Event(run_id, E.STEP_STARTED, correlation_id=step_id,
                                      data={"attempt": step.attempt + 1}, created_at=at)
                    )
                except TooEarlyError as exc:
                    return max((exc.retry_after - utcnow()).total_seconds(), 0.0)
                except RunExpiredError:
                    return None
                except EntityConflictError:
                    await enqueue_workflow(world, run_id)
                    return None
                assert started.step is not None
                if telemetry.ON:
                    telemetry.dequeued(message, started)
                outcome = await self.executor.attempt(
                    step_fn, run_id=run_id, step_id=step_id, step_input=step.input, attempt=started.step.attempt,
                    started_at=started.step.started_at,
                    workflow=WorkflowMetadata(run_id, run.workflow_name, run.started_at),
                )
            finally:
                self._step_slots += 1
            await self._record_attempt(run_id, step_id, outcome, notify=True)
        finally:
            if grant is not None:  # after its result is recorded: the events never show more at once
                await self.flow.release_step(grant)
        return None
