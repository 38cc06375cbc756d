"""The performance goals of the Runtime and Benchmarks issues, checked against one run's figures."""

from __future__ import annotations

from typing import Any

from .dbos_peer import per_step
from .results import Row

DURABLE = "fsync on, cached"


def _find(rows: list[Row], section: str, scenario: str, mode: str) -> Row | None:
    return next((r for r in rows if r.section == section and r.scenario == scenario and r.mode == mode), None)


def _goal(goal: str, target: str, value: float | None, ok: bool | None, fmt: str) -> dict[str, Any]:
    return {"goal": goal, "target": target, "measured": "not measured" if value is None else fmt.format(value),
            "value": value, "met": None if value is None else ok}


def check_goals(rows: list[Row], report: dict[str, Any]) -> list[dict[str, Any]]:
    """One entry per goal: target, measured value (None when the suite did not run) and met."""
    out = []
    empty = _find(rows, "overhead", "empty workflow", DURABLE)
    v = empty.median_ms if empty else None
    out.append(_goal("empty workflow, fsync on", "<= 3 ms median", v, v is not None and v <= 3, "{:.2f} ms"))

    seq = [r for r in rows if r.section == "overhead" and r.mode == DURABLE]
    v = per_step(seq, DURABLE)
    out.append(_goal("sequential step, fsync on", "<= 0.5 ms/step (50 steps - empty) / 50", v,
                     v is not None and v <= 0.5, "{:.3f} ms/step"))

    long = _find(rows, "overhead", "1000 sequential steps", DURABLE) or _find(rows, "growth", "1000 sequential steps",
                                                                             DURABLE)
    v = long.median_ms / 1000 if long else None
    out.append(_goal("1000 sequential steps, fsync on", "<= 1.5 s", v, v is not None and v <= 1.5, "{:.2f} s"))

    g100 = _find(rows, "growth", "100 sequential steps", DURABLE)
    g1000 = _find(rows, "growth", "1000 sequential steps", DURABLE)
    v = g1000.median_ms / g100.median_ms if g100 and g1000 else None
    out.append(_goal("linear growth", "time(1000) <= 12 x time(100)", v, v is not None and v <= 12, "{:.1f} x"))

    gather = _find(rows, "vercel", "gather 50 x 1 s steps", DURABLE)
    v = gather.median_ms / 1000 if gather else None
    out.append(_goal("gather of 50 one-second steps", "<= 1.2 s", v, v is not None and v <= 1.2, "{:.2f} s"))

    scale = [s for s in report.get("scale", []) if s["workflows"] == 1000]
    v = max((s["steps_per_s"] for s in scale), default=None)
    out.append(_goal("1,000 workflows x 4 steps", ">= 2,000 steps/s", v, v is not None and v >= 2000, "{:.0f} steps/s"))

    dbos_rows = [r for r in rows if r.section == "dbos"]
    for api, long, short in (("async API", "50 sequential steps", "empty workflow"),
                             ("blocking API", "50 sequential steps, blocking API", "empty workflow, blocking API")):
        wf_step = per_step(dbos_rows, f"wf {DURABLE}", long, short)
        dbos_step = per_step(dbos_rows, "DBOS", long, short)
        v = dbos_step / wf_step if wf_step and dbos_step else None
        out.append(_goal(f"faster than DBOS per sequential step ({api})", ">= 10 x", v, v is not None and v >= 10,
                         "{:.1f} x"))
    blocking = _find(rows, "dbos", "empty workflow, blocking API", f"wf {DURABLE}")
    v = blocking.median_ms if blocking else None
    out.append(_goal("empty workflow through wf.run, fsync on", "<= 1.5 ms median", v, v is not None and v <= 1.5,
                     "{:.2f} ms"))

    fifo = [s for s in report.get("scale", []) if s.get("fifo_first10_median_s") is not None and s["workflows"] >= 1000]
    if fifo:
        worst = max(fifo, key=lambda s: s["fifo_first10_median_s"] / s["fifo_last10_median_s"])
        v = worst["fifo_first10_median_s"] / worst["fifo_last10_median_s"]
    else:
        v = None
    out.append(_goal("FIFO (worst scale run)", "first 10% median <= 0.5 x last 10% median", v,
                     v is not None and v <= 0.5, "{:.2f} x"))
    return out
