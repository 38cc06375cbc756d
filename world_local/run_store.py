"""The write path of the local World: per-run locks, the cached run state, and commits.

Layout of a data directory (see also `views.py`, `tokens.py`, `event_log.py`):

    wf-data.json                        {"format": "wf-local", "version": 1}
    runs/<run_id>/events.jsonl          the run's event log, append-only: the source of truth
    runs/<run_id>/run.json              the run as folded from its log (a view of it)
    index/status/<status>/<run_id>      empty markers: runs by status
    tokens/<sha256(token)>.json         live hook tokens, unique across runs
    queue/, streams/, notify/           owned by LocalQueue, LocalStreams, Notifier

Locking: a run's writers hold a `threading.Lock` (threads of this process) and an
exclusive `flock` on the run's log file itself (other processes, and other World objects
of this process, which open their own descriptor); no separate `.lock` file is needed.
Readers of the log take no lock (they ignore a torn tail); readers of view files take a
shared `flock` on the file for the duration of one read (see `views.py`).

A commit (`commit`): under the lock, bring the cached `RunState` up to date (cheap: the
cache remembers how many bytes of the log it has folded; only bytes added since, by other
processes, are read), plan and apply the events, append all their lines with one
`write` (+ `fdatasync` when fsync is on): that is the commit point. Event ids are ULIDs,
kept increasing along the log even when several processes write it. Then rewrite the
changed views (not synced: they are repairable from the log, except when the run ends),
move the status markers, release the tokens of disposed hooks, and notify `run:<id>`.

A run is indexed with its new status *before* its first events are committed, so that
`recover()` finds every run whose views a crash may have left behind by looking at the
pending/running markers alone, never scanning all runs.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import orjson
from ulid import ULID

from ..runtime.entities import (
    HOOK_EVENTS,
    STEP_EVENTS,
    WAIT_EVENTS,
    Event,
    EventType,
    Hook,
    HookStatus,
    Run,
    RunStatus,
    Step,
    Wait,
    utcnow,
)
from ..runtime.errors import (
    CorruptDataError,
    EntityConflictError,
    InvalidIdError,
    NotFoundError,
    StorageUnavailableError,
)
from ..runtime.ids import new_ulid, validate_id
from ..runtime.state_machine import RunState, apply, plan
from ..runtime.world import EventResult
from . import faults
from .entity_files import EntityFiles, SparePool
from .event_log import committed_lines, encode_event, join_lines, parse_line, read_fd
from .files import datasync, fsync_dir
from .notify import Notifier
from .syncer import Syncer
from .tokens import TokenIndex
from .views import StatusIndex, ViewWriter, read_run_view, read_view, run_view_bytes, write_view

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
_ID_WHAT = {"steps": "step id", "hooks": "hook id", "waits": "wait id"}


def run_channel(run_id: str) -> str:
    """The Notifier channel woken after every commit to a run's log."""
    return f"run:{run_id}"


def run_end_channel(run_id: str) -> str:
    """The Notifier channel woken when a run ends."""
    return f"run-end:{run_id}"


def event_kind(event_type: EventType) -> str | None:
    """"steps", "hooks" or "waits": which entity an event's correlation id names (None: the run)."""
    if event_type in STEP_EVENTS:
        return "steps"
    if event_type in HOOK_EVENTS:
        return "hooks"
    if event_type in WAIT_EVENTS:
        return "waits"
    return None


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


class RunStore:
    """Run logs and their views under one data directory, for one World object."""

    def __init__(self, root: Path, notifier: Notifier, *, fsync: bool, clock: Callable[[], datetime] = utcnow) -> None:
        """`clock`: the World's clock (`clock.py`), which dates events recorded without a time."""
        self.root = root
        self.clock = clock
        self.runs_dir = root / "runs"
        self.runs_dir.mkdir(parents=True, exist_ok=True)
        self.runs_str = str(self.runs_dir)
        self.index = StatusIndex(root / "index" / "status")
        self.tokens = TokenIndex(root / "tokens", fsync=fsync)
        self.notifier = notifier
        self.fsync = fsync
        self._handles: OrderedDict[str, _RunHandle] = OrderedDict()
        self._handles_lock = threading.Lock()
        self._kept_folds: OrderedDict[str, LogView] = OrderedDict()
        # run_id -> (bytes scanned, spans of the committed lines in them), for readers of the log
        self._lines: OrderedDict[str, tuple[int, list[tuple[int, int]]]] = OrderedDict()
        self._lines_lock = threading.Lock()
        self.view_writer = ViewWriter()
        self.syncer = Syncer()
        self.entity_files = EntityFiles()  # one JSON file per step, hook and wait, behind the log
        if self.entity_files.enabled:
            self.entity_files.pool = SparePool(root / "queue" / "spare")
        self.entity_files.on_run_end = self.view_writer.flush  # run.json at once when a run ends

    # --- paths ---

    def run_dir(self, run_id: str) -> Path:
        return self.runs_dir / validate_id(run_id, "run id")

    # --- handles and locks ---

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
                self._evict()
            handle.users += 1
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

    # --- the cached fold ---

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

    # --- commits ---

    def _prepare(self, run_id: str, event: Event) -> Event:
        try:
            event_type = EventType(event.event_type)
        except ValueError:
            raise InvalidIdError(f"unknown event type {event.event_type!r}") from None
        if event.run_id and event.run_id != run_id:
            raise InvalidIdError(f"event of run {event.run_id!r} sent to run {run_id!r}")
        if not isinstance(event.data, dict):
            raise InvalidIdError(f"event data must be a dict, got {type(event.data).__name__}")
        kind = event_kind(event_type)
        if kind is not None and event.correlation_id is not None:
            validate_id(event.correlation_id, _ID_WHAT[kind])
        if event_type == E.HOOK_CREATED:
            token = event.data.get("token")
            if not isinstance(token, str) or not token:
                raise InvalidIdError(f"hook_created needs a non-empty string token, got {token!r}")
        if event_type is not event.event_type or event.run_id != run_id:
            event = event.evolve(event_type=event_type, run_id=run_id)
        return event

    def commit(
        self, run_id: str, events: Sequence[Event], *, skip_conflicts: bool = False, expected_seq: int | None = None
    ) -> list[EventResult]:
        """Validate and record events of one run atomically; return what each did.

        With `expected_seq`, the first event must land at that position of the log (else 409).
        """
        return self._commit(run_id, events, skip_conflicts, expected_seq, defer_sync=False)[0]

    async def commit_async(
        self, run_id: str, events: Sequence[Event], *, skip_conflicts: bool = False, expected_seq: int | None = None
    ) -> list[EventResult]:
        """`commit`, letting the event loop go on with other work while the disk syncs.

        When other callbacks are ready to run (or other syncs are under way), a commit that
        does not change the run's status is written under the run's lock as usual, and its
        `fdatasync` then runs on a sync thread: the caller learns of the commit, and others
        are notified, only once it is durable. Syncs of different runs overlap, and the
        file system joins them into one journal commit (group commit). A lone commit syncs
        inline, which is faster than a hand-off to a thread.
        """
        defer = self.fsync and self.syncer.worth_deferring()
        results, pending = self._commit(run_id, events, skip_conflicts, expected_seq, defer_sync=defer)
        if pending is not None:
            handle, durable_size = pending
            try:
                new_status, handle.new_run_status = handle.new_run_status, None
                if new_status is None:
                    await self.syncer.sync(handle.fd)
                else:  # a new run: its log, then its folders, in one hand-off
                    await self.syncer.run(self._sync_new_run, handle, new_status, True)
                if handle.pending_moves:
                    with self.locked(run_id) as again:
                        if again is handle:
                            run = self.refresh(handle).state.run
                            self._make_pending_moves(handle, durable_size, run.status if run else None)
            except BaseException:
                handle.view = None  # refold from the file next time
                raise
            finally:
                self._release_handle(handle)
            self._notify_committed(run_id, results)
        return results

    def _make_pending_moves(self, handle: _RunHandle, durable_size: int, current: RunStatus | None) -> None:
        """Move the status marker as our commits that are durable now say, in one move (call
        with the run's lock held; `current` is the run's status in the log)."""
        ready = [move for move in handle.pending_moves if move[0] <= durable_size]
        if not ready:
            return
        del handle.pending_moves[:len(ready)]
        old, new = ready[0][1], ready[-1][2]
        if new != current and handle.pending_moves:
            # A later commit of ours, not durable yet, changed the status again: it moves from `old`.
            size, _, later = handle.pending_moves[0]
            handle.pending_moves[0] = (size, old, later)
            return
        if new == current and old != new:  # (else another process changed it since: its move counts)
            self.index.move(handle.run_id, old, new, fsync=False)

    def _commit(
        self, run_id: str, events: Sequence[Event], skip_conflicts: bool, expected_seq: int | None, *,
        defer_sync: bool,
    ) -> tuple[list[EventResult], tuple[_RunHandle, int] | None]:
        # The commit under the run's lock; with a deferred sync, the handle whose fd still needs
        # fdatasync (held open for the caller, who releases it) and the log size to make durable.
        validate_id(run_id, "run id")
        prepared = [self._prepare(run_id, event) for event in events]
        if not prepared:
            return [], None
        now = self.clock()
        committed = False
        pending = None
        creates = any(_creates_run(e) for e in prepared)
        for _ in range(5):
            with self.locked(run_id, create=creates) as handle:
                if handle is None:  # no such run: let the state machine say why
                    plan(RunState(), prepared[0], now)
                    raise NotFoundError(f"run {run_id} not found")
                if creates and self._stale(handle):
                    self._discard_handle(handle)  # its creation failed and was cleared away: start again
                    continue
                try:
                    results, committed, deferred = self._commit_locked(
                        handle, prepared, now, skip_conflicts, expected_seq, defer_sync=defer_sync)
                except BaseException:
                    if creates and self._drop_if_empty(handle):
                        log.info("run %s: its creation failed, nothing of it is left", run_id)
                    raise
                if deferred:
                    with self._handles_lock:
                        handle.users += 1  # keep its fd open until the sync is done
                    assert handle.view is not None
                    pending = handle, handle.view.size
            break
        else:
            raise StorageUnavailableError(f"run {run_id}: its log keeps being removed under us")
        if committed and pending is None:
            self._notify_committed(run_id, results)
        return results, pending

    def _notify_committed(self, run_id: str, results: list[EventResult]) -> None:
        self.notifier.notify(run_channel(run_id))
        if results and results[-1].run.status.terminal:
            self.notifier.notify(run_end_channel(run_id))

    def _commit_locked(
        self, handle: _RunHandle, events: list[Event], now: datetime, skip_conflicts: bool,
        expected_seq: int | None = None, *, defer_sync: bool = False,
    ) -> tuple[list[EventResult], bool, bool]:
        """(results, whether anything was written, whether its fdatasync is left to the caller)."""
        view = self.refresh(handle)
        if expected_seq is not None and view.count != expected_seq:
            raise EntityConflictError(
                f"run {handle.run_id}: the log holds {view.count} events, the batch expected {expected_seq}"
            )
        state = view.state
        run_before = state.base_run  # its status is current; only counters may lag
        status_before = run_before.status if run_before is not None else None
        changes = _Changes()
        outcomes: list[tuple[Event, list[Event]]] = []
        lines: list[bytes] = []
        mutated = False
        try:
            for event in events:
                try:
                    planned = plan(state, event, now)
                    if planned and planned[0].event_type == E.HOOK_CREATED:
                        token = event.data["token"]
                        if self._token_in_use(handle.run_id, event.correlation_id or "", token, state, changes):
                            planned = plan(state, event, now, token_in_use=True)
                except EntityConflictError:
                    if not skip_conflicts:
                        raise
                    outcomes.append((event, []))
                    continue
                recorded: list[Event] = []
                for item in planned:
                    at = item.created_at or now
                    if view.last_at is not None and at < view.last_at:
                        at = view.last_at  # a writer whose clock is behind: time in a run never goes back
                    record = Event(
                        run_id=handle.run_id,
                        event_type=item.event_type,
                        correlation_id=item.correlation_id,
                        data=item.data,
                        event_id=_event_id_after(view.last_event_id),
                        seq=view.count,
                        created_at=at,
                    )
                    lines.append(encode_event(record))
                    self._note_changes(state, record, changes)
                    mutated = True
                    _apply(view, record, handle.log_path)
                    recorded.append(record)
                outcomes.append((event, recorded))
            results = self._results(state, outcomes)
            if not lines:
                return results, False, False
            run = state.run
            assert run is not None
            # A commit may be synced late (group commit): a new run's folders are then synced
            # after its log, and a status marker moves once its commit is durable (`pending_moves`).
            defer_sync = defer_sync and self.fsync
            if run_before is None:
                self.index.mark(handle.run_id, run.status, fsync=False)  # before the log holds the run
                status_before = run.status
            self._append(handle, view, join_lines(lines), changes, sync=not defer_sync)
            if run_before is None and self.fsync:
                if defer_sync:
                    handle.new_run_status = run.status
                else:
                    self._sync_new_run(handle, run.status)
        except BaseException:
            if mutated:
                handle.view = None  # refold from the file next time
            if not changes.written:
                for token, hook_id in changes.claimed:
                    self.tokens.release(token, handle.run_id, hook_id)
            raise
        try:
            self._write_views(handle, view, changes, status_before, deferred=defer_sync)
        except OSError as exc:  # committed all the same: the views are repaired later
            handle.views_dirty = True
            log.warning("run %s: events committed but views not updated (%s); they will be rewritten", handle.run_id,
                        exc)
        self.entity_files.note(str(handle.run_dir), state, outcomes, view.count)
        return results, True, defer_sync

    @staticmethod
    def _results(state: RunState, outcomes: list[tuple[Event, list[Event]]]) -> list[EventResult]:
        """What each event of a batch did, with the entities as of the end of the batch."""
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

    @staticmethod
    def _note_changes(state: RunState, event: Event, changes: _Changes) -> None:
        # Called before `event` is applied to `state`.
        et = event.event_type
        cid = event.correlation_id or ""
        if et in _TERMINAL_RUN_EVENTS:
            for hook_id, hook in state.hooks.items():
                if hook.status == HookStatus.ACTIVE:
                    changes.released.append((hook.token, hook_id))
        elif et == E.HOOK_DISPOSED:
            changes.released.append((state.hooks[cid].token, cid))

    def _append(self, handle: _RunHandle, view: LogView, data: bytes, changes: _Changes, *, sync: bool) -> None:
        """The commit point: one write of all lines at the end of the log, then fdatasync
        (unless `sync` is false: the caller syncs later)."""
        size = view.size
        written = 0
        try:
            faults.check("append", handle.log_path, handle.fd, data)
            while written < len(data):
                written += os.write(handle.fd, data[written:])
        except BaseException:
            if written:  # never leave part of a commit behind
                with contextlib.suppress(OSError):
                    os.ftruncate(handle.fd, size)
            raise
        changes.written = True
        if self.fsync and sync:
            datasync(handle.fd)
        view.size = size + len(data)

    def _sync_new_run(self, handle: _RunHandle, status: RunStatus, log_too: bool = False) -> None:
        # After the first commit's fdatasync (which made the file system commit its journal;
        # done here first with `log_too`): make the run's folder, log and status marker
        # durable. On ext4 these find nothing left to commit: far cheaper than before it.
        if log_too:
            datasync(handle.fd)
        fsync_dir(handle.run_dir)
        fsync_dir(self.runs_dir)
        self.index.sync(status)

    def _token_in_use(self, run_id: str, hook_id: str, token: str, state: RunState, changes: _Changes) -> bool:
        """Claim `token` for the hook, or tell that a live hook holds it (True)."""
        for _ in range(5):
            if self.tokens.create(token, run_id, hook_id):
                changes.claimed.append((token, hook_id))
                return False
            try:
                entry = self.tokens.read(token)
            except CorruptDataError as exc:
                log.warning("hook token file damaged, rebuilding it from the logs: %s", exc)
                self.repair_token(token, own=(run_id, state))
                continue
            if entry is None:
                continue  # released in the meantime: try again
            if entry.run_id == run_id:
                holder = state.hooks.get(entry.hook_id)
                if holder is not None and holder.status == HookStatus.ACTIVE and holder.token == token:
                    return True
                self.tokens.replace(token, run_id, hook_id)
                changes.claimed.append((token, hook_id))
                return False
            taken = self._token_held_elsewhere(entry.run_id, entry.hook_id, token, run_id, hook_id)
            if taken is not None:
                if not taken:
                    changes.claimed.append((token, hook_id))
                return taken
        return True

    def _token_held_elsewhere(
        self, owner_run: str, owner_hook: str, token: str, run_id: str, hook_id: str
    ) -> bool | None:
        """Whether another run's live hook holds `token`; a stale entry is taken over (False).

        None if the entry changed meanwhile (look again).
        """
        try:
            validate_id(owner_run, "run id")
            with self.locked(owner_run, timeout=TOKEN_CHECK_TIMEOUT) as owner:
                try:
                    entry = self.tokens.read(token)
                except CorruptDataError:
                    return None  # damaged meanwhile: the caller looks again and repairs it
                if entry is None or (entry.run_id, entry.hook_id) != (owner_run, owner_hook):
                    return None
                if owner is not None:
                    holder = self.refresh(owner).state.hooks.get(owner_hook)
                    if holder is not None and holder.status == HookStatus.ACTIVE and holder.token == token:
                        return True
                self.tokens.replace(token, run_id, hook_id)
                return False
        except _LockTimeout:
            log.warning("token held by run %s whose lock stays taken: treating it as in use", owner_run)
            return True
        except (CorruptDataError, InvalidIdError) as exc:
            log.warning("token held by unreadable run %s (%s): treating it as in use", owner_run, exc)
            return True

    def repair_token(self, token: str, own: tuple[str, RunState] | None = None) -> None:
        """Rebuild `token`'s damaged file from the logs: point it at the live hook that holds the
        token, or remove it if none does. Nothing happens if the file is not damaged.

        `own`: the run whose lock the caller holds, and its state. The holder is looked for
        among the active runs (a hook lives only while its run does); a run whose lock stays
        taken leaves the file as it is (it is repaired by the next one who meets it).
        """
        with self.tokens.damaged(token) as damaged:
            if not damaged:
                return
            needle = orjson.dumps(token)
            candidates = sorted(self.index.run_ids((RunStatus.PENDING, RunStatus.RUNNING)) - {own[0] if own else ""})
            if own is not None and self._rebuild_for(token, own[0], own[1]):
                return
            for run_id in candidates:
                try:
                    validate_id(run_id, "run id")
                    with open(f"{self.runs_str}/{run_id}/events.jsonl", "rb") as f:
                        if needle not in f.read():
                            continue
                    with self.locked(run_id, timeout=TOKEN_CHECK_TIMEOUT) as handle:
                        if handle is not None and self._rebuild_for(token, run_id, self.refresh(handle).state):
                            return
                except (FileNotFoundError, NotADirectoryError, InvalidIdError):
                    continue
                except _LockTimeout:
                    log.warning("cannot repair the file of hook token %r: run %s stays locked", token, run_id)
                    return
                except CorruptDataError as exc:
                    log.warning("repairing a hook token file: skipping unreadable run %s (%s)", run_id, exc)
            self.tokens.remove_damaged(token)
            log.warning("removed the damaged file of hook token %r: no live hook holds it", token)

    def _rebuild_for(self, token: str, run_id: str, state: RunState) -> bool:
        # With run_id's lock held: point the token at its live hook holding it, if it has one.
        for hook in state.hooks.values():
            if hook.status == HookStatus.ACTIVE and hook.token == token:
                self.tokens.replace(token, run_id, hook.hook_id)
                log.warning("rebuilt the damaged file of hook token %r: run %s, hook %s", token, run_id, hook.hook_id)
                return True
        return False

    def _ensure_tokens(self, run_id: str, state: RunState) -> None:
        """With the run's lock held: every live hook of the run has its token file (a power loss may
        have lost or damaged it), unless another run's live hook took the token meanwhile."""
        for hook in state.hooks.values():
            if hook.status != HookStatus.ACTIVE:
                continue
            try:
                entry = self.tokens.read(hook.token)
            except CorruptDataError:
                self.repair_token(hook.token, own=(run_id, state))
                continue
            if entry is None and self.tokens.create(hook.token, run_id, hook.hook_id):
                log.warning("run %s: rewrote the missing file of its hook token %r", run_id, hook.token)

    # --- views ---

    def _write_views(
        self, handle: _RunHandle, view: LogView, changes: _Changes, status_before: RunStatus | None, *,
        deferred: bool = False,
    ) -> None:
        state = view.state
        run = state.run
        assert run is not None
        if handle.views_dirty:
            self._write_run_view(handle, view, sync=False)
            handle.views_dirty = False
        elif status_before != run.status:
            # run.json, for listings by status, only when the status changes: it records the
            # log size it reflects, and a reader that finds the log longer folds the log.
            # Written behind the commit and never synced: it only mirrors the log.
            self.view_writer.write_later(f"{handle.run_dir}/run.json", run_view_bytes(run, view.size))
        # A marker moves only once its commit is durable, so that a power loss never leaves one
        # ahead of the log. Moves are not synced: a marker left behind still says
        # pending/running, and start() then re-folds the run from its log and moves it.
        if status_before != run.status:
            handle.pending_moves.append((view.size, status_before, run.status))
        if not deferred:  # durable now, and so is every earlier commit of ours
            self._make_pending_moves(handle, view.size, run.status)
        for token, hook_id in changes.released:
            self.tokens.release(token, handle.run_id, hook_id)

    def _write_run_view(self, handle: _RunHandle, view: LogView, *, sync: bool, only_changed: bool = False) -> bool:
        """Write run.json from the fold; with `only_changed`, leave it alone if it already holds
        those bytes. Whether it was written."""
        self.view_writer.flush()  # nothing older may land after it
        assert view.state.run is not None
        path = f"{handle.run_dir}/run.json"
        data = run_view_bytes(view.state.run, view.size)
        if only_changed:
            try:
                if read_view(path).rstrip(b" ") == data:
                    return False
            except OSError:
                pass
        write_view(path, data, fsync=sync)
        if sync:
            fsync_dir(handle.run_dir)
        return True

    # --- reading the log ---

    def read_log(self, run_id: str) -> tuple[bytes, list[tuple[int, int]], Path]:
        """The whole committed log of a run. NotFoundError if the run has none."""
        path = self.run_dir(run_id) / "events.jsonl"
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise NotFoundError(f"run {run_id} not found") from None
        spans, _ = committed_lines(data)
        if not spans:
            raise NotFoundError(f"run {run_id} not found")
        return data, spans, path

    def read_lines(self, run_id: str, start: int, stop: int | None) -> tuple[bytes, list[tuple[int, int]], str]:
        """Committed lines [start, stop) of a run's log: their bytes and spans within them.

        Only the bytes of those lines are read: where each line begins is remembered per
        run (bytes before the last committed line never change), so following a growing
        log costs what it grew by. NotFoundError if the run has no log.
        """
        path = f"{self.runs_str}/{validate_id(run_id, 'run id')}/events.jsonl"
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            raise NotFoundError(f"run {run_id} not found") from None
        try:
            spans = self._line_spans(run_id, fd)
            if not spans:
                raise NotFoundError(f"run {run_id} not found")
            chosen = spans[start:stop]
            if not chosen:
                return b"", [], path
            base = chosen[0][0]
            data = read_fd(fd, base, chosen[-1][1] + 1)
        finally:
            os.close(fd)
        return data, [(a - base, b - base) for a, b in chosen], path

    def event_count(self, run_id: str) -> int:
        """How many events the run's log holds (0 if it does not exist); reads only new bytes."""
        path = f"{self.runs_str}/{validate_id(run_id, 'run id')}/events.jsonl"
        try:
            stat = os.stat(path)
        except FileNotFoundError:
            return 0
        size = stat.st_size
        with self._lines_lock:
            known = self._lines.get(run_id)
            if known is not None and known[0] == size:
                return len(known[1])  # nothing new since we last looked: no need to open it
        folded = self._current_fold(run_id, path, stat)
        if folded is not None:
            return folded[1]  # this process wrote (or folded) the log up to its end
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return 0
        try:
            return len(self._line_spans(run_id, fd))
        finally:
            os.close(fd)

    def _line_spans(self, run_id: str, fd: int) -> list[tuple[int, int]]:
        # The absolute (start, end) of every committed line, updated from the bytes added since.
        size = os.fstat(fd).st_size
        with self._lines_lock:
            known = self._lines.get(run_id)
            if known is None or size < known[0]:
                known = (0, [])
            else:
                self._lines.move_to_end(run_id)
            scanned, spans = known
            if size > scanned:
                new, good = committed_lines(read_fd(fd, scanned, size))
                spans.extend((scanned + a, scanned + b) for a, b in new)  # under the lock
                scanned += good
            self._lines[run_id] = (scanned, spans)
            if len(self._lines) > MAX_OPEN_RUNS * 4:
                self._lines.popitem(last=False)
            return spans

    # --- recovery ---

    def recover(self, run_id: str) -> Run | None:
        """Bring a run's views, status markers and tokens in line with its log (after a crash).

        Every view file is compared with the run's fold and rewritten if it differs, which
        also covers views lost by a power failure (views are not synced while a run is active).

        Returns the run (None if its log holds no run: the marker is dropped).
        Raises CorruptDataError if the log is unreadable.
        """
        with self.locked(run_id) as handle:
            if handle is None:
                self.index.set_only(run_id, None)
                return None
            view = self.refresh(handle)
            run = view.state.run
            if run is None:
                if self._drop_if_empty(handle):
                    log.warning("run %s: removed its empty folder (a creation that failed)", run_id)
                self.index.set_only(run_id, None)
                return None
            if self._write_run_view(handle, view, sync=self.fsync, only_changed=True):
                log.info("run %s: rewrote its view, which lagged behind its log", run_id)
            handle.views_dirty = False
            self.entity_files.note_all(str(handle.run_dir), view.state, view.count)
            for hook in view.state.hooks.values():
                if hook.status == HookStatus.DISPOSED:
                    self.tokens.release(hook.token, run_id, hook.hook_id)
            if not run.status.terminal:
                self._ensure_tokens(run_id, view.state)
            self.index.set_only(run_id, run.status)
            return run

    def log_end_status(self, run_id: str) -> RunStatus | None:
        """The terminal status the last committed event of the run's log gives it, or None if the
        log does not end the run (or holds no event). Reads only the log's last line."""
        try:
            fd = os.open(f"{self.runs_str}/{run_id}/events.jsonl", os.O_RDONLY | os.O_CLOEXEC)
        except (FileNotFoundError, NotADirectoryError):
            return None
        try:
            size = os.fstat(fd).st_size
            chunk = 4096
            while True:
                start = max(size - chunk, 0)
                data = read_fd(fd, start, size)
                end = data.rfind(b"\n")
                begin = data.rfind(b"\n", 0, max(end, 0)) + 1
                if (end < 0 or begin == 0) and start > 0:
                    chunk *= 8  # the last line is longer than what we read
                    continue
                break
        finally:
            os.close(fd)
        if end < 0:
            return None
        try:
            event_type = orjson.loads(data[begin:end]).get("event_type")
        except (orjson.JSONDecodeError, AttributeError):
            return None
        return _END_STATUS.get(event_type)

    def verify_index(self) -> list[str]:
        """Make every run's status marker say what its log says; return the runs that were marked
        ended (or not at all) but whose log does not end them: they are active again.

        With fsync off, a power loss may keep a marker move and lose the log's tail (or keep a
        log and lose its new marker): the log is the truth. Reads the last line of every log,
        so this is for start-up after a reboot and for operators, not for every start.
        """
        marked = {status: self.index.run_ids([status]) for status in RunStatus}
        active = marked[RunStatus.PENDING] | marked[RunStatus.RUNNING]
        reactivated = []
        for run_id in sorted(os.listdir(self.runs_dir)):
            if run_id.startswith("."):
                continue
            try:
                validate_id(run_id, "run id")
            except InvalidIdError:
                continue
            ended = self.log_end_status(run_id)
            if ended is not None:
                if run_id in marked[ended] and sum(run_id in ids for ids in marked.values()) == 1:
                    continue
            elif run_id in active:
                continue  # start() folds every run marked active
            try:
                run = self.recover(run_id)
            except (CorruptDataError, OSError) as exc:
                log.warning("run %s: cannot check its status against its log: %s", run_id, exc)
                continue
            if run is not None and not run.status.terminal:
                log.warning("run %s: its log does not end it, but it was not indexed as active: active again", run_id)
                reactivated.append(run_id)
        return reactivated

    @contextlib.contextmanager
    def _reading(self, run_id: str) -> Iterator[_RunHandle]:
        """The run's lock for a read of its fold; NotFoundError if it has no log."""
        try:
            with self.locked(run_id) as handle:
                if handle is None:
                    raise NotFoundError(f"run {run_id} not found")
                yield handle
        except (NotADirectoryError, IsADirectoryError):
            raise NotFoundError(f"run {run_id} not found") from None

    def entities(self, run_id: str, kind: str) -> list[tuple[int, Step | Hook | Wait]]:
        """A run's steps, hooks or waits with their creation seq, from the fold of its log
        (the source of truth: views on disk may lag behind it by a few milliseconds)."""
        validate_id(run_id, "run id")
        with self._reading(run_id) as handle:
            view = self.refresh(handle)
            group: dict[str, Step | Hook | Wait] = getattr(view.state, kind)
            return sorted(((view.created_seq.get((kind, eid), 0), e) for eid, e in group.items()),
                          key=lambda item: item[0])

    def run(self, run_id: str) -> Run:
        """The run as of its whole log: its view when that is current, else the log's fold.

        NotFoundError if the run has no log; CorruptDataError if it cannot be read.
        """
        run_dir = f"{self.runs_str}/{validate_id(run_id, 'run id')}"
        known = self._current_fold(run_id, f"{run_dir}/events.jsonl")
        if known is not None:
            return known[0]
        try:
            run, log_size = read_run_view(f"{run_dir}/run.json")
            if os.stat(f"{run_dir}/events.jsonl").st_size == log_size:
                return run
        except (FileNotFoundError, NotADirectoryError, CorruptDataError):
            pass  # no view (yet), or a damaged one: the log decides
        with self._reading(run_id) as handle:
            folded = self.refresh(handle).state.run
        if folded is None:
            raise NotFoundError(f"run {run_id} not found")
        return folded

    def _current_fold(self, run_id: str, log_path: str, stat: os.stat_result | None = None) -> tuple[Run, int] | None:
        """The run and its event count from this process's fold of its log, if that covers the
        whole log (else None). `stat`: the log's, if the caller has just taken it.

        Free for a run this process writes (a worker, or a client next to one): no file is read.
        """
        with self._handles_lock:
            handle = self._handles.get(run_id)
            if handle is None:  # a kept fold changes only once back in a handle
                kept = self._kept_folds.get(run_id)
                if kept is None or kept.state.run is None:
                    return None
                run, size, ino, count = kept.state.run, kept.size, kept.ino, kept.count
        if handle is not None:  # a commit in progress here may have applied events not yet written
            if not handle.lock.acquire(blocking=False):
                return None
            try:
                view = handle.view
                if view is None or view.state.run is None:
                    return None
                run, size, ino, count = view.state.run, view.size, view.ino, view.count
            finally:
                handle.lock.release()
        if stat is None:
            try:
                stat = os.stat(log_path)
            except OSError:
                return None
        return (run, count) if stat.st_size == size and stat.st_ino == ino else None

    def entity(self, run_id: str, kind: str, entity_id: str) -> tuple[int, Step | Hook | Wait] | None:
        """One step, hook or wait (with its creation seq) from the fold; None if the run has none such."""
        validate_id(run_id, "run id")
        with self._reading(run_id) as handle:
            view = self.refresh(handle)
            found = getattr(view.state, kind).get(entity_id)
            return None if found is None else (view.created_seq.get((kind, entity_id), 0), found)

    def close(self) -> None:
        """Close every open log descriptor (after writing the views still pending)."""
        self.entity_files.close()
        self.syncer.close()
        self.view_writer.close()
        with self._handles_lock:
            handles = list(self._handles.values())
            self._handles.clear()
            self._kept_folds.clear()
        for handle in handles:
            with contextlib.suppress(OSError):
                os.close(handle.fd)

