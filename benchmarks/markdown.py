"""Markdown tables for BENCHMARKS.md: `python -m benchmarks.markdown results.json [more.json ...]`.

Several files (runs of different suites) are merged: later rows replace earlier ones of the
same section, scenario and mode, and the goals are checked again on the merged figures.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from .goals import check_goals
from .growth import linearity
from .report import SECTION_TITLES
from .results import Row


def _f(x: Any, digits: int = 1) -> str:
    return "" if x is None else f"{x:.{digits}f}"


def _shares(shares: dict[str, float] | None) -> str:
    return "" if not shares else f"{_f(shares.get('idle_pct'))} / {_f(shares.get('steal_pct'))}"


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def merge(reports: list[dict[str, Any]]) -> dict[str, Any]:
    """One report from several runs (see the module docstring)."""
    merged: dict[str, Any] = {"runs": [], "rows": []}
    keyed: dict[tuple[str, str, str], dict[str, Any]] = {}
    scale: dict[tuple[int, int], dict[str, Any]] = {}
    for rep in reports:
        merged["runs"].append({"machine": rep["machine"], "command": rep.get("command"), "seconds": rep.get("seconds")})
        for row in rep["rows"]:
            keyed[(row["section"], row["scenario"], row["mode"])] = row
        for key in ("dbos_ratios", "dbos_error"):
            if key in rep:
                merged[key] = rep[key]
        for run in rep.get("scale", []):
            scale[(run["workflows"], run["workers"])] = run
    merged["rows"] = list(keyed.values())
    merged["scale"] = [scale[k] for k in sorted(scale)]
    rows = [Row.from_json(r) for r in merged["rows"]]
    merged["growth_linearity"] = linearity([r for r in rows if r.section == "growth"])
    merged["goals"] = check_goals(rows, merged)
    return merged


def render(report: dict[str, Any]) -> str:
    """Every section of a (merged) report as markdown."""
    out: list[str] = []
    for run in report.get("runs", [report]):
        m = run["machine"]
        out.append(f"Machine: {m.get('cpu', '?')}, {m.get('cores')} cores, {m.get('memory_gb', '?')} GB, "
                   f"Python {m.get('python')}, Linux {m.get('kernel')}; load average at start "
                   f"{m.get('loadavg_at_start')}; CPU probe {m.get('cpu_probe_ms', '?')} ms; "
                   f"{m.get('timestamp')}; `{run.get('command', '')}` "
                   f"({run.get('seconds')} s).")
    rows = report["rows"]
    for section in ("overhead", "streams", "growth", "vercel", "dbos"):
        mine = [r for r in rows if r["section"] == section]
        if not mine:
            continue
        vercel = section == "vercel"
        header = ["scenario", "mode", "n", "median ms", "p90 ms"]
        header += (["overhead ms"] if vercel else []) + ["per step ms"]
        body = [[r["scenario"], r["mode"], str(r["repeats"]), _f(r["median_ms"]), _f(r["p90_ms"])]
                + ([_f(r["overhead_ms"])] if vercel else []) + [_f(r["per_step_ms"], 3)] for r in mine]
        out.append(f"### {SECTION_TITLES.get(section, section)}\n\n" + _table(header, body))
    if report.get("growth_linearity"):
        out.append("Growth linearity (time ratio / length ratio; 1.0 = linear): "
                   + "; ".join(f"{k}: {v}" for k, v in report["growth_linearity"].items()))
    if report.get("dbos_ratios"):
        body = [[r["scenario"], r["wf_mode"], _f(r["wf_ms"], 2), _f(r["dbos_ms"], 2), f"{r['ratio']:.3f}"]
                for r in report["dbos_ratios"]]
        out.append("### wf / DBOS, pair by pair (below 1: wf faster)\n\n"
                   + _table(["scenario", "wf mode", "wf ms", "DBOS ms", "wf/DBOS"], body))
    if report.get("dbos_error"):
        out.append(f"DBOS: {report['dbos_error']}")
    if report.get("scale"):
        body = []
        for s in report["scale"]:
            c = s.get("completion_s", {})
            body.append([str(s["workflows"]), f"{s['workers']} x {s['concurrency_per_worker']}", _f(s["submit_s"]),
                         _f(s["total_s"]), _f(s["steps_per_s"], 0), _f(c.get("p50"), 2), _f(c.get("p90"), 2),
                         _f(c.get("p99"), 2),
                         f"{_f(s['fifo_first10_median_s'], 2)} / {_f(s['fifo_last10_median_s'], 2)}",
                         str(s["stuck_runs"]), str(s["queue_messages_left"]),
                         ", ".join(_f(p, 0) for p in s["worker_peak_rss_mb"] if p is not None),
                         _f(s.get("worker_cpu_ms_per_step"), 2), _f(s.get("client_cpu_ms_per_run"), 2),
                         _shares(s.get("machine_cpu"))])
        out.append("### Scale and fairness (4 x 50 ms service calls per workflow, submitted at once; "
                   "completion times from the first submission)\n\n"
                   + _table(["workflows", "workers x concurrency", "submit s", "total s", "steps/s", "p50 s", "p90 s",
                             "p99 s", "FIFO first/last 10% median s", "stuck", "queue left", "peak RSS MB",
                             "worker CPU ms/step", "client CPU ms/run", "machine idle / stolen %"], body))
    if report.get("goals"):
        body = [[g["goal"], g["target"], g["measured"], {True: "yes", False: "**no**", None: "-"}[g["met"]]]
                for g in report["goals"]]
        out.append("### Goals\n\n" + _table(["goal", "target", "measured", "met"], body))
    return "\n\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args:
        print("usage: python -m benchmarks.markdown RESULTS.json [MORE.json ...]", file=sys.stderr)
        return 2
    reports = []
    for name in args:
        try:
            reports.append(json.loads(Path(name).read_text()))
        except (OSError, ValueError) as exc:
            print(f"cannot read {name}: {exc}", file=sys.stderr)
            return 2
    sys.stdout.write(render(merge(reports)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
