"""Helpers of the Postgres World's tests: worker processes in empty directories, SQL peeks."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import psycopg

from wf.runtime.loader import import_path
from wf.world_testing.stores import schema_of

FLOWS_FILE = Path(__file__).resolve().with_name("flows.py")
REPO = FLOWS_FILE.parents[2]


def load_flows() -> ModuleType:
    """The flows module, imported by path as `wf worker` imports it (same workflow names)."""
    return import_path(FLOWS_FILE)


def sql(url: str, query: str, params: Any = ()) -> list[tuple[Any, ...]]:
    """Run one statement on the store's database (its schema first on the search path)."""
    conninfo = url.split("?", 1)[0]
    with psycopg.connect(conninfo, autocommit=True) as conn:
        schema = schema_of(url)
        if schema:
            conn.execute(f'SET search_path TO "{schema}"')
        cur = conn.execute(query, params)
        return cur.fetchall() if cur.description else []


class Worker:
    """`wf worker flows.py --world URL` in its own empty working directory."""

    def __init__(self, url: str, cwd: Path, *extra: str) -> None:
        cwd.mkdir(parents=True, exist_ok=True)
        self.cwd = cwd
        self.log_path = cwd.parent / f"{cwd.name}.log"
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        env = {k: v for k, v in os.environ.items() if k not in ("WF_DATA_DIR", "WF_WORLD")}
        env["PYTHONPATH"] = str(REPO)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "wf.cli", "worker", str(FLOWS_FILE), "--world", url, *extra],
            cwd=cwd, env=env, stdout=self._log, stderr=subprocess.STDOUT,
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
            time.sleep(0.05)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        self._log.close()

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode
