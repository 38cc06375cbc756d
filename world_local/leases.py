"""Who holds a queue lease, and whether that holder is still alive.

A lease names its holder by pid *and* the process's start time (field 22 of
`/proc/<pid>/stat`) *and* the boot id, so a recycled pid or a reboot is never mistaken
for the holder being alive. A zombie (killed, not yet reaped by its parent) is dead. A
holder in another pid namespace (another container sharing the data directory) cannot be
looked up: it counts as alive, and its leases end only when their time runs out.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from functools import cache
from typing import Any

#: How long a "still alive" answer about another process is trusted before asking again.
LIVENESS_RECHECK_SECONDS = 0.2


@dataclass(frozen=True, slots=True)
class Holder:
    """A process identity that outlives pid reuse: pid, start time (clock ticks), boot id."""

    pid: int
    start: int
    boot: str
    #: The pid namespace (inode of /proc/self/ns/pid); 0 if unknown.
    ns: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"pid": self.pid, "start": self.start, "boot": self.boot, "ns": self.ns}

    @classmethod
    def from_dict(cls, data: Any) -> Holder:
        """Parse a holder written by `to_dict`; ValueError if it is not one."""
        if not isinstance(data, dict):
            raise ValueError("lease holder is not an object")
        pid, start, boot, ns = data.get("pid"), data.get("start"), data.get("boot"), data.get("ns", 0)
        if not all(isinstance(n, int) for n in (pid, start, ns)) or not isinstance(boot, str):
            raise ValueError("lease holder needs int pid, start and ns, and str boot")
        return cls(pid, start, boot, ns)


@cache
def boot_id() -> str:
    """This machine's boot id ("" where the kernel does not expose one)."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f.read().strip()
    except OSError:
        return ""


@cache
def pid_namespace() -> int:
    """This process's pid namespace (0 where the kernel does not expose one)."""
    try:
        return os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        return 0


def _proc_stat(pid: int) -> tuple[str, int] | None:
    """(state letter, start time in ticks) of a live process, or None if there is none."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    except OSError:
        return ("?", 0)
    # The command name (field 2) is in parentheses and may itself hold spaces or ')'.
    fields = raw[raw.rfind(b")") + 2 :].split()
    try:
        return fields[0].decode(), int(fields[19])
    except (IndexError, ValueError):
        return ("?", 0)


def _has_proc() -> bool:
    return os.path.exists(f"/proc/{os.getpid()}/stat")


_current: Holder | None = None


def current_holder() -> Holder:
    """This process's identity (recomputed after a fork)."""
    global _current
    pid = os.getpid()
    if _current is None or _current.pid != pid:
        stat = _proc_stat(pid)
        _current = Holder(pid, stat[1] if stat else 0, boot_id(), pid_namespace())
    return _current


def is_alive(holder: Holder) -> bool:
    """Whether the process that `holder` names is still running (not a zombie, not a recycled pid)."""
    if holder == current_holder():
        return True
    if holder.boot != boot_id():
        return False
    if holder.ns and pid_namespace() and holder.ns != pid_namespace():
        return True  # another container's process: we cannot see it; its lease time decides
    if _has_proc():
        stat = _proc_stat(holder.pid)
        if stat is None:
            return False
        state, start = stat
        if state in ("Z", "X", "x"):
            return False
        return state == "?" or start == holder.start
    try:  # no /proc: the pid alone is all we can check
        os.kill(holder.pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class LivenessCache:
    """Answers `is_alive` for many leases cheaply: "alive" is re-checked at most every 0.2 s; "dead" is final."""

    def __init__(self, recheck: float = LIVENESS_RECHECK_SECONDS) -> None:
        self._recheck = recheck
        self._alive_until: dict[Holder, float] = {}
        self._dead: set[Holder] = set()

    def alive(self, holder: Holder) -> bool:
        """Whether `holder` is (as far as we checked in the last `recheck` seconds) alive."""
        if holder in self._dead:
            return False
        now = time.monotonic()
        until = self._alive_until.get(holder)
        if until is not None and now < until:
            return True
        if is_alive(holder):
            self._alive_until[holder] = now + self._recheck
            return True
        self._alive_until.pop(holder, None)
        if len(self._dead) > 10_000:
            self._dead.clear()
        self._dead.add(holder)
        return False
