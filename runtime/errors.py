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
