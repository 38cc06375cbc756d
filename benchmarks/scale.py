"""Scale and fairness: N workflows of four 50 ms service calls submitted at once to K worker processes.

Reports total time, steps/s, completion-time percentiles, the FIFO measure (median completion of
the first 10% submitted against the last 10%), stuck runs (any run not completed at the end)
and the peak RSS (VmHWM) of each worker process.
"""

from __future__ import annotations

import asyncio
import resource
import statistics
import time
from collections.abc import Callable
from typing import Any

import wf
from wf.runtime.entities import RunStatus

from . import workloads as w
from .harness import (
    cpu_seconds,
    cpu_shares,
    in_process,
    machine_cpu_ticks,
    peak_rss_mb,
    start_worker_processes,
    stop_worker_processes,
    wait_workers_live,
)
from .results import percentile

STEPS_PER_RUN = 4
LATENCY = 0.05
SUBMIT_BATCH = 200


async def _submit(n: int) -> tuple[list[str], float]:
    """Start `n` runs as fast as one client can; (run ids in submission order, seconds taken)."""
    ids: list[str] = []
    t0 = time.perf_counter()
    for lo in range(0, n, SUBMIT_BATCH):
        batch = range(lo, min(n, lo + SUBMIT_BATCH))
        runs = await asyncio.gather(*(wf.start_async(w.four_calls, i, LATENCY) for i in batch))
        ids.extend(r.id for r in runs)
    return ids, time.perf_counter() - t0


async def _await_all(world: Any, ids: list[str], deadline: float) -> None:
    """Wait, in submission order, until every run has ended or the deadline passes: the way
    `run.result_async()` waits (woken by the run's end only, not by each of its events)."""
    for run_id in ids:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return
        await world.wait_for_end(run_id, timeout=remaining)


async def run_scale(n: int, workers: int, *, concurrency: int, fsync: bool = True, timeout: float = 900,
                    progress: Callable[[str], None] = print) -> dict[str, Any]:
    """One scale run; the result is a JSON-ready dict."""
    async with in_process(fsync=fsync, always_replay=False, worker=False) as env:
        world = env.world
        procs = start_worker_processes(world.data_dir, workers, fsync=fsync, concurrency=concurrency)
        try:
            await wait_workers_live(world, procs)
            wall0 = time.time()
            ticks0, client0 = machine_cpu_ticks(), resource.getrusage(resource.RUSAGE_SELF)
            ids, submit_s = await _submit(n)
            progress(f"  scale: {n} runs submitted in {submit_s:.1f} s")
            await _await_all(world, ids, time.monotonic() + timeout)
            shares, client1 = cpu_shares(ticks0, machine_cpu_ticks()), resource.getrusage(resource.RUSAGE_SELF)
            peaks = [peak_rss_mb(p.pid) for p in procs]
            cpu = [cpu_seconds(p.pid) for p in procs]
            statuses: dict[str, int] = {}
            done: list[float] = []
            for run_id in ids:
                run = await world.runs.get(run_id, resolve_data=False)
                statuses[str(run.status)] = statuses.get(str(run.status), 0) + 1
                if run.status == RunStatus.COMPLETED and run.completed_at is not None:
                    done.append(run.completed_at.timestamp() - wall0)
                else:
                    done.append(float("nan"))
            leftover = await world.queue.list()
        finally:
            stop_worker_processes(procs)
    finished = [d for d in done if d == d]
    total = max(finished) if finished else float("nan")
    tenth = max(1, n // 10)
    first = [d for d in done[:tenth] if d == d]
    last = [d for d in done[-tenth:] if d == d]
    result: dict[str, Any] = {
        "workflows": n, "workers": workers, "concurrency_per_worker": concurrency, "fsync": fsync,
        "steps": n * STEPS_PER_RUN, "step_latency_s": LATENCY,
        "submit_s": round(submit_s, 3), "total_s": round(total, 3),
        "steps_per_s": round(n * STEPS_PER_RUN / total, 1) if finished else 0.0,
        "completion_s": {q: round(percentile(finished, int(q[1:])), 3) for q in ("p50", "p90", "p99")}
        if finished else {},
        "fifo_first10_median_s": round(statistics.median(first), 3) if first else None,
        "fifo_last10_median_s": round(statistics.median(last), 3) if last else None,
        "statuses": statuses,
        "stuck_runs": n - statuses.get("completed", 0),
        "queue_messages_left": len(leftover),
        "queue_left_sample": [{"queue": m.queue, "state": m.state, "payload": m.payload,
                               "available_at": str(m.available_at)} for m in leftover[:5]],
        "worker_peak_rss_mb": [round(p, 1) if p is not None else None for p in peaks],
        # CPU the workers used (start-up included) per step: what caps throughput on a busy machine.
        "worker_cpu_ms_per_step": round(sum(c for c in cpu if c is not None) * 1000 / (n * STEPS_PER_RUN), 3)
        if all(c is not None for c in cpu) else None,
        # CPU of this process, which submits the runs and waits for them (all its threads).
        "client_cpu_ms_per_run": round((client1.ru_utime - client0.ru_utime + client1.ru_stime - client0.ru_stime)
                                       * 1000 / n, 3),
        # The whole machine while the runs were submitted and driven: idle (with I/O wait) and
        # stolen by the hypervisor, in % of all CPUs. Near-zero idle means CPU-bound.
        "machine_cpu": shares,
    }
    progress(f"  scale: {n} x {STEPS_PER_RUN} steps, {workers} worker(s): {result['total_s']} s, "
             f"{result['steps_per_s']} steps/s, worker CPU {result['worker_cpu_ms_per_step']} ms/step, "
             f"client CPU {result['client_cpu_ms_per_run']} ms/run, machine {result['machine_cpu']}, "
             f"stuck {result['stuck_runs']}")
    return result
