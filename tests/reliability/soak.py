"""The crash soak: runs workflows on `wf worker` subprocesses and kill -9s them, many times.

    python -m tests.reliability.soak --runs 500 --kills 200            # the long version
    python -m tests.reliability.soak --runs 40 --kills 10 --workers 2  # what CI runs

Runs of every kind in `soak_workflows` (steps, sleeps, hooks, gathers, retries, child
workflows, a failing one) are started in waves between kills; at random moments a worker
(every fifth time: all of them at once) is killed with SIGKILL and started again. The
harness sends the hook payloads itself. When every kill is done it waits for every run to
end and the queue to drain, stops the workers, and audits the data dir (`audit.py`).
Exit status 0 only if the audit finds nothing wrong.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wf.runtime.client import resume_hook_in, start_run
from wf.runtime.errors import HookNotFoundError, NotFoundError
from wf.world_local.world import LocalWorld

from . import soak_workflows as sw
from .audit import Audit, audit

WORKFLOWS_FILE = Path(__file__).with_name("soak_workflows.py")
WF_BIN = Path(sys.executable).with_name("wf")


@dataclass
class SoakResult:
    audit: Audit
    kills: int
    restarts: int
    mass_kills: int
    seconds: float
    data_dir: Path
    worker_logs: list[Path] = field(default_factory=list)
    hooks_sent: int = 0

    def summary(self) -> dict[str, Any]:
        return {"kills": self.kills, "mass_kills": self.mass_kills, "restarts": self.restarts,
                "hooks_sent": self.hooks_sent, "seconds": round(self.seconds, 1), **self.audit.summary()}


class WorkerPool:
    """`wf worker` subprocesses on one data dir, killed and restarted on demand."""

    def __init__(self, data_dir: Path, logs: Path, env: dict[str, str], size: int, concurrency: int) -> None:
        self.data_dir, self.logs, self.env, self.concurrency = data_dir, logs, env, concurrency
        self.procs: list[subprocess.Popen[bytes] | None] = [None] * size
        self.current_logs: list[Path | None] = [None] * size
        self.started = 0
        self.log_paths: list[Path] = []

    def start(self, i: int) -> None:
        log_path = self.logs / f"worker-{self.started:04d}.log"
        self.log_paths.append(log_path)
        self.current_logs[i] = log_path
        self.started += 1
        with open(log_path, "wb") as out:
            self.procs[i] = subprocess.Popen(
                [str(WF_BIN), "worker", str(WORKFLOWS_FILE), "--data-dir", str(self.data_dir),
                 "--concurrency", str(self.concurrency)],
                stdout=out, stderr=subprocess.STDOUT, env=self.env,
            )

    def start_all(self) -> None:
        for i in range(len(self.procs)):
            self.start(i)

    def ready(self, i: int) -> bool:
        """Whether worker `i` has started (its World recovered) and is taking work."""
        path = self.current_logs[i]
        return path is not None and b"wf worker ready" in path.read_bytes()

    async def wait_ready(self, slots: Any, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while not all(self.ready(i) for i in slots) and time.monotonic() < deadline:
            await asyncio.sleep(0.02)

    def kill(self, i: int) -> None:
        proc = self.procs[i]
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
        if proc is not None:
            proc.wait()

    def stop_all(self, timeout: float = 30.0) -> None:
        """SIGTERM (drain) every worker; SIGKILL any that has not exited after `timeout`."""
        for proc in self.procs:
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for proc in self.procs:
            if proc is None:
                continue
            try:
                proc.wait(max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def exited(self) -> list[int]:
        """Workers that exited by themselves (not killed by us): they crashed."""
        return [i for i, p in enumerate(self.procs) if p is not None and p.poll() is not None]


def worker_env(side_file: Path, *, fsync: bool, faults: str | None = None, step_delay: float = 0.02) -> dict[str, str]:
    env = dict(os.environ)
    env.update({"WF_FSYNC": "1" if fsync else "0", sw.SIDE_FILE_ENV: str(side_file),
                sw.STEP_DELAY_ENV: str(step_delay), "PYTHONUNBUFFERED": "1"})
    env.pop("WF_FAULTS", None)
    if faults:
        env["WF_FAULTS"] = faults
    return env


async def _send_hooks(world: LocalWorld, waiting: dict[str, str]) -> int:
    """Deliver the payload to every hooked run whose hook exists now; return how many were sent."""
    sent = 0
    for run_id, token in list(waiting.items()):
        try:
            await resume_hook_in(world, token, sw.HOOK_PAYLOAD)
        except HookNotFoundError:
            continue
        del waiting[run_id]
        sent += 1
    return sent


async def _unfinished(world: LocalWorld, run_ids: list[str]) -> list[str]:
    left = []
    for run_id in run_ids:
        try:
            run = await world.runs.get(run_id, resolve_data=False)
        except NotFoundError:
            left.append(run_id)
            continue
        if not run.status.terminal:
            left.append(run_id)
    return left


async def run_soak(
    runs: int, kills: int, *, workers: int = 3, seed: int = 0, data_dir: Path | None = None,
    fsync: bool = True, concurrency: int = 20, finish_timeout: float = 120.0,
    kill_gap: tuple[float, float] = (0.02, 0.6),
    faults: str | None = None, step_delay: float = 0.1, log: Any = None,
) -> SoakResult:
    """Run the soak and audit the result (see the module docstring)."""
    rng = random.Random(seed)
    base = Path(tempfile.mkdtemp(prefix="wf-soak-")) if data_dir is None else data_dir
    data, logs, side_file = base / "data", base / "logs", base / "steps.jsonl"
    logs.mkdir(parents=True, exist_ok=True)
    began = time.monotonic()
    world = LocalWorld(data, fsync=fsync)
    env = worker_env(side_file, fsync=fsync, faults=faults, step_delay=step_delay)
    pool = WorkerPool(data, logs, env, workers, concurrency)
    pool.start_all()
    expectations: dict[str, tuple[str, Any]] = {}
    hooks_waiting: dict[str, str] = {}
    kill_times: list[float] = []
    done_kills = mass = restarts = hooks_sent = 0
    xs = iter(range(1, runs + 1))
    kinds = list(sw.KINDS)

    async def start_some(n: int) -> None:
        for x in [x for _, x in zip(range(n), xs, strict=False)]:
            kind = kinds[x % len(kinds)]
            handle = await start_run(world, f"soak.{kind}", [x], {})
            expectations[handle.id] = sw.expected(kind, x)
            if kind == "hooked":
                hooks_waiting[handle.id] = sw.hook_token(x)

    try:
        per_gap = max(runs // max(kills, 1), 1)
        while done_kills < kills:
            await start_some(per_gap)
            hooks_sent += await _send_hooks(world, hooks_waiting)
            victims = range(workers) if (done_kills + 1) % 5 == 0 else [rng.randrange(workers)]
            await pool.wait_ready(victims)  # kill workers at work, not while they start up
            await asyncio.sleep(rng.uniform(*kill_gap))
            hooks_sent += await _send_hooks(world, hooks_waiting)
            if len(victims) > 1:
                mass += 1
            for i in victims:
                kill_times.append(time.time())
                pool.kill(i)
                done_kills += 1
            for i in victims:
                pool.start(i)
                restarts += 1
            crashed = [i for i in pool.exited() if i not in victims]
            for i in crashed:  # a worker that died by itself is a finding: note it, keep going
                if log:
                    log(f"worker {i} exited by itself with {pool.procs[i].returncode}")  # type: ignore[union-attr]
                pool.start(i)
                restarts += 1
        await start_some(runs)  # whatever is left
        deadline = time.monotonic() + finish_timeout
        left = list(expectations)
        while time.monotonic() < deadline:
            hooks_sent += await _send_hooks(world, hooks_waiting)
            left = await _unfinished(world, left)
            if not left:
                break
            await asyncio.sleep(0.2)
        while time.monotonic() < deadline and await world.queue.list():
            await asyncio.sleep(0.2)  # delayed wake-ups of ended runs are delivered and dropped
    finally:
        pool.stop_all()
        await world.close()
    checker = LocalWorld(data, fsync=False)
    try:
        report = await audit(checker, expectations, side_file, kill_times)
    finally:
        await checker.close()
    return SoakResult(report, done_kills, restarts, mass, time.monotonic() - began, base, pool.log_paths, hooks_sent)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.reliability.soak", description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=500)
    parser.add_argument("--kills", type=int, default=200)
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=20)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--data-dir", type=Path, default=None, help="Where to keep the data (default: a temp dir).")
    parser.add_argument("--no-fsync", action="store_true", help="Run the workers with WF_FSYNC=0.")
    parser.add_argument("--faults", default=None, help="WF_FAULTS spec for the workers, e.g. eio@append:0.01.")
    parser.add_argument("--timeout", type=float, default=300.0,
                        help="Seconds to wait for runs to end after the kills.")
    args = parser.parse_args(argv)
    seed = args.seed if args.seed is not None else random.randrange(1 << 30)
    result = asyncio.run(run_soak(
        args.runs, args.kills, workers=args.workers, seed=seed, data_dir=args.data_dir, fsync=not args.no_fsync,
        concurrency=args.concurrency, finish_timeout=args.timeout, faults=args.faults,
        log=lambda text: print(text, file=sys.stderr),
    ))
    print(json.dumps({"seed": seed, "data_dir": str(result.data_dir), **result.summary()}, indent=1))
    for problem in result.audit.problems:
        print("PROBLEM:", problem)
    return 1 if result.audit.problems else 0


if __name__ == "__main__":
    sys.exit(main())
