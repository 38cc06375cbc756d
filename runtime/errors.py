"""Error types: `WorldError` for storage outcomes the runtime relies on, `WorkflowError` for users."""

from __future__ import annotations

from datetime import datetime


class WfError(Exception):
    """Root of every error wf raises on purpose."""


# --- World (storage) errors: each carries an HTTP-like status the runtime branches on ---


class WorldError(WfError):
    """A World refused an operation; `status` says why in HTTP terms."""

    status: int = 500


class EntityConflictError(WorldError):
    """409: the transition was already made (by someone else) or is illegal now."""

    status = 409


class RunExpiredError(WorldError):
    """410: the run is over; nothing more may be created on it."""

    status = 410


class NotFoundError(WorldError):
    """404: no such run, step, hook, message or stream."""

    status = 404


class TooEarlyError(WorldError):
    """425: the step may not start again before `retry_after`."""

    status = 425

    def __init__(self, message: str, retry_after: datetime) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class CorruptDataError(WorldError):
    """A file in the data directory cannot be read as what it should hold."""

    status = 500

    def __init__(self, message: str, path: str | None = None) -> None:
        super().__init__(message)
        self.path = path


class InvalidIdError(WorldError, ValueError):
    """An id or name that would be unsafe or meaningless as a storage key."""

    status = 400


class StorageUnavailableError(WorldError):
    """503: the storage cannot be reached or written right now (I/O error, full or read-only
    disk, lost database connection). Retrying later may succeed; nothing was half-written."""

    status = 503


class WorldConfigError(WorldError, ValueError):
    """A World URL or setting that names no usable World (bad scheme, missing extra, bad factory)."""

    status = 400


class DataDirError(WorldError):
    """The data directory is unusable: another format, unreadable, not a directory."""

    status = 500


# --- Errors users see from the programming model ---


class WorkflowError(WfError):
    """Base of the errors raised to workflow authors and callers."""


class SerializationError(WorkflowError, TypeError):
    """A value cannot be turned into (or back from) wf's tagged JSON."""


class FatalError(WorkflowError):
    """Raise in a step to fail it at once, without retries."""


class RetryableError(WorkflowError):
    """Raise in a step to retry it after `retry_after` (seconds, duration string, timedelta or datetime)."""

    def __init__(self, message: str = "", retry_after: object = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class StepFailedError(WorkflowError):
    """A step failed for good; raised in the workflow where it was awaited.

    `error_type`, `error_message` and `error_traceback` carry the original error's.
    """

    def __init__(self, step_name: str, error_type: str, error_message: str, error_traceback: str = "") -> None:
        super().__init__(f"step {step_name} failed: {error_type}: {error_message}")
        self.step_name = step_name
        self.error_type = error_type
        self.error_message = error_message
        self.error_traceback = error_traceback


class HookNotFoundError(WorkflowError, LookupError):
    """No live hook holds this token."""


class HookConflictError(WorkflowError):
    """The hook's token is held by another live run."""


class WorkflowNotFoundError(WorkflowError, LookupError):
    """No workflow of that name is registered (imported) in this process."""


class RunNotFoundError(WorkflowError, LookupError):
    """No run with that id."""


class WorkflowRunFailedError(WorkflowError):
    """The run ended failed; `error` holds the recorded {type, message, traceback}."""

    def __init__(self, run_id: str, error: dict | None) -> None:
        error = error or {}
        self.run_id = run_id
        self.error = error
        self.error_type = str(error.get("type", "Error"))
        self.error_message = str(error.get("message", ""))
        self.error_traceback = str(error.get("traceback", ""))
        super().__init__(f"run {run_id} failed: {self.error_type}: {self.error_message}")


class WorkflowRunCancelledError(WorkflowError):
    """The run was cancelled."""

    def __init__(self, run_id: str) -> None:
        super().__init__(f"run {run_id} was cancelled")
        self.run_id = run_id


class ReplayDivergenceError(WorkflowError):
    """The workflow code no longer matches the run's event log at `position`."""

    def __init__(self, position: int, recorded: str, code: str, location: str | None = None) -> None:
        where = f" (at {location})" if location else ""
        super().__init__(
            f"replay diverged at event {position}: the log holds {recorded}, but the code did {code}{where}. "
            f"Run `wf replay <run-id>` to debug, or guard the change with wf.patched()."
        )
        self.position = position
        self.recorded = recorded
        self.code = code
        self.location = location


class NonDeterminismError(WorkflowError):
    """Workflow code did something that cannot be replayed (wall clock, threads, I/O)."""
