"""The Postgres World's costs: `python -m benchmarks.postgres --url postgresql://…` (or WF_TEST_PG_URL).

Measured on a fresh schema (dropped at the end), with a Worker in this process:

- an empty workflow, start to result (median);
- per sequential step: (50 sequential steps - empty) / 50;
- `gather` of 50 steps;
- a capacity model from the server's own counters over the 50-step runs: statements,
  transactions and WAL bytes per step (`pg_stat_statements` if loaded, `pg_stat_database`,
  `pg_stat_wal`), so a reader can project throughput on a larger server;
- throughput: 1,000 workflows x 4 steps on 1 and 2 `wf worker` processes (steps/s).

The figures depend on the machine and on what else runs on it; BENCHMARKS.md says where
each was taken.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import statistics
import subprocess
import sys
import time
from typing import Any

import psycopg

import wf
from wf.runtime.config import started_world
from wf.runtime.worker import Worker
from wf.world_postgres.world import PostgresWorld, drop_schema
from wf.world_testing.stores import with_query

from . import workloads as w
from .harness import ROOT, WORKLOADS_FILE


def _server_counters(url: str) -> dict[str, float]:
    conninfo = url.split("?", 1)[0]
    with psycopg.connect(conninfo, autocommit=True) as conn:
        row = conn.execute("SELECT xact_commit, tup_inserted + tup_updated + tup_deleted FROM pg_stat_database "
                           "WHERE datname = current_database()").fetchone()
        wal = conn.execute("SELECT wal_bytes, wal_records FROM pg_stat_wal").fetchone()
        statements = None
        with contextlib.suppress(psycopg.Error):
            statements = conn.execute("SELECT sum(calls) FROM pg_stat_statements "
                                      "WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())"
                                      ).fetchone()
    assert row is not None and wal is not None
    return {"commits": float(row[0]), "rows_written": float(row[1]), "wal_bytes": float(wal[0]),
            "wal_records": float(wal[1]),
            "statements": float(statements[0]) if statements and statements[0] is not None else float("nan")}


async def _timed(workflow: Any, *args: Any) -> float:
    t0 = time.perf_counter()
    run = await wf.start_async(workflow, *args)
    await run.result_async(timeout=600)
    return time.perf_counter() - t0


async def latency(url: str, repeat: int) -> dict[str, Any]:
    """Empty workflow, per sequential step and gather-50, with a Worker in this process."""
    world = PostgresWorld(url)
    wf.configure(world=world)
    await started_world(world)
    worker = Worker(world, concurrency=100)
    task = asyncio.create_task(worker.run())
    try:
        await _timed(w.sequential, 5)  # warm up: pools, plans
        empty = statistics.median([await _timed(w.empty) for _ in range(repeat * 4)])
        before = await asyncio.to_thread(_server_counters, url)
        seq = [await _timed(w.sequential, 50) for _ in range(repeat)]
        after = await asyncio.to_thread(_server_counters, url)
        gather = statistics.median([await _timed(w.gather, 50) for _ in range(repeat)])
    finally:
        worker.stop()
        await asyncio.wait_for(task, 60)
        await world.close()
    steps = 50 * repeat
    per = {key: (after[key] - before[key]) / steps for key in after}
    return {"empty_ms": empty * 1e3, "per_step_ms": (statistics.median(seq) - empty) / 50 * 1e3,
            "gather50_ms": gather * 1e3, "per_step_server": per}


def throughput(url: str, workers: int, runs: int = 1000, steps: int = 4) -> dict[str, Any]:
    """`runs` workflows of `steps` steps on `workers` worker processes: steps per second."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p))
    env.pop("WF_DATA_DIR", None)
    procs = [subprocess.Popen([sys.executable, "-m", "wf.cli", "worker", str(WORKLOADS_FILE), "--world", url,
                               "--concurrency", "200"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL) for _ in range(workers)]

    async def drive() -> float:
        world = PostgresWorld(url)
        wf.configure(world=world)
        await started_world(world)
        try:
            await asyncio.sleep(2.0)  # the workers start
            t0 = time.perf_counter()
            handles = [await wf.start_async(w.sequential, steps) for _ in range(runs)]
            for handle in handles:
                await handle.result_async(timeout=900)
            return time.perf_counter() - t0
        finally:
            await world.close()

    try:
        seconds = asyncio.run(drive())
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(30)
    return {"workers": workers, "runs": runs, "seconds": seconds, "steps_per_s": runs * steps / seconds}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.postgres")
    p.add_argument("--url", default=os.environ.get("WF_TEST_PG_URL"), help="a PostgreSQL URL (a schema is made)")
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--workers", default="1,2", help="worker process counts for the throughput runs ('' for none)")
    p.add_argument("--runs", type=int, default=1000)
    args = p.parse_args(argv)
    if not args.url:
        p.error("give --url postgresql://… (or set WF_TEST_PG_URL)")
    results: dict[str, Any] = {}
    for name, job in [("latency", None), *[(f"throughput_{n}", n) for n in map(int, filter(None,
                                                                                           args.workers.split(",")))]]:
        schema = f"bench_{secrets.token_hex(4)}"
        url = with_query(args.url, schema=schema)
        try:
            if job is None:
                results[name] = asyncio.run(latency(url, args.repeat))
            else:
                results[name] = throughput(url, job, args.runs)
        finally:
            asyncio.run(drop_schema(url, schema))
        print(json.dumps({name: results[name]}, indent=1), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
