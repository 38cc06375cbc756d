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
import random
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from .entities import Event, EventType, Run, StepStatus, utcnow
from .errors import (
    EntityConflictError,
    NotFoundError,
    ReplayDivergenceError,
    RunExpiredError,
    StorageUnavailableError,
    TooEarlyError,
    WorkflowNotFoundError,
    WorldError,
)
from .messages import enqueue_step, enqueue_workflow
from .registry import REGISTRY, Registry, StepFunction, WorkflowFunction
from .replay import Outcome, WorkflowInstance, error_info
from .step_executor import AttemptOutcome, StepExecutor, exhausted_error
from .workflow_context import WorkflowMetadata
from .world import STEP_QUEUE, WORKFLOW_QUEUE, Message, World

log = logging.getLogger("wf.worker")
E = EventType

LEASE_SECONDS = 60.0
HEARTBEAT_SECONDS = 15.0
CACHE_SIZE = 5000
#: How often (on average) a worker looks for active runs that nothing drives.
SWEEP_SECONDS = 60.0
#: While inline steps run, events others write are looked for after this long at the latest.
QUICK_STEP_SECONDS = 0.02
#: After a storage error the worker tries again after this long, doubling up to STORAGE_RETRY_MAX.
STORAGE_RETRY_MIN = 0.05
STORAGE_RETRY_MAX = 2.0


def always_replay_default() -> bool:
    return os.environ.get("WF_ALWAYS_REPLAY", "") not in ("", "0", "false", "False")



@dataclass
class _Drive:
    """One stint in charge of a run.

    The worker feeds the code events *before* recording them (`pending`), so that a step's
    result, the next step's creation and its start go to disk in one atomic append at the
    positions the code saw them: one commit per step instead of two. If the log moved
    under us in the meantime, the batch is refused (`expected_seq`) and the run is replayed
    from the log instead.
    """

    run_id: str
    instance: WorkflowInstance
    workflow: WorkflowFunction
    inline: dict[str, asyncio.Task[AttemptOutcome | None]] = field(default_factory=dict)
    pending: list[Event] = field(default_factory=list)
    to_start: list[Event] = field(default_factory=list)
    to_queue: list[str] = field(default_factory=list)
    retries: list[tuple[str, datetime]] = field(default_factory=list)
    slots_held: int = 0


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
        skip_time: bool = False,
    ) -> None:
        self.world = world
        self.registry = registry
        self.concurrency = concurrency
        self.always_replay = always_replay_default() if always_replay is None else always_replay
        #: Test mode: when a run waits only for timers, fire them at once (dated at their due
        #: time, so the workflow clock still moves by the right amount); retries skip their delay.
        self.skip_time = skip_time
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
        #: Storage outage: the current backoff (0: none), when it began, and messages whose nack failed.
        self._storage_wait = 0.0
        self._storage_since = self._storage_swept = 0.0
        self._give_back: list[Message] = []

    # --- lifecycle ---

    async def run(self) -> None:
        """Take and process messages until `stop()`; then finish in-flight work and return."""
        heartbeat = asyncio.create_task(self._heartbeat())
        sweeper = asyncio.create_task(self._sweep_now_and_then())
        generation = await self.world.drain_generation()
        try:
            presence = await self.world.announce_worker({"kind": "worker", "concurrency": self.concurrency})
        except WorldError as exc:  # presence only informs observers: never a reason to stop
            log.warning("could not announce this worker: %s", exc)
            presence = ""
        try:
            while not self._stopping.is_set():
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
            for background in (heartbeat, sweeper):
                background.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await background
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
                from .liveness import sweep

                with contextlib.suppress(WorldError):
                    await sweep(self.world)

    def stop(self) -> None:
        """Stop taking messages; `run()` returns once in-flight work is done."""
        self._stopping.set()
        if self._take is not None and not self._take.done():
            self._take.cancel()

    async def _sweep_now_and_then(self) -> None:
        """Every minute or so, wake active runs that nothing drives (a wake-up lost to a crash)."""
        from .liveness import sweep

        while True:
            await asyncio.sleep(SWEEP_SECONDS * (0.75 + 0.5 * random.random()))
            try:
                woken = await sweep(self.world)
            except WorldError as exc:
                log.warning("sweep for stuck runs failed: %s", exc)
                continue
            if woken:
                log.warning("woke %d run(s) nothing was driving: %s", len(woken), ", ".join(woken[:10]))

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

    # --- driving a run ---

    async def _drive_message(self, message: Message) -> float | None:
        """Drive the run; return None to ack the message, or a delay to retry it later."""
        run_id = str(message.payload.get("run_id", ""))
        try:
            cached = self._cache.get(run_id)
            if cached is not None:  # running when we left it: its new events say if it ended since
                name = cached.workflow_name
            else:
                run = await self._begin(run_id, message)
                if run is None:
                    return None
                name = run.workflow_name
            try:
                workflow = self.registry.workflow(name)
            except WorkflowNotFoundError as exc:
                if name not in self._missing_logged:
                    self._missing_logged.add(name)
                    log.error("cannot drive run %s: %s", run_id, exc)
                return 5.0
            await self._drive(run_id, workflow)
        except RunExpiredError:
            self._evict(run_id)  # the run ended under us (cancelled, or completed elsewhere)
        return None

    async def _begin(self, run_id: str, message: Message) -> Run | None:
        """The run to drive (pending or running); None when there is nothing to do."""
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
            token = run.attributes.get("parent_token")
            if token:  # a redelivered message of a child: its end may never have reached the parent
                await self._renotify_parent(run_id, token)
            return None
        return run

    async def _renotify_parent(self, run_id: str, token: str) -> None:
        from .children import notify_parent

        try:
            hook = await self.world.hooks.get_by_token(token)
        except NotFoundError:
            return  # the parent is over
        if hook.received_count == 0:
            await notify_parent(self.world, await self.world.runs.get(run_id))
        else:  # delivered, but the parent's wake-up may have been lost with the error that followed
            await enqueue_workflow(self.world, hook.run_id)

    def _evict(self, run_id: str) -> None:
        instance = self._cache.pop(run_id, None)
        if instance is not None:
            instance.close()

    async def _fresh_instance(self, run_id: str, workflow: WorkflowFunction) -> WorkflowInstance:
        full = await self.world.runs.get(run_id)
        instance = WorkflowInstance(workflow, full)
        instance.feed_many(await self.world.events.list(run_id))
        self.stats["replays"] += 1
        return instance

    async def _drive(self, run_id: str, workflow: WorkflowFunction) -> None:
        instance = self._cache.pop(run_id, None)
        fresh = instance is None or instance.workflow is not workflow or self.always_replay
        try:
            if fresh:
                if instance is not None:
                    instance.close()
                instance = await self._fresh_instance(run_id, workflow)
            else:
                assert instance is not None
                instance.feed_many(await self.world.events.list(run_id, after_seq=instance.fed_seq))
        except ReplayDivergenceError as exc:
            await self._record_end(run_id, Outcome(error=error_info(exc)))
            return
        drive = _Drive(run_id, instance, workflow)
        try:
            if fresh:
                await self._redispatch_unfinished(drive)
            if instance.started_at is None and instance.ended is None:
                self._speculate(drive, Event(run_id, E.RUN_STARTED))
            await self._loop(drive)
        except ReplayDivergenceError as exc:
            drive.pending.clear()
            await self._record_end(run_id, Outcome(error=error_info(exc)))
            drive.instance.ended = E.RUN_FAILED
        finally:
            await self._settle(drive)
        if drive.instance.ended is None and not self.always_replay:
            self._cache[run_id] = drive.instance
            if len(self._cache) > CACHE_SIZE:
                _, old = self._cache.popitem(last=False)
                old.close()
        else:
            drive.instance.close()

    async def _settle(self, drive: _Drive) -> None:
        """Leaving a run: give back unused step slots, and record what inline steps still finish."""
        self._step_slots += drive.slots_held
        drive.slots_held = 0
        for cid, task in list(drive.inline.items()):
            outcome = await task
            if outcome is not None:
                await self._record_attempt(drive.run_id, cid, outcome, notify=True)
        drive.inline.clear()

    async def _redispatch_unfinished(self, drive: _Drive) -> None:
        """After a full replay, make sure every step the code awaits has a message, and that
        children that ended have told this run (crash recovery)."""
        instance = drive.instance
        from .children import redeliver_child_outcomes

        await redeliver_child_outcomes(self.world, instance)
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
            # We hold the run: a step recorded as running here was run inline by a driver that is gone.
            await enqueue_step(self.world, drive.run_id, cid, delay=delay, restart=step.status == StepStatus.RUNNING)

    # --- the drive loop ---

    def _speculate(self, drive: _Drive, event: Event, at: datetime | None = None) -> Event:
        """Feed `event` to the code at the log position it will be recorded at."""
        instance = drive.instance
        if at is None:  # never before the code's clock: time in a log only moves forward
            at = max(utcnow(), instance.now())
        event = Event(event.run_id, event.event_type, event.correlation_id, event.data,
                      seq=instance.fed_seq + 1, created_at=at)
        drive.pending.append(event)
        instance.feed(event)
        return event

    async def _loop(self, drive: _Drive) -> None:
        world = self.world
        run_id = drive.run_id
        while True:
            instance = drive.instance
            if instance.ended is not None:
                return
            # Results of inline steps that finished: the code sees them now, the log with the next commit.
            for cid in [cid for cid, task in drive.inline.items() if task.done()]:
                outcome = drive.inline.pop(cid).result()
                if outcome is None:
                    continue
                if instance.steps.get(cid) is None:  # a replay from the log lost track of it
                    await self._record_attempt(run_id, cid, outcome, notify=False)
                    continue
                self._speculate(drive, outcome.event)
                if outcome.retry_at is not None:
                    drive.retries.append((cid, outcome.retry_at))
            if instance.outcome is not None:
                outcome = instance.outcome
                event = Event(run_id, E.RUN_FAILED if outcome.failed else E.RUN_COMPLETED,
                              data={"error": outcome.error} if outcome.failed else {"output": outcome.output})
                self._speculate(drive, event)
                if await self._flush(drive):
                    await self._after_end(run_id)
                    return
                continue
            now = utcnow()
            timers = instance.live_timers()
            due = sorted(cid for cid, at in timers.items() if at <= now)
            if due:  # every elapsed wait completes in the same commit
                for cid in due:
                    self._speculate(drive, Event(run_id, E.WAIT_COMPLETED, correlation_id=cid))
                continue
            commands = instance.new_commands()
            if commands:
                self._speculate_commands(drive, commands)
                continue
            if not await self._flush(drive):
                continue  # the log moved under us: replayed from it, look again
            if self.always_replay:  # test mode: the code is rebuilt from the log at every step
                drive.instance.close()
                drive.instance = await self._fresh_instance(run_id, drive.workflow)
            await self._act(drive)
            if not drive.inline:
                if timers and self.skip_time and not instance.awaited_steps():
                    cid, at = min(timers.items(), key=lambda item: item[1])
                    self._speculate(drive, Event(run_id, E.WAIT_COMPLETED, correlation_id=cid), at=max(at, utcnow()))
                    continue
                if timers:  # suspend; the queue wakes the run when its first timer is due
                    first = min(timers.values())
                    await enqueue_workflow(world, run_id, delay=(first - utcnow()).total_seconds())
                return
            await self._wait(drive, timers)

    @staticmethod
    def _awaits_others(drive: _Drive) -> bool:
        """Whether the code may be waiting on something another process writes to the log: a
        hook's payload (children report through hooks too) or the result of a queued step."""
        instance = drive.instance
        return bool(instance.hooks) or any(cid not in drive.inline for cid in instance.awaited_steps())

    def _speculate_commands(self, drive: _Drive, commands: list[Any]) -> None:
        run_id = drive.run_id
        for command in commands:
            if command.kind == "step":
                self._speculate(drive, Event(run_id, E.STEP_CREATED, correlation_id=command.cid, data=command.data))
                if self._take_step_slot():
                    drive.slots_held += 1
                    started = self._speculate(
                        drive, Event(run_id, E.STEP_STARTED, correlation_id=command.cid, data={"attempt": 1})
                    )
                    drive.to_start.append(started)
                else:
                    drive.to_queue.append(command.cid)
            elif command.kind == "wait":
                self._speculate(drive, Event(run_id, E.WAIT_CREATED, correlation_id=command.cid, data=command.data))
            elif command.kind == "marker":
                self._speculate(drive, Event(run_id, E.MARKER_RECORDED, correlation_id=command.cid,
                                             data=command.data))
            else:
                self._speculate(drive, Event(run_id, E.HOOK_CREATED, correlation_id=command.cid, data=command.data))

    async def _flush(self, drive: _Drive) -> bool:
        """Record the pending events where the code saw them. False if the log had moved: the
        step results among them are then recorded on their own and the code replayed from the log."""
        if not drive.pending:
            return True
        events, drive.pending = drive.pending, []
        try:
            results = await self.world.events.create_batch(drive.run_id, events, expected_seq=events[0].seq)
        except (EntityConflictError, NotFoundError, TooEarlyError) as exc:
            log.debug("run %s: batch refused (%s); replaying from the log", drive.run_id, exc)
            await self._resync(drive, events)
            return False
        recorded = [(e.event_type, e.correlation_id, e.seq) for r in results for e in r.events]
        if recorded != [(e.event_type, e.correlation_id, e.seq) for e in events]:
            await self._resync(drive, [])  # e.g. hook_created became hook_conflict
            return False
        return True

    async def _resync(self, drive: _Drive, lost: list[Event]) -> None:
        """Replace the instance by a replay of the log, keeping the step results `lost` held."""
        self._step_slots += drive.slots_held
        drive.slots_held = 0
        drive.to_start.clear()
        drive.to_queue.clear()
        drive.retries.clear()
        for event in lost:
            if event.event_type in (E.STEP_COMPLETED, E.STEP_FAILED, E.STEP_RETRYING):
                outcome = AttemptOutcome(Event(event.run_id, event.event_type, event.correlation_id, event.data),
                                         _retry_at(event))
                await self._record_attempt(drive.run_id, event.correlation_id or "", outcome, notify=False)
        drive.instance.close()
        drive.instance = await self._fresh_instance(drive.run_id, drive.workflow)

    async def _act(self, drive: _Drive) -> None:
        """After a commit: start the new steps inline, queue the others and the retries."""
        instance = drive.instance
        for event in drive.to_start:
            cid = event.correlation_id or ""
            call = instance.steps[cid]
            drive.slots_held -= 1
            drive.inline[cid] = asyncio.create_task(
                self._run_inline(drive.run_id, cid, call.step, call.command.data.get("input"), 1, event.created_at,
                                 instance.metadata())
            )
        drive.to_start.clear()
        for cid in drive.to_queue:
            await enqueue_step(self.world, drive.run_id, cid)
        drive.to_queue.clear()
        for cid, at in drive.retries:
            delay = 0.0 if self.skip_time else (at - utcnow()).total_seconds()
            await enqueue_step(self.world, drive.run_id, cid, delay=delay)
        drive.retries.clear()

    async def _wait(self, drive: _Drive, timers: dict[str, datetime]) -> None:
        """Wait for an inline step to finish, the log to move (a hook payload...), or a timer."""
        timeout = None
        if timers:
            timeout = max((min(timers.values()) - utcnow()).total_seconds(), 0.0)
        if not self._awaits_others(drive):
            # Only our inline steps (and timers) can move the code: nothing in the log to watch
            # for. (A cancellation written meanwhile refuses our next commit, and replay ends the run.)
            await asyncio.wait(list(drive.inline.values()), timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
            return
        # Most inline steps are quick: wait for them alone first, and only then also watch the
        # log for what others write (a hook payload, a queued step's result).
        first = QUICK_STEP_SECONDS if timeout is None else min(QUICK_STEP_SECONDS, timeout)
        done, _ = await asyncio.wait(list(drive.inline.values()), timeout=first, return_when=asyncio.FIRST_COMPLETED)
        if done:
            return
        if timeout is not None:
            timeout = max(timeout - first, 0.0)
        instance = drive.instance
        watcher = asyncio.ensure_future(self.world.events.wait(drive.run_id, after_seq=instance.fed_seq, timeout=None))
        try:
            await asyncio.wait([watcher, *drive.inline.values()], timeout=timeout,
                               return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not watcher.done():
                watcher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watcher
        if watcher.done() and not watcher.cancelled() and watcher.result():
            # Someone else wrote to the log (our own writes were fed already): follow it.
            instance.feed_many(await self.world.events.list(drive.run_id, after_seq=instance.fed_seq))

    def _take_step_slot(self) -> bool:
        if self._step_slots > 0 and not self._stopping.is_set():
            self._step_slots -= 1
            return True
        return False

    async def _run_inline(self, run_id: str, step_id: str, step: StepFunction, step_input: Any, attempt: int,
                          started_at: datetime | None, workflow: WorkflowMetadata) -> AttemptOutcome | None:
        """One attempt of a step the driver started; its outcome is recorded by the driver."""
        try:
            return await self.executor.attempt(step, run_id=run_id, step_id=step_id, step_input=step_input,
                                               attempt=attempt, started_at=started_at, workflow=workflow)
        except Exception:
            log.exception("inline step %s of run %s failed to run; queueing it", step_id, run_id)
            with contextlib.suppress(WorldError):
                await enqueue_step(self.world, run_id, step_id, delay=1.0)
            return None
        finally:
            self._step_slots += 1

    async def _record_attempt(self, run_id: str, step_id: str, outcome: AttemptOutcome, *, notify: bool) -> None:
        """Record an attempt's result; queue the retry, and wake the run if someone else drives it."""
        self.stats["steps"] += 1
        try:
            await self.world.events.create(run_id, outcome.event)
        except (EntityConflictError, RunExpiredError, NotFoundError):
            return  # another attempt finished first, or the run is over: nothing more to do
        if outcome.retry_at is not None:
            delay = 0.0 if self.skip_time else (outcome.retry_at - utcnow()).total_seconds()
            await enqueue_step(self.world, run_id, step_id, delay=delay)
        elif notify:
            await enqueue_workflow(self.world, run_id)

    async def _record_end(self, run_id: str, outcome: Outcome) -> None:
        """Record the run's end outside a drive (a divergence): once, racing handlers get 409/410."""
        if outcome.failed:
            event = Event(run_id, E.RUN_FAILED, data={"error": outcome.error})
        else:
            event = Event(run_id, E.RUN_COMPLETED, data={"output": outcome.output})
        try:
            await self.world.events.create(run_id, event)
        except (EntityConflictError, RunExpiredError):
            self._evict(run_id)
            return
        await self._after_end(run_id)

    async def _after_end(self, run_id: str) -> None:
        self._evict(run_id)
        from .children import notify_parent

        await notify_parent(self.world, await self.world.runs.get(run_id))

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
        self._step_slots -= 1
        try:
            try:
                at = None
                if self.skip_time and step.retry_after is not None:
                    at = max(step.retry_after, utcnow())
                started = await world.events.create(
                    run_id, Event(run_id, E.STEP_STARTED, correlation_id=step_id, data={"attempt": step.attempt + 1},
                                  created_at=at)
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


def _retry_at(event: Event) -> datetime | None:
    if event.event_type != E.STEP_RETRYING:
        return None
    value = event.data.get("retry_after")
    return datetime.fromisoformat(value) if isinstance(value, str) else None
