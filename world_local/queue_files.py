"""The queue's message folder: file names, reading, creating, replacing, setting aside.

    messages/<ULID>.json    a message (queue, payload, order key, availability, attempts)
    messages/<ULID>.lease   present while it is leased: holder, deadline, delivery count
    messages/.<...>.tmp     a file being written (removed by rescans once stale)
    corrupt/                unreadable files moved aside
    trash/                  removed and replaced files, deleted by a background thread
    spare/                  removed files kept for reuse (see inode_pool.py)

Writers hold the queue lock. A new file is created in place (`O_EXCL`) or, when fsynced,
staged under a temporary name and renamed; an existing one is replaced atomically. The
hot path (enqueue, take, ack) never renames over an existing file: on ext4 that forces
the new file's data out to disk, and unlinking it soon after would wait for that write.
Files that may have reached the disk are not unlinked under the lock either, since
freeing written blocks can take a millisecond (see file_reaper.py); a file this process
created unsynced moments ago is still only in memory and is unlinked at once. Most removed
files are not deleted at all but kept in `spare/` and reused for the next unsynced message
or lease file, which then costs renames instead of an inode allocation.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from ..runtime.errors import CorruptDataError
from ..runtime.ids import new_ulid
from . import faults
from .file_reaper import FileReaper
from .files import fsync_dir, write_bytes_atomic, write_new_file
from .inode_pool import InodePool
from .queue_index import Lease, MessageRecord

logger = logging.getLogger("wf.world_local")

#: File names in the messages folder: a ULID + ".json" (the message) or ".lease" (its lease).
MESSAGE_FILE = re.compile(r"([0-9A-HJKMNP-TV-Z]{26})\.(json|lease)")
#: Leftover temporary files older than this are removed by rescans.
STALE_TMP_SECONDS = 600.0
#: A file created unsynced this recently is most likely not written back yet (the kernel
#: writes dirty data back after 30 s by default): unlinking it is cheap.
FRESH_SECONDS = 10.0
MAX_FRESH_TRACKED = 16384


class Unsettled(Exception):
    """A file read without the lock did not parse: it may be mid-write; re-read it under the lock."""


def load_json(path: str) -> Any:
    """Read a small JSON file: FileNotFoundError if absent, CorruptDataError if unreadable."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise CorruptDataError(f"cannot read {path}: {exc.strerror}", path) from exc
    try:
        chunks = []
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
    except OSError as exc:
        raise CorruptDataError(f"cannot read {path}: {exc.strerror}", path) from exc
    finally:
        os.close(fd)
    data = b"".join(chunks)
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        what = "empty" if not data else "truncated or corrupt"
        raise CorruptDataError(f"{path} is {what} JSON ({exc})", path) from exc


def create_file(path: str, data: bytes, *, durable: bool) -> None:
    """Create a file that must not exist yet (FileExistsError otherwise); fsync it if `durable`."""
    write_new_file(path, data, fsync=durable, fault_op="queue")


def unlink(path: str) -> None:
    """Remove a file if it is there."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


class MessageFiles:
    """The messages folder of one queue, seen by one LocalQueue."""

    def __init__(self, root: Path, tag: str, *, clock: Callable[[], float] = time.time) -> None:
        self._now = clock
        self.folder = root / "messages"
        self.folder.mkdir(parents=True, exist_ok=True)
        self._dir = str(self.folder)
        self._corrupt = root / "corrupt"
        self._tag = tag
        self._reaper = FileReaper(root / "trash", tag)
        self._pool = InodePool(root / "spare", tag, clock=clock)
        #: Files this process created unsynced (and did not rename over), oldest first.
        self._fresh: collections.OrderedDict[str, float] = collections.OrderedDict()

    def message_path(self, message_id: str) -> str:
        return f"{self._dir}/{message_id}.json"

    def lease_path(self, message_id: str) -> str:
        return f"{self._dir}/{message_id}.lease"

    def read(self, message_id: str, *, locked: bool, has_lease: bool = True) -> MessageRecord | None:
        """A message's files as a record; None if absent or corrupt (then moved aside).

        Without the lock (`locked=False`) an unparsable file raises `Unsettled` instead: it
        may be mid-write. `has_lease=False` (known from a listing) skips the lease file.
        """
        path = self.message_path(message_id)
        try:
            doc = load_json(path)
        except FileNotFoundError:
            return None
        except CorruptDataError as exc:
            if not locked:
                raise Unsettled from exc
            self.quarantine(path, str(exc))
            return None
        lease = self._read_lease(message_id, locked=locked) if has_lease else None
        try:
            return MessageRecord.from_doc(doc, message_id, lease)
        except ValueError as exc:
            self.quarantine(path, str(exc))
            return None

    def _read_lease(self, message_id: str, *, locked: bool) -> Lease | None:
        path = self.lease_path(message_id)
        try:
            return Lease.from_doc(load_json(path))
        except FileNotFoundError:
            return None
        except (CorruptDataError, ValueError) as exc:
            if not locked:
                raise Unsettled from exc
            self.quarantine(path, f"{exc}; the message is deliverable again")
            return None

    def quarantine(self, path: str, reason: str) -> None:
        """Move an unreadable file to `corrupt/` and log a warning (logger `wf.world_local`)."""
        self._corrupt.mkdir(exist_ok=True)
        target = self._corrupt / f"{os.path.basename(path)}.{new_ulid()}"
        try:
            os.rename(path, target)
        except OSError:
            logger.warning("skipping corrupt queue file %s (%s)", path, reason)
            return
        logger.warning("skipping corrupt queue file %s (%s); moved to %s", path, reason, target)

    def listing(self) -> dict[str, tuple[bool, bool]]:
        """{message id: (has .json, has .lease)}; removes stale temporary files on the way."""
        found: dict[str, tuple[bool, bool]] = {}
        now = self._now()  # compared with file stamps: the kernel's clock, not this process's
        with os.scandir(self._dir) as entries:
            for entry in entries:
                match = MESSAGE_FILE.fullmatch(entry.name)
                if match is not None:
                    has_json, has_lease = found.get(match.group(1), (False, False))
                    if match.group(2) == "json":
                        has_json = True
                    else:
                        has_lease = True
                    found[match.group(1)] = (has_json, has_lease)
                elif entry.name.startswith(".") and entry.name.endswith(".tmp"):
                    with contextlib.suppress(OSError):
                        if now - entry.stat().st_mtime > STALE_TMP_SECONDS:
                            os.unlink(entry.path)
        return found

    def stage(self, message_id: str, data: bytes) -> str:
        """Write a new message's file, fsynced, under a temporary name (before taking the lock)."""
        tmp = f"{self._dir}/.{message_id}.{os.getpid()}.{self._tag}.tmp"
        create_file(tmp, data, durable=True)
        return tmp

    def discard_staged(self, staged: str) -> None:
        """Drop a staged file that was not used (its blocks are freed in the background)."""
        self._reaper.retire(staged)

    def create_message(self, record: MessageRecord, data: bytes, *, staged: str | None, durable: bool) -> None:
        """Put a new message's file in place: rename the staged file, or write it now."""
        path = self.message_path(record.message_id)
        if staged is not None:
            os.rename(staged, path)
        elif durable or not self._pool.write_new(path, data):
            create_file(path, data, durable=durable)
            if not durable:
                self._created_fresh(path)
        faults.after("queue", path)

    def _created_fresh(self, path: str) -> None:
        now = time.monotonic()
        fresh = self._fresh
        fresh[path] = now
        while fresh:  # forget the oldest: too old to be fresh, or too many to track
            created = next(iter(fresh.values()))
            if now - created < FRESH_SECONDS and len(fresh) <= MAX_FRESH_TRACKED:
                break
            fresh.popitem(last=False)

    def _remove(self, path: str) -> None:
        created = self._fresh.pop(path, None)
        if self._pool.put(path):
            return
        if created is not None and time.monotonic() - created < FRESH_SECONDS:
            unlink(path)
        else:
            self._reaper.retire(path)

    def _replace(self, path: str, data: bytes, *, durable: bool) -> None:
        created = self._fresh.pop(path, None)  # renaming over it starts the new file's write-back
        if created is None or time.monotonic() - created >= FRESH_SECONDS:
            self._reaper.retire_copy(path)
        write_bytes_atomic(Path(path), data, fsync=durable)

    def rewrite_message(self, record: MessageRecord, *, durable: bool) -> None:
        """Replace a message's file with `record` (atomic)."""
        self._replace(self.message_path(record.message_id), orjson.dumps(record.to_doc()), durable=durable)

    def write_lease(self, message_id: str, lease: Lease, *, replacing: bool) -> None:
        """Create (or, when `replacing` an old one, replace) a message's lease file."""
        path = self.lease_path(message_id)
        data = orjson.dumps(lease.to_doc())
        if not replacing:
            if self._pool.write_new(path, data):  # (a lease left by an interrupted ack is replaced)
                return
            try:
                create_file(path, data, durable=False)
                self._created_fresh(path)
                return
            except FileExistsError:  # left by an interrupted ack: replace it
                pass
        self._replace(path, data, durable=False)

    def remove(self, message_id: str) -> None:
        """Delete a message and its lease (the message first: a lone lease is cleaned up later)."""
        self._remove(self.message_path(message_id))
        self._remove(self.lease_path(message_id))

    def remove_lease(self, message_id: str) -> None:
        self._remove(self.lease_path(message_id))

    def remove_orphan_lease(self, message_id: str) -> None:
        """Delete a lease whose message is gone (an ack interrupted between its two removals)."""
        if not os.path.exists(self.message_path(message_id)):
            self._remove(self.lease_path(message_id))

    def close(self) -> None:
        """Finish deleting removed files."""
        self._reaper.close()

    def sync(self) -> None:
        """Make the folder's entries durable (creations, renames, removals)."""
        fsync_dir(self.folder)

