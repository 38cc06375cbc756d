"""The worker: takes queue messages and drives runs and steps forward.

Two kinds of message (see `world.py`): "replay workflow run R" and "run step S of run R".
Holding a run's workflow message gives exclusive charge of the run (the queue coalesces a
run's messages into one). While in charge, the worker feeds the run's new events to its
`WorkflowInstance`, records what the code asks for, runs new steps inline when it has
capacity (queueing them otherwise), completes due timers in one batch, and suspends when
nothing can move: the instance stays cached in memory, and the next message only feeds it
the events it has not seen. A restart, a code reload, or `WF_ALWAYS_REPLAY=1` replays from
the top instead.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from .entities import Event, EventType, Run, RunStatus, StepStatus, utcnow
from .errors import (
    EntityConflictError,
    NotFoundError,
    ReplayDivergenceError,
    RunExpiredError,
    TooEarlyError,
    WorkflowNotFoundError,
    WorldError,
)
from .registry import REGISTRY, Registry, StepFunction
from .replay import Outcome, WorkflowInstance, error_info
from .step_executor import AttemptOutcome, StepExecutor, exhausted_error
from .workflow_context import WorkflowMetadata
from .world import STEP_QUEUE, WORKFLOW_QUEUE, Message, World, step_message_key, workflow_message_key

log = logging.getLogger("wf.worker")
E = EventType

LEASE_SECONDS = 60.0
HEARTBEAT_SECONDS = 15.0
CACHE_SIZE = 5000


def always_replay_default() -> bool:
    return os.environ.get("WF_ALWAYS_REPLAY", "") not in ("", "0", "false", "False")


async def enqueue_workflow(world: World, run_id: str, *, delay: float = 0.0) -> None:
    """Ask for run `run_id` to be driven (coalesced with any message already waiting)."""
    await world.queue.enqueue(
        WORKFLOW_QUEUE, {"run_id": run_id}, idempotency_key=workflow_message_key(run_id),
        delay=max(delay, 0.0), order_key=run_id,
    )


async def enqueue_step(world: World, run_id: str, step_id: str, *, delay: float = 0.0) -> None:
    """Ask for step `step_id` of run `run_id` to be run by some worker."""
    await world.queue.enqueue(
        STEP_QUEUE, {"run_id": run_id, "step_id": step_id}, idempotency_key=step_message_key(run_id, step_id),
        delay=max(delay, 0.0), order_key=run_id,
    )


@dataclass
class _Drive:
    """One stint in charge of a run."""

    run_id: str
    instance: WorkflowInstance
    inline: dict[str, asyncio.Task[None]] = field(default_factory=dict)


class Worker:
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
    ) -> None:
        self.world = world
        self.registry = registry
        self.concurrency = concurrency
        self.always_replay = always_replay_default() if always_replay is None else always_replay
        self.executor = StepExecutor(world, threads=threads)
        self._messages = asyncio.Semaphore(concurrency)
        self._step_slots = concurrency
        self._cache: collections.OrderedDict[str, WorkflowInstance] = collections.OrderedDict()
        self._held: dict[str, Message] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._stopping = asyncio.Event()
        self._take: asyncio.Future[Message | None] | None = None
        self._missing_logged: set[str] = set()
        self.stats = collections.Counter[str]()

    # --- lifecycle ---

    async def run(self) -> None:
        """Take and process messages until `stop()`; then finish in-flight work and return."""
        heartbeat = asyncio.create_task(self._heartbeat())
        try:
            while not self._stopping.is_set():
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
                except WorldError as exc:
                    self._messages.release()
                    log.error("cannot take from the queue: %s", exc)
                    await asyncio.sleep(0.5)
                    continue
                if message is None:
                    self._messages.release()
                    continue
                task = asyncio.create_task(self._handle(message))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
            if self._tasks:
                await asyncio.gather(*self._tasks, return_exceptions=True)
        finally:
            heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await heartbeat
            self.executor.shutdown()

    def stop(self) -> None:
        """Stop taking messages; `run()` returns once in-flight work is done."""
        self._stopping.set()
        if self._take is not None and not self._take.done():
            self._take.cancel()

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(HEARTBEAT_SECONDS)
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
        except Exception:
            log.exception("unexpected error handling message %s %s", message.queue, message.payload)
            with contextlib.suppress(WorldError):
                await self.world.queue.nack(self._held.get(message.message_id, message),
                                            delay=min(2.0 ** message.attempts, 60.0))
        finally:
            self._held.pop(message.message_id, None)
            self._messages.release()

    # --- driving a run ---

    async def _drive_message(self, message: Message) -> float | None:
        """Drive the run; return None to ack the message, or a delay to retry it later."""
        run_id = str(message.payload.get("run_id", ""))
        try:
            run = await self._begin(run_id, message)
            if run is None:
                return None
            try:
                workflow = self.registry.workflow(run.workflow_name)
            except WorkflowNotFoundError as exc:
                if run.workflow_name not in self._missing_logged:
                    self._missing_logged.add(run.workflow_name)
                    log.error("cannot drive run %s: %s", run_id, exc)
                return 5.0
            await self._drive(run, workflow)
        except RunExpiredError:
            self._evict(run_id)  # the run ended under us (cancelled, or completed elsewhere)
        return None

    async def _begin(self, run_id: str, message: Message) -> Run | None:
        """The run, started if it was pending; None when there is nothing to do."""
        try:
            run = await self.world.runs.get(run_id, resolve_data=False)
        except NotFoundError:
            start = message.payload.get("start")
            if not isinstance(start, dict):
                log.warning("workflow message for unknown run %s dropped", run_id)
                return None
            # Lazy creation: `wf.start` could not record run_created; the message carries the input.
            result = await self.world.events.create(run_id, Event(run_id, E.RUN_STARTED, data=start))
            return result.run
        if run.status.terminal:
            self._evict(run_id)
            return None
        if run.status == RunStatus.PENDING:
            result = await self.world.events.create(run_id, Event(run_id, E.RUN_STARTED))
            return result.run
        return run

    def _evict(self, run_id: str) -> None:
        instance = self._cache.pop(run_id, None)
        if instance is not None:
            instance.close()

    async def _fresh_instance(self, run: Run, workflow: Any) -> WorkflowInstance:
        full = await self.world.runs.get(run.run_id)
        instance = WorkflowInstance(workflow, full)
        instance.feed_many(await self.world.events.list(run.run_id))
        return instance

    async def _drive(self, run: Run, workflow: Any) -> None:
        run_id = run.run_id
        instance = self._cache.pop(run_id, None)
        fresh = instance is None or instance.workflow is not workflow or self.always_replay
        try:
            if fresh:
                if instance is not None:
                    instance.close()
                instance = await self._fresh_instance(run, workflow)
                self.stats["replays"] += 1
            else:
                assert instance is not None
                instance.feed_many(await self.world.events.list(run_id, after_seq=instance.fed_seq))
        except ReplayDivergenceError as exc:
            await self._finish(run_id, Outcome(error=error_info(exc)))
            return
        drive = _Drive(run_id, instance)
        if fresh:
            await self._redispatch_unfinished(drive)
        try:
            await self._loop(drive, workflow)
        except ReplayDivergenceError as exc:
            await self._finish(run_id, Outcome(error=error_info(exc)))
            drive.instance.close()
            return
        except BaseException:
            drive.instance.close()
            raise
        if drive.instance.ended is None and not self.always_replay:
            self._cache[run_id] = drive.instance
            if len(self._cache) > CACHE_SIZE:
                _, old = self._cache.popitem(last=False)
                old.close()
        else:
            drive.instance.close()

    async def _redispatch_unfinished(self, drive: _Drive) -> None:
        """After a full replay, make sure every step the code awaits has a message (crash recovery)."""
        instance = drive.instance
        for cid, call in instance.steps.items():
            if not call.command.recorded or call.future.done():
                continue
            try:
                step = await self.world.steps.get(drive.run_id, cid, resolve_data=False)
            except NotFoundError:
                continue
            if step.status.terminal:
                continue
            delay = 0.0
            if step.retry_after is not None:
                delay = (step.retry_after - utcnow()).total_seconds()
            await enqueue_step(self.world, drive.run_id, cid, delay=delay)

    async def _loop(self, drive: _Drive, workflow: Any) -> None:
        instance = drive.instance
        world = self.world
        run_id = drive.run_id
        while True:
            if instance.ended is not None:
                return
            if instance.outcome is not None:
                await self._finish(run_id, instance.outcome)
                return
            now = utcnow()
            timers = instance.live_timers()
            due = [cid for cid, at in timers.items() if at <= now]
            if due:  # complete every elapsed wait in one atomic write
                events = [Event(run_id, E.WAIT_COMPLETED, correlation_id=cid) for cid in due]
                await world.events.create_batch(run_id, events, skip_conflicts=True)
                instance = await self._catch_up(drive, workflow)
                continue
            commands = instance.new_commands()
            if commands:
                await self._record(drive, commands)
                instance = await self._catch_up(drive, workflow)
                continue
            if not drive.inline:
                if timers:  # suspend; the queue wakes the run when its first timer is due
                    first = min(timers.values())
                    await enqueue_workflow(world, run_id, delay=(first - utcnow()).total_seconds())
                return
            # Steps run inline: wait for the log to move (their results, hook payloads, ...) or a timer.
            timeout = 1.0  # also notices an inline task that ended without writing (see _run_inline)
            if timers:
                timeout = min(max((min(timers.values()) - utcnow()).total_seconds(), 0.0), timeout)
            moved = await world.events.wait(run_id, after_seq=instance.fed_seq, timeout=timeout)
            if moved:
                instance = await self._catch_up(drive, workflow)
            for cid in [cid for cid, task in drive.inline.items() if task.done()]:
                drive.inline.pop(cid)

    async def _catch_up(self, drive: _Drive, workflow: Any) -> WorkflowInstance:
        """Feed the instance what the log holds beyond what it has seen (or replay it from the top)."""
        if self.always_replay:
            drive.instance.close()
            run = await self.world.runs.get(drive.run_id, resolve_data=False)
            drive.instance = await self._fresh_instance(run, workflow)
            self.stats["replays"] += 1
        else:
            drive.instance.feed_many(await self.world.events.list(drive.run_id, after_seq=drive.instance.fed_seq))
        return drive.instance

    async def _record(self, drive: _Drive, commands: list[Any]) -> None:
        """Record the code's new steps, waits and hooks in one batch; start new steps inline."""
        run_id = drive.run_id
        events: list[Event] = []
        inline: list[str] = []
        for command in commands:
            if command.kind == "step":
                events.append(Event(run_id, E.STEP_CREATED, correlation_id=command.cid, data=command.data))
                if self._take_step_slot():
                    # attempt=1: if someone else created (and started) this step, this start is a 409 too.
                    events.append(Event(run_id, E.STEP_STARTED, correlation_id=command.cid, data={"attempt": 1}))
                    inline.append(command.cid)
            elif command.kind == "wait":
                events.append(Event(run_id, E.WAIT_CREATED, correlation_id=command.cid, data=command.data))
            else:
                events.append(Event(run_id, E.HOOK_CREATED, correlation_id=command.cid, data=command.data))
        try:
            results = await self.world.events.create_batch(run_id, events, skip_conflicts=True)
        except BaseException:
            self._step_slots += len(inline)
            raise
        created: set[str] = set()
        started: dict[str, Any] = {}
        for result in results:
            if not result.events or result.step is None:
                continue
            kind = result.events[0].event_type
            if kind == E.STEP_CREATED:
                created.add(result.step.step_id)
            elif kind == E.STEP_STARTED:
                started[result.step.step_id] = result.step
        queued: list[str] = []
        for command in commands:
            if command.kind != "step":
                continue
            step = started.get(command.cid)
            if step is None:
                if command.cid in inline:
                    self._step_slots += 1
                if command.cid in created:  # ours, but no slot to run it here: queue it
                    queued.append(command.cid)
                continue  # created by another handler: it runs it
            call = drive.instance.steps[command.cid]
            drive.inline[command.cid] = asyncio.create_task(
                self._run_inline(run_id, command.cid, call.step, command.data.get("input"), step.attempt,
                                 step.started_at, drive.instance.metadata())
            )
        for cid in queued:
            await enqueue_step(self.world, run_id, cid)

    def _take_step_slot(self) -> bool:
        if self._step_slots > 0 and not self._stopping.is_set():
            self._step_slots -= 1
            return True
        return False

    async def _run_inline(self, run_id: str, step_id: str, step: StepFunction, step_input: Any, attempt: int,
                          started_at: datetime | None, workflow: WorkflowMetadata) -> None:
        try:
            try:
                outcome = await self.executor.attempt(step, run_id=run_id, step_id=step_id, step_input=step_input,
                                                      attempt=attempt, started_at=started_at, workflow=workflow)
            finally:
                self._step_slots += 1
            await self._record_attempt(run_id, step_id, outcome, notify=False)
        except Exception:
            log.exception("inline step %s of run %s could not be recorded; queueing it", step_id, run_id)
            with contextlib.suppress(WorldError):
                await enqueue_step(self.world, run_id, step_id, delay=1.0)

    async def _record_attempt(self, run_id: str, step_id: str, outcome: AttemptOutcome, *, notify: bool) -> None:
        """Record an attempt's result; queue the retry, and wake the run if someone else drives it."""
        self.stats["steps"] += 1
        try:
            await self.world.events.create(run_id, outcome.event)
        except (EntityConflictError, RunExpiredError):
            return  # another attempt finished first, or the run is over: nothing more to do
        if outcome.retry_at is not None:
            await enqueue_step(self.world, run_id, step_id, delay=(outcome.retry_at - utcnow()).total_seconds())
        elif notify:
            await enqueue_workflow(self.world, run_id)

    async def _finish(self, run_id: str, outcome: Outcome) -> None:
        """Record the run's end (once: a racing handler's 409/410 means it is already recorded)."""
        if outcome.failed:
            event = Event(run_id, E.RUN_FAILED, data={"error": outcome.error})
        else:
            event = Event(run_id, E.RUN_COMPLETED, data={"output": outcome.output})
        try:
            result = await self.world.events.create(run_id, event)
        except (EntityConflictError, RunExpiredError):
            self._evict(run_id)
            return
        self._evict(run_id)
        from .children import notify_parent

        await notify_parent(self.world, result.run)

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
        if step.status == StepStatus.RUNNING and step.attempt >= step_fn.max_attempts:
            # Redelivered after a crash during the last attempt: fail it cleanly.
            event = Event(run_id, E.STEP_FAILED, correlation_id=step_id,
                          data={"error": exhausted_error(step.step_name, step.attempt)})
            await self._record_attempt(run_id, step_id, AttemptOutcome(event), notify=True)
            return None
        while self._step_slots <= 0:
            await asyncio.sleep(0.005)
        self._step_slots -= 1
        try:
            try:
                started = await world.events.create(
                    run_id, Event(run_id, E.STEP_STARTED, correlation_id=step_id, data={"attempt": step.attempt + 1})
                )
            except TooEarlyError as exc:
                return max((exc.retry_after - utcnow()).total_seconds(), 0.0)
            except RunExpiredError:
                return None
            except EntityConflictError:
                await enqueue_workflow(world, run_id)
                return None
            assert started.step is not None
            full_run = await world.runs.get(run_id, resolve_data=False)
            outcome = await self.executor.attempt(
                step_fn, run_id=run_id, step_id=step_id, step_input=step.input, attempt=started.step.attempt,
                started_at=started.step.started_at,
                workflow=WorkflowMetadata(run_id, full_run.workflow_name, full_run.started_at),
            )
        finally:
            self._step_slots += 1
        await self._record_attempt(run_id, step_id, outcome, notify=True)
        return None
