"""Deleting files off the hot path.

Freeing a file's disk blocks is slow on some file systems: on ext4 mounted with
`discard` (common on cloud disks) unlinking a file whose data reached the disk takes
~1 ms, mostly waiting for the device. A writer holding a lock moves the file into a
trash folder instead (a rename, ~20 µs, frees nothing) and `FileReaper` unlinks it from
a background thread. The trash is emptied again on open, after a crash.
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import os
import threading
import time
from pathlib import Path

#: The reaper deletes in batches at most this often.
BATCH_SECONDS = 0.05


class FileReaper:
    """Moves files to `trash` now and deletes them in a background thread."""

    def __init__(self, trash: Path, tag: str) -> None:
        self._trash = str(trash)
        trash.mkdir(parents=True, exist_ok=True)
        self._tag = tag
        self._names = itertools.count()
        self._pending: collections.deque[str] = collections.deque()
        self._wake = threading.Condition()
        self._thread: threading.Thread | None = None
        self._closed = False
        leftovers = [f"{self._trash}/{name}" for name in os.listdir(self._trash)]
        if leftovers:
            self._push(leftovers)

    def _trash_path(self, path: str) -> str:
        return f"{self._trash}/{self._tag}.{next(self._names)}.{os.path.basename(path)}"

    def retire(self, path: str) -> None:
        """Remove `path` from its folder now (if it is there); its blocks are freed later."""
        target = self._trash_path(path)
        try:
            os.rename(path, target)
        except FileNotFoundError:
            return
        self._push([target])

    def retire_copy(self, path: str) -> None:
        """Keep `path`'s current content alive in the trash, so that replacing `path` frees nothing now."""
        target = self._trash_path(path)
        try:
            os.link(path, target)
        except FileNotFoundError:
            return
        self._push([target])

    def _push(self, paths: list[str]) -> None:
        with self._wake:
            self._pending.extend(paths)
            if self._closed:
                return
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="wf-queue-reaper", daemon=True)
                self._thread.start()
            self._wake.notify()

    def _run(self) -> None:
        while True:
            with self._wake:
                while not self._pending and not self._closed:
                    self._wake.wait()
                if not self._pending:
                    return
                batch = list(self._pending)
                self._pending.clear()
            for path in batch:
                with contextlib.suppress(OSError):
                    os.unlink(path)
            if not self._closed:
                time.sleep(BATCH_SECONDS)  # gather more: fewer GIL hand-offs with the busy threads

    def close(self, timeout: float = 5.0) -> None:
        """Delete what is pending (waiting up to `timeout`) and stop the thread."""
        with self._wake:
            self._closed = True
            self._wake.notify()
            thread = self._thread
        if thread is not None:
            thread.join(timeout)
