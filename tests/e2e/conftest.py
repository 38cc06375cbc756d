"""The `e2e` fixture: each scenario runs twice, with an in-process worker and with a `wf worker` subprocess.

"inproc": a fresh data dir and a Worker in the test's event loop.
"subprocess": one `wf worker tests/e2e/workflows.py` per session on a shared data dir, started
once and stopped with SIGTERM at the end (it must drain and exit 0); the test process only
starts runs, sends hook payloads and reads results, like an application would.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import pytest_asyncio

from wf.runtime.loader import import_path
from wf.testing import WorkflowEnv
from wf.world_testing.stores import fresh_store

WORKFLOWS_FILE = Path(__file__).resolve().parent / "workflows.py"
REPO = WORKFLOWS_FILE.parents[2]


def load_workflows() -> ModuleType:
    """The workflows module, imported by path exactly as `wf worker` imports it."""
    return import_path(WORKFLOWS_FILE)


def cli_env(url: str) -> dict[str, str]:
    """The environment of a `wf` subprocess on the store at `url` (a World URL)."""
    env = {**os.environ, "WF_WORLD": url, "WF_FSYNC": "0", "COLUMNS": "120"}
    env.pop("WF_DATA_DIR", None)
    return env


@dataclass
class CliResult:
    code: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        return json.loads(self.stdout)


@dataclass
class E2E:
    """One scenario's surroundings: the mode, the env (World + helpers), and the CLI on the same data dir."""

    mode: str
    env: WorkflowEnv

    @property
    def url(self) -> str:
        assert self.env.url is not None
        return self.env.url

    async def cli(self, *args: str, timeout: float = 60) -> CliResult:
        """Run `wf ARGS...` (as `python -m wf.cli`) on this data dir, without blocking the event loop."""
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "wf.cli", *args, cwd=REPO, env=cli_env(self.url),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
        return CliResult(proc.returncode or 0, out.decode(), err.decode())


class WorkerProcess:
    """A `wf worker` subprocess serving the store at `url`."""

    def __init__(self, url: str, log_path: Path) -> None:
        self.url = url
        self.log_path = log_path
        self._log = open(log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "wf.cli", "worker", str(WORKFLOWS_FILE), "--world", url],
            cwd=REPO, env=cli_env(url), stdout=self._log, stderr=subprocess.STDOUT,
        )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while "ready" not in self.log():
            if self.proc.poll() is not None:
                raise RuntimeError(f"wf worker exited with {self.proc.returncode}:\n{self.log()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"wf worker not ready after {timeout} s:\n{self.log()}")
            time.sleep(0.02)

    def stop(self) -> int:
        """SIGTERM: the worker drains in-flight work and exits; returns its exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode


@pytest.fixture(scope="session")
def worker_process(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkerProcess]:
    root = tmp_path_factory.mktemp("e2e-subprocess")
    store = fresh_store(root)
    worker = WorkerProcess(store.url, root / "worker.log")
    try:
        worker.wait_ready()
        yield worker
    finally:
        code = worker.stop()
        asyncio.run(store.drop())
    assert code == 0, f"wf worker exited with {code} after SIGTERM:\n{worker.log()}"


@pytest.fixture(scope="session")
def workflows() -> ModuleType:
    return load_workflows()


@pytest_asyncio.fixture(params=["inproc", "subprocess"])
async def e2e(request: pytest.FixtureRequest, tmp_path: Path, workflows: ModuleType) -> AsyncIterator[E2E]:
    store = None
    if request.param == "inproc":
        store = fresh_store(tmp_path)
        env = WorkflowEnv(store.url, skip_time=False)
    else:
        worker: WorkerProcess = request.getfixturevalue("worker_process")
        env = WorkflowEnv(worker.url, run_worker=False)
    async with env:
        yield E2E(request.param, env)
    if store is not None:
        await store.drop()
