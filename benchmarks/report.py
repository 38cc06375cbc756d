"""Rendering results: rich tables on the terminal and the goal summary."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

from .results import Row

SECTION_TITLES = {
    "overhead": "Overhead, zero-cost steps (start -> result, ms)",
    "streams": "Streams (ms)",
    "growth": "Growth: cost per step against run length",
    "dbos": "wf beside DBOS on the same workloads (ms)",
    "vercel": "Vercel's table: one-second steps (overhead = time - sleeping)",
}


def _ms(x: float | None, digits: int = 1) -> str:
    return "" if x is None else f"{x:.{digits}f}"


def rows_table(section: str, rows: list[Row]) -> Table:
    table = Table(title=SECTION_TITLES.get(section, section), title_justify="left")
    table.add_column("scenario")
    table.add_column("mode")
    table.add_column("n", justify="right")
    table.add_column("median", justify="right")
    table.add_column("p90", justify="right")
    if section == "vercel":
        table.add_column("overhead", justify="right")
    table.add_column("per step", justify="right")
    for r in rows:
        cells = [r.scenario, r.mode, str(len(r.samples_ms)), _ms(r.median_ms), _ms(r.p90_ms)]
        if section == "vercel":
            cells.append(_ms(r.overhead_ms))
        cells.append(_ms(r.per_step_ms, 3))
        table.add_row(*cells)
    return table


def ratio_table(ratios: list[dict[str, Any]]) -> Table:
    table = Table(title="wf / DBOS, pair by pair (below 1: wf faster)", title_justify="left")
    for col in ("scenario", "wf mode", "wf ms", "DBOS ms", "wf/DBOS"):
        table.add_column(col, justify="left" if col in ("scenario", "wf mode") else "right")
    for r in ratios:
        table.add_row(r["scenario"], r["wf_mode"], _ms(r["wf_ms"], 2), _ms(r["dbos_ms"], 2), f"{r['ratio']:.3f}")
    return table


def scale_table(results: list[dict[str, Any]]) -> Table:
    table = Table(title="Scale and fairness: workflows of 4 x 50 ms service calls, submitted at once",
                  title_justify="left")
    for col in ("workflows", "workers x conc.", "submit s", "total s", "steps/s", "p50 s", "p90 s", "p99 s",
                "FIFO first/last 10% s", "stuck", "peak RSS MB"):
        table.add_column(col, justify="right")
    for r in results:
        c = r.get("completion_s", {})
        table.add_row(
            str(r["workflows"]), f"{r['workers']} x {r['concurrency_per_worker']}", _ms(r["submit_s"]),
            _ms(r["total_s"]), _ms(r["steps_per_s"], 0), _ms(c.get("p50"), 2), _ms(c.get("p90"), 2),
            _ms(c.get("p99"), 2), f"{_ms(r['fifo_first10_median_s'], 2)} / {_ms(r['fifo_last10_median_s'], 2)}",
            str(r["stuck_runs"]), ", ".join(_ms(p, 0) for p in r["worker_peak_rss_mb"] if p is not None),
        )
    return table


def goals_table(goals: list[dict[str, Any]]) -> Table:
    table = Table(title="Goals", title_justify="left")
    for col in ("goal", "target", "measured", "met"):
        table.add_column(col)
    for g in goals:
        met = {True: "[green]yes[/]", False: "[red]no[/]", None: "-"}[g["met"]]
        table.add_row(g["goal"], g["target"], g["measured"], met)
    return table


def print_all(console: Console, report: dict[str, Any], rows: list[Row]) -> None:
    for section in ("overhead", "streams", "growth", "vercel", "dbos"):
        mine = [r for r in rows if r.section == section]
        if mine:
            console.print(rows_table(section, mine))
    if report.get("growth_linearity"):
        console.print("growth linearity (time ratio / length ratio, 1.0 = linear): "
                      + ", ".join(f"{k}: {v}" for k, v in report["growth_linearity"].items()))
    if report.get("dbos_ratios"):
        console.print(ratio_table(report["dbos_ratios"]))
    if report.get("dbos_error"):
        console.print(f"[yellow]DBOS: {report['dbos_error']}[/]")
    if report.get("scale"):
        console.print(scale_table(report["scale"]))
    if report.get("postgres"):
        console.print(postgres_table(report["postgres"]))
    if report.get("goals"):
        console.print(goals_table(report["goals"]))


def postgres_table(results: dict[str, Any]) -> Table:
    """The postgres suite: wf's Postgres World beside DBOS on the same server."""
    table = Table(title="the Postgres World beside DBOS (same PostgreSQL server)")
    for col in ("measure", "wf", "DBOS async", "DBOS sync", "wf vs DBOS async"):
        table.add_column(col, justify="right" if col != "measure" else "left")
    wf_lat, dbos_lat = results["wf"].get("latency", {}), results["dbos"].get("latency", {})
    dbos_async = dbos_lat.get("async", {}) if isinstance(dbos_lat, dict) else {}
    dbos_sync = dbos_lat.get("sync", {}) if isinstance(dbos_lat, dict) else {}

    def ms(value: Any) -> str:
        return f"{value:.2f} ms" if isinstance(value, int | float) else "-"

    def times(ours: Any, theirs: Any, higher_is_better: bool = False) -> str:
        if not isinstance(ours, int | float) or not isinstance(theirs, int | float) or not ours or not theirs:
            return "-"
        return f"{(ours / theirs if higher_is_better else theirs / ours):.1f}x"

    for key, label in (("empty_ms", "empty workflow"), ("per_step_ms", "per sequential step"),
                       ("gather50_ms", "gather of 50 steps")):
        table.add_row(label, ms(wf_lat.get(key)), ms(dbos_async.get(key)), ms(dbos_sync.get(key)),
                      times(wf_lat.get(key), dbos_async.get(key)))
    for name in sorted(k for k in results["wf"] if k.startswith("throughput_")):
        ours, theirs = results["wf"][name], results["dbos"].get(name, {})
        theirs_rate = theirs.get("steps_per_s") if isinstance(theirs, dict) else None
        table.add_row(f"1,000 x 4 steps, {ours['workers']} worker(s)", f"{ours['steps_per_s']:.0f} steps/s",
                      f"{theirs_rate:.0f} steps/s" if theirs_rate else "-", "",
                      times(ours["steps_per_s"], theirs_rate, higher_is_better=True))
    return table
