"""Reading a run's log: its lines, its event count, and its entities as the fold of the log."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from pathlib import Path

from ..runtime.entities import (
    Hook,
    Run,
    Step,
    Wait,
)
from ..runtime.errors import (
    CorruptDataError,
    NotFoundError,
)
from ..runtime.ids import validate_id
from .event_log import committed_lines, read_fd
from .run_handles import (
    MAX_OPEN_RUNS,
    _RunHandle,
)
from .views import read_run_view

log = logging.getLogger("wf.world_local")


class LogReader:
    """Reads of runs, steps, hooks and waits, folded from the logs (a part of `RunStore`)."""

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
