"""Streams of the local World: one append-only JSON-lines file per stream.

Layout: `<root>/<run_id>/<encoded name>.jsonl`. The run id is validated (`validate_id`);
the stream name is any non-empty string (a user's namespace such as "default", "tokens"
or "logs/errors") and is percent-encoded: every byte of its UTF-8 form outside
`[A-Za-z0-9_-]` becomes `%XX`, so "logs/errors" is stored as `logs%2Ferrors.jsonl`. An
encoded name holds no `/`, no `.` and never starts with a dot: it cannot leave its
run's folder, and `list()` decodes it back exactly. Encoded names longer than
`MAX_ENCODED_NAME` characters are refused with InvalidIdError.

File format: one line per chunk, each the compact JSON of the chunk (orjson never puts a
newline inside a value). The stream ends with the line `#close`, which no JSON value can
be. The index of a chunk is its line number.

Writers append whole lines with one `os.write` on an `O_APPEND` descriptor, holding a
thread lock (writers of this process) and an exclusive `flock` on the file (writers of
other processes). Under that lock a writer checks that the stream is not closed and that
the file ends at a line boundary: a last line without its newline was torn by a crash in
the middle of a write and is cut off before appending, so it can never merge with the
next line. Readers only consume lines that end with a newline, so they never see a
partial chunk. A write of several pages killed half way (SIGKILL, power loss) keeps the
complete lines it had written: `write_many` is atomic towards other writers and readers,
not towards crashes in the middle of one large write.

Live readers (`tail`) wait on the Notifier channel `stream:<run_id>:<name>`, which every
write and close notifies, and read only the bytes after their last offset.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import threading
import time
import urllib.parse
from collections import OrderedDict
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import orjson

from ..runtime.errors import CorruptDataError, EntityConflictError, InvalidIdError, SerializationError
from ..runtime.ids import validate_id
from ..runtime.world import StreamInfo, Streams
from . import faults
from .boundary import storage_boundary
from .files import fsync_dir
from .notify import Notifier

#: The last line of a closed stream (not valid JSON, so no chunk can look like it).
CLOSE_LINE = b"#close\n"
#: Longest stream name once encoded (the file name adds ".jsonl").
MAX_ENCODED_NAME = 200
_SUFFIX = ".jsonl"
_PLAIN_NAME = re.compile(r"[A-Za-z0-9_\-]+")
_SAFE_BYTES = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")
_READ_BLOCK = 1 << 20
#: How many streams' positions are remembered (per LocalStreams) to skip rescanning files.
_STATE_CACHE_SIZE = 1024
#: Even without a wake-up, a live reader looks at the file this often (guards against lost wake-ups).
_TAIL_POLL = 1.0


def encode_stream_name(name: object) -> str:
    """The file-name form of a stream name (see the module docstring). InvalidIdError if unusable."""
    if not isinstance(name, str) or not name:
        raise InvalidIdError(f"invalid stream name {name!r}: use a non-empty string")
    if _PLAIN_NAME.fullmatch(name):
        encoded = name
    else:
        try:
            raw = name.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise InvalidIdError(f"invalid stream name {name!r}: not encodable as UTF-8") from exc
        encoded = "".join(chr(b) if b in _SAFE_BYTES else f"%{b:02X}" for b in raw)
    if len(encoded) > MAX_ENCODED_NAME:
        shown = name if len(name) <= 40 else name[:37] + "..."
        raise InvalidIdError(
            f"invalid stream name {shown!r}: too long ({len(encoded)} > {MAX_ENCODED_NAME} characters once encoded)"
        )
    return encoded


def decode_stream_name(encoded: str) -> str:
    """Inverse of `encode_stream_name`."""
    return urllib.parse.unquote_to_bytes(encoded).decode("utf-8")


def stream_channel(run_id: str, name: str) -> str:
    """The Notifier channel woken by every write and close of a stream."""
    return f"stream:{run_id}:{name}"


class _StreamState:
    """What this process knows of one stream file: bytes and chunks up to a line boundary."""

    __slots__ = ("channel", "closed", "count", "lock", "path", "size")

    def __init__(self, path: str = "", channel: str = "") -> None:
        self.path = path
        self.channel = channel
        self.lock = threading.Lock()
        self.size = 0
        self.count = 0
        self.closed = False


def _encode_chunks(chunks: Sequence[Any], run_id: str, name: str) -> bytes:
    """The chunks as JSON lines (one buffer, so `write_many` is one write)."""
    buf = bytearray()
    dumps = orjson.dumps
    for i, chunk in enumerate(chunks):
        try:
            buf += dumps(chunk)
        except TypeError as exc:
            raise SerializationError(
                f"stream {name!r} of run {run_id}: chunk {i} is not JSON-compatible "
                f"({type(chunk).__name__}: {exc}); serialize it first"
            ) from exc
        buf += b"\n"
    return bytes(buf)


def _read_range(fd: int, start: int, end: int) -> bytes:
    """Bytes [start, end) of an open file (short reads retried)."""
    parts = []
    while start < end:
        block = os.pread(fd, min(end - start, 1 << 30), start)
        if not block:
            break
        parts.append(block)
        start += len(block)
    return b"".join(parts)


def _scan(fd: int, state: _StreamState, size: int) -> int:
    """Advance `state` over the complete lines in [state.size, size); return the end of the last one."""
    pos = state.size
    last_end = state.size
    count = 0
    while pos < size:
        block = os.pread(fd, min(_READ_BLOCK, size - pos), pos)
        if not block:
            break
        newlines = block.count(b"\n")
        if newlines:
            count += newlines
            last_end = pos + block.rindex(b"\n") + 1
        pos += len(block)
    if last_end > state.size:
        tail_start = max(0, last_end - len(CLOSE_LINE) - 1)
        tail = os.pread(fd, last_end - tail_start, tail_start)
        closed = tail.endswith(CLOSE_LINE) and (len(tail) == len(CLOSE_LINE) or tail[-len(CLOSE_LINE) - 1] == 0x0A)
        state.count += count - (1 if closed else 0)
        state.closed = closed
        state.size = last_end
    return last_end


def _parse_lines(data: bytes, path: Path, first_index: int, skip: int = 0) -> tuple[list[Any], bool, int]:
    """Parse the complete lines of `data` (chunk `first_index` on), leaving out the first `skip` chunks.

    Returns the chunks, whether the close line was met, and the bytes consumed (up to the
    last newline: a line without one is still being written, or was torn by a crash).
    """
    end = data.rfind(b"\n") + 1
    if end == 0:
        return [], False, 0
    lines = data[: end - 1].split(b"\n")
    closed = lines[-1] == b"#close"
    if closed:
        lines.pop()
    chunks: list[Any] = []
    loads = orjson.loads
    for i in range(max(0, skip - first_index), len(lines)):
        try:
            chunks.append(loads(lines[i]))
        except orjson.JSONDecodeError as exc:
            raise CorruptDataError(f"{path}: line {first_index + i + 1} is not JSON ({exc})", str(path)) from exc
    return chunks, closed, end


class _Done:
    """An awaitable that is already finished (so `close()` may be awaited or not)."""

    def __await__(self):  # type: ignore[no-untyped-def]
        return iter(())


@storage_boundary
class LocalStreams(Streams):
    """`Streams` on the file system under `root` (`<data>/streams`)."""

    def __init__(self, root: Path, notifier: Notifier, *, fsync: bool) -> None:
        self.root = Path(root)
        self._notifier = notifier
        self._fsync = fsync
        self._lock = threading.Lock()
        self._states: OrderedDict[tuple[str, str], _StreamState] = OrderedDict()

    # --- paths and cached state ---

    def _path(self, run_id: str, name: str) -> Path:
        validate_id(run_id, "run id")
        return self.root / run_id / (encode_stream_name(name) + _SUFFIX)

    def _state(self, run_id: str, name: str) -> _StreamState:
        key = (run_id, name)
        with self._lock:
            state = self._states.get(key)
            if state is not None:
                self._states.move_to_end(key)
                return state
        state = _StreamState(str(self._path(run_id, name)), stream_channel(run_id, name))
        with self._lock:
            state = self._states.setdefault(key, state)
            if len(self._states) > _STATE_CACHE_SIZE:
                self._states.popitem(last=False)
        return state

    def _open_for_append(self, file: str) -> int:
        try:
            return os.open(file, os.O_RDWR | os.O_APPEND | os.O_CLOEXEC)
        except FileNotFoundError:
            pass
        path = Path(file)
        created_dir = not path.parent.is_dir()
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
        if self._fsync:
            fsync_dir(path.parent)
            if created_dir:
                fsync_dir(self.root)
        return fd

    # --- writing ---

    def _append(self, run_id: str, name: str, data: bytes, n: int, *, close: bool) -> int:
        """Append `data` (n chunk lines) and/or the close line under both locks; return the last index."""
        state = self._state(run_id, name)
        with state.lock:
            if not data and not close:  # an empty write_many: report, but never create the stream
                try:
                    fd = os.open(state.path, os.O_RDWR | os.O_APPEND | os.O_CLOEXEC)
                except FileNotFoundError:
                    return -1
            else:
                fd = self._open_for_append(state.path)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                size = os.fstat(fd).st_size
                if size < state.size:  # replaced or truncated behind our back: start over
                    state.size, state.count, state.closed = 0, 0, False
                if size != state.size:
                    line_end = _scan(fd, state, size)
                    if line_end < size:  # a crash tore the last line: cut it before appending
                        os.ftruncate(fd, line_end)
                if state.closed:
                    if close and not data:
                        return state.count - 1
                    raise EntityConflictError(f"stream {name!r} of run {run_id} is closed")
                if close:
                    data += CLOSE_LINE
                if data:
                    written = 0
                    try:
                        view = memoryview(data)
                        faults.check("stream", state.path, fd, view)
                        while written < len(data):
                            written += os.write(fd, view[written:])
                    except BaseException:
                        if written:  # never leave half a batch behind
                            with contextlib.suppress(OSError):
                                os.ftruncate(fd, state.size)
                        raise
                    if self._fsync:
                        os.fdatasync(fd)
                    state.size += len(data)
                    state.count += n
                    state.closed = close
            finally:
                os.close(fd)  # also releases the flock
            index = state.count - 1
        self._notifier.notify(state.channel)
        return index

    async def write(self, run_id: str, name: str, chunk: Any) -> int:
        """Append a chunk; return its index. EntityConflictError if the stream is closed."""
        data = _encode_chunks((chunk,), run_id, name)
        return self._append(run_id, name, data, 1, close=False)

    async def write_many(self, run_id: str, name: str, chunks: Sequence[Any]) -> int:
        """Append chunks in order with one write; return the index of the last one (-1 if none yet)."""
        data = _encode_chunks(chunks, run_id, name)
        return self._append(run_id, name, data, len(chunks), close=False)

    def close(self, run_id: str | None = None, name: str | None = None) -> Any:  # type: ignore[override]
        """`close(run_id, name)`: the contract's awaitable "mark the stream ended" (idempotent;
        creates the stream empty if it does not exist).

        `close()` without arguments releases this object's resources (the World calls it
        on shutdown); it works with or without `await`.
        """
        if run_id is None and name is None:
            with self._lock:
                self._states.clear()
            return _Done()
        return self._close_stream(run_id, name)  # type: ignore[arg-type]

    async def _close_stream(self, run_id: str, name: str) -> None:
        self._append(run_id, name, b"", 0, close=True)

    # --- reading ---

    async def read(self, run_id: str, name: str, *, start: int = 0) -> tuple[list[Any], bool]:
        """The chunks from index `start` on, and whether the stream is closed.

        A stream never written reads as `([], False)`: it may still be written.
        """
        if start < 0:
            raise ValueError(f"start must be >= 0, got {start}")
        path = self._path(run_id, name)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return [], False
        chunks, closed, _ = _parse_lines(data, path, 0, skip=start)
        return chunks, closed

    async def tail(
        self, run_id: str, name: str, *, start: int = 0, timeout: float | None = None
    ) -> AsyncIterator[Any]:
        """Yield chunks from `start` live, as other processes write them, until the stream closes.

        Stops early (without error) when nothing new arrives for `timeout` seconds. A
        stream that does not exist yet is waited for.
        """
        if start < 0:
            raise ValueError(f"start must be >= 0, got {start}")
        path = self._path(run_id, name)
        fd = -1
        offset = 0  # always at a line boundary: a torn line may be cut and rewritten by a writer
        index = 0
        try:
            with self._notifier.subscribe(stream_channel(run_id, name)) as sub:
                deadline = None if timeout is None else time.monotonic() + timeout
                while True:
                    if fd < 0:
                        with contextlib.suppress(FileNotFoundError):
                            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
                    if fd >= 0:
                        size = os.fstat(fd).st_size
                        if size > offset:
                            data = _read_range(fd, offset, size)
                            chunks, closed, used = _parse_lines(data, path, index, skip=start)
                            offset += used
                            for chunk in chunks:
                                yield chunk
                            index += data.count(b"\n", 0, used) - (1 if closed else 0)
                            if closed:
                                return
                            if chunks and timeout is not None:
                                deadline = time.monotonic() + timeout
                    if deadline is None:
                        await sub.wait(_TAIL_POLL)
                    else:
                        remaining = deadline - time.monotonic()
                        if remaining <= 0:
                            return
                        await sub.wait(min(remaining, _TAIL_POLL))
        finally:
            if fd >= 0:
                os.close(fd)

    async def list(self, run_id: str) -> list[StreamInfo]:
        """The run's streams, by name."""
        directory = self.root / validate_id(run_id, "run id")
        try:
            entries = os.listdir(directory)
        except (FileNotFoundError, NotADirectoryError):
            return []
        infos = []
        for entry in sorted(entries):
            if entry.startswith(".") or not entry.endswith(_SUFFIX):
                continue
            try:
                name = decode_stream_name(entry[: -len(_SUFFIX)])
            except UnicodeDecodeError:
                continue  # not a file this World wrote
            try:
                fd = os.open(directory / entry, os.O_RDONLY | os.O_CLOEXEC)
            except FileNotFoundError:
                continue
            try:
                state = _StreamState()
                _scan(fd, state, os.fstat(fd).st_size)
            finally:
                os.close(fd)
            infos.append(StreamInfo(run_id=run_id, name=name, chunks=state.count, closed=state.closed))
        infos.sort(key=lambda info: info.name)
        return infos
