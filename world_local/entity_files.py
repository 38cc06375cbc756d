"""One readable JSON file per step, hook and wait, written behind the log (the card's layout).

    runs/<run_id>/run.json              the run (written by `views.py`)
    runs/<run_id>/steps/<step_id>.json  each step, as of the log's first `log_events` events
    runs/<run_id>/hooks/<hook_id>.json  each hook
    runs/<run_id>/waits/<wait_id>.json  each wait

The event log stays the source of truth and every reader folds it; these files are a
mirror for people and tools. A commit only notes which entities it changed (a few dict
operations under the run's lock); a background thread serializes and writes them, in
batches at most `ENTITY_WRITE_DELAY` apart, and at once when a run ends (then every entity of
the run is written, with run.json). Each file records how many events of the log it
reflects (`log_events`), and a writer never replaces a file that reflects more: several
processes writing one run's files leave the newest content. Files are created through the
queue's inode pool when it has spare files (so creating them allocates no inode), else
created in place.

Off by default: `WF_ENTITY_FILES=1` turns them on. Measured on the 1,000 x 4 scale benchmark
(one worker, 2-core VM, interleaved A/B, 4 rounds), they cost ~0.45 ms of worker CPU per step
(1.12 -> 1.59 ms, +40%): creating about one file per step is that dear in the kernel, far
above the 10% the card allows on the hot path, so a user opts in.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import re
import threading
import time
from pathlib import Path
from typing import Any

import orjson

from ..runtime.entities import STEP_EVENTS, WAIT_EVENTS, Event, EventType, Hook, Step, Wait
from ..runtime.state_machine import RunState
from .inode_pool import MAX_POOLED, RELIST_SECONDS, InodePool

log = logging.getLogger("wf.world_local")

#: How long an entity file may lag behind its log while the run goes on.
ENTITY_WRITE_DELAY = 1.0
#: Runs whose written entities are remembered at most (to skip unchanged ones at the run's end).
MAX_REMEMBERED_RUNS = 20_000
#: When a run ends its files are written within this long (runs ending together share a batch).
END_BATCH_DELAY = 0.05
#: The environment setting that turns the files on ("1"; off by default, see the module docstring).
ENTITY_FILES_SETTING = "WF_ENTITY_FILES"
_LOG_EVENTS = re.compile(rb'\{\s*"log_events": (\d+),')
_END_EVENTS = frozenset({EventType.RUN_COMPLETED, EventType.RUN_FAILED, EventType.RUN_CANCELLED})


class SparePool(InodePool):
    """The queue's pool of spare files, drawn on only while it holds more than `keep` of them.

    The queue puts the files it removes there and takes them back for new messages; above
    `keep` spare files it has more than it will use soon, so the entity files take those
    (creating a file then costs a rename, not an inode), and the queue never runs short.
    """

    def __init__(self, folder: Path, *, keep: int = MAX_POOLED // 2) -> None:
        super().__init__(folder, "entity")
        self._keep = keep
        self._looked = 0.0

    def write_new(self, path: str, data: bytes) -> bool:
        if self._size <= self._keep:
            now = time.monotonic()
            if now - self._looked < RELIST_SECONDS:
                return False
            self._looked = now
            self._list()
            if self._size <= self._keep:
                return False
        return super().write_new(path, data)


def entity_files_enabled() -> bool:
    """Whether `WF_ENTITY_FILES` turns the entity files on (1/true/yes/on; off by default)."""
    return os.environ.get(ENTITY_FILES_SETTING, "0").strip().lower() in ("1", "true", "yes", "on")


def _kind(event_type: EventType) -> str:
    if event_type in STEP_EVENTS:
        return "steps"
    if event_type in WAIT_EVENTS:
        return "waits"
    return "hooks"


class EntityFiles:
    """Writes the entity files of one World's runs on a background thread."""

    def __init__(self, *, enabled: bool | None = None) -> None:
        self.enabled = entity_files_enabled() if enabled is None else enabled
        #: path -> (entity, how many log events it reflects); the newest note of a path wins.
        self._pending: dict[str, tuple[Step | Hook | Wait, int]] = {}
        self._urgent = False
        self._cond = threading.Condition()
        self._closed = False
        self._thread: threading.Thread | None = None
        self._folders: set[str] = set()
        #: run dir -> path -> the entity last noted for it, while the run goes on (to skip unchanged
        #: entities when it ends). Touched under the run's lock only.
        self._written: dict[str, dict[str, Step | Hook | Wait]] = {}
        #: Spare files to create new entity files from (`write_new(path, data) -> bool`), when set.
        self.pool: Any = None
        #: Called with no argument when a run ended, from the writer thread (run.json at once).
        self.on_run_end: Any = None

    def note(self, run_dir: str, state: RunState, outcomes: list[tuple[Event, list[Event]]], log_events: int) -> None:
        """After a commit, under the run's lock: the entities its events changed (all of them if the run ended)."""
        if not self.enabled:
            return
        events = [e for _, recorded in outcomes for e in recorded]
        ended = any(e.event_type in _END_EVENTS for e in events)
        self._note(run_dir, state, events, log_events, everything=ended)

    def note_all(self, run_dir: str, state: RunState, log_events: int) -> None:
        """Every entity of the run (after a repair), written at once."""
        if self.enabled:
            self._note(run_dir, state, [], log_events, everything=True)

    def _note(self, run_dir: str, state: RunState, events: list[Event], log_events: int, *, everything: bool) -> None:
        notes: dict[str, tuple[Step | Hook | Wait, int]] = {}
        if len(self._written) > MAX_REMEMBERED_RUNS:
            self._written.clear()  # runs this process will not see end: forget (their next end writes all)
        if everything:
            written = self._written.pop(run_dir, {})
            for kind, entities in (("steps", state.steps), ("hooks", state.hooks), ("waits", state.waits)):
                for entity_id, entity in list(entities.items()):
                    path = f"{run_dir}/{kind}/{entity_id}.json"
                    if written.get(path) is not entity:  # entities are immutable: the same object is unchanged
                        notes[path] = (entity, log_events)
        else:
            written = self._written.setdefault(run_dir, {})
            for event in events:
                cid = event.correlation_id
                if not cid:
                    continue
                kind = _kind(event.event_type)
                entity = (state.steps if kind == "steps" else state.waits if kind == "waits" else state.hooks).get(cid)
                if entity is not None:
                    path = f"{run_dir}/{kind}/{cid}.json"
                    notes[path] = (entity, log_events)
                    written[path] = entity
        if not notes and not everything:
            return
        with self._cond:
            self._pending.update(notes)
            if everything:
                self._urgent = True
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="wf-entity-files", daemon=True)
                self._thread.start()
            self._cond.notify()

    def flush(self) -> None:
        """Write everything noted so far, in this thread."""
        with self._cond:
            batch, self._pending = self._pending, {}
            self._urgent = False
        for path, (entity, log_events) in batch.items():
            self._write(path, entity, log_events)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._pending and not self._closed:
                    self._cond.wait()
                if self._closed:
                    break
                if not self._urgent:  # let a run's changes coalesce: one write per entity a second
                    self._cond.wait_for(lambda: self._urgent or self._closed, timeout=ENTITY_WRITE_DELAY)
                urgent = self._urgent
            if urgent and not self._closed:
                time.sleep(END_BATCH_DELAY)  # runs that end together are written together
            self.flush()
            if urgent and self.on_run_end is not None:
                with contextlib.suppress(Exception):
                    self.on_run_end()
        self.flush()

    def _write(self, path: str, entity: Step | Hook | Wait, log_events: int) -> None:
        data = b'{\n  "log_events": %d,%s' % (log_events, orjson.dumps(entity, option=orjson.OPT_INDENT_2)[1:])
        try:
            if not self._replace(path, data, log_events):
                self._create(path, data)
        except OSError as exc:  # a mirror only: the next change (or run end) writes it again
            log.warning("could not write %s: %s", path, exc)

    def _replace(self, path: str, data: bytes, log_events: int) -> bool:
        """Rewrite an existing file in place, under its lock, unless it reflects more of the log; False if absent."""
        try:
            fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        except FileNotFoundError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            found = _LOG_EVENTS.match(os.pread(fd, 40, 0))
            if found is not None and int(found.group(1)) > log_events:
                return True  # another writer was further along
            view = memoryview(data)
            offset = 0
            while offset < len(data):
                offset += os.pwrite(fd, view[offset:], offset)
            os.ftruncate(fd, len(data))
        finally:
            os.close(fd)
        return True

    def _create(self, path: str, data: bytes) -> None:
        folder = path.rpartition("/")[0]
        if folder not in self._folders:
            os.makedirs(folder, exist_ok=True)
            self._folders.add(folder)
        pool = self.pool
        if pool is not None:
            with contextlib.suppress(OSError):
                if self._create_from_pool(pool, path, data):
                    return
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            os.ftruncate(fd, 0)
            view = memoryview(data)
            offset = 0
            while offset < len(data):
                offset += os.pwrite(fd, view[offset:], offset)
        finally:
            os.close(fd)

    @staticmethod
    def _create_from_pool(pool: Any, path: str, data: bytes) -> bool:
        """A pooled file given `data` and renamed to `path`, unless `path` appeared meanwhile."""
        if os.path.exists(path):
            return False
        return bool(pool.write_new(path, data))

    def close(self) -> None:
        """Write what is pending and stop the thread."""
        with self._cond:
            self._closed = True
            self._cond.notify()
            thread = self._thread
        if thread is not None:
            thread.join(timeout=10)
        self.flush()
