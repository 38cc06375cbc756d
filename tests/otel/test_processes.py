"""Across processes: a run whose worker is kill -9'ed mid-run and continued by another stays one
trace with each span once; without the extra (or with WF_OTEL=0) wf runs and imports nothing."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import wf
from wf.runtime import telemetry
from wf.runtime.config import started_world
from wf.world_local.world import LocalWorld

from . import flows as flows_module
from .helpers import read_records

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]


def start_worker_process(data: Path, spans: Path, env: dict[str, str]) -> subprocess.Popen[str]:
    proc = subprocess.Popen([sys.executable, str(HERE / "worker_proc.py"), str(data), str(spans)], env=env,
                            stdout=subprocess.PIPE, text=True, cwd=REPO)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    return proc


async def until_exists(path: Path, timeout: float = 30.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not path.exists():
        assert asyncio.get_running_loop().time() < deadline, f"{path} never appeared"
        await asyncio.sleep(0.02)


async def test_a_run_continued_after_kill_9_is_one_trace_with_each_span_once(tmp_path: Path, flows: Any) -> None:
    data, spans = tmp_path / "data", tmp_path / "spans.jsonl"
    blocked, go = tmp_path / "blocked", tmp_path / "go"
    env = {**os.environ, flows_module.BLOCKED_ENV: str(blocked), flows_module.GO_ENV: str(go), "WF_OTEL": "1"}
    world = LocalWorld(data, fsync=False)
    wf.configure(world=world)
    await started_world(world)
    first = start_worker_process(data, spans, env)
    second = None
    try:
        run = await wf.start_async(flows.crashy)
        await until_exists(blocked)  # the first worker is inside step_2's first attempt
        first.kill()
        first.wait(10)
        go.touch()
        second = start_worker_process(data, spans, env)
        assert await run.result_async(timeout=60) == "2 went 4"
        second.terminate()
        assert second.wait(30) == 0
    finally:
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait(10)
        await world.close()
    records = [r for r in read_records(spans) if r["attributes"].get("wf.run.id") == run.id]
    assert {r["trace_id"] for r in records} == {format(telemetry.run_trace_id(run.id), "032x")}
    assert len({r["span_id"] for r in records}) == len(records), "a span was emitted twice"
    (run_span,) = [r for r in records if r["name"].startswith("wf.run ")]
    assert run_span["span_id"] == format(telemetry.run_span_id(run.id), "016x")
    assert run_span["parent_id"] is None
    steps = {(r["attributes"]["wf.step.id"], r["attributes"]["wf.step.attempt"]): r
             for r in records if r["name"].startswith("wf.step ")}
    # step_2's first attempt died with its worker: never recorded, never emitted.
    assert sorted(steps) == [("step_1", 1), ("step_2", 2), ("step_3", 1)]
    assert all(r["parent_id"] == run_span["span_id"] for r in steps.values())
    assert steps[("step_1", 1)]["pid"] == first.pid  # the first worker's spans are in the same trace
    assert steps[("step_2", 2)]["pid"] == run_span["pid"] == second.pid


HIDE_OPENTELEMETRY = """
import sys
class Hide:
    def find_spec(self, name, path=None, target=None):
        if name == "opentelemetry" or name.startswith("opentelemetry."):
            raise ModuleNotFoundError(f"No module named {name!r}")
        return None
sys.meta_path.insert(0, Hide())
"""

RUN_ONE = """
import asyncio, sys
import wf
from wf.runtime import telemetry
from wf.runtime.worker import Worker
from wf.world_local.world import LocalWorld
from wf.runtime.config import started_world

@wf.step
def double(x):
    return 2 * x

@wf.workflow
async def flow(x):
    return await double(x) + await double(x)

async def main():
    world = LocalWorld(sys.argv[1], fsync=False)
    wf.configure(world=world)
    await started_world(world)
    worker = Worker(world)
    task = asyncio.create_task(worker.run())
    result = await wf.run_async(flow, 5)
    worker.stop()
    await task
    print(telemetry.ON, result, any(m.startswith("opentelemetry") for m in sys.modules))

asyncio.run(main())
"""


def run_script(code: str, tmp_path: Path, **env: str) -> str:
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "data")], env={**os.environ, **env},
                         capture_output=True, text=True, timeout=120, cwd=REPO)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_without_the_extra_nothing_is_imported_and_runs_work(tmp_path: Path) -> None:
    assert run_script(HIDE_OPENTELEMETRY + RUN_ONE, tmp_path) == "False 20 False"


def test_wf_otel_0_turns_it_off(tmp_path: Path) -> None:
    assert run_script(RUN_ONE, tmp_path, WF_OTEL="0") == "False 20 False"


def test_opentelemetry_is_imported_on_first_use_only(tmp_path: Path) -> None:
    code = "import sys, wf\nfrom wf.runtime import telemetry\nprint(telemetry.ON, 'opentelemetry.trace' in sys.modules)"
    assert run_script(code, tmp_path) == "True False"
    assert run_script(RUN_ONE, tmp_path) == "True 20 True"
