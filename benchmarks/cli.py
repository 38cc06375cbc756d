"""`python -m benchmarks`: run the chosen suites, print tables, write JSON."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from rich.console import Console

from .dbos_peer import ratios, run_dbos
from .goals import check_goals
from .growth import linearity, run_growth
from .overhead import MODES, one_second, run_scenarios, zero_cost
from .report import print_all
from .results import Row, machine_info
from .scale import run_scale
from .streams_bench import run_streams

SUITES = ("quick", "full", "vercel", "scale", "dbos", "postgres")
CACHED = [(True, False), (False, False)]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks", description="wf benchmarks: tables and JSON.")
    p.add_argument("--suite", action="append", choices=SUITES,
                   help="quick (default, < 1 min), full (quick + growth in every mode + DBOS + 1k scale), "
                        "vercel (one-second steps, minutes), scale (1k and 20k workflows), dbos, "
                        "postgres (the Postgres World beside DBOS on one server); repeatable")
    p.add_argument("--json", type=Path, help="write the results to this file")
    p.add_argument("--repeat", type=int, default=None, help="timed runs per scenario (default 5; vercel 2)")
    p.add_argument("--scale-sizes", default="1000,20000", help="workflow counts for the scale suite")
    p.add_argument("--scale-workers", default="1,2", help="worker process counts for the scale suite")
    p.add_argument("--concurrency", type=int, default=1000, help="per-worker concurrency in the scale suite")
    p.add_argument("--scale-timeout", type=float, default=1800,
                   help="seconds to wait for a scale run; runs not completed by then count as stuck")
    p.add_argument("--pg-url", default=None,
                   help="the postgres suite's server (default: WF_TEST_PG_URL, else a throwaway one it starts)")
    p.add_argument("--pg-workers", default="1,2,4", help="worker process counts for the postgres suite")
    p.add_argument("--dbos-python", default=None, help="a Python with dbos installed, for the postgres suite")
    p.add_argument("--smoke", action="store_true",
                   help="a seconds-long run of every harness part (for CI)")
    args = p.parse_args(argv)
    if args.repeat is not None and args.repeat < 1:
        p.error("--repeat must be at least 1")
    try:
        args.sizes = [int(x) for x in args.scale_sizes.split(",") if x]
        args.workers = [int(x) for x in args.scale_workers.split(",") if x]
    except ValueError:
        p.error("--scale-sizes and --scale-workers take comma-separated integers")
    return args


async def run_suites(args: argparse.Namespace, log: Any) -> tuple[dict[str, Any], list[Row]]:
    suites = set(args.suite or ([] if args.smoke else ["quick"]))
    rows: list[Row] = []
    report: dict[str, Any] = {"machine": machine_info(), "suites": sorted(suites),
                              "command": "python -m benchmarks " + " ".join(sys.argv[1:])}
    rep = args.repeat or 5
    t0 = time.perf_counter()
    if args.smoke:
        from . import workloads as w
        from .overhead import Scenario

        smoke = [Scenario("empty workflow", w.empty, (), 0),
                 Scenario("10 sequential steps", w.sequential, (10,), 10, 45),
                 Scenario("gather 10", w.gather, (10,), 10, 45)]
        rows += await run_scenarios("overhead", smoke, 2, modes=[(False, False), (False, True)], progress=log)
        rows += await run_streams(1, [(False, False)], progress=log)
        report["scale"] = [await run_scale(20, 1, concurrency=100, fsync=False, progress=log)]
    if suites & {"quick", "full"}:
        always_replay_too = MODES
        rows += await run_scenarios("overhead", zero_cost(), rep, modes=always_replay_too, progress=log,
                                    replay_repeats=None if "full" in suites else 3)
        rows += await run_streams(max(1, min(rep, 3)), MODES if "full" in suites else CACHED, progress=log)
        rows += await run_growth(max(1, min(rep, 3)), MODES if "full" in suites else [(True, False)], progress=log)
    if suites & {"dbos", "full"}:
        dbos_rows, why = await run_dbos(args.repeat or 10, progress=log)
        rows += dbos_rows
        report["dbos_ratios"] = ratios(dbos_rows)
        if why:
            report["dbos_error"] = why
    if "vercel" in suites:
        rows += await run_scenarios("vercel", one_second(), args.repeat or 2, modes=[(True, False), (True, True)],
                                    progress=log)
    if suites & {"scale", "full"}:
        sizes = args.sizes if "scale" in suites else [s for s in args.sizes if s <= 1000] or [1000]
        scale = report.setdefault("scale", [])
        for n in sizes:
            for k in args.workers:
                scale.append(await run_scale(n, k, concurrency=args.concurrency, timeout=args.scale_timeout,
                                             progress=log))
    if "postgres" in suites:
        report["postgres"] = await asyncio.to_thread(_postgres, args, log)
    report["growth_linearity"] = linearity([r for r in rows if r.section == "growth"])
    report["goals"] = check_goals(rows, report)
    report["seconds"] = round(time.perf_counter() - t0, 1)
    report["rows"] = [r.to_json() for r in rows]
    return report, rows


def _postgres(args: argparse.Namespace, log: Any) -> dict[str, Any]:
    from .postgres import dbos_interpreter, run_postgres, server_url

    with server_url(args.pg_url or os.environ.get("WF_TEST_PG_URL")) as url:
        return run_postgres(url, repeat=args.repeat or 5, workers=[int(n) for n in args.pg_workers.split(",") if n],
                            dbos_python=dbos_interpreter(args.dbos_python), progress=log)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    console = Console(width=max(Console().width, 150))
    err = Console(stderr=True)

    def log(msg: str) -> None:
        err.print(msg, markup=False, style="dim", highlight=False)

    report, rows = asyncio.run(run_suites(args, log))
    print_all(console, report, rows)
    console.print(f"machine: {report['machine'].get('cores')} cores, Python {report['machine'].get('python')}, "
                  f"kernel {report['machine'].get('kernel')}, load {report['machine'].get('loadavg_at_start')}, "
                  f"CPU probe {report['machine'].get('cpu_probe_ms')} ms; {report['seconds']} s")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2, default=str) + "\n")
        console.print(f"wrote {args.json}")
    return 0
