"""What workflow code can ask of its run: the deterministic clock, randomness, sleep, hooks, metadata."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from .deterministic_loop import DeterministicLoop
from .durations import deadline

if TYPE_CHECKING:
    from .hooks import Hook
    from .replay import WorkflowInstance


def current_instance() -> WorkflowInstance | None:
    """The workflow instance whose code is running on this thread, or None outside workflows."""
    loop = asyncio.events._get_running_loop()
    if isinstance(loop, DeterministicLoop):
        return loop.owner  # type: ignore[attr-defined, no-any-return]
    return None


def _require_instance(what: str) -> WorkflowInstance:
    instance = current_instance()
    if instance is None:
        raise RuntimeError(f"wf.{what}() can only be called inside a workflow")
    return instance


def now() -> datetime:
    """The workflow clock (aware UTC): the time of the last event the run consumed."""
    return _require_instance("now").now()


def random() -> float:
    """A float in [0, 1) from the run's own seeded generator: the same on every replay."""
    return _require_instance("random").rng.random()


def uuid4() -> uuid.UUID:
    """A random UUID from the run's seeded generator: the same on every replay."""
    return uuid.UUID(int=_require_instance("uuid4").rng.getrandbits(128), version=4)


async def sleep(duration: int | float | str | timedelta | datetime) -> None:
    """Durable sleep: seconds, "500ms"/"10s"/"5m"/"2h"/"1d", a timedelta, or an aware datetime deadline."""
    instance = _require_instance("sleep")
    current = instance.now()
    seconds = (deadline(duration, current) - current).total_seconds()
    await asyncio.sleep(max(seconds, 0.0))


def create_hook(token: str | None = None, metadata: Any = None) -> Hook:
    """A hook external code can send payloads to with `wf.resume_hook(token, payload)`.

    `await hook` gives the next payload; `async for payload in hook` all of them in order.
    Without a token an unguessable one (128+ random bits) is generated.
    """
    return _require_instance("create_hook").create_hook(token, metadata)


def patched(patch_id: str) -> bool:
    """True in runs that reach this point on code that has the patch; False in older runs' replays."""
    return _require_instance("patched").patched(patch_id)


@dataclass(frozen=True, slots=True)
class WorkflowMetadata:
    run_id: str
    workflow_name: str
    started_at: datetime | None


def get_workflow_metadata() -> WorkflowMetadata:
    """The current run's id, workflow name and start time (inside a workflow or one of its steps)."""
    instance = current_instance()
    if instance is not None:
        return instance.metadata()
    from .step_context import current_step

    ctx = current_step()
    if ctx is None:
        raise RuntimeError("wf.get_workflow_metadata() can only be called inside a workflow or a step")
    return ctx.workflow
