"""Growth: cost per step against run length, to show whether a run's cost is linear in its length."""

from __future__ import annotations

from collections.abc import Callable

from . import workloads as w
from .harness import in_process, repeat
from .results import Row, mode_name

CACHED_LENGTHS = (10, 100, 500, 1000)
REPLAY_LENGTHS = (10, 50, 100, 200)


async def run_growth(repeats: int, modes: list[tuple[bool, bool]],
                     progress: Callable[[str], None] = print) -> list[Row]:
    """For each mode, sequential runs of increasing length; per-step cost = median / length."""
    rows: list[Row] = []
    for fsync, always_replay in modes:
        mode = mode_name(fsync, always_replay)
        lengths = REPLAY_LENGTHS if always_replay else CACHED_LENGTHS
        async with in_process(fsync=fsync, always_replay=always_replay) as env:
            for n in lengths:
                times = repeats if n <= 100 else 1
                samples = await repeat(lambda n=n: env.time_run(w.sequential, n, expect=n * (n - 1) // 2),
                                       times, warmup=1 if n <= 100 else 0)
                row = Row("growth", f"{n} sequential steps", mode, samples, steps=n)
                rows.append(row)
                progress(f"  growth: {n} steps [{mode}] {row.per_step_ms:.3f} ms/step")
    return rows


def linearity(rows: list[Row]) -> dict[str, float]:
    """Per mode: time(longest) / time(shortest) divided by the length ratio (1.0 = perfectly linear)."""
    out: dict[str, float] = {}
    for mode in dict.fromkeys(r.mode for r in rows):
        mine = sorted((r for r in rows if r.mode == mode), key=lambda r: r.steps)
        base = next((r for r in mine if r.steps >= 100), mine[0])
        top = mine[-1]
        if top.steps > base.steps:
            out[mode] = round((top.median_ms / base.median_ms) / (top.steps / base.steps), 2)
    return out
