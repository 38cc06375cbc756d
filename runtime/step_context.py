"""What step code can ask of the worker running it: its metadata and its run's output streams."""

from __future__ import annotations

import contextvars
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from .workflow_context import WorkflowMetadata

if TYPE_CHECKING:
    from .streams import StreamWriter


@dataclass(frozen=True, slots=True)
class StepMetadata:
    step_id: str
    step_name: str
    attempt: int
    started_at: datetime | None


@dataclass(slots=True)
class StepContext:
    run_id: str
    step: StepMetadata
    workflow: WorkflowMetadata
    #: Opens a writer for a stream name; set by the executor.
    open_writer: Any
    #: The World the step's worker uses.
    world: Any = None
    writers: dict[str | None, StreamWriter] = field(default_factory=dict)


_current: contextvars.ContextVar[StepContext | None] = contextvars.ContextVar("wf_step", default=None)


def current_step() -> StepContext | None:
    """The context of the step running in this task or thread, or None."""
    return _current.get()


def set_current_step(ctx: StepContext | None) -> contextvars.Token[StepContext | None]:
    return _current.set(ctx)


def reset_current_step(token: contextvars.Token[StepContext | None]) -> None:
    _current.reset(token)


def get_step_metadata() -> StepMetadata:
    """step_id, step_name, attempt (1-based) and started_at of the running step."""
    ctx = current_step()
    if ctx is None:
        raise RuntimeError("wf.get_step_metadata() can only be called inside a step")
    return ctx.step


def get_writable(namespace: str | None = None) -> StreamWriter:
    """A writer for the run's stream `namespace` (default stream when None); write() and close() are plain calls."""
    ctx = current_step()
    if ctx is None:
        raise RuntimeError("wf.get_writable() can only be called inside a step")
    writer = ctx.writers.get(namespace)
    if writer is None:
        writer = ctx.open_writer(namespace)
        ctx.writers[namespace] = writer
    return writer
