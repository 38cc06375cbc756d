"""The crash soak: runs workflows on `wf worker` subprocesses and kill -9s them, many times.

    python -m tests.reliability.soak --runs 500 --kills 200            # the long version
    python -m tests.reliability.soak --runs 40 --kills 10 --workers 2  # what CI runs

Runs of every kind in `soak_workflows` (steps, sleeps, hooks, gathers, retries, child
workflows, a failing one) are started in waves between kills; at random moments a worker
(every fifth time: all of them at once) is killed with SIGKILL and started again. The
harness sends the hook payloads itself. When every kill is done it waits for every run to
end and the queue to drain, stops the workers, and audits the data dir (`audit.py`).
Exit status 0 only if the audit finds nothing wrong.

The nasty soak (`run_nasty_soak`, `--nasty`) adds, in rounds: SIGSTOP/SIGCONT of workers (some
longer than a lease, in the long version), `kill -9` of `wf start` clients mid-start, `wf recover`
and `wf doctor --fix` running alongside, hook payloads sent by `wf hook resume` processes,
cancellations, and between rounds a power-loss simulation (workers killed, run logs cut back
to a random earlier point or torn, every queue file removed, the machine "rebooted").

    python -m tests.reliability.soak --nasty --minutes 60             # the one-hour version
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wf.runtime.client import idempotent_run_id, resume_hook_in, start_run
from wf.runtime.errors import HookNotFoundError, NotFoundError, WfError
from wf.world_local.event_log import committed_lines
from wf.world_local.world import VERIFIED_BOOT, LocalWorld

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


# --- the nasty soak ------------------------------------------------------------------------


@dataclass
class NastyResult:
    audit: Audit
    seconds: float
    data_dir: Path
    counts: dict[str, int]
    tool_failures: list[str]

    def summary(self) -> dict[str, Any]:
        return {"seconds": round(self.seconds, 1), **self.counts, **self.audit.summary()}


def _resume(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGCONT)


class _Chaos:
    """The nasty soak's moving parts: workers, clients, tools, and what every run must end as."""

    def __init__(self, base: Path, rng: random.Random, workers: int, concurrency: int, long_stops: bool) -> None:
        self.rng = rng
        self.data, self.logs, self.side_file = base / "data", base / "logs", base / "steps.jsonl"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.cwd = base / "cwd"  # an empty folder: `wf start` looks for workflow modules in its cwd
        self.cwd.mkdir(exist_ok=True)
        self.env = worker_env(self.side_file, fsync=False, step_delay=0.1)
        self.tool_env = {k: v for k, v in self.env.items() if k != "WF_WORLD"} | {"WF_DATA_DIR": str(self.data)}
        self.pool = WorkerPool(self.data, self.logs, self.env, workers, concurrency)
        self.long_stops = long_stops
        self.expect: dict[str, Any] = {}
        self.hooked: dict[str, str] = {}  # run id -> token, for hooked runs not cancelled
        self.cancelled: set[str] = set()
        self.kinds: dict[str, str] = {}
        self.client_keys: list[tuple[str, int]] = []  # (kind, x) started by `wf start` clients
        self.counts: collections.Counter[str] = collections.Counter()
        #: worker -> the timer that SIGCONTs it: a thread, since this loop may itself be blocked meanwhile on a
        #: run lock the stopped worker holds (a stopped process keeps its locks)
        self.stopped: dict[int, threading.Timer] = {}
        self.tools: list[tuple[str, asyncio.subprocess.Process]] = []
        self.tool_failures: list[str] = []
        self.kill_times: list[float] = []
        self.x = 0

    # workers
    def kill_worker(self, i: int) -> None:
        proc = self.pool.procs[i]
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        timer = self.stopped.pop(i, None)
        if timer is not None:
            timer.cancel()
        self.pool.start(i)
        self.counts["kills"] += 1
        self.kill_times.append(time.time())

    def stop_worker(self, i: int) -> None:
        proc = self.pool.procs[i]
        if proc is None or proc.poll() is not None or i in self.stopped:
            return
        pause = self.rng.uniform(0.2, 3.0)
        if self.long_stops and self.rng.random() < 0.1:
            pause = self.rng.uniform(62, 75)  # longer than a lease: its messages go to others meanwhile
            self.counts["stops_past_lease"] += 1
        proc.send_signal(signal.SIGSTOP)
        timer = threading.Timer(pause, _resume, (proc,))
        timer.daemon = True
        timer.start()
        self.stopped[i] = timer
        self.counts["stops"] += 1

    def wake_stopped(self, everyone: bool = False) -> None:
        for i, timer in list(self.stopped.items()):
            if everyone or not timer.is_alive():
                timer.cancel()
                proc = self.pool.procs[i]
                if proc is not None:
                    _resume(proc)
                del self.stopped[i]

    def check_workers(self) -> None:
        for i, proc in enumerate(self.pool.procs):
            if proc is not None and proc.poll() is not None:
                self.tool_failures.append(f"worker {i} exited by itself with {proc.returncode}")
                self.pool.start(i)

    # runs
    async def start_runs(self, world: LocalWorld, n: int) -> None:
        for _ in range(n):
            self.x += 1
            kind = sw.KINDS[self.x % len(sw.KINDS)]
            handle = await start_run(world, f"soak.{kind}", [self.x], {})
            self.expect[handle.id] = sw.expected(kind, self.x)
            self.kinds[handle.id] = kind
            if kind == "hooked":
                self.hooked[handle.id] = sw.hook_token(self.x)
            self.counts["runs_started"] += 1

    async def client_start(self) -> None:
        """`wf start` in a process of its own, killed with SIGKILL at a random moment (or not)."""
        self.x += 1
        kind = ("chain", "fan", "sleeper")[self.x % 3]
        self.client_keys.append((kind, self.x))
        proc = await asyncio.create_subprocess_exec(
            str(WF_BIN), "start", f"{WORKFLOWS_FILE}:{kind}", str(self.x), "--idempotency-key", f"client-{self.x}",
            "--data-dir", str(self.data), cwd=self.cwd, env=self.tool_env,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        )
        if self.rng.random() < 0.7:
            await asyncio.sleep(self.rng.uniform(0.05, 1.5))
            if proc.returncode is None:
                proc.kill()
                self.counts["clients_killed"] += 1
        await proc.wait()
        self.counts["client_starts"] += 1

    async def cancel_one(self, world: LocalWorld) -> None:
        waiting = [r for r in self.hooked if r not in self.cancelled]
        racing = [r for r, kind in self.kinds.items() if kind in ("sleeper", "parent") and r not in self.cancelled]
        candidates = waiting[:3] + racing[-5:]  # a hooked run ends cancelled; the others race their end
        if not candidates:
            return
        run_id = self.rng.choice(candidates)
        await self._cancel(world, run_id)
        self.counts["cancels"] += 1

    async def _cancel(self, world: LocalWorld, run_id: str) -> None:
        self.cancelled.add(run_id)
        before = self.expect[run_id]
        self.expect[run_id] = [("cancelled", None), *([before] if isinstance(before, tuple) else before)]
        self.hooked.pop(run_id, None)
        proc = await asyncio.create_subprocess_exec(
            str(WF_BIN), "cancel", run_id, "--data-dir", str(self.data), cwd=self.cwd, env=self.tool_env,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
        )
        _, err = await proc.communicate()
        if proc.returncode != 0 and "nothing to cancel" not in err.decode():  # (it ended first: exit 1)
            self.tool_failures.append(f"wf cancel {run_id} exited {proc.returncode}: {err.decode()[-300:]}")

    async def send_hooks(self, world: LocalWorld, via_cli: bool) -> None:
        """The payload of every hooked run whose live hook has not received one (again after a power loss)."""
        for run_id, token in list(self.hooked.items()):
            try:
                hook = await world.hooks.get_by_token(token)
            except NotFoundError:
                continue
            except WfError as exc:
                self.tool_failures.append(f"get_by_token({token!r}): {exc}")
                continue
            if hook.run_id != run_id or hook.received_count:
                continue
            if via_cli and self.rng.random() < 0.5:
                proc = await asyncio.create_subprocess_exec(
                    str(WF_BIN), "hook", "resume", token, json.dumps(sw.HOOK_PAYLOAD), "--data-dir", str(self.data),
                    cwd=self.cwd, env=self.tool_env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
                )
                _, err = await proc.communicate()
                if proc.returncode not in (0, 1):  # 1: no live hook (it moved on meanwhile)
                    self.tool_failures.append(f"wf hook resume exited {proc.returncode}: {err.decode()[-300:]}")
                self.counts["hooks_sent_by_cli"] += 1
            else:
                with contextlib.suppress(HookNotFoundError):
                    await resume_hook_in(world, token, sw.HOOK_PAYLOAD)
                self.counts["hooks_sent"] += 1

    # tools alongside
    async def tool(self, *args: str) -> None:
        proc = await asyncio.create_subprocess_exec(
            str(WF_BIN), *args, "--data-dir", str(self.data), cwd=self.cwd, env=self.tool_env,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
        )
        self.tools.append((" ".join(args), proc))
        self.counts[f"wf_{args[0]}"] += 1

    async def reap_tools(self, wait: bool = False) -> None:
        for name, proc in list(self.tools):
            if proc.returncode is None and not wait:
                continue
            _, err = await proc.communicate()
            self.tools.remove((name, proc))
            text = err.decode()
            if proc.returncode not in (0, 1) or "Traceback" in text:  # doctor: 1 = problems left (work in flight)
                self.tool_failures.append(f"wf {name} exited {proc.returncode}: {text[-500:]}")

    # the power loss
    def power_loss(self) -> None:
        """Everything dies at once; unsynced data is lost: logs cut back or torn, hook-token files emptied or
        garbled, queue files gone, and the machine boots again."""
        self.wake_stopped(everyone=True)
        for i in range(len(self.pool.procs)):
            proc = self.pool.procs[i]
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                proc.wait()
        self.kill_times.append(time.time())
        runs = sorted(os.listdir(self.data / "runs"))
        for run_id in self.rng.sample(runs, k=len(runs) // 3):
            path = self.data / "runs" / run_id / "events.jsonl"
            data = path.read_bytes()
            spans, _ = committed_lines(data)
            if len(spans) < 2:
                continue
            keep = self.rng.randrange(1, len(spans))  # run_created always survives (it was synced)
            cut = spans[keep - 1][1] + 1
            torn = data[cut : cut + self.rng.randrange(0, 40)] if self.rng.random() < 0.5 else b""
            with open(path, "r+b") as f:
                f.truncate(cut)
                f.seek(cut)
                f.write(torn)
            with contextlib.suppress(FileNotFoundError):  # the view went too
                os.unlink(self.data / "runs" / run_id / "run.json")
            self.counts["logs_cut"] += 1
        for token_file in sorted((self.data / "tokens").glob("*.json")):  # new files, not synced: empty or garbage
            if self.rng.random() < 0.5:
                token_file.write_bytes(self.rng.choice([b"", b"\x00" * 16, b'{"token": "sur']))
                self.counts["token_files_damaged"] += 1
        for folder in ("messages", "spare"):
            for entry in (self.data / "queue" / folder).glob("*"):
                with contextlib.suppress(OSError):
                    entry.unlink()
                    self.counts["queue_files_removed"] += 1
        (self.data / VERIFIED_BOOT).write_bytes(b'{"boot_id": "the boot before the power loss"}')
        self.counts["power_losses"] += 1
        self.pool.start_all()


async def run_nasty_soak(
    *, rounds: int = 2, round_seconds: float = 25.0, workers: int = 3, seed: int = 0, data_dir: Path | None = None,
    concurrency: int = 20, finish_timeout: float = 150.0, long_stops: bool = False, log: Any = None,
) -> NastyResult:
    """The nasty soak (see the module docstring): `rounds` rounds of `round_seconds` of chaos each."""
    rng = random.Random(seed)
    base = Path(tempfile.mkdtemp(prefix="wf-nasty-")) if data_dir is None else data_dir
    began = time.monotonic()
    chaos = _Chaos(base, rng, workers, concurrency, long_stops)
    world = LocalWorld(chaos.data, fsync=False)
    await world.start()
    chaos.pool.start_all()
    clients: set[asyncio.Task[None]] = set()
    try:
        for round_no in range(rounds):
            if round_no:
                await asyncio.gather(*clients)
                await chaos.reap_tools(wait=True)
                chaos.power_loss()
                await world.close()
                world = LocalWorld(chaos.data, fsync=False)
                for run_id in sorted(chaos.cancelled):  # a client whose cancel was lost cancels again
                    await chaos._cancel(world, run_id)
            end = time.monotonic() + round_seconds
            while time.monotonic() < end:
                chaos.wake_stopped()
                chaos.check_workers()
                await chaos.reap_tools()
                action = rng.choices(
                    ["start", "client", "kill", "stop", "hooks", "hooks_cli", "cancel", "recover", "doctor", "wait"],
                    weights=[6, 3, 2, 2, 3, 2, 1, 0.5, 0.5, 4],
                )[0]
                if action == "start":
                    await chaos.start_runs(world, rng.randrange(1, 4))
                elif action == "client":
                    task = asyncio.create_task(chaos.client_start())
                    clients.add(task)
                    task.add_done_callback(clients.discard)
                elif action == "kill":
                    chaos.kill_worker(rng.randrange(workers))
                elif action == "stop":
                    chaos.stop_worker(rng.randrange(workers))
                elif action in ("hooks", "hooks_cli"):
                    await chaos.send_hooks(world, via_cli=action == "hooks_cli")
                elif action == "cancel":
                    await chaos.cancel_one(world)
                elif action == "recover":
                    await chaos.tool("recover")
                elif action == "doctor":
                    await chaos.tool("doctor", "--fix")
                await asyncio.sleep(rng.uniform(0.02, 0.3))
        await asyncio.gather(*clients)
        await chaos.reap_tools(wait=True)
        chaos.wake_stopped(everyone=True)
        for kind, x in chaos.client_keys:  # what the clients started (a client killed early started nothing)
            run_id = idempotent_run_id(f"soak.{kind}", f"client-{x}")
            if (chaos.data / "runs" / run_id).exists():
                chaos.expect[run_id] = sw.expected(kind, x)
        deadline = time.monotonic() + finish_timeout
        left = list(chaos.expect)
        while time.monotonic() < deadline:
            chaos.check_workers()
            await chaos.send_hooks(world, via_cli=False)
            left = await _unfinished(world, left)
            if not left:
                break
            await asyncio.sleep(0.3)
        while time.monotonic() < deadline and await world.queue.list():
            await asyncio.sleep(0.2)
        if log and left:
            log(f"{len(left)} run(s) unfinished at the deadline: {left[:10]}")
    finally:
        chaos.wake_stopped(everyone=True)
        for task in clients:
            task.cancel()
        chaos.pool.stop_all()
        await world.close()
    checker = LocalWorld(chaos.data, fsync=False)
    try:
        report = await audit(checker, chaos.expect, chaos.side_file, chaos.kill_times)
    finally:
        await checker.close()
    for failure in chaos.tool_failures:
        report.problem(failure)
    return NastyResult(report, time.monotonic() - began, base, dict(chaos.counts), chaos.tool_failures)


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
    parser.add_argument("--nasty", action="store_true", help="The nasty soak (stops, clients, tools, power loss).")
    parser.add_argument("--minutes", type=float, default=10.0, help="With --nasty: how long the chaos lasts.")
    parser.add_argument("--rounds", type=int, default=None, help="With --nasty: rounds (power losses between).")
    args = parser.parse_args(argv)
    seed = args.seed if args.seed is not None else random.randrange(1 << 30)
    if args.nasty:
        rounds = args.rounds or max(2, int(args.minutes / 5))
        nasty = asyncio.run(run_nasty_soak(
            rounds=rounds, round_seconds=args.minutes * 60 / rounds, workers=args.workers, seed=seed,
            data_dir=args.data_dir, concurrency=args.concurrency, finish_timeout=args.timeout, long_stops=True,
            log=lambda text: print(text, file=sys.stderr),
        ))
        print(json.dumps({"seed": seed, "data_dir": str(nasty.data_dir), **nasty.summary()}, indent=1))
        for problem in nasty.audit.problems:
            print("PROBLEM:", problem)
        return 1 if nasty.audit.problems else 0
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
