"""The crash soak on the Postgres World: `wf worker` processes (each in its own empty directory,
sharing only the database URL) killed with SIGKILL while they work, and the PostgreSQL server
restarted (`pg_ctl restart -m fast`) once in the middle. The audit is the local soak's
(`tests/reliability/audit.py`): 0 lost, 0 stuck, 0 duplicate completions, nothing after an end.
"""

from __future__ import annotations

import asyncio
import random
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from wf.runtime.client import start_run
from wf.world_postgres.world import PostgresWorld

from ..pg_server import PgServer
from ..reliability import soak_workflows as sw
from ..reliability.audit import Audit, audit
from ..reliability.soak import WF_BIN, WORKFLOWS_FILE, WorkerPool, _send_hooks, _unfinished, worker_env


class UrlWorkerPool(WorkerPool):
    """`wf worker --world URL` processes, each in an empty working directory of its own."""

    def __init__(self, url: str, base: Path, env: dict[str, str], size: int, concurrency: int) -> None:
        super().__init__(base / "unused", base / "logs", env, size, concurrency)
        self.url = url
        self.base = base
        self.cwds: list[Path] = []

    def start(self, i: int) -> None:
        log_path = self.logs / f"worker-{self.started:04d}.log"
        cwd = self.base / f"cwd-{self.started:04d}"
        cwd.mkdir(parents=True)
        self.cwds.append(cwd)
        self.log_paths.append(log_path)
        self.current_logs[i] = log_path
        self.started += 1
        with open(log_path, "wb") as out:
            self.procs[i] = subprocess.Popen(
                [str(WF_BIN), "worker", str(WORKFLOWS_FILE), "--world", self.url, "--concurrency",
                 str(self.concurrency)], stdout=out, stderr=subprocess.STDOUT, env=self.env, cwd=cwd)


@dataclass
class PgSoakResult:
    audit: Audit
    kills: int
    restarted_server: bool
    seconds: float
    files_left: list[str]
    worker_logs: list[Path]

    def summary(self) -> dict[str, Any]:
        return {"kills": self.kills, "restarted_server": self.restarted_server, "seconds": round(self.seconds, 1),
                **self.audit.summary()}


async def run_pg_soak(url: str, base: Path, server: PgServer | None, *, runs: int = 40, kills: int = 10,
                      workers: int = 3, seed: int = 0, finish_timeout: float = 120.0) -> PgSoakResult:
    """Start runs in waves, kill -9 workers between them, restart the server half way, then audit."""
    rng = random.Random(seed)
    logs, side_file = base / "logs", base / "steps.jsonl"
    logs.mkdir(parents=True, exist_ok=True)
    began = time.monotonic()
    world = PostgresWorld(url)
    await world.start()
    pool = UrlWorkerPool(url, base, worker_env(side_file, fsync=True, step_delay=0.1), workers, 10)
    pool.start_all()
    expectations: dict[str, tuple[str, Any]] = {}
    hooks_waiting: dict[str, str] = {}
    kill_times: list[float] = []
    done = 0
    restarted = False
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
        while done < kills:
            await start_some(per_gap)
            await _send_hooks(world, hooks_waiting)  # type: ignore[arg-type]
            victims = range(workers) if (done + 1) % 5 == 0 else [rng.randrange(workers)]
            await pool.wait_ready(victims)
            await asyncio.sleep(rng.uniform(0.05, 0.8))
            for i in victims:
                kill_times.append(time.time())
                pool.kill(i)
                done += 1
            for i in victims:
                pool.start(i)
            if server is not None and not restarted and done >= kills // 2:
                await asyncio.to_thread(server.restart)
                restarted = True
            for i in [i for i in pool.exited() if i not in victims]:
                pool.start(i)
        await start_some(runs)
        deadline = time.monotonic() + finish_timeout
        left = list(expectations)
        while time.monotonic() < deadline:
            await _send_hooks(world, hooks_waiting)  # type: ignore[arg-type]
            left = await _unfinished(world, left)  # type: ignore[arg-type]
            if not left:
                break
            await asyncio.sleep(0.2)
        while time.monotonic() < deadline and await world.queue.list():
            await asyncio.sleep(0.2)
    finally:
        pool.stop_all()
        report = await audit(world, expectations, side_file, kill_times)  # type: ignore[arg-type]
        await world.close()
    files = [str(p) for cwd in pool.cwds for p in cwd.rglob("*")]
    return PgSoakResult(report, done, restarted, time.monotonic() - began, files, pool.log_paths)
