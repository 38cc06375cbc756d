"""The local World's run handles: one open log descriptor and cached state per run, per-run
file locks across processes, and reading a log's new lines into the cached view."""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from ulid import ULID

from ..runtime.entities import (
    Event,
    EventType,
    RunStatus,
)
from ..runtime.errors import (
    CorruptDataError,
)
from ..runtime.ids import new_ulid, validate_id
from ..runtime.state_machine import RunState, apply
from .event_log import committed_lines, parse_line, read_fd

log = logging.getLogger("wf.world_local")


E = EventType
#: Open run handles (one log descriptor each) kept per World before the least recent is closed.
MAX_OPEN_RUNS = 256
#: Folds of runs whose handle was closed, kept per World so that reopening a log reads only
#: what it grew by (a worker with more runs in flight than open handles would refold each time).
MAX_KEPT_FOLDS = 8192
#: How long a writer waits for another run's lock to tell whether a hook token is stale.
TOKEN_CHECK_TIMEOUT = 2.0

_TERMINAL_RUN_EVENTS = frozenset({E.RUN_COMPLETED, E.RUN_FAILED, E.RUN_CANCELLED})
_END_STATUS = {E.RUN_COMPLETED.value: RunStatus.COMPLETED, E.RUN_FAILED.value: RunStatus.FAILED,
               E.RUN_CANCELLED.value: RunStatus.CANCELLED}
_KIND = {E.STEP_CREATED: "steps", E.HOOK_CREATED: "hooks", E.WAIT_CREATED: "waits"}


def run_channel(run_id: str) -> str:
    """The Notifier channel woken after every commit to a run's log."""
    return f"run:{run_id}"


def run_end_channel(run_id: str) -> str:
    """The Notifier channel woken when a run ends."""
    return f"run-end:{run_id}"


@dataclass(slots=True)
class LogView:
    """What this process knows of a run's log: its fold, and how much of the file that covers."""

    state: RunState = field(default_factory=RunState)
    #: (kind, id) -> seq of the entity's *_created event, for creation order.
    created_seq: dict[tuple[str, str], int] = field(default_factory=dict)
    size: int = 0
    count: int = 0
    last_event_id: str = ""
    #: The inode of the log folded (a log replaced by another file is folded anew).
    ino: int = 0
    #: The time of the last event (events are never dated before the one they follow).
    last_at: datetime | None = None


class _RunHandle:
    __slots__ = ("discarded", "fd", "lock", "log_path", "new_run_status", "pending_moves", "run_dir", "run_id", "users",
                 "view", "views_dirty")

    def __init__(self, run_id: str, run_dir: str, fd: int) -> None:
        self.run_id = run_id
        self.run_dir = run_dir
        self.log_path = f"{run_dir}/events.jsonl"
        self.fd = fd
        self.lock = threading.Lock()
        self.view: LogView | None = None
        self.users = 0
        self.views_dirty = False
        #: Status-marker moves of commits whose sync is deferred: (log size they need durable, old, new).
        self.pending_moves: list[tuple[int, RunStatus | None, RunStatus]] = []
        #: The status of a new run whose first commit's folder syncs are left to the caller.
        self.new_run_status: RunStatus | None = None
        #: Its log was removed (a run whose creation failed): closed once its last user lets go.
        self.discarded = False


class _LockTimeout(Exception):
    pass


@dataclass(slots=True)
class _Changes:
    """What one commit touched, for the view updates after it."""

    #: (token, hook_id) of hooks disposed by the commit.
    released: list[tuple[str, str]] = field(default_factory=list)
    #: (token, hook_id) claimed in the token index by this call (undone if it aborts).
    claimed: list[tuple[str, str]] = field(default_factory=list)
    #: Whether the lines reached the log (then the claims stand even if fdatasync fails).
    written: bool = False


def _apply(view: LogView, event: Event, path: str | Path) -> None:
    try:
        apply(view.state, event)
    except (AssertionError, KeyError, TypeError, ValueError) as exc:
        raise CorruptDataError(
            f"{path}: line {event.seq + 1} ({event.event_type}) does not follow from the lines before it ({exc!r})",
            str(path),
        ) from exc
    kind = _KIND.get(event.event_type)
    if kind is not None:
        view.created_seq[(kind, event.correlation_id or "")] = event.seq
    view.count += 1
    view.last_event_id = event.event_id
    if event.created_at is not None:
        view.last_at = event.created_at


def _event_id_after(last: str) -> str:
    """A fresh ULID greater than `last` (ids are monotonic per process; this keeps them so per
    run when several processes write one log within the same millisecond)."""
    event_id = new_ulid()
    if event_id > last:
        return event_id
    try:
        return str(ULID.from_int(int(ULID.from_str(last)) + 1))
    except ValueError:  # not a ULID (written by something else): ours sort after it anyway or not at all
        return event_id


def _creates_run(event: Event) -> bool:
    return event.event_type in (E.RUN_CREATED, E.RUN_STARTED) and bool(event.data.get("workflow_name"))


class RunHandles:
    """Open handles of recently used runs, and their locks (a part of `RunStore`)."""

    def run_dir(self, run_id: str) -> Path:
        return self.runs_dir / validate_id(run_id, "run id")

    def _acquire_handle(self, run_id: str, *, create: bool) -> _RunHandle | None:
        with self._handles_lock:
            handle = self._handles.get(run_id)
            if handle is not None:
                handle.users += 1
                self._handles.move_to_end(run_id)
                return handle
        run_dir = f"{self.runs_str}/{run_id}"
        log_path = f"{run_dir}/events.jsonl"
        try:
            fd = os.open(log_path, os.O_RDWR | os.O_APPEND | os.O_CLOEXEC)
        except FileNotFoundError:
            if not create:
                return None
            for attempt in range(3):
                made = False
                with contextlib.suppress(FileExistsError):
                    os.mkdir(run_dir)
                    made = True
                try:
                    fd = os.open(log_path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
                    break
                except FileNotFoundError:  # an empty run folder removed meanwhile (see _drop_if_empty)
                    if attempt == 2:
                        raise
                except OSError:
                    if made:  # leave no empty run folder behind (a full disk)
                        with contextlib.suppress(OSError):
                            os.rmdir(run_dir)
                    raise
        with self._handles_lock:
            handle = self._handles.get(run_id)
            if handle is not None:
                os.close(fd)
            else:
                handle = self._handles[run_id] = _RunHandle(run_id, run_dir, fd)
                handle.view = self._kept_folds.pop(run_id, None)
            handle.users += 1  # before evicting: the new handle is in use, never one to close
            self._evict()
            return handle

    def _evict(self) -> None:
        # Called with _handles_lock held: close the least recently used idle handles.
        excess = len(self._handles) - MAX_OPEN_RUNS
        if excess <= 0:
            return
        idle = []
        for run_id, handle in self._handles.items():  # oldest first; stop once enough are found
            if handle.users == 0:
                idle.append(run_id)
                if len(idle) == excess:
                    break
        for run_id in idle:
            handle = self._handles.pop(run_id)
            os.close(handle.fd)
            if handle.view is not None:
                self._kept_folds[run_id] = handle.view
                if len(self._kept_folds) > MAX_KEPT_FOLDS:
                    self._kept_folds.popitem(last=False)

    def _release_handle(self, handle: _RunHandle) -> None:
        with self._handles_lock:
            handle.users -= 1
            if handle.discarded and handle.users == 0:
                with contextlib.suppress(OSError):
                    os.close(handle.fd)

    def _discard_handle(self, handle: _RunHandle) -> None:
        """Forget a handle whose log is gone (its fd is closed by the last user)."""
        with self._handles_lock:
            if self._handles.get(handle.run_id) is handle:
                del self._handles[handle.run_id]
            self._kept_folds.pop(handle.run_id, None)
            handle.discarded = True
            handle.view = None

    def _stale(self, handle: _RunHandle) -> bool:
        """Whether the handle's log is no longer the file at its path (removed after a failed creation)."""
        try:
            return os.stat(handle.log_path).st_ino != os.fstat(handle.fd).st_ino
        except FileNotFoundError:
            return True

    def _drop_if_empty(self, handle: _RunHandle) -> bool:
        """With the run's lock held: remove the run's log, folder and status markers if its log holds
        no event (a creation that failed: a full disk, a value that cannot be encoded). Whether it did."""
        try:
            if os.fstat(handle.fd).st_size > 0 or self._stale(handle):
                return False
            os.unlink(handle.log_path)
        except OSError:
            return False
        self._discard_handle(handle)
        with contextlib.suppress(OSError):
            self.index.set_only(handle.run_id, None)
        for name in (".run.json.spare", "run.json"):
            with contextlib.suppress(OSError):
                os.unlink(f"{handle.run_dir}/{name}")
        with contextlib.suppress(OSError):
            os.rmdir(handle.run_dir)
        return True

    @contextlib.contextmanager
    def locked(self, run_id: str, *, create: bool = False, timeout: float | None = None) -> Iterator[_RunHandle | None]:
        """Hold the run's lock (None inside if the run has no log and `create` is false)."""
        handle = self._acquire_handle(run_id, create=create)
        if handle is None:
            yield None
            return
        try:
            if not handle.lock.acquire(timeout=-1 if timeout is None else timeout):
                raise _LockTimeout(run_id)
            try:
                self._flock(handle.fd, timeout)
                try:
                    yield handle
                finally:
                    fcntl.flock(handle.fd, fcntl.LOCK_UN)
            finally:
                handle.lock.release()
        finally:
            self._release_handle(handle)

    @staticmethod
    def _flock(fd: int, timeout: float | None) -> None:
        if timeout is None:
            fcntl.flock(fd, fcntl.LOCK_EX)
            return
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise _LockTimeout() from None
                time.sleep(0.001)

    def refresh(self, handle: _RunHandle) -> LogView:
        """The run's state as of its whole committed log (call with the run's lock held).

        Reads only what other writers appended since this process last looked, and cuts
        away a torn tail. CorruptDataError naming the file and line for a bad line.
        """
        stat = os.fstat(handle.fd)
        size = stat.st_size
        view = handle.view
        if view is not None and size == view.size and view.ino == stat.st_ino:
            return view
        if view is None or size < view.size or view.ino != stat.st_ino:
            view = LogView(ino=stat.st_ino)
        handle.view = None  # until fully folded
        base = view.size
        data = read_fd(handle.fd, base, size)
        spans, good = committed_lines(data)
        for span in spans:
            event = parse_line(data, span, handle.log_path, view.count + 1)
            if event.seq != view.count:
                raise CorruptDataError(
                    f"{handle.log_path}: line {view.count + 1} has seq {event.seq}, expected {view.count}",
                    str(handle.log_path),
                )
            _apply(view, event, handle.log_path)
        view.size = base + good
        if view.size < size:  # a crash tore the last write: it was never committed
            os.ftruncate(handle.fd, view.size)
        handle.view = view
        return view
