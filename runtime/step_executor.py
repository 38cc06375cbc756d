"""Running one attempt of a step and turning what happened into the event to record."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from . import telemetry
from .calls import error_info, split_input
from .durations import deadline
from .entities import Event, EventType, utcnow
from .errors import FatalError, RetryableError, SerializationError
from .registry import StepFunction
from .serialization import serialize
from .step_context import StepContext, StepMetadata, reset_current_step, set_current_step
from .streams import DEFAULT_STREAM, StreamWriter
from .workflow_context import WorkflowMetadata
from .world import World

#: Backoff after an ordinary exception: 1 s, 2 s, 4 s, ... capped here.
MAX_BACKOFF = timedelta(seconds=60)


def backoff(attempt: int) -> timedelta:
    """Delay before the retry that follows failed attempt `attempt` (1-based)."""
    return min(timedelta(seconds=2 ** (attempt - 1)), MAX_BACKOFF)


@dataclass(frozen=True, slots=True)
class AttemptOutcome:
    """The event to record after an attempt: step_completed, step_retrying or step_failed."""

    event: Event
    retry_at: datetime | None = None


class StepExecutor:
    """Runs step functions: async ones on the worker's loop, sync ones in a thread pool."""

    def __init__(self, world: World, *, threads: int = 64) -> None:
        self.world = world
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="wf-step")

    def shutdown(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    async def attempt(
        self,
        step: StepFunction,
        *,
        run_id: str,
        step_id: str,
        step_input: Any,
        attempt: int,
        started_at: datetime | None,
        workflow: WorkflowMetadata,
    ) -> AttemptOutcome:
        """Run one attempt; never raises for the step's own errors (only for worker shutdown)."""
        loop = asyncio.get_running_loop()

        def open_writer(namespace: str | None) -> StreamWriter:
            return StreamWriter(self.world, run_id, namespace or DEFAULT_STREAM, loop)

        ctx = StepContext(
            run_id=run_id,
            step=StepMetadata(step_id, step.name, attempt, started_at),
            workflow=workflow,
            open_writer=open_writer,
            world=self.world,
        )

        def event(event_type: EventType, data: dict[str, Any]) -> Event:
            return Event(run_id=run_id, event_type=event_type, correlation_id=step_id, data=data)

        # OpenTelemetry: the attempt's span, current inside the step (ended when its outcome is recorded).
        otel = telemetry.start_attempt(run_id, step_id, step.name, attempt, workflow.workflow_name) if telemetry.ON \
            else None
        try:
            args, kwargs = split_input(step_input)
            if step.is_async:
                token = set_current_step(ctx)
                try:
                    if otel is None:
                        result = await step.fn(*args, **kwargs)
                    else:
                        result = await telemetry.run_async(otel, step.fn, args, kwargs)
                finally:
                    reset_current_step(token)
            else:
                context = contextvars.copy_context()
                context.run(set_current_step, ctx)
                fn = step.fn if otel is None else telemetry.in_attempt(otel, step.fn)
                result = await loop.run_in_executor(self._pool, lambda: context.run(fn, *args, **kwargs))
            for writer in ctx.writers.values():
                await writer.flush()
            output = serialize(result, where=f"the return value of step {step.name}")
        except (asyncio.CancelledError, KeyboardInterrupt, SystemExit):
            raise
        except FatalError as exc:
            return AttemptOutcome(event(EventType.STEP_FAILED, {"error": error_info(exc)}))
        except SerializationError as exc:
            return AttemptOutcome(event(EventType.STEP_FAILED, {"error": error_info(exc)}))
        except Exception as exc:  # noqa: BLE001 - any other error of user code is retried
            await _flush_quietly(ctx)
            if attempt >= step.max_attempts:
                return AttemptOutcome(event(EventType.STEP_FAILED, {"error": error_info(exc)}))
            now = utcnow()
            retry_at = now + backoff(attempt)
            if isinstance(exc, RetryableError) and exc.retry_after is not None:
                retry_at = deadline(exc.retry_after, now)  # type: ignore[arg-type]
            data = {"error": error_info(exc), "retry_after": retry_at.isoformat()}
            return AttemptOutcome(event(EventType.STEP_RETRYING, data), retry_at)
        return AttemptOutcome(event(EventType.STEP_COMPLETED, {"result": output}))


async def _flush_quietly(ctx: StepContext) -> None:
    for writer in ctx.writers.values():
        with contextlib.suppress(Exception):  # the step's own error is the one to report
            await writer.flush()


def exhausted_error(step_name: str, attempts: int) -> dict[str, Any]:
    """The error recorded when a step was redelivered after a crash with no attempts left."""
    return {
        "type": "StepAttemptsExhausted",
        "message": f"step {step_name} was interrupted during its last attempt ({attempts} of {attempts}); "
        "the worker running it stopped before it finished",
        "traceback": "",
    }
