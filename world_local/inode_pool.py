"""Files kept for reuse instead of being deleted and created again.

Allocating an inode is the dear part of creating a file: 0.1-0.8 ms of kernel time per
file on this project's ext4 VMs, against ~20 µs for a rename. The queue makes and removes
two small files per message (the message and its lease), so it keeps the files it
removes in a pool folder and gives them new content and a new name when it needs a file:

    put(path)            rename `path` into the pool (instead of deleting it)
    write_new(path, d)   claim a pooled file by renaming it to a private name (atomic: two
                         processes never claim the same one), write `d` into it, then
                         rename it to `path`: readers never see it half written

Files in the pool are named `<tag>.<n>`; a claimed one `.c.<tag>.<n>` until it gets its
new name. Several processes share a pool: each remembers the files it put there and lists
the folder when it has none left (at most once a second when that finds none). A process
that dies holding a claimed file leaves a `.c.` file, removed when a pool is opened.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import time
from collections.abc import Callable
from pathlib import Path

from . import faults

#: At most about this many files wait in a pool; beyond, removed files are deleted.
MAX_POOLED = 2048
#: After a listing of the pool found nothing, it is not listed again before this long.
RELIST_SECONDS = 1.0
#: Claimed files older than this were left by a process that died.
STALE_CLAIM_SECONDS = 600.0


class InodePool:
    """A folder of files removed by the queue, reused for the files it creates next."""

    def __init__(self, folder: Path, tag: str, *, fault_op: str = "queue",
                 clock: Callable[[], float] = time.time) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self._dir = str(folder)
        self._tag = tag
        self._fault_op = fault_op
        self._names = itertools.count()
        self._known: list[str] = []
        self._next_listing = 0.0
        self._size = 0  # the pool's size as last listed, plus our puts, minus our claims
        now = clock()  # compared with file stamps: the kernel's clock, not this process's
        with os.scandir(self._dir) as entries:
            for entry in entries:
                if entry.name.startswith(".c."):
                    with contextlib.suppress(OSError):
                        if now - entry.stat().st_mtime > STALE_CLAIM_SECONDS:
                            os.unlink(entry.path)
                else:
                    self._size += 1

    def put(self, path: str) -> bool:
        """Move the file `path` into the pool; False (nothing done) if the pool is full or
        `path` is missing."""
        if self._size >= MAX_POOLED:
            return False
        pooled = f"{self._dir}/{self._tag}.{next(self._names)}"
        try:
            os.rename(path, pooled)
        except FileNotFoundError:
            return False
        self._known.append(pooled)
        self._size += 1
        return True

    def write_new(self, path: str, data: bytes) -> bool:
        """Give a pooled file the content `data` and the name `path` (replacing any file of
        that name); False, with nothing done, if the pool has none. Not synced."""
        claimed = self._claim()
        if claimed is None:
            return False
        try:
            fd = os.open(claimed, os.O_WRONLY | os.O_CLOEXEC)
            try:
                faults.check(self._fault_op, path, fd, data)
                view = memoryview(data)
                offset = 0
                while offset < len(data):
                    offset += os.pwrite(fd, view[offset:], offset)
                if os.fstat(fd).st_size > len(data):
                    os.ftruncate(fd, len(data))
            finally:
                os.close(fd)
            os.rename(claimed, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(claimed)
            raise
        faults.after(self._fault_op, path)
        return True

    def _claim(self) -> str | None:
        for attempt in range(2):
            while self._known:
                pooled = self._known.pop()
                claimed = f"{self._dir}/.c.{self._tag}.{next(self._names)}"
                try:
                    os.rename(pooled, claimed)
                except FileNotFoundError:  # another process claimed it first
                    continue
                self._size -= 1
                return claimed
            if attempt or time.monotonic() < self._next_listing:
                return None
            self._list()
        return None

    def _list(self) -> None:
        with os.scandir(self._dir) as entries:
            self._known = [entry.path for entry in entries if not entry.name.startswith(".")]
        self._size = len(self._known)
        if not self._known:
            self._next_listing = time.monotonic() + RELIST_SECONDS
