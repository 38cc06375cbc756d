"""Running wf for a benchmark: a World and a Worker in this event loop, or worker subprocesses.

Every environment lives in its own temporary data directory, removed at the end.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import wf
from wf.runtime.config import started_world
from wf.runtime.worker import Worker
from wf.world_local.world import LocalWorld

#: The repository root: worker subprocesses import `benchmarks.workloads` from here.
ROOT = Path(__file__).resolve().parent.parent
WORKLOADS_FILE = ROOT / "benchmarks" / "workloads.py"


class Env:
    """A LocalWorld (configured as wf's) and optionally a Worker running in this loop."""

    def __init__(self, world: LocalWorld, worker: Worker | None) -> None:
        self.world = world
        self.worker = worker

    async def time_run(self, workflow: Any, *args: Any, expect: Any = None) -> float:
        """Seconds from `wf.start_async` to the run's result (checked against `expect` if given)."""
        t0 = time.perf_counter()
        run = await wf.start_async(workflow, *args)
        result = await run.result_async(timeout=600)
        elapsed = time.perf_counter() - t0
        if expect is not None and result != expect:
            raise AssertionError(f"{workflow.name}{args} returned {result!r}, expected {expect!r}")
        return elapsed


@contextlib.asynccontextmanager
async def in_process(*, fsync: bool, always_replay: bool, worker: bool = True,
                     concurrency: int = 100) -> AsyncIterator[Env]:
    """A fresh data dir, a LocalWorld on it and (unless `worker=False`) a Worker in this loop."""
    data = Path(tempfile.mkdtemp(prefix="wf-bench-"))
    world = LocalWorld(data, fsync=fsync)
    wf.configure(world=world)
    await started_world(world)
    w = Worker(world, always_replay=always_replay, concurrency=concurrency) if worker else None
    task = asyncio.create_task(w.run()) if w is not None else None
    try:
        yield Env(world, w)
    finally:
        if w is not None and task is not None:
            w.stop()
            await asyncio.wait_for(task, 60)
        await world.close()
        shutil.rmtree(data, ignore_errors=True)


def worker_command(data_dir: Path, concurrency: int) -> list[str]:
    """`wf worker benchmarks/workloads.py` for this interpreter."""
    return [sys.executable, "-c", "import sys; from wf.cli.app import main; sys.argv[0] = 'wf'; main()",
            "worker", str(WORKLOADS_FILE), "--data-dir", str(data_dir), "--concurrency", str(concurrency)]


def start_worker_processes(data_dir: Path, count: int, *, fsync: bool, always_replay: bool = False,
                           concurrency: int = 100) -> list[subprocess.Popen[bytes]]:
    """Start `count` `wf worker` subprocesses on `data_dir`."""
    env = dict(os.environ, WF_FSYNC="1" if fsync else "0", WF_ALWAYS_REPLAY="1" if always_replay else "0",
               PYTHONPATH=os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p))
    return [subprocess.Popen(worker_command(data_dir, concurrency), cwd=ROOT, env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            for _ in range(count)]


async def wait_workers_live(world: LocalWorld, procs: list[subprocess.Popen[bytes]], timeout: float = 30) -> None:
    """Wait until every worker subprocess has announced itself on the data dir."""
    deadline = time.monotonic() + timeout
    while len(await world.live_workers()) < len(procs):
        for p in procs:
            if p.poll() is not None:
                err = p.stderr.read().decode(errors="replace") if p.stderr else ""
                raise RuntimeError(f"a wf worker exited with {p.returncode}: {err.strip()[-500:]}")
        if time.monotonic() > deadline:
            raise TimeoutError("wf worker subprocesses did not become ready")
        await asyncio.sleep(0.05)


def peak_rss_mb(pid: int) -> float | None:
    """The peak resident set size (VmHWM) of a live process, in MB."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time a live process has used so far, in seconds."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_cpu_ticks() -> list[int] | None:
    """The machine's CPU time so far by kind (/proc/stat: user, nice, system, idle, iowait,
    irq, softirq, steal), in clock ticks; None where /proc/stat is unavailable."""
    try:
        with open("/proc/stat") as f:
            fields = f.readline().split()
    except OSError:
        return None
    if not fields or fields[0] != "cpu" or len(fields) < 9:
        return None
    return [int(v) for v in fields[1:9]]


def cpu_shares(before: list[int] | None, after: list[int] | None) -> dict[str, float] | None:
    """Idle (with I/O wait) and stolen shares of all CPUs between two `machine_cpu_ticks()`, in %."""
    if before is None or after is None:
        return None
    delta = [b - a for a, b in zip(before, after, strict=True)]
    total = sum(delta)
    if total <= 0:
        return None
    return {"idle_pct": round(100 * (delta[3] + delta[4]) / total, 1), "steal_pct": round(100 * delta[7] / total, 1)}


def stop_worker_processes(procs: list[subprocess.Popen[bytes]], timeout: float = 30) -> None:
    """SIGTERM each worker (it drains and exits), SIGKILL what is left after `timeout`."""
    for p in procs:
        if p.poll() is None:
            p.terminate()
    for p in procs:
        try:
            p.wait(timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


async def repeat(fn: Callable[[], Awaitable[float]], times: int, *, warmup: int = 1) -> list[float]:
    """Milliseconds of `times` calls of `fn` (which returns seconds), after `warmup` untimed calls."""
    for _ in range(warmup):
        await fn()
    return [1000 * await fn() for _ in range(times)]
