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
import logging
import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path

import orjson

from ..runtime.entities import (
    Event,
    HookStatus,
    Run,
    RunStatus,
    utcnow,
)
from ..runtime.errors import (
    CorruptDataError,
    EntityConflictError,
    InvalidIdError,
    NotFoundError,
    StorageUnavailableError,
)
from ..runtime.ids import validate_id
from ..runtime.state_machine import RunState, checked_event, plan
from ..runtime.world import EventResult, batch_results
from . import faults
from .entity_files import EntityFiles, SparePool
from .event_log import encode_event, join_lines, read_fd
from .files import datasync, fsync_dir
from .hook_claims import HookTokenClaims
from .log_reader import LogReader
from .notify import Notifier
from .run_handles import (
    _END_STATUS,
    _TERMINAL_RUN_EVENTS,
    E,
    LogView,
    RunHandles,
    _apply,
    _Changes,
    _creates_run,
    _event_id_after,
    _RunHandle,
    run_channel,
    run_end_channel,
)
from .syncer import Syncer
from .tokens import TokenIndex
from .views import StatusIndex, ViewWriter, read_view, run_view_bytes, write_view

log = logging.getLogger("wf.world_local")


class RunStore(RunHandles, HookTokenClaims, LogReader):
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

    def _prepare(self, run_id: str, event: Event) -> Event:
        return checked_event(run_id, event)

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
            results = batch_results(state, outcomes)
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
