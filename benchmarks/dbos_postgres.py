"""DBOS Transact on a PostgreSQL system database, for the Postgres World's side-by-side.

Run by `benchmarks.postgres` in a subprocess (DBOS is a process-wide singleton, and it is an
optional peer: `pip install 'wf[bench]'`), against another database of the same server:

    python -m benchmarks.dbos_postgres latency --url postgresql://…/dbos_bench [--repeat 5]
    python -m benchmarks.dbos_postgres throughput --url … --workers N [--runs 1000]

Each prints one JSON object. Latency is measured with both of DBOS's APIs: async
(`start_workflow_async` + `get_result`) and sync (`start_workflow` + `get_result`, sync
workflow and steps). Throughput enqueues `runs` workflows of 4 steps with `DBOSClient` on a
queue that `workers` DBOS processes serve, polling every 50 ms (DBOS's default is 1 s; the
shorter interval gives DBOS its best figure) with no concurrency limit.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import statistics
import subprocess
import sys
import time
from typing import Any

from .dbos_peer import define_peer_workflows

QUEUE = "wf_bench"
POLL_SECONDS = 0.05


def _launch(url: str, *, queue: bool = False) -> dict[str, Any]:
    defs = define_peer_workflows()
    logging.getLogger("dbos").setLevel(logging.WARNING)
    defs["DBOS"](config={"name": "wf-bench", "system_database_url": url, "log_level": "WARNING"})
    defs["DBOS"].launch()
    if queue:
        defs["DBOS"].register_queue(QUEUE, polling_interval_sec=POLL_SECONDS, on_conflict="always_update")
    return defs


def latency(url: str, repeat: int) -> dict[str, Any]:
    defs = _launch(url)
    dbos = defs["DBOS"]

    async def timed_async(fn: Any, *args: Any) -> float:
        t0 = time.perf_counter()
        handle = await dbos.start_workflow_async(fn, *args)
        await handle.get_result()
        return time.perf_counter() - t0

    def timed_sync(fn: Any, *args: Any) -> float:
        t0 = time.perf_counter()
        dbos.start_workflow(fn, *args).get_result()
        return time.perf_counter() - t0

    async def measure() -> dict[str, Any]:
        await timed_async(defs["sequential"], 5)  # warm up
        empty = statistics.median([await timed_async(defs["empty"]) for _ in range(repeat * 4)])
        seq = statistics.median([await timed_async(defs["sequential"], 50) for _ in range(repeat)])
        gather = statistics.median([await timed_async(defs["gather"], 50) for _ in range(repeat)])
        return {"empty_ms": empty * 1e3, "per_step_ms": (seq - empty) / 50 * 1e3, "gather50_ms": gather * 1e3}

    try:
        result = {"async": asyncio.run(measure())}
        timed_sync(defs["sequential_sync"], 5)
        empty = statistics.median([timed_sync(defs["empty_sync"]) for _ in range(repeat * 4)])
        seq = statistics.median([timed_sync(defs["sequential_sync"], 50) for _ in range(repeat)])
        result["sync"] = {"empty_ms": empty * 1e3, "per_step_ms": (seq - empty) / 50 * 1e3}
        from importlib.metadata import version

        result["version"] = version("dbos")
        return result
    finally:
        dbos.destroy()


def serve(url: str) -> None:
    """A DBOS process serving the queue until killed."""
    _launch(url, queue=True)
    print("ready", flush=True)
    while True:
        time.sleep(3600)


def throughput(url: str, workers: int, runs: int, steps: int = 4) -> dict[str, Any]:
    from dbos import DBOSClient

    defs = define_peer_workflows()
    name = defs["sequential"].dbos_function_name
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [os.getcwd(), os.environ.get("PYTHONPATH")])))
    procs = [subprocess.Popen([sys.executable, "-m", "benchmarks.dbos_postgres", "serve", "--url", url],
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env) for _ in range(workers)]
    try:
        for proc in procs:
            assert proc.stdout is not None
            if proc.stdout.readline().strip() != b"ready":
                raise RuntimeError("a DBOS worker process did not start")
        client = DBOSClient(system_database_url=url)
        try:
            t0 = time.perf_counter()
            handles = [client.enqueue({"queue_name": QUEUE, "workflow_name": name}, steps) for _ in range(runs)]
            for handle in handles:
                if handle.get_result() != steps * (steps - 1) // 2:
                    raise AssertionError("a DBOS workflow returned a wrong result")
            seconds = time.perf_counter() - t0
        finally:
            client.destroy()
    finally:
        for proc in procs:
            proc.kill()
            proc.wait(30)
    return {"workers": workers, "runs": runs, "seconds": seconds, "steps_per_s": runs * steps / seconds}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.dbos_postgres")
    p.add_argument("what", choices=["latency", "throughput", "serve"])
    p.add_argument("--url", required=True)
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--runs", type=int, default=1000)
    args = p.parse_args(argv)
    if args.what == "serve":
        serve(args.url)
        return 0
    result = latency(args.url, args.repeat) if args.what == "latency" else throughput(args.url, args.workers,
                                                                                      args.runs)
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
