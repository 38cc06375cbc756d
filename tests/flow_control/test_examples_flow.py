"""examples/fanout.py keeps its limit across runs; examples/schedule.py records schedules a worker fires."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from wf.world_local import LocalWorld

from .conftest import REPO, all_events, attempt_intervals, most_at_once, names_of

pytestmark = pytest.mark.timeout(120)


def env_for(data_dir: Path) -> dict[str, str]:
    env = {**os.environ, "WF_DATA_DIR": str(data_dir), "WF_FSYNC": "0"}
    env.pop("WF_WORLD", None)
    return env


def wf_cli(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "wf.cli", *args], cwd=REPO, env=env_for(data_dir),
                          capture_output=True, text=True, timeout=60)


@pytest.mark.slow
async def test_three_fanout_runs_never_score_more_than_four_documents_at_once(tmp_path: Path) -> None:
    worker = subprocess.Popen([sys.executable, "-m", "wf.cli", "worker", "examples/fanout.py"], cwd=REPO,
                              env=env_for(tmp_path), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        run_ids = []
        for _ in range(3):
            started = wf_cli(tmp_path, "start", "examples/fanout.py:score_documents", "12", "--json")
            assert started.returncode == 0, started.stderr
            run_ids.append(__import__("json").loads(started.stdout)["run_id"])
        world = LocalWorld(tmp_path)
        await world.start()
        try:
            for run_id in run_ids:
                run = await world.wait_for_end(run_id, timeout=60)
                assert run is not None and run.output is not None
            events = await all_events(world, run_ids)
        finally:
            await world.close()
    finally:
        worker.terminate()
        worker.wait(20)
    spans = attempt_intervals(events, "fanout.count_words", names_of(events))
    assert len(spans) == 36
    assert most_at_once(spans) == 4


@pytest.mark.slow
def test_the_schedule_example_records_schedules_that_a_worker_fires(tmp_path: Path) -> None:
    declared = subprocess.run([sys.executable, "examples/schedule.py"], cwd=REPO, env=env_for(tmp_path),
                              capture_output=True, text=True, timeout=60)
    assert declared.returncode == 0, declared.stderr
    assert "heartbeat: next at" in declared.stdout and "nightly-report: next at" in declared.stdout
    again = subprocess.run([sys.executable, "examples/schedule.py"], cwd=REPO, env=env_for(tmp_path),
                           capture_output=True, text=True, timeout=60)
    assert again.stdout == declared.stdout or "heartbeat" in again.stdout
    listed = wf_cli(tmp_path, "schedule", "ls")
    assert "heartbeat" in listed.stdout and "every 5s" in listed.stdout
    assert "cron 0 2 * * * (Europe/Paris)" in listed.stdout
    worker = subprocess.Popen([sys.executable, "-m", "wf.cli", "worker", "examples/schedule.py"], cwd=REPO,
                              env=env_for(tmp_path), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while True:
            runs = wf_cli(tmp_path, "inspect", "runs", "--status", "completed", "--json")
            if runs.returncode == 0 and '"schedule.heartbeat"' in runs.stdout:
                break
            assert time.monotonic() < deadline, runs.stdout + runs.stderr
            time.sleep(0.5)
    finally:
        worker.terminate()
        _, err = worker.communicate(timeout=20)
    assert "Traceback" not in err
