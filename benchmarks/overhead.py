"""Overhead scenarios with zero-cost steps, and the same shapes with one-second steps (Vercel's table)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from . import workloads as w
from .harness import in_process, repeat
from .results import Row, mode_name

PAYLOAD = 10 * 1024


@dataclass(frozen=True)
class Scenario:
    name: str
    workflow: Any
    args: tuple[Any, ...]
    steps: int
    expect: Any = None
    #: Seconds of sleeping the scenario cannot avoid (one-second steps), subtracted for the overhead.
    baseline_s: float = 0.0
    #: Only in cached mode (always-replay is quadratic in the run length).
    cached_only: bool = False
    #: Fewer repetitions (long scenarios).
    max_repeat: int | None = None


def zero_cost() -> list[Scenario]:
    """The overhead table: no steps, 1..1000 sequential, gather, race, 10 KB payloads."""
    out = [Scenario("empty workflow", w.empty, (), 0)]
    out += [Scenario(f"{n} sequential step{'s' if n > 1 else ''}", w.sequential, (n,), n, n * (n - 1) // 2)
            for n in (1, 10, 25, 50)]
    out += [Scenario(f"gather {n}", w.gather, (n,), n, n * (n - 1) // 2) for n in (10, 25, 50)]
    out += [Scenario(f"race {n}", w.race, (n,), n) for n in (10, 25, 50)]
    out += [
        Scenario("10 KB payloads, 10 sequential", w.payload_sequential, (10, PAYLOAD), 10, 10 * PAYLOAD),
        Scenario("10 KB payloads, 10 concurrent", w.payload_concurrent, (10, PAYLOAD), 10, 10 * PAYLOAD),
        Scenario("1000 sequential steps", w.sequential, (1000,), 1000, 1000 * 999 // 2, cached_only=True,
                 max_repeat=3),
    ]
    return out


def one_second() -> list[Scenario]:
    """Vercel's published local-world table: the same shapes, each step sleeping 1 s."""
    out = [Scenario("empty workflow (1 s steps)", w.empty, (), 0)]
    out += [Scenario(f"{n} sequential 1 s steps", w.sequential, (n, 1.0), n, n * (n - 1) // 2, baseline_s=n,
                     max_repeat=1 if n > 10 else None) for n in (1, 10, 25, 50)]
    out += [Scenario(f"gather {n} x 1 s steps", w.gather, (n, 1.0), n, n * (n - 1) // 2, baseline_s=1.0)
            for n in (10, 25, 50)]
    out += [Scenario(f"race {n} x 1 s steps", w.race, (n, 1.0), n, baseline_s=1.0) for n in (10, 25, 50)]
    return out


MODES = [(True, False), (False, False), (True, True), (False, True)]


async def run_scenarios(section: str, scenarios: list[Scenario], repeats: int,
                        modes: list[tuple[bool, bool]] = MODES,
                        progress: Callable[[str], None] = print, replay_repeats: int | None = None) -> list[Row]:
    """Each scenario in each (fsync, always_replay) mode: `repeats` timed runs after one warm-up."""
    rows: list[Row] = []
    for fsync, always_replay in modes:
        mode = mode_name(fsync, always_replay)
        async with in_process(fsync=fsync, always_replay=always_replay) as env:
            for sc in scenarios:
                if sc.cached_only and always_replay:
                    continue
                times = min(repeats, sc.max_repeat) if sc.max_repeat else repeats
                if always_replay and replay_repeats is not None:
                    times = min(times, replay_repeats)
                warmup = 1 if sc.baseline_s == 0 and sc.steps < 1000 else 0
                samples = await repeat(lambda sc=sc: env.time_run(sc.workflow, *sc.args, expect=sc.expect),
                                       times, warmup=warmup)
                row = Row(section, sc.name, mode, samples, steps=sc.steps, baseline_ms=sc.baseline_s * 1000)
                progress(f"  {section}: {sc.name} [{mode}] median {row.median_ms:.1f} ms")
                rows.append(row)
    return rows
