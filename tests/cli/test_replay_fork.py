"""`wf replay` and `wf fork` as a user runs them: the debug loop on a real data dir."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

FLOW = textwrap.dedent(
    """
    import os
    import wf

    LOG = os.environ["FLOW_LOG"]

    @wf.step
    async def add(a: int, b: int) -> int:
        with open(LOG, "a") as f:
            f.write(f"add {a} {b}\\n")
        return a + b

    @wf.step
    async def check(total: int) -> int:
        with open(LOG, "a") as f:
            f.write(f"check {total}\\n")
        if total > LIMIT:
            raise wf.FatalError(f"total {total} over the limit")
        return total

    LIMIT = 10

    @wf.workflow
    async def calc(x: int) -> int:
        y = await add(x, 1)
        z = await add(y, 2)
        await wf.sleep(0.01)
        return await check(z * 10)
    """
)


def wf_cli(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "WF_FSYNC": "0", "WF_DATA_DIR": str(root / ".wf"), "FLOW_LOG": str(root / "calls.log"),
           "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "wf.cli", *args], cwd=root, env=env, capture_output=True,
                          text=True, timeout=60)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "flow.py").write_text(FLOW.replace("LIMIT = 10", "LIMIT = 1000"))
    return tmp_path


def _status_when_done(project: Path, run_id: str, timeout: float = 15.0) -> str:
    from wf.world_local.world import LocalWorld

    async def poll() -> str:
        world = LocalWorld(project / ".wf", fsync=False)
        try:
            deadline = time.monotonic() + timeout
            while True:
                run = await world.runs.get(run_id)
                if run.status.terminal or time.monotonic() > deadline:
                    return str(run.status)
                await world.events.wait(run_id, after_seq=run.event_count - 1, timeout=0.5)
        finally:
            await world.close()

    return asyncio.run(poll())


def _run(project: Path, x: int) -> str:
    done = wf_cli(project, "start", "flow.py:calc", str(x), "--wait", "--json")
    return str(json.loads(done.stdout)["run_id"])


def test_replay_of_unchanged_code_is_clean_and_runs_no_step(project: Path) -> None:
    run_id = _run(project, 5)
    calls = (project / "calls.log").read_text()
    done = wf_cli(project, "replay", run_id)
    assert done.returncode == 0, done.stderr
    assert "replays cleanly" in done.stdout
    assert (project / "calls.log").read_text() == calls  # no step ran


def test_trace_shows_each_await_with_its_recorded_result(project: Path) -> None:
    run_id = _run(project, 5)
    done = wf_cli(project, "replay", run_id, "--trace")
    assert done.returncode == 0
    lines = done.stdout.splitlines()
    assert any("await add(…) -> 6" in line for line in lines)
    assert any("await add(…) -> 8" in line for line in lines)
    assert any("timer fired" in line for line in lines)
    assert any("flow.py:" in line for line in lines)  # where each call was made


def test_until_shows_the_workflow_locals_at_that_event(project: Path) -> None:
    run_id = _run(project, 5)
    done = wf_cli(project, "replay", run_id, "--until", "4")
    assert done.returncode == 0
    assert "stopped after event 4" in done.stdout
    assert "│ x " in done.stdout and "│ y " in done.stdout and "6" in done.stdout


def test_a_code_change_that_breaks_history_is_reported_with_exit_1(project: Path) -> None:
    run_id = _run(project, 5)
    source = project / "flow.py"
    source.write_text(source.read_text().replace("z = await add(y, 2)", "z = y + 2"))
    done = wf_cli(project, "replay", run_id)
    assert done.returncode == 1
    assert "diverged at event" in done.stdout and "step_created step_2" in done.stdout
    as_json = json.loads(wf_cli(project, "replay", run_id, "--json").stdout)
    assert as_json["clean"] is False and as_json["divergence"]["position"] > 0
    summary = wf_cli(project, "replay", "--workflow", "flow.calc")
    assert summary.returncode == 1 and "1 diverge" in summary.stdout


def test_replay_bad_inputs_give_one_line_and_exit_2(project: Path) -> None:
    _run(project, 1)
    for args in (["replay", "wrun_nope"], ["replay", "../../etc/passwd"], ["replay"],
                 ["fork", "wrun_nope"], ["replay", "x", "--path", "missing.py"]):
        done = wf_cli(project, *args)
        assert done.returncode == 2, (args, done.stdout, done.stderr)
        assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr


def test_fork_after_a_failure_retries_from_the_failed_step_on_fixed_code(project: Path) -> None:
    source = project / "flow.py"
    source.write_text(FLOW)  # LIMIT = 10: calc(5) fails in `check`
    done = wf_cli(project, "start", "flow.py:calc", "5", "--wait", "--json")
    failed = json.loads(done.stdout)
    assert failed["status"] == "failed"
    source.write_text(FLOW.replace("LIMIT = 10", "LIMIT = 1000"))  # the fix
    (project / "calls.log").write_text("")
    forked = wf_cli(project, "fork", failed["run_id"], "--json")
    assert forked.returncode == 0, forked.stderr
    new_id = json.loads(forked.stdout)["run_id"]
    env = {**os.environ, "WF_FSYNC": "0", "WF_DATA_DIR": str(project / ".wf"), "FLOW_LOG": str(project / "calls.log")}
    worker = subprocess.Popen([sys.executable, "-m", "wf.cli", "worker", "flow.py"], cwd=project, env=env,
                              stderr=subprocess.PIPE, text=True)
    try:
        assert worker.stderr is not None and "ready" in worker.stderr.readline()
        assert _status_when_done(project, new_id) == "completed"
    finally:
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=15) == 0
    info = json.loads(wf_cli(project, "replay", new_id, "--json").stdout)
    assert info["clean"] is True
    calls = (project / "calls.log").read_text().splitlines()
    # The forked run re-ran only the failed step; its two `add` steps came from the old log.
    assert "check 80" in calls
    assert "add 5 1" not in calls and "add 6 2" not in calls
