"""The cost of flow control on the scale workload: an unlimited step against limited ones.

N runs of four sequential 50 ms service calls (the scale benchmark's `four_calls`) submitted at
once to K `wf worker` processes, once per variant of the step:

    unlimited    @wf.step                                  (run inline by the driver)
    concurrency  @wf.step(concurrency=100000)              (a slot per attempt, never binding)
    rate         @wf.step(rate_limit="1000000/1s")         (a rate window per attempt, never binding)
    tight        @wf.step(concurrency=50)                  (binding: half the worker's 100 steps)

Each variant runs `--repeat` times, interleaved with the others (a shared machine drifts); prints
the median total time, steps/s, worker CPU per step and the overhead against `unlimited`.

    python -m benchmarks.flow_control [--runs 1000] [--workers 1] [--repeat 3] [--variants unlimited,...]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import wf
from wf.runtime.entities import RunStatus

HERE = Path(__file__).resolve()
ROOT = HERE.parent.parent
LATENCY = 0.05
STEPS = 4


@wf.step(name="bench.flow.unlimited_call")
async def unlimited_call(i: int, k: int, latency: float) -> int:
    await asyncio.sleep(latency)
    return i + k


@wf.step(name="bench.flow.concurrency_call", concurrency=100_000)
async def concurrency_call(i: int, k: int, latency: float) -> int:
    await asyncio.sleep(latency)
    return i + k


@wf.step(name="bench.flow.rate_call", rate_limit="1000000/1s")
async def rate_call(i: int, k: int, latency: float) -> int:
    await asyncio.sleep(latency)
    return i + k


@wf.step(name="bench.flow.tight_call", concurrency=50)
async def tight_call(i: int, k: int, latency: float) -> int:
    await asyncio.sleep(latency)
    return i + k


CALLS = {"unlimited": unlimited_call, "concurrency": concurrency_call, "rate": rate_call, "tight": tight_call}


@wf.workflow(name="bench.flow.four_calls")
async def four_calls(variant: str, i: int, latency: float = LATENCY) -> int:
    """Four sequential calls of the variant's step."""
    call = CALLS[variant]
    total = 0
    for k in range(STEPS):
        total += await call(i, k, latency)
    return total


def _cpu_seconds(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


async def run_variant(variant: str, n: int, workers: int, *, concurrency: int = 100) -> dict[str, Any]:
    """One variant on a fresh data dir; a JSON-ready result."""
    from .harness import in_process, stop_worker_processes, wait_workers_live

    async with in_process(fsync=True, always_replay=False, worker=False) as env:
        world = env.world
        cmd = [sys.executable, "-c", "import sys; from wf.cli.app import main; sys.argv[0] = 'wf'; main()",
               "worker", str(HERE), "--data-dir", str(world.data_dir), "--concurrency", str(concurrency)]
        proc_env = dict(os.environ, WF_FSYNC="1", WF_ALWAYS_REPLAY="0",
                        PYTHONPATH=os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p))
        procs = [subprocess.Popen(cmd, cwd=ROOT, env=proc_env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
                 for _ in range(workers)]
        try:
            await wait_workers_live(world, procs)
            cpu0 = [_cpu_seconds(p.pid) or 0.0 for p in procs]
            t0 = time.perf_counter()
            ids: list[str] = []
            for lo in range(0, n, 200):
                runs = await asyncio.gather(*(wf.start_async("bench.flow.four_calls", variant, i, LATENCY)
                                              for i in range(lo, min(n, lo + 200))))
                ids.extend(r.id for r in runs)
            for run_id in ids:
                await world.wait_for_end(run_id, timeout=900)
            total = time.perf_counter() - t0
            cpu = sum((_cpu_seconds(p.pid) or 0.0) - c for p, c in zip(procs, cpu0, strict=True))
            completed = 0
            for run_id in ids:
                completed += (await world.runs.get(run_id, resolve_data=False)).status == RunStatus.COMPLETED
        finally:
            stop_worker_processes(procs)
    return {"variant": variant, "runs": n, "workers": workers, "total_s": round(total, 3),
            "steps_per_s": round(n * STEPS / total, 1), "worker_cpu_ms_per_step": round(cpu * 1000 / (n * STEPS), 3),
            "completed": completed}


async def compare(variants: list[str], n: int, workers: int, repeat: int) -> list[dict[str, Any]]:
    """`repeat` rounds, the variants interleaved in each (a shared machine drifts); medians compared."""
    rounds: dict[str, list[dict[str, Any]]] = {v: [] for v in variants}
    for r in range(repeat):
        for variant in variants:
            result = await run_variant(variant, n, workers)
            rounds[variant].append(result)
            print(f"  round {r + 1}: {variant:12} {result['total_s']:8.2f} s  "
                  f"worker CPU {result['worker_cpu_ms_per_step']:6.3f} ms/step", flush=True)
    results = []
    for variant in variants:
        runs = rounds[variant]
        total = statistics.median(x["total_s"] for x in runs)
        cpu = statistics.median(x["worker_cpu_ms_per_step"] for x in runs)
        results.append({"variant": variant, "runs": n, "workers": workers, "rounds": repeat,
                        "median_total_s": round(total, 3), "median_steps_per_s": round(n * STEPS / total, 1),
                        "median_worker_cpu_ms_per_step": round(cpu, 3),
                        "completed": min(x["completed"] for x in runs)})
    base = results[0]
    for result in results:
        result["time_overhead_pct"] = round((result["median_total_s"] / base["median_total_s"] - 1) * 100, 1)
        result["cpu_overhead_pct"] = round(
            (result["median_worker_cpu_ms_per_step"] / base["median_worker_cpu_ms_per_step"] - 1) * 100, 1)
        print(f"{result['variant']:12} {result['median_total_s']:8.2f} s  {result['median_steps_per_s']:8.1f} steps/s"
              f"  worker CPU {result['median_worker_cpu_ms_per_step']:6.3f} ms/step  "
              f"time {result['time_overhead_pct']:+6.1f}%  CPU {result['cpu_overhead_pct']:+6.1f}%  "
              f"completed {result['completed']}/{n}", flush=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--variants", default="unlimited,concurrency,rate,tight")
    parser.add_argument("--repeat", type=int, default=3, help="Rounds; medians are compared.")
    parser.add_argument("--json", type=Path, help="Also write the results to this file.")
    args = parser.parse_args()
    variants = [v for v in args.variants.split(",") if v]
    unknown = [v for v in variants if v not in CALLS]
    if unknown:
        parser.error(f"unknown variants {unknown}; choose from {', '.join(CALLS)}")
    print(f"flow control: {args.runs} runs x {STEPS} steps of {LATENCY * 1000:.0f} ms, {args.workers} worker(s)")
    results = asyncio.run(compare(variants, args.runs, args.workers, args.repeat))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
