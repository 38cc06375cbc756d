"""The event model: event types, statuses and the entities materialized from a run's event log.

Everything here is plain data. Payload fields (`input`, `output`, `payload`, `metadata`,
`result`) hold *serialized* values: the JSON-compatible tagged form produced by
`wf.runtime.serialization`, which Worlds store verbatim and never interpret.
Timestamps are aware UTC datetimes.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Generic, Self, TypeVar

T = TypeVar("T")


class EventType(StrEnum):
    RUN_CREATED = "run_created"
    RUN_STARTED = "run_started"
    RUN_COMPLETED = "run_completed"
    RUN_FAILED = "run_failed"
    RUN_CANCELLED = "run_cancelled"
    STEP_CREATED = "step_created"
    STEP_STARTED = "step_started"
    STEP_COMPLETED = "step_completed"
    STEP_RETRYING = "step_retrying"
    STEP_FAILED = "step_failed"
    HOOK_CREATED = "hook_created"
    HOOK_RECEIVED = "hook_received"
    HOOK_DISPOSED = "hook_disposed"
    HOOK_CONFLICT = "hook_conflict"
    WAIT_CREATED = "wait_created"
    WAIT_COMPLETED = "wait_completed"
    #: A decision the code recorded so replays take it again (`wf.patched`): {kind, name}.
    MARKER_RECORDED = "marker_recorded"


RUN_EVENTS = frozenset(
    {
        EventType.RUN_CREATED,
        EventType.RUN_STARTED,
        EventType.RUN_COMPLETED,
        EventType.RUN_FAILED,
        EventType.RUN_CANCELLED,
    }
)
STEP_EVENTS = frozenset(
    {
        EventType.STEP_CREATED,
        EventType.STEP_STARTED,
        EventType.STEP_COMPLETED,
        EventType.STEP_RETRYING,
        EventType.STEP_FAILED,
    }
)
HOOK_EVENTS = frozenset(
    {
        EventType.HOOK_CREATED,
        EventType.HOOK_RECEIVED,
        EventType.HOOK_DISPOSED,
        EventType.HOOK_CONFLICT,
    }
)
WAIT_EVENTS = frozenset({EventType.WAIT_CREATED, EventType.WAIT_COMPLETED})


class RunStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in _TERMINAL_RUN


_TERMINAL_RUN = frozenset({RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELLED})


class StepStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"

    @property
    def terminal(self) -> bool:
        return self in (StepStatus.COMPLETED, StepStatus.FAILED)


class HookStatus(StrEnum):
    ACTIVE = "active"
    DISPOSED = "disposed"


class WaitStatus(StrEnum):
    WAITING = "waiting"
    COMPLETED = "completed"
    #: The run ended before the wait elapsed.
    DISPOSED = "disposed"


def utcnow() -> datetime:
    """The current time as an aware UTC datetime."""
    return datetime.now(UTC)


def _dt_out(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _dt_in(value: Any) -> datetime | None:
    if value is None or isinstance(value, datetime):
        return value
    return datetime.fromisoformat(value)


_FIELD_NAMES: dict[type, tuple[str, ...]] = {}


class _Record:
    """Shared dict conversion for the frozen dataclasses below."""

    _datetime_fields: tuple[str, ...] = ()
    _enum_fields: dict[str, type] = {}

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            if f.name in self._datetime_fields:
                value = _dt_out(value)
            elif isinstance(value, StrEnum):
                value = value.value
            out[f.name] = value
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self:
        names = {f.name for f in fields(cls)}  # type: ignore[arg-type]
        kwargs = {k: v for k, v in data.items() if k in names}
        for name in cls._datetime_fields:
            if name in kwargs:
                kwargs[name] = _dt_in(kwargs[name])
        for name, enum in cls._enum_fields.items():
            if name in kwargs and kwargs[name] is not None:
                kwargs[name] = enum(kwargs[name])
        return cls(**kwargs)

    def evolve(self, **changes: Any) -> Self:
        """A copy with some fields changed (what `dataclasses.replace` does, for these records,
        which have no __post_init__, at a third of its cost: the fold calls this per event)."""
        cls = type(self)
        names = _FIELD_NAMES.get(cls)
        if names is None:
            names = _FIELD_NAMES[cls] = tuple(f.name for f in fields(cls))  # type: ignore[arg-type]
        new = object.__new__(cls)
        setter = object.__setattr__
        get = changes.pop
        for name in names:
            setter(new, name, get(name) if name in changes else getattr(self, name))
        if changes:
            raise TypeError(f"{cls.__name__} has no field(s) {', '.join(sorted(changes))}")
        return new


@dataclass(frozen=True, slots=True)
class Event(_Record):
    """One immutable entry of a run's event log.

    `seq` is the event's 0-based position in its run's log, assigned by the World.
    `correlation_id` names the step, hook or wait the event belongs to.
    """

    run_id: str
    event_type: EventType
    correlation_id: str | None = None
    data: dict[str, Any] = field(default_factory=dict)
    event_id: str = ""
    seq: int = -1
    created_at: datetime | None = None

    _datetime_fields = ("created_at",)
    _enum_fields = {"event_type": EventType}


@dataclass(frozen=True, slots=True)
class Run(_Record):
    run_id: str
    workflow_name: str
    status: RunStatus = RunStatus.PENDING
    input: Any = None
    output: Any = None
    error: dict[str, Any] | None = None
    created_at: datetime | None = None
    started_at: datetime | None = None
    completed_at: datetime | None = None
    updated_at: datetime | None = None
    #: Free-form run attributes set at creation: idempotency_key, parent run, forked_from...
    attributes: dict[str, Any] = field(default_factory=dict)
    #: Number of events in the run's log (the next event's `seq`).
    event_count: int = 0

    _datetime_fields = ("created_at", "started_at", "completed_at", "updated_at")
    _enum_fields = {"status": RunStatus}


@dataclass(frozen=True, slots=True)
class Step(_Record):
    run_id: str
    step_id: str
    step_name: str
    status: StepStatus = StepStatus.PENDING
    input: Any = None
    output: Any = None
    error: dict[str, Any] | None = None
    attempt: int = 0
    retry_after: datetime | None = None
    created_at: datetime | None = None
    started_at: datetime | None = None
    completed_at: datetime | None = None
    updated_at: datetime | None = None

    _datetime_fields = ("retry_after", "created_at", "started_at", "completed_at", "updated_at")
    _enum_fields = {"status": StepStatus}


@dataclass(frozen=True, slots=True)
class Hook(_Record):
    run_id: str
    hook_id: str
    token: str
    status: HookStatus = HookStatus.ACTIVE
    metadata: Any = None
    received_count: int = 0
    created_at: datetime | None = None
    disposed_at: datetime | None = None

    _datetime_fields = ("created_at", "disposed_at")
    _enum_fields = {"status": HookStatus}


@dataclass(frozen=True, slots=True)
class Wait(_Record):
    run_id: str
    wait_id: str
    resume_at: datetime
    status: WaitStatus = WaitStatus.WAITING
    created_at: datetime | None = None
    completed_at: datetime | None = None

    _datetime_fields = ("resume_at", "created_at", "completed_at")
    _enum_fields = {"status": WaitStatus}


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    """One page of a listing; pass `next_cursor` back to get the next one (None: no more)."""

    data: list[T]
    next_cursor: str | None = None
