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
import resource
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
from .harness import ROOT, WORKLOADS_FILE, cpu_seconds, cpu_shares, machine_cpu_ticks


def _server_counters(url: str) -> dict[str, float]:
    time.sleep(1.5)  # backends report their counters at most once a second (PostgreSQL 15)
    conninfo = url.split("?", 1)[0]
    with psycopg.connect(conninfo, autocommit=True) as conn:
        row = conn.execute("SELECT xact_commit, tup_inserted + tup_updated + tup_deleted FROM pg_stat_database "
                           "WHERE datname = current_database()").fetchone()
        wal = conn.execute("SELECT wal_bytes, wal_records FROM pg_stat_wal").fetchone()
        statements = None
        with contextlib.suppress(psycopg.Error):  # needs the library preloaded (tests/pg_server.py does)
            conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
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

    cpu: dict[str, float] = {}

    async def drive() -> float:
        world = PostgresWorld(url)
        wf.configure(world=world)
        await started_world(world)
        try:
            await asyncio.sleep(2.0)  # the workers start
            before = _cpu_now([p.pid for p in procs])
            t0 = time.perf_counter()
            handles = [await wf.start_async(w.sequential, steps) for _ in range(runs)]
            for handle in handles:
                await handle.result_async(timeout=900)
            seconds = time.perf_counter() - t0
            after = _cpu_now([p.pid for p in procs])
            cpu.update({key: after[key] - before[key] for key in after if key != "ticks"})
            cpu["idle_pct"] = (cpu_shares(before["ticks"], after["ticks"]) or {}).get("idle_pct", float("nan"))
            return seconds
        finally:
            await world.close()

    try:
        seconds = asyncio.run(drive())
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(30)
    n = runs * steps
    return {"workers": workers, "runs": runs, "seconds": seconds, "steps_per_s": n / seconds,
            # Where the CPU went, per step (ms): wf's worker processes, the PostgreSQL server's
            # processes, and this process (starting the runs and waiting for their results).
            "cpu_ms_per_step": {key: round(cpu[key] * 1000 / n, 3) for key in ("workers", "postgres", "client")},
            "machine_idle_pct": cpu["idle_pct"]}


def _postgres_pids() -> list[int]:
    """The PostgreSQL server processes on this machine (their command name is `postgres`)."""
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError), open(f"/proc/{entry}/comm") as f:
                if f.read().strip() == "postgres":
                    pids.append(int(entry))
    return pids


def _cpu_now(workers: list[int]) -> dict[str, Any]:
    """CPU seconds used so far by the workers, the server (its live processes) and this process."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {"workers": sum(cpu_seconds(pid) or 0.0 for pid in workers),
            "postgres": sum(cpu_seconds(pid) or 0.0 for pid in _postgres_pids()),
            "client": usage.ru_utime + usage.ru_stime, "ticks": machine_cpu_ticks()}


def _dbos(python: str, url: str, *args: str) -> dict[str, Any] | str:
    """One `benchmarks.dbos_postgres` measure in a subprocess: its JSON, or why it failed."""
    proc = subprocess.run([python, "-m", "benchmarks.dbos_postgres", *args, "--url", url], cwd=ROOT,
                          capture_output=True, text=True, timeout=1800)
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        return f"DBOS failed (exit {proc.returncode}): {(proc.stderr.strip().splitlines() or ['?'])[-1]}"
    return dict(json.loads(lines[-1]))


def _database(url: str, name: str, *, drop: bool = False) -> str:
    """Create (or drop) database `name` on the server of `url`; its URL."""
    conninfo = url.split("?", 1)[0]
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        if not drop:
            conn.execute(f'CREATE DATABASE "{name}"')
    return conninfo.rsplit("/", 1)[0] + "/" + name


def run_postgres(url: str, *, repeat: int = 5, workers: list[int] | None = None, runs: int = 1000,
                 dbos_python: str | None = None, progress: Any = print) -> dict[str, Any]:
    """wf's Postgres World and (when `dbos_python` can import dbos) DBOS on the same server."""
    workers = [1, 2, 4] if workers is None else workers
    results: dict[str, Any] = {"wf": {}, "dbos": {}}
    for name, job in [("latency", None), *[(f"throughput_{n}", n) for n in workers]]:
        schema = f"bench_{secrets.token_hex(4)}"
        wf_url = with_query(url, schema=schema)
        try:
            results["wf"][name] = asyncio.run(latency(wf_url, repeat)) if job is None else throughput(wf_url, job,
                                                                                                     runs)
        finally:
            asyncio.run(drop_schema(wf_url, schema))
        progress(f"  postgres: wf {name}: {json.dumps(results['wf'][name])}")
        if dbos_python is None:
            continue
        dbos_url = _database(url, "wf_bench_dbos")
        try:
            args = ["latency", "--repeat", str(repeat)] if job is None else ["throughput", "--workers", str(job),
                                                                             "--runs", str(runs)]
            results["dbos"][name] = _dbos(dbos_python, dbos_url, *args)
        finally:
            _database(url, "wf_bench_dbos", drop=True)
        progress(f"  postgres: DBOS {name}: {json.dumps(results['dbos'][name])}")
    return results


def dbos_interpreter(explicit: str | None) -> str | None:
    """A Python that can import dbos: `explicit`, else this one if it can, else None."""
    python = explicit or sys.executable
    probe = subprocess.run([python, "-c", "import dbos"], capture_output=True)
    return python if probe.returncode == 0 else None


@contextlib.contextmanager
def server_url(url: str | None) -> Any:
    """`url`, or a throwaway PostgreSQL 15 started for the run (tests/pg_server.py)."""
    if url:
        yield url
        return
    from tests.pg_server import PgServer

    server = PgServer()
    server.start()
    try:
        yield server.url
    finally:
        server.stop()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.postgres")
    p.add_argument("--url", default=os.environ.get("WF_TEST_PG_URL"),
                   help="a PostgreSQL URL (schemas and a database are made and dropped); default: start one")
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--workers", default="1,2,4", help="worker process counts for the throughput runs ('' for none)")
    p.add_argument("--runs", type=int, default=1000)
    p.add_argument("--dbos-python", help="a Python with dbos installed (default: this one, if it has it)")
    p.add_argument("--json", help="write the results to this file")
    args = p.parse_args(argv)
    with server_url(args.url) as url:
        results = run_postgres(url, repeat=args.repeat, workers=[int(n) for n in args.workers.split(",") if n],
                               runs=args.runs, dbos_python=dbos_interpreter(args.dbos_python))
    print(json.dumps(results, indent=1))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
