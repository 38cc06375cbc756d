"""Materialized views of the event logs: the run files and the run-status index.

    runs/<run_id>/run.json               the Run (Run.to_dict()), plus "log_size"
    index/status/<status>/<run_id>       empty marker: the run has that status

"log_size" is the size in bytes of the log the run view was folded from: a reader that
finds the log any other size knows the view lags and folds the log instead. Views are
derived from the log and written behind the commit (`ViewWriter`).

Steps, hooks and waits have no files of their own: every reader gets them from the fold of
the run's log (which it must read anyway to be current), and creating a file per step cost
0.1-0.6 ms of kernel time on ext4 here, the largest single cost of a step under load.

Rewriting a view (`write_view`, by the writer holding the run's lock); readers read a
view under a shared `flock` (`read_view`), writers modify a file only under an exclusive one:
- A small view (≤ 4 KiB, the common case) is rewritten in place with ONE `pwrite` at
  offset 0, padded with spaces (valid JSON) to the old length, then truncated. A write
  within one page is never left half done by a process that dies (a fatal signal is only
  acted on between pages), and readers are kept out by the lock. ~15 µs.
- A large view, or a durable one (the final state of a run, with fsync on), is written
  to its spare inode `.x.json.spare`, then the two names are swapped with
  `renameat2(RENAME_EXCHANGE)`: the file under the view's name is always complete, and a
  reader that opened the old inode just before the swap reads it under its lock.
  (A temp file + `rename` would cost ~1.5 ms on ext4 here: creating an inode costs
  ~50-100 µs, and renaming over an existing file makes `auto_da_alloc` start writing its
  data back at once. Where the exchange is unsupported, a plain rename is used.)
- A file's first version is written in place right after creating it; a reader that
  finds it still empty retries.
Views are never synced: a reader checks a run view against its log's size, and after a
power loss `recover()` rewrites the views of active runs from their logs.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import orjson

from ..runtime.entities import Run, RunStatus
from ..runtime.errors import CorruptDataError
from .files import _exchange, _tmp_ids, datasync, fsync_dir

log = logging.getLogger("wf.world_local")

#: View files of at most this many bytes are rewritten in place: one write within one page,
#: which a dying process cannot leave half done.
IN_PLACE_MAX = 4096
def write_view(path: str, data: bytes, *, fsync: bool) -> None:
    """Give the view file `path` the content `data` (see the module docstring); the caller
    holds the run's lock. With `fsync` the content is durable (the folder is not synced)."""
    folder, _, name = path.rpartition("/")
    if not fsync and len(data) <= IN_PLACE_MAX:
        fd = _open_view_file(path, folder)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            old = os.fstat(fd).st_size
            if old <= IN_PLACE_MAX:
                padded = data + b" " * (old - len(data)) if old > len(data) else data
                if os.pwrite(fd, padded, 0) != len(padded):
                    raise OSError(errno.EIO, "short write", path)
                if old > len(data):
                    os.ftruncate(fd, len(data))
                return
        finally:
            os.close(fd)
    spare = f"{folder}/.{name}.spare"
    try:
        fd = os.open(spare, os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        fd = _create_view_file(path, folder)
        if fd >= 0:  # the first version: written in place (readers retry while it is empty)
            _rewrite(fd, data, fsync)
            return
        fd = os.open(spare, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    _rewrite(fd, data, fsync)
    if not _exchange(os.fsencode(spare), os.fsencode(path)):
        os.rename(spare, path)


def _open_view_file(path: str, folder: str) -> int:
    try:
        return os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except FileNotFoundError:
        os.makedirs(folder, exist_ok=True)
        return os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)


def _create_view_file(path: str, folder: str) -> int:
    """An fd on a newly created `path`, or -1 if it exists."""
    try:
        return os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
    except FileExistsError:
        return -1
    except FileNotFoundError:
        os.makedirs(folder, exist_ok=True)
        return _create_view_file(path, folder)


def _rewrite(fd: int, data: bytes, fsync: bool) -> None:
    # Replace the content of an open file under an exclusive lock, then close it.
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        written = 0
        while written < len(data):
            written += os.pwrite(fd, data[written:], written)
        os.ftruncate(fd, len(data))
        if fsync:
            datasync(fd)
    finally:
        os.close(fd)


def read_view(path: str | Path) -> bytes:
    """The content of a view file, read under a shared lock. FileNotFoundError if absent."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)
        parts = []
        while chunk := os.read(fd, 1 << 20):
            parts.append(chunk)
        return b"".join(parts)
    finally:
        os.close(fd)


def _load_view(path: Path) -> Any:
    data = b""
    for attempt in range(3):
        try:
            data = read_view(path)
        except IsADirectoryError as exc:
            raise CorruptDataError(f"{path} is a directory, expected a JSON file", str(path)) from exc
        except (FileNotFoundError, NotADirectoryError):
            raise FileNotFoundError(path) from None
        except OSError as exc:
            raise CorruptDataError(f"cannot read {path}: {exc.strerror}", str(path)) from exc
        try:
            return orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            if attempt == 2:
                what = "empty" if not data else "truncated or corrupt"
                raise CorruptDataError(f"{path} is {what} JSON ({exc})", str(path)) from exc
            time.sleep(0.001)  # a writer killed mid-rewrite of the inode we opened: look again
    raise AssertionError("unreachable")


def run_view_bytes(run: Run, log_size: int) -> bytes:
    """The content of run.json: the run as folded from a log of `log_size` bytes."""
    return b'{"log_size":%d,%s' % (log_size, orjson.dumps(run)[1:])


def read_run_view(path: str) -> tuple[Run, int]:
    """run.json's run and the log size it reflects (-1 if unknown).

    FileNotFoundError if absent; CorruptDataError naming the file if it holds no run.
    """
    raw = _load_view(Path(path))
    try:
        if not isinstance(raw, dict):
            raise TypeError("not a JSON object")
        size = raw.get("log_size", -1)
        return Run.from_dict(raw), size if isinstance(size, int) else -1
    except (TypeError, ValueError, KeyError) as exc:
        raise CorruptDataError(f"{path} does not hold a valid run ({exc})", str(path)) from exc


class StatusIndex:
    """`index/status/<status>/<run_id>` markers: the runs of a status without scanning all runs.

    A marker is a hard link to one shared empty file (`index/status/.marker`), so that
    indexing a run allocates no inode (~20 µs instead of ~100 µs here), and a status change
    renames the marker from one folder to the other in one step.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self._root_str = str(root)
        for status in RunStatus:
            (root / status.value).mkdir(parents=True, exist_ok=True)
        self._source = root / ".marker"
        if not self._source.exists():
            self._new_source()

    def _new_source(self) -> None:
        tmp = self.root / f".marker.{os.getpid()}.{next(_tmp_ids)}.tmp"
        os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o644))
        os.replace(tmp, self._source)  # the old source keeps its links

    def _path(self, status: RunStatus, run_id: str) -> str:
        return f"{self._root_str}/{status.value}/{run_id}"

    def mark(self, run_id: str, status: RunStatus, *, fsync: bool) -> None:
        """Record that the run has `status` (does not remove other markers)."""
        path = self._path(status, run_id)
        for _ in range(3):
            try:
                os.link(self._source, path)
                break
            except FileExistsError:
                break
            except FileNotFoundError:
                self._new_source()  # removed by hand: make another
            except OSError as exc:
                if exc.errno != errno.EMLINK:
                    raise
                self._new_source()  # 65000 links on ext4: start a new source
        else:
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o644))
        if fsync:
            fsync_dir(self.root / status.value)

    def unmark(self, run_id: str, status: RunStatus, *, fsync: bool = False) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._path(status, run_id))
            if fsync:
                fsync_dir(self.root / status.value)

    def sync(self, status: RunStatus) -> None:
        """Make the markers of `status` durable."""
        fsync_dir(self.root / status.value)

    def move(self, run_id: str, old: RunStatus | None, new: RunStatus, *, fsync: bool) -> None:
        """The run went from `old` to `new`: one rename of its marker (a new one if it had none)."""
        if old is None or old == new:
            self.mark(run_id, new, fsync=fsync)
            return
        try:
            os.rename(self._path(old, run_id), self._path(new, run_id))
        except FileNotFoundError:
            self.mark(run_id, new, fsync=fsync)
            return
        if fsync:
            fsync_dir(self.root / new.value)
            fsync_dir(self.root / old.value)

    def set_only(self, run_id: str, status: RunStatus | None) -> None:
        """Leave exactly the marker of `status` (none if None): repairs after a crash."""
        for other in RunStatus:
            exists = os.path.exists(self._path(other, run_id))
            if other == status and not exists:
                self.mark(run_id, other, fsync=False)
            elif other != status and exists:
                self.unmark(run_id, other)

    def run_ids(self, statuses: Iterable[RunStatus]) -> set[str]:
        """The run ids marked with any of `statuses`."""
        ids: set[str] = set()
        for status in statuses:
            with contextlib.suppress(FileNotFoundError):
                ids.update(name for name in os.listdir(self.root / status.value) if not name.startswith("."))
        return ids


#: How long views may lag behind their log. Nothing reads them to decide anything (readers
#: use the log's fold; a run view records the log size it reflects), and writing them in
#: rare batches keeps their file creations out of the journal commits the log's syncs wait on.
VIEW_WRITE_DELAY = 0.5


class ViewWriter:
    """Writes views behind the commit, on a background thread.

    The log is the source of truth and readers use its fold; the view files are a mirror
    for people and tools, rewritten within `VIEW_WRITE_DELAY`. Writes to one path are
    coalesced (the newest content wins) and never reordered.
    """

    def __init__(self) -> None:
        self._pending: dict[str, bytes] = {}
        self._cond = threading.Condition()
        self._write_lock = threading.Lock()
        self._closed = False
        self._closing = threading.Event()  # cuts the delay short
        self._thread: threading.Thread | None = None

    def write_later(self, path: str, data: bytes) -> None:
        with self._cond:
            was_empty = not self._pending
            self._pending[path] = data
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="wf-views", daemon=True)
                self._thread.start()
            if was_empty:
                self._cond.notify()

    def flush(self) -> None:
        """Write everything pending, in this thread."""
        while True:
            with self._write_lock:
                with self._cond:
                    if not self._pending:
                        return
                    path = next(iter(self._pending))
                    data = self._pending.pop(path)
                self._write(path, data)

    def _write(self, path: str, data: bytes) -> None:
        try:
            write_view(path, data, fsync=False)
        except OSError as exc:  # the run's views are rewritten from its log on the next start
            log.warning("could not write view %s: %s", path, exc)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._pending and not self._closed:
                    self._cond.wait()
                if not self._pending and self._closed:
                    return
                closed = self._closed
            if not closed:
                # Let a burst of commits coalesce (a step's created/started/completed becomes
                # one write) and keep this thread off the GIL and the disk while commits go on.
                self._closing.wait(VIEW_WRITE_DELAY)
            self.flush()

    def close(self) -> None:
        self._closing.set()
        self.flush()
        with self._cond:
            self._closed = True
            self._cond.notify()
        if self._thread is not None:
            self._thread.join(timeout=5)
