"""Result rows, summary statistics and machine information shared by every scenario."""

from __future__ import annotations

import contextlib
import datetime as _dt
import os
import platform
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Any


def percentile(samples: list[float], q: float) -> float:
    """The q-th percentile (0..100) of `samples`, by linear interpolation."""
    if not samples:
        raise ValueError("no samples")
    ordered = sorted(samples)
    if len(ordered) == 1:
        return ordered[0]
    pos = (len(ordered) - 1) * q / 100.0
    lo = int(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


@dataclass
class Row:
    """One measured scenario in one mode. Times are milliseconds."""

    section: str
    scenario: str
    mode: str
    samples_ms: list[float]
    steps: int = 0
    #: Subtracted from the median to get the overhead (one-second steps: the sleeping).
    baseline_ms: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def median_ms(self) -> float:
        return statistics.median(self.samples_ms)

    @property
    def p90_ms(self) -> float:
        return percentile(self.samples_ms, 90)

    @property
    def overhead_ms(self) -> float:
        return self.median_ms - self.baseline_ms

    @property
    def per_step_ms(self) -> float | None:
        return self.overhead_ms / self.steps if self.steps else None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Row:
        return cls(data["section"], data["scenario"], data["mode"], list(data["samples_ms"]),
                   steps=data.get("steps", 0), baseline_ms=data.get("baseline_ms", 0.0), extra=data.get("extra", {}))

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data.update(
            median_ms=round(self.median_ms, 3),
            p90_ms=round(self.p90_ms, 3),
            overhead_ms=round(self.overhead_ms, 3),
            per_step_ms=None if self.per_step_ms is None else round(self.per_step_ms, 4),
            repeats=len(self.samples_ms),
        )
        data["samples_ms"] = [round(s, 3) for s in self.samples_ms]
        return data


def mode_name(fsync: bool, always_replay: bool) -> str:
    return f"fsync {'on' if fsync else 'off'}, {'always-replay' if always_replay else 'cached'}"


def cpu_probe_ms() -> float:
    """Milliseconds a fixed pure-Python loop takes now: a shared VM's CPU speed varies by 2x
    from one minute to the next, and this says which kind of minute a run had."""
    t0 = time.perf_counter()
    total = 0
    for i in range(2_000_000):
        total += i
    return round((time.perf_counter() - t0) * 1000, 1)


def machine_info() -> dict[str, Any]:
    """Cores, Python, kernel, load and time: what a reader needs to weigh the figures."""
    info: dict[str, Any] = {
        "timestamp": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "cores": os.cpu_count(),
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "kernel": platform.release(),
        "system": platform.system(),
        "machine": platform.machine(),
    }
    with contextlib.suppress(OSError):
        info["loadavg_at_start"] = [round(x, 2) for x in os.getloadavg()]
    info["cpu_probe_ms"] = cpu_probe_ms()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    info["cpu"] = line.split(":", 1)[1].strip()
                    break
        with open("/proc/meminfo") as f:
            info["memory_gb"] = round(int(f.readline().split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    try:
        from importlib.metadata import version

        info["wf_version"] = version("wf")
    except Exception:  # noqa: BLE001 - informational only
        pass
    return info
