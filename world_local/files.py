"""File primitives of the local World: atomic JSON writes, safe reads, fsync of directories.

Only `world_local` writes the data directory, and it writes it through these helpers.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

import orjson

from ..runtime.errors import CorruptDataError

_tmp_counter = 0


def fsync_dir(path: Path) -> None:
    """Make a directory's entries (creations, renames, deletions) durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def dumps(value: Any) -> bytes:
    """orjson-encode a JSON-compatible value (non-str dict keys are refused)."""
    return orjson.dumps(value)


def write_bytes_atomic(path: Path, data: bytes, *, fsync: bool) -> None:
    """Replace `path` with `data` all at once (temp file + rename); readers see old or new, never half.

    With `fsync`, the file's content and the directory entry are durable on return.
    """
    global _tmp_counter
    _tmp_counter += 1
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{_tmp_counter}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]
        if fsync:
            os.fsync(fd)
    except BaseException:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    os.close(fd)
    try:
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    if fsync:
        fsync_dir(path.parent)


def write_json_atomic(path: Path, value: Any, *, fsync: bool) -> None:
    """Atomically replace `path` with `value` as JSON."""
    write_bytes_atomic(path, dumps(value), fsync=fsync)


def create_json_exclusive(path: Path, value: Any, *, fsync: bool) -> bool:
    """Create `path` holding `value` only if it does not exist; False if it already did.

    The content is written to a temp file first and linked into place, so a reader never
    sees the file empty or half written.
    """
    global _tmp_counter
    _tmp_counter += 1
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{_tmp_counter}.tmp")
    data = dumps(value)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, data)
        if fsync:
            os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(tmp, path)
    except FileExistsError:
        return False
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
    if fsync:
        fsync_dir(path.parent)
    return True


def read_json(path: Path) -> Any:
    """Read a JSON file. FileNotFoundError if absent; CorruptDataError naming the file if unreadable."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise
    except IsADirectoryError as exc:
        raise CorruptDataError(f"{path} is a directory, expected a JSON file", str(path)) from exc
    except OSError as exc:
        raise CorruptDataError(f"cannot read {path}: {exc.strerror}", str(path)) from exc
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        what = "empty" if not data else "truncated or corrupt"
        raise CorruptDataError(f"{path} is {what} JSON ({exc})", str(path)) from exc
