"""The queue's change log: an append-only list of the message ids that changed.

Every state change of a message file appends `<message id> <writer tag>\\n` here, under
the queue-wide lock and *before* the file itself changes. Each process keeps an offset
into the log and, under the same lock, reloads only the messages named after it, so its
in-memory index stays exact without listing the whole directory. A line whose change did
not happen (the writer died in between) just makes readers reload an unchanged file.

The log is a hint, never the truth: it is not fsynced, and a process that opens the
queue scans the message files once. When it grows past `ROTATE_BYTES` a writer replaces
it with an empty one (`#gen N+1`) and appends `#rotate N+1` to the old one, so readers
still holding the old file follow it; a reader that missed a whole generation is told to
rescan.
"""

from __future__ import annotations

import contextlib
import os
import re
from pathlib import Path

from .files import write_bytes_atomic

#: Size past which the log is replaced by an empty one (~110k changes).
ROTATE_BYTES = 4 * 1024 * 1024

_ENTRY = re.compile(rb"([0-9A-HJKMNP-TV-Z]{26}) ([0-9a-f]{1,32})")
_HEADER = re.compile(rb"#gen (\d+)")
_ROTATE = re.compile(rb"#rotate (\d+)")


class ChangeLog:
    """One process's reader/writer of the change log. Every method but `has_news` needs the queue lock."""

    def __init__(self, path: Path, tag: str) -> None:
        self.path = path
        self.tag = tag
        self._tag_bytes = tag.encode()
        self._fd = -1
        self._gen = 0
        self._offset = 0
        #: Whether the last read reached the end of the log (so our own appends can be skipped).
        self._caught_up = False

    def open(self) -> None:
        """Open (creating if needed) the current log and position at its end."""
        self._open_current()
        self._offset = os.fstat(self._fd).st_size
        self._caught_up = True

    def _open_current(self) -> None:
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_APPEND)
        except FileNotFoundError:
            write_bytes_atomic(self.path, b"#gen 0\n", fsync=False)
            fd = os.open(self.path, os.O_RDWR | os.O_APPEND)
        if self._fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self._fd)
        self._fd = fd
        header = os.pread(fd, 64, 0)
        match = _HEADER.match(header)
        self._gen = int(match.group(1)) if match else -1
        self._offset = header.find(b"\n") + 1 if match else 0

    def has_news(self) -> bool:
        """Whether the log holds entries this process has not read (cheap; no lock needed)."""
        return os.fstat(self._fd).st_size != self._offset

    def read_new(self) -> tuple[list[str], str | None]:
        """The ids changed by others since the last read, and why a full rescan is needed (or None).

        A rescan is needed when the log was damaged ("garbled") or when this reader missed
        a whole generation of it ("behind", normal for a long-idle process).
        """
        changed: list[str] = []
        rescan: str | None = None
        self._caught_up = False
        while True:
            size = os.fstat(self._fd).st_size
            if size < self._offset:  # truncated behind our back
                self._offset = size
                return changed, "garbled"
            if size == self._offset:
                self._caught_up = True
                return changed, rescan
            data = os.pread(self._fd, size - self._offset, self._offset)
            end = data.rfind(b"\n")
            if end < 0:
                return changed, rescan
            rotated_to: int | None = None
            consumed = 0
            for line in data[: end + 1].split(b"\n")[:-1]:
                consumed += len(line) + 1
                match = _ENTRY.fullmatch(line)
                if match is not None:
                    if match.group(2) != self._tag_bytes:
                        changed.append(match.group(1).decode())
                    continue
                rotate = _ROTATE.fullmatch(line)
                if rotate is not None:
                    rotated_to = int(rotate.group(1))
                    break
                if not _HEADER.fullmatch(line):
                    rescan = "garbled"  # some change may be unknown
            self._offset += consumed
            if rotated_to is not None:
                self._open_current()
                if self._gen != rotated_to:  # we missed a whole generation
                    self._offset = os.fstat(self._fd).st_size
                    return changed, "behind"

    def append(self, message_id: str) -> None:
        """Record that `message_id` is about to change (call under the queue lock, after `read_new`)."""
        entry = b"%s %s\n" % (message_id.encode(), self._tag_bytes)
        os.write(self._fd, entry)
        if self._caught_up:  # nobody else writes while we hold the lock
            self._offset += len(entry)

    def maybe_rotate(self) -> None:
        """Start a new, empty log when this one is big (call under the queue lock)."""
        if self._offset < ROTATE_BYTES or os.fstat(self._fd).st_size != self._offset:
            return
        new_gen = self._gen + 1
        write_bytes_atomic(self.path, b"#gen %d\n" % new_gen, fsync=False)
        os.write(self._fd, b"#rotate %d\n" % new_gen)
        self._open_current()
        self._caught_up = True

    def close(self) -> None:
        if self._fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = -1
