"""The World contract's flow-control parts: concurrency slots, rate windows and schedule records.

A World that provides them declares the capabilities "limits" (`world.limits`) and
"schedules" (`world.schedules`); "prune" (`World.delete_run`) is declared in `world.py`.
The runtime (`flow_control.py`, `schedules.py`, `retention.py`) builds `@wf.step(concurrency=,
rate_limit=)`, `@wf.workflow(concurrency=)`, `wf.schedule` and `wf prune` on these alone, and
the conformance suite (`wf.world_testing.contract_flow_control`) checks them on every World.

Keys, holders and schedule ids are opaque strings chosen by the runtime (at most 512
characters); a World hashes them where it must (file names). Times are the World's clock.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

#: Longest key, holder or schedule id, in characters (see the module docs).
MAX_KEY = 512


def check_key(value: object, what: str) -> str:
    """A slot or rate key, a holder or a schedule id: a non-empty string of at most MAX_KEY characters."""
    if not isinstance(value, str) or not value or len(value) > MAX_KEY:
        raise ValueError(f"a {what} must be a non-empty string of at most {MAX_KEY} characters")
    return value


def check_limit(value: object, what: str) -> int:
    """A concurrency or rate limit: an int >= 1 (not a bool)."""
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"a {what} must be an int >= 1, got {value!r}")
    return value


@dataclass(frozen=True, slots=True)
class SlotEntry:
    """A holder of a slot, or a waiter for one, as `Limits.slots` shows it."""

    holder: str
    #: What the runtime said about it when it asked (run id, step id, the message that waits...).
    info: dict[str, Any]
    #: When it took the slot (a holder) or first asked for one (a waiter).
    since: datetime
    #: A waiter's place in line: smaller first (then `since`); "" for holders.
    order: str = ""


@dataclass(frozen=True, slots=True)
class SlotState:
    """One key's slots: its limit (as last asked), holders, and waiters in the order they are served."""

    key: str
    limit: int
    holders: list[SlotEntry] = field(default_factory=list)
    waiters: list[SlotEntry] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class RateDecision:
    """What `Limits.rate` decided: admitted now (`at` is the start recorded), or not before `at`."""

    admitted: bool
    at: datetime


class Limits(ABC):
    """Counting semaphores and sliding-window rate limits shared by every process of the World."""

    @abstractmethod
    async def acquire(
        self,
        key: str,
        limit: int,
        *,
        holder: str,
        lease: float | None,
        order: str = "",
        info: dict[str, Any] | None = None,
        wait_lease: float = 30.0,
    ) -> bool:
        """Take one of the `limit` slots of `key` for `holder`; True if it holds one now.

        Idempotent: a holder that holds a slot of `key` keeps it (its lease renewed, its
        process now the caller's). Before counting, holders whose lease ran out are freed:
        with `lease` seconds, a slot is freed when that time passes without `extend` or,
        where the World can tell, at once when the process that took it dies; with
        `lease=None` it is held until `release`, whoever dies. Slots are served in order:
        the caller gets one only if fewer than the free slots are wanted by waiters that
        come before it (smaller `order`, then earlier); else it is recorded (or kept) as a
        waiter, with `info`, for `wait_lease` seconds (or until its process dies), and False
        is returned. A holder is never counted twice; `limit` < 1 raises ValueError.
        """

    @abstractmethod
    async def release(self, key: str, holder: str) -> list[SlotEntry]:
        """Free `holder`'s slot of `key` and forget it as a waiter (idempotent).

        Returns the waiters now first in line, in order, as many as there are free slots (at
        least one if anyone waits), so the caller can wake them.
        """

    @abstractmethod
    async def extend(self, key: str, holder: str, *, lease: float) -> bool:
        """Renew a held slot's lease for `lease` seconds; False if `holder` no longer holds it."""

    @abstractmethod
    async def slots(self, key: str | None = None) -> list[SlotState]:
        """The live holders and waiters of `key` (or of every key with any), expired ones left out."""

    @abstractmethod
    async def rate(self, key: str, limit: int, window: float) -> RateDecision:
        """Admit one start under "at most `limit` starts of `key` in any `window` seconds".

        Atomic across processes: admitted, the start is recorded at `at` (now); refused,
        nothing is recorded and `at` is the earliest time a start could be admitted.
        """


@dataclass(frozen=True, slots=True)
class ScheduleRecord:
    """A schedule as stored: the runtime's `spec` (opaque to the World) and its firing cursor."""

    schedule_id: str
    #: workflow name, serialized input, cron or every, tz, catchup (see `runtime/schedules.py`).
    spec: dict[str, Any]
    #: The next slot to fire: slots before it have been fired (or skipped).
    next_at: datetime
    paused: bool = False
    created_at: datetime | None = None
    updated_at: datetime | None = None


class Schedules(ABC):
    """Durable schedule records; workers fire them (`runtime/schedules.py`)."""

    @abstractmethod
    async def put(self, schedule_id: str, spec: dict[str, Any], *, next_at: datetime) -> ScheduleRecord:
        """Create the schedule, or replace its spec and cursor (keeping `paused` and `created_at`)."""

    @abstractmethod
    async def get(self, schedule_id: str) -> ScheduleRecord:
        """The schedule. NotFoundError if there is none."""

    @abstractmethod
    async def list(self) -> list[ScheduleRecord]:
        """Every schedule, by id."""

    @abstractmethod
    async def delete(self, schedule_id: str) -> bool:
        """Remove the schedule; False if there was none."""

    @abstractmethod
    async def set_paused(self, schedule_id: str, paused: bool) -> ScheduleRecord:
        """Pause or resume; NotFoundError if there is none."""

    @abstractmethod
    async def advance(self, schedule_id: str, *, expected: datetime, to: datetime) -> bool:
        """Move the cursor from `expected` to `to` atomically; False (nothing changed) if the
        cursor is not `expected` any more (another worker moved it) or the schedule is gone."""
