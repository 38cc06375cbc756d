"""The World's clock: one clock for every process on a data directory, the kernel's.

Due times in the queue (a sleep's wake-up, a retry, a lease's end) are written by one process
and compared by another, and events are dated by whichever process records them. A process
whose own clock disagrees with the others' (a faked clock, a skewed container) would ignore
work that is due, or take it early. So the local World reads the time through the file system:
`os.utime(path, None)` makes the kernel stamp a file with its current time, and the process's
offset from that stamp corrects its clock (`WorldClock.time`). The offset is measured at start
and again every `REMEASURE_SECONDS`; an offset under `TOLERANCE` (the stamp's own granularity,
a few ms) is taken as none, so that processes whose clocks agree behave exactly as before.

A clock faked for file timestamps as well (e.g. libfaketime with its stat faking) is not seen.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

#: Offsets below this many seconds are noise (file stamps are taken from a coarse clock).
TOLERANCE = 0.25
#: How often the offset is measured again.
REMEASURE_SECONDS = 5.0


class WorldClock:
    """The kernel's time for one data directory, as seen through `<data>/clock`'s timestamp."""

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / "clock"
        self._lock = threading.Lock()
        self._offset = 0.0
        self._measured_at = -REMEASURE_SECONDS
        self.skew = 0.0  #: this process's clock minus the kernel's, in seconds (as last measured)
        self._measure()

    def _measure(self) -> None:
        try:
            before = time.time()
            try:
                os.utime(self.path, None)
            except FileNotFoundError:
                with contextlib.suppress(FileExistsError):
                    os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
                os.utime(self.path, None)
            after = time.time()
            stamp = os.stat(self.path).st_mtime_ns / 1e9
        except OSError:
            return  # a read-only or full disk: keep the last offset
        self.skew = (before + after) / 2 - stamp
        self._offset = -self.skew if abs(self.skew) > TOLERANCE else 0.0
        self._measured_at = time.monotonic()

    def time(self) -> float:
        """Seconds since the epoch on the World's clock (like `time.time()`)."""
        if time.monotonic() - self._measured_at >= REMEASURE_SECONDS and self._lock.acquire(blocking=False):
            try:
                self._measure()
            finally:
                self._lock.release()
        return time.time() + self._offset

    def now(self) -> datetime:
        """The World's time as an aware UTC datetime."""
        return datetime.fromtimestamp(self.time(), UTC)
