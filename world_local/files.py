"""File primitives of the local World: atomic JSON writes, safe reads, fsync of directories.

Only `world_local` writes the data directory, and it writes it through these helpers.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import itertools
import os
from pathlib import Path
from typing import Any

import orjson

from ..runtime.errors import CorruptDataError
from . import faults


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


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100
_tmp_ids = itertools.count()
#: Flush a file's data (and the size needed to read it back): fdatasync, or fsync where absent (macOS).
datasync = getattr(os, "fdatasync", os.fsync)


def _load_renameat2() -> Any:
    try:
        fn = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    fn.restype = ctypes.c_int
    return fn


_renameat2: Any = _load_renameat2()


def _exchange(a: bytes, b: bytes) -> bool:
    """Swap two paths atomically; False if `b` does not exist or the system cannot swap."""
    global _renameat2
    if _renameat2 is None:
        return False
    if _renameat2(_AT_FDCWD, a, _AT_FDCWD, b, _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err == errno.ENOENT:
        return False
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        _renameat2 = None  # this file system cannot: use rename from now on
        return False
    raise OSError(err, os.strerror(err), os.fsdecode(b))


def write_new_file(path: str | bytes, data: bytes, *, fsync: bool, fault_op: str, mkdir: Path | None = None) -> None:
    """Create `path` (which must not exist: FileExistsError) holding `data`; removed again if
    the write fails. With `fsync` its content is durable on return (not its directory entry).
    `mkdir`: the folder to create if it is missing."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
    except FileNotFoundError:
        if mkdir is None:
            raise
        mkdir.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
    try:
        faults.check(fault_op, path, fd, data)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        if fsync:
            datasync(fd)
    except BaseException:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(path)
        raise
    os.close(fd)


def write_bytes_atomic(path: Path, data: bytes, *, fsync: bool, sync_dir: bool = True) -> None:
    """Atomically give `path` the content `data` (creating its folder if needed).

    With `fsync`, the content is durable on return, and so is the directory entry
    unless `sync_dir=False` (the caller then syncs the folder once for several files).
    """
    target = os.fsencode(path)
    tmp = b"%s/.%s.%d.%d.tmp" % (os.fsencode(path.parent), os.fsencode(path.name), os.getpid(), next(_tmp_ids))
    write_new_file(tmp, data, fsync=fsync, fault_op="atomic", mkdir=path.parent)
    try:
        if _exchange(tmp, target):
            os.unlink(tmp)  # it now holds the old content
        else:
            os.rename(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    if fsync and sync_dir:
        fsync_dir(path.parent)
    faults.after("atomic", path)


def write_json_atomic(path: Path, value: Any, *, fsync: bool) -> None:
    """Atomically replace `path` with `value` as JSON."""
    write_bytes_atomic(path, dumps(value), fsync=fsync)


def create_file_exclusive(path: Path, data: bytes, *, fsync: bool) -> bool:
    """Create `path` holding `data` unless it exists (False then); never visible half written."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{next(_tmp_ids)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
    try:
        faults.check("exclusive", path, fd, data)
        view = memoryview(data)
        while view:  # a short write (a file-size limit, a signal) is carried on, or fails: never linked truncated
            view = view[os.write(fd, view) :]
        if fsync:
            datasync(fd)
    except BaseException:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
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
    faults.after("exclusive", path)
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
