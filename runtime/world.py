"""The World contract: storage, queue and streams behind one interface.

The runtime talks to persistence only through these classes; `world_local` implements
them on the file system and any other World (Postgres, ...) must pass the same
conformance suite (`tests/world_contract/`). Every method states its promise and the
typed errors (`wf.runtime.errors`) it raises.

Conventions shared by every World:
- All state changes go through `events.create` / `events.create_batch`; runs, steps,
  hooks and waits are materialized views of the log, never written directly.
- Legality of an event is decided by `wf.runtime.state_machine.plan`, not re-invented.
- Ids that reach storage (run, step, hook, wait ids, stream names, tokens) are validated
  or hashed; a bad one raises `InvalidIdError`.
- Payload values are opaque JSON-compatible data (serialized by the runtime).
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from .entities import Event, Hook, HookStatus, Page, Run, RunStatus, Step, Wait, WaitStatus
from .flow_contract import Limits, Schedules
from .state_machine import RunState, event_kind

#: The queue that carries "replay workflow run R" messages, with payload {"run_id": R}.
WORKFLOW_QUEUE = "workflow"
#: The queue that carries "run step S of run R" messages, with payload {"run_id": R, "step_id": S}.
STEP_QUEUE = "step"


def workflow_message_key(run_id: str) -> str:
    """Idempotency key of a run's workflow message: at most one is waiting per run."""
    return f"run:{run_id}"


def step_message_key(run_id: str, step_id: str) -> str:
    """Idempotency key of a step's message: at most one is waiting per step."""
    return f"step:{run_id}:{step_id}"


#: How much earlier a run of priority p+1 is served than one of priority p started at the same
#: time: a run is overtaken only by runs of higher priority started less than
#: (their priority - its priority) x this many seconds after it (the starvation bound).
PRIORITY_STEP_SECONDS = 60
_ULID_RUN_ID_LENGTH = 31  # "wrun_" + 26 characters
_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def run_order_key(run_id: str) -> str:
    """The queue order key of every message of a run: its id, or for a run started with a
    priority (`wrun_<ULID>_p<N>`) the id with its time moved N x PRIORITY_STEP_SECONDS earlier.

    Smallest first: oldest run first (seed 004), higher priority first, FIFO within a priority.
    Every World's `start()` enqueues recovered runs with it.
    """
    if len(run_id) <= _ULID_RUN_ID_LENGTH or not run_id.startswith("wrun_"):
        return run_id
    head, sep, priority = run_id[_ULID_RUN_ID_LENGTH:].partition("_p")
    if head or not sep:
        return run_id
    try:
        shift = int(priority) * PRIORITY_STEP_SECONDS * 1000
        ms = 0
        for char in run_id[5:15]:
            ms = ms * 32 + _CROCKFORD.index(char)
    except ValueError:
        return run_id
    ms = min(max(ms - shift, 0), (1 << 50) - 1)
    shifted = "".join(_CROCKFORD[(ms >> (5 * i)) & 31] for i in range(9, -1, -1))
    return f"wrun_{shifted}{run_id[15:]}"


@dataclass(frozen=True, slots=True)
class EventResult:
    """What `events.create` did: the events it recorded and the entities after them.

    `events` is empty when the event was an idempotent no-op (`run_started` on a running
    run, `run_cancelled` on a cancelled run). `step`/`hook`/`wait` are set when the event
    targeted one (by its correlation id).
    """

    events: list[Event]
    run: Run
    step: Step | None = None
    hook: Hook | None = None
    wait: Wait | None = None


def batch_results(state: RunState, outcomes: list[tuple[Event, list[Event]]]) -> list[EventResult]:
    """What each event of a batch did (the events it recorded), with the entities as of the end of
    the batch: what every World's `create_batch` returns."""
    run = state.run
    assert run is not None
    results = []
    for event, recorded in outcomes:
        cid = event.correlation_id or ""
        kind = event_kind(event.event_type)
        results.append(EventResult(
            events=recorded,
            run=run,
            step=state.steps.get(cid) if kind == "steps" else None,
            hook=state.hooks.get(cid) if kind == "hooks" else None,
            wait=state.waits.get(cid) if kind == "waits" else None,
        ))
    return results


class RunsStorage(ABC):
    @abstractmethod
    async def get(self, run_id: str, *, resolve_data: bool = True) -> Run:
        """The run. NotFoundError if unknown. `resolve_data=False` leaves input/output as None."""

    @abstractmethod
    async def list(
        self,
        *,
        status: RunStatus | Sequence[RunStatus] | None = None,
        workflow_name: str | None = None,
        limit: int = 100,
        cursor: str | None = None,
        resolve_data: bool = True,
        newest_first: bool = True,
    ) -> Page[Run]:
        """Runs matching the filters, a page at a time, ordered by `created_at` then run id (newest first
        unless `newest_first=False`). Run ids alone do not sort by time: a `wrun_k…` id is a hash.
        `next_cursor` is the last run id of the page; a cursor naming no run raises InvalidIdError."""


class StepsStorage(ABC):
    @abstractmethod
    async def get(self, run_id: str, step_id: str, *, resolve_data: bool = True) -> Step:
        """The step. NotFoundError if the run or step is unknown."""

    @abstractmethod
    async def list(
        self, run_id: str, *, limit: int = 1000, cursor: str | None = None, resolve_data: bool = True
    ) -> Page[Step]:
        """The run's steps in creation order."""


class EventsStorage(ABC):
    @abstractmethod
    async def create(self, run_id: str, event: Event) -> EventResult:
        """Validate and record one event atomically, then update the materialized entities.

        The World assigns `event_id` (monotonic ULID) and `seq`, and `created_at` unless the
        caller set it (the runtime does, when it fed the event to the code before recording it). Raises the
        state machine's errors: EntityConflictError, RunExpiredError, NotFoundError,
        TooEarlyError. `run_started` carrying workflow_name and input creates the run
        (recording `run_created` first) when it does not exist; the first writer wins.
        """

    @abstractmethod
    async def create_batch(
        self, run_id: str, events: Sequence[Event], *, skip_conflicts: bool = False, expected_seq: int | None = None
    ) -> list[EventResult]:
        """Record several events of one run atomically and in order, under one lock.

        Either all are recorded or none (the first error is raised). With
        `skip_conflicts=True`, events that would raise EntityConflictError are left out
        instead, and their result has `events == []`; other errors still abort the batch.
        With `expected_seq`, the batch is recorded only if the log holds exactly that many
        events (optimistic concurrency), else EntityConflictError and nothing is written.
        """

    @abstractmethod
    async def list(
        self, run_id: str, *, after_seq: int = -1, limit: int | None = None, resolve_data: bool = True
    ) -> list[Event]:
        """The run's events with seq > after_seq, oldest first. NotFoundError for an unknown run."""

    @abstractmethod
    async def list_by_correlation_id(self, run_id: str, correlation_id: str) -> list[Event]:
        """The run's events for one step, hook or wait, oldest first."""

    @abstractmethod
    async def wait(self, run_id: str, *, after_seq: int, timeout: float | None) -> bool:
        """Block until the run's log holds an event with seq > after_seq (True) or timeout (False).

        Wakes within milliseconds of a write by this or another process, without busy polling.
        """


class HooksStorage(ABC):
    @abstractmethod
    async def get(self, run_id: str, hook_id: str) -> Hook:
        """The hook. NotFoundError if unknown."""

    @abstractmethod
    async def get_by_token(self, token: str) -> Hook:
        """The live (active) hook holding `token`. NotFoundError if no live hook holds it."""

    @abstractmethod
    async def list(
        self, *, run_id: str | None = None, status: HookStatus | None = None, limit: int = 1000,
        cursor: str | None = None,
    ) -> Page[Hook]:
        """Hooks of one run (creation order), or all live hooks when run_id is None."""


class WaitsStorage(ABC):
    @abstractmethod
    async def list(
        self, *, run_id: str | None = None, status: WaitStatus | None = None, limit: int = 1000,
        cursor: str | None = None,
    ) -> Page[Wait]:
        """Waits of one run (creation order), or all waiting ones when run_id is None."""


@dataclass(frozen=True, slots=True)
class Message:
    """A queue message as delivered by `take` (leased) or shown by `list`."""

    message_id: str
    queue: str
    payload: dict[str, Any]
    order_key: str
    available_at: datetime
    #: Deliveries so far, counting this one when leased.
    attempts: int = 0
    idempotency_key: str | None = None
    #: "ready", "delayed" or "leased" (as seen by `list`; "leased" for a taken message).
    state: str = "ready"
    lease_until: datetime | None = None
    #: Opaque proof of the lease, checked by ack/nack/extend.
    lease_id: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class Queue(ABC):
    """A durable queue: messages, delays and leases survive restarts of every process."""

    @abstractmethod
    async def enqueue(
        self,
        queue: str,
        payload: dict[str, Any],
        *,
        idempotency_key: str | None = None,
        delay: float = 0.0,
        order_key: str | None = None,
    ) -> str:
        """Add a message; return its id. Durable when this returns.

        Ready messages are delivered smallest `order_key` first (default: the message id,
        i.e. enqueue order); the runtime passes the run id so the oldest run goes first.
        With an idempotency key that a not-yet-acked message already holds, no second
        message is made: a waiting one is made available no later than now + delay; a
        leased one is delivered once more after it is acked (so no wake-up is lost, and
        that delivery starts again at attempts 1). Keys are global across queue names, and
        coalescing keeps the first message's queue, payload and order key. A negative
        delay counts as 0. Durable: enqueue, nack, delete; take/extend/ack may be replayed
        after a power loss (at-least-once), never lost.
        """

    @abstractmethod
    async def take(
        self, queues: Sequence[str], *, lease: float = 60.0, timeout: float | None = 0.0
    ) -> Message | None:
        """Lease the first ready message of the given queues, waiting up to `timeout` seconds.

        `timeout=None` waits forever, 0 does not wait. A leased message is invisible to
        others until acked, nacked, or its lease expires (its time passed, or the process
        that took it died), when it is delivered again with `attempts` incremented.
        Cancellation-safe: if the call is cancelled while waiting, no message is leased.
        """

    @abstractmethod
    async def ack(self, message: Message) -> None:
        """Done with a leased message: remove it (or redeliver it once, see `enqueue`).

        NotFoundError if the lease was lost (expired and taken by another consumer).
        """

    @abstractmethod
    async def nack(self, message: Message, *, delay: float = 0.0) -> None:
        """Give a leased message back, available again after `delay` seconds."""

    @abstractmethod
    async def extend(self, message: Message, *, lease: float) -> Message:
        """Renew a lease for `lease` more seconds. NotFoundError if the lease was lost."""

    @abstractmethod
    async def list(self, queue: str | None = None) -> list[Message]:
        """Every message not yet acked, with its state, oldest order_key first."""

    @abstractmethod
    async def delete(self, message_id: str) -> None:
        """Remove a message whatever its state (operators' tool). NotFoundError if unknown."""

    async def dead_leases(self) -> list[Message]:
        """Messages leased by a holder that is gone (its process died, its heartbeat stopped).

        Such a message is redelivered to the next taker anyway; operators (`wf doctor`) list
        them and may hand them back at once with `release`. `extra["holder"]` may name the
        holder ("process 1234", "worker w-7 on host h"). A World whose leases cannot
        outlive their holder returns [] (the default).
        """
        return []

    async def release(self, message: Message) -> bool:
        """Hand a message from `dead_leases` back to the queue now; False if it is no longer held by the dead."""
        return False


@dataclass(frozen=True, slots=True)
class StreamInfo:
    run_id: str
    name: str
    chunks: int
    closed: bool


class Streams(ABC):
    """Ordered, closable streams of JSON-compatible chunks, one set per run."""

    @abstractmethod
    async def write(self, run_id: str, name: str, chunk: Any) -> int:
        """Append a chunk; return its index. EntityConflictError if the stream is closed."""

    @abstractmethod
    async def write_many(self, run_id: str, name: str, chunks: Sequence[Any]) -> int:
        """Append chunks in order atomically; return the index of the last one."""

    @abstractmethod
    async def close(self, run_id: str, name: str) -> None:
        """Mark the stream ended (idempotent). Creates it empty if it does not exist."""

    @abstractmethod
    async def read(self, run_id: str, name: str, *, start: int = 0) -> tuple[list[Any], bool]:
        """The chunks from index `start` on, and whether the stream is closed."""

    @abstractmethod
    def tail(
        self, run_id: str, name: str, *, start: int = 0, timeout: float | None = None
    ) -> AsyncIterator[Any]:
        """Yield chunks from `start` live, as other processes write them, until the stream closes.

        Stops early (without error) when nothing new arrives for `timeout` seconds.
        """

    @abstractmethod
    async def list(self, run_id: str) -> list[StreamInfo]:
        """The run's streams."""


#: What a World may legitimately lack, declared in `World.capabilities` (the conformance
#: suite skips the tests of a capability a World does not declare, naming it):
#: "workers" (presence: announce/retire/live_workers), "drain" (request_drain),
#: "repair" (repair_run), "processes" (several processes may open the same store by URL),
#: "limits" (`world.limits`: concurrency slots, rate windows), "schedules" (`world.schedules`),
#: "prune" (delete_run, forget_dead_workers). "limits" and "schedules" are in `flow_contract.py`.
CAPABILITIES = frozenset({"workers", "drain", "repair", "processes", "limits", "schedules", "prune"})


class World(ABC):
    """Storage + queue + streams. Create one per process and `await start()` it.

    Errors: every storage failure surfaces as a `WorldError` subclass; an I/O error, a full
    or read-only disk, or a lost database connection as `StorageUnavailableError`. The
    runtime catches nothing else from a World.
    """

    #: The optional parts this World provides (see CAPABILITIES).
    capabilities: frozenset[str] = frozenset()

    runs: RunsStorage
    steps: StepsStorage
    events: EventsStorage
    hooks: HooksStorage
    waits: WaitsStorage
    queue: Queue
    streams: Streams
    #: With the "limits" capability.
    limits: Limits
    #: With the "schedules" capability.
    schedules: Schedules

    @abstractmethod
    async def start(self) -> None:
        """Open the World and recover: enqueue a workflow message for every pending or
        running run (idempotent), skipping and logging any corrupt entry."""

    @abstractmethod
    async def close(self) -> None:
        """Release files, locks and waiters. The World may not be used afterwards."""

    async def run_ids(self) -> list[str]:
        """Every run id the store holds, oldest first, including runs whose entity cannot be read.

        For operators (`wf doctor` checks each one). The default pages through `runs.list`; a
        World whose listing can skip damaged runs overrides it.
        """
        ids: list[str] = []
        cursor: str | None = None
        while True:
            page = await self.runs.list(cursor=cursor, limit=500, resolve_data=False, newest_first=False)
            ids.extend(run.run_id for run in page.data)
            if page.next_cursor is None:
                return ids
            cursor = page.next_cursor

    async def verify_runs(self) -> list[str]:
        """Check every run's status against the end of its log, make active again each run whose
        log does not end it, and enqueue it; return those runs' ids.

        For `wf recover` after a power loss: a World whose status is written in the same
        transaction as the log (the default) has nothing to find.
        """
        return []

    async def count_runs(self) -> dict[RunStatus, int]:
        """How many runs the store holds in each status (every status present, 0 for none).

        For listings' counts (the web UI's runs page, `wf inspect runs`). The default pages
        through `runs.list`; a World with an index answers without reading every run.
        """
        counts = dict.fromkeys(RunStatus, 0)
        cursor: str | None = None
        while True:
            page = await self.runs.list(cursor=cursor, limit=500, resolve_data=False)
            for run in page.data:
                counts[run.status] += 1
            if page.next_cursor is None:
                return counts
            cursor = page.next_cursor

    async def wait_for_end(self, run_id: str, *, timeout: float | None) -> Run | None:
        """Block until the run is completed, failed or cancelled and return it; None on timeout.

        NotFoundError for an unknown run. This default follows the log; a World may wake
        only on the run's end.
        """
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while True:
            run = await self.runs.get(run_id, resolve_data=False)
            if run.status.terminal:
                return await self.runs.get(run_id)
            remaining = None if deadline is None else deadline - loop.time()
            if remaining is not None and remaining <= 0:
                return None
            await self.events.wait(run_id, after_seq=run.event_count - 1, timeout=remaining)

    # --- worker presence (optional: a World without it reports no workers) ---

    async def announce_worker(self, info: dict[str, Any]) -> str:
        """Record this process as a live worker (until `retire_worker` or its death); returns its id."""
        return ""

    async def retire_worker(self, worker_id: str) -> None:  # noqa: B027 - optional, no-op by default
        """This process stops being a worker."""

    async def live_workers(self) -> list[dict[str, Any]]:
        """The workers currently alive on this World, as they described themselves."""
        return []

    # --- retention (optional: the "prune" capability) ---

    async def forget_dead_workers(self) -> int:
        """Remove what workers that died without retiring left (files, rows); how many were removed."""
        return 0

    async def delete_run(self, run_id: str) -> bool:
        """Remove an ended run and everything of it: its log, entities, streams, hook tokens,
        index entries and queue messages (a message another worker holds may be left to it).

        Safe while workers run: afterwards the run is unknown (NotFoundError) to every
        reader and writer. EntityConflictError (nothing removed) if the run is pending or
        running; False if there is no such run.
        """
        raise NotImplementedError(f"{type(self).__name__} cannot delete runs")

    # --- draining (optional) ---

    async def drain_generation(self) -> int:
        """A number that `request_drain` increases; workers that see it change finish and exit."""
        return 0

    async def request_drain(self) -> int:
        """Ask every running worker to finish its in-flight work and exit; returns the new generation."""
        raise NotImplementedError(f"{type(self).__name__} cannot drain workers")

    # --- repair (optional) ---

    async def repair_run(self, run_id: str) -> bool:
        """Rebuild the run's materialized entities (and indexes) from its event log.

        For operators (`wf doctor --fix`) after a view was damaged or edited. Returns False
        if there is no such run. NotImplementedError for a World that cannot repair.
        """
        raise NotImplementedError(f"{type(self).__name__} cannot repair runs")
