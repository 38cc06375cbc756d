"""Driving one run: feed its new events to the workflow code, record what the code asks for, suspend.

The worker (`worker.py`) calls `RunDriver._drive_message` for each "drive run R" message it
holds. Holding it gives exclusive charge of the run. While in charge, the driver feeds the
run's new events to its `WorkflowInstance`, records what the code asks for, runs new steps
inline when it has capacity (queueing them otherwise), completes due timers in one batch,
and suspends when nothing can move: the instance stays cached in memory, and the next
message only feeds it the events it has not seen. A restart, a code reload, or
`WF_ALWAYS_REPLAY=1` replays from the top instead.
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

from . import telemetry
from .calls import error_info
from .children import notify_parent, redeliver_child_outcomes
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
from .flow_control import FlowControl, Grant
from .messages import enqueue_step, enqueue_workflow
from .registry import Registry, StepFunction, WorkflowFunction
from .replay import Outcome, WorkflowInstance
from .step_executor import AttemptOutcome, StepExecutor
from .workflow_context import WorkflowMetadata
from .world import Message, World

log = logging.getLogger("wf.worker")
E = EventType

CACHE_SIZE = 5000
#: While inline steps run, events others write are looked for after this long at the latest.
QUICK_STEP_SECONDS = 0.02


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
    #: Flow control (flow_control.py): grants of limited steps admitted to run inline, by step id;
    #: grants whose attempt's outcome is speculated (released once it is recorded); queue delays.
    grants: dict[str, Grant] = field(default_factory=dict)
    finished_grants: list[Grant] = field(default_factory=list)
    queue_delays: dict[str, float] = field(default_factory=dict)


class RunDriver:
    """The part of a worker that drives runs and runs their steps (see the module docs)."""

    def __init__(self, world: World, *, registry: Registry, concurrency: int, always_replay: bool | None,
                 threads: int, skip_time: bool) -> None:
        self.world = world
        self.registry = registry
        self.always_replay = always_replay_default() if always_replay is None else always_replay
        #: Test mode: when a run waits only for timers, fire them at once (dated at their due
        #: time, so the workflow clock still moves by the right amount); retries skip their delay.
        self.skip_time = skip_time
        self.executor = StepExecutor(world, threads=threads)
        #: Concurrency and rate limits (flow_control.py): admission, release, slot renewal.
        self.flow = FlowControl(world)
        #: Steps that may start now in this process (inline or from the queue).
        self._step_slots = concurrency
        self._cache: collections.OrderedDict[str, WorkflowInstance] = collections.OrderedDict()
        self._stopping = asyncio.Event()
        self._missing_logged: set[str] = set()
        self.stats = collections.Counter[str]()


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
            if cached is None and workflow.limits is not None and run.status == RunStatus.PENDING:
                wait = await self.flow.admit_run(workflow.limits, run)  # a slot before run_started
                if wait is not None:
                    return wait
            await self._drive(run_id, workflow, None if cached is not None else run)
        except RunExpiredError:
            self._evict(run_id)  # the run ended under us (cancelled, or completed elsewhere)
        return None

    async def _begin(self, run_id: str, message: Message) -> Run | None:
        """The run to drive (pending or running); None when there is nothing to do."""
        try:
            run = await self.world.runs.get(run_id)  # with its input: a fresh instance starts from it
        except NotFoundError:
            start = message.payload.get("start")
            if not isinstance(start, dict):
                log.warning("workflow message for unknown run %s dropped", run_id)
                return None
            # Lazy creation: `wf.start` could not record run_created; the message carries the input.
            result = await self.world.events.create(run_id, Event(run_id, E.RUN_STARTED, data=start))
            if telemetry.ON:
                telemetry.recorded([result])
            return result.run
        if run.status.terminal:
            self._evict(run_id)
            token = run.attributes.get("parent_token")
            if token:  # a redelivered message of a child: its end may never have reached the parent
                await self._renotify_parent(run_id, token)
            return None
        return run

    async def _renotify_parent(self, run_id: str, token: str) -> None:
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

    async def _fresh_instance(self, run_id: str, workflow: WorkflowFunction, full: Run | None = None
                              ) -> WorkflowInstance:
        if full is None:
            full = await self.world.runs.get(run_id)
        instance = WorkflowInstance(workflow, full)
        instance.feed_many(await self.world.events.list(run_id))
        self.stats["replays"] += 1
        return instance

    async def _drive(self, run_id: str, workflow: WorkflowFunction, run: Run | None = None) -> None:
        """Drive the run until it waits or ends (`run`: as just read, if it was)."""
        instance = self._cache.pop(run_id, None)
        fresh = instance is None or instance.workflow is not workflow or self.always_replay
        try:
            if fresh:
                if instance is not None:
                    instance.close()
                instance = await self._fresh_instance(run_id, workflow, run)
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
            if cid in drive.grants:
                await self.flow.release_step(drive.grants.pop(cid))
        drive.inline.clear()
        drive.finished_grants.extend(drive.grants.values())
        drive.grants.clear()
        await self._release_grants(drive.finished_grants)

    async def _redispatch_unfinished(self, drive: _Drive) -> None:
        """After a full replay, make sure every step the code awaits has a message, and that
        children that ended have told this run (crash recovery)."""
        instance = drive.instance
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
                if drive.grants:  # a limited step's slot: freed once its outcome is recorded
                    grant = drive.grants.pop(cid, None)
                    if grant is not None:
                        drive.finished_grants.append(grant)
                if outcome is None:
                    continue
                if instance.steps.get(cid) is None:  # a replay from the log lost track of it
                    await self._record_attempt(run_id, cid, outcome, notify=False)
                    await self._release_grants(drive.finished_grants)
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
                grants = None
                if any(c.kind == "step" and instance.steps[c.cid].step.limits is not None for c in commands):
                    grants = await self._admit_inline(drive, commands)
                self._speculate_commands(drive, commands, grants)
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

    def _speculate_commands(self, drive: _Drive, commands: list[Any], grants: dict[str, Grant] | None = None) -> None:
        run_id = drive.run_id
        for command in commands:
            if command.kind == "step":
                grant = grants.pop(command.cid, None) if grants else None
                # Dated at its admission if a rate window recorded one (the events show the rate kept).
                at = None if grant is None or grant.started_at is None else max(grant.started_at,
                                                                                drive.instance.now())
                self._speculate(drive, Event(run_id, E.STEP_CREATED, correlation_id=command.cid, data=command.data),
                                at=at)
                limited = drive.instance.steps[command.cid].step.limits is not None
                if (not limited or grant is not None) and self._take_step_slot():
                    drive.slots_held += 1
                    started = self._speculate(
                        drive, Event(run_id, E.STEP_STARTED, correlation_id=command.cid, data={"attempt": 1}), at=at
                    )
                    drive.to_start.append(started)
                    if grant is not None:
                        drive.grants[command.cid] = grant
                else:
                    if grant is not None:
                        drive.finished_grants.append(grant)  # no room here after all: given back after the commit
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
        if telemetry.ON:  # spans end when their events are recorded (never when replayed)
            telemetry.recorded(results)
        recorded = [(e.event_type, e.correlation_id, e.seq) for r in results for e in r.events]
        if recorded != [(e.event_type, e.correlation_id, e.seq) for e in events]:
            await self._resync(drive, [])  # e.g. hook_created became hook_conflict
            return False
        if drive.finished_grants:  # their attempts' outcomes are recorded now: free their slots
            await self._release_grants(drive.finished_grants)
        return True

    async def _release_grants(self, grants: list[Grant]) -> None:
        while grants:
            await self.flow.release_step(grants.pop())

    async def _admit_inline(self, drive: _Drive, commands: list[Any]) -> dict[str, Grant]:
        """Admit new limited steps (a slot, a rate window) to run inline here, before they are recorded.

        Those refused, or without room in this worker, are queued: `_act` sends their messages
        (delayed until a rate window allows; a slot's release wakes them sooner).
        """
        grants: dict[str, Grant] = {}
        room = self._step_slots
        for command in commands:
            if command.kind != "step":
                continue
            step = drive.instance.steps[command.cid].step
            if step.limits is None or room <= 0 or self._stopping.is_set():
                room -= 1
                continue
            admitted = await self.flow.admit_step(step.limits, drive.run_id, command.cid, command.data.get("input"),
                                                  {"run_id": drive.run_id, "step_id": command.cid})
            if isinstance(admitted, Grant):
                grants[command.cid] = admitted
                room -= 1
            else:
                drive.queue_delays[command.cid] = admitted
        return grants

    async def _resync(self, drive: _Drive, lost: list[Event]) -> None:
        """Replace the instance by a replay of the log, keeping the step results `lost` held."""
        self._step_slots += drive.slots_held
        drive.slots_held = 0
        drive.to_start.clear()
        drive.to_queue.clear()
        drive.retries.clear()
        drive.queue_delays.clear()
        for event in lost:
            if event.event_type in (E.STEP_COMPLETED, E.STEP_FAILED, E.STEP_RETRYING):
                outcome = AttemptOutcome(Event(event.run_id, event.event_type, event.correlation_id, event.data),
                                         _retry_at(event))
                await self._record_attempt(drive.run_id, event.correlation_id or "", outcome, notify=False)
        for cid in [cid for cid in drive.grants if cid not in drive.inline]:  # admitted, never started
            drive.finished_grants.append(drive.grants.pop(cid))
        await self._release_grants(drive.finished_grants)
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
            await enqueue_step(self.world, drive.run_id, cid, delay=drive.queue_delays.pop(cid, 0.0))
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
            result = await self.world.events.create(run_id, outcome.event)
        except (EntityConflictError, RunExpiredError, NotFoundError):
            return  # another attempt finished first, or the run is over: nothing more to do
        if telemetry.ON:
            telemetry.recorded([result])
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
            result = await self.world.events.create(run_id, event)
        except (EntityConflictError, RunExpiredError):
            self._evict(run_id)
            return
        if telemetry.ON:
            telemetry.recorded([result])
        await self._after_end(run_id)

    async def _after_end(self, run_id: str) -> None:
        self._evict(run_id)
        run = await self.world.runs.get(run_id)
        await notify_parent(self.world, run)
        workflow = self.registry.workflows.get(run.workflow_name)
        if workflow is not None and workflow.limits is not None:
            await self.flow.run_ended(workflow.limits, run)  # its slot to the next run in line


def _retry_at(event: Event) -> datetime | None:
    if event.event_type != E.STEP_RETRYING:
        return None
    value = event.data.get("retry_after")
    return datetime.fromisoformat(value) if isinstance(value, str) else None
