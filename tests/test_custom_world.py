"""A World of the user's own, named `module:factory`, serves the CLI and a worker with nothing but the contract."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
HELLO = str(REPO / "examples" / "hello.py")
SPEC = "tests.custom_world:factory"


def _env(data: Path, world: str = SPEC) -> dict[str, str]:
    env = {**os.environ, "WF_WORLD": world, "WF_CUSTOM_WORLD_DIR": str(data), "WF_FSYNC": "0", "COLUMNS": "160"}
    env.pop("WF_DATA_DIR", None)
    return env


def wf_cli(data: Path, *args: str, world: str = SPEC, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "wf.cli", *args], cwd=cwd, env=_env(data, world),
                          capture_output=True, text=True, timeout=60)


def test_start_wait_inspect_and_doctor_run_on_a_custom_world(tmp_path: Path) -> None:
    data = tmp_path / "custom"
    done = wf_cli(data, "start", f"{HELLO}:hello", '"world"', "--wait", "--json")
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert (out["status"], out["output"]) == ("completed", "HELLO, WORLD!")
    assert (data / "wf-data.json").exists()  # the runs went where the custom World keeps them
    assert not (REPO / ".wf-custom").exists() and not (tmp_path / ".wf").exists()

    shown = wf_cli(data, "inspect", out["run_id"], "--json")
    assert shown.returncode == 0, shown.stderr
    assert [s["step_name"] for s in json.loads(shown.stdout)["steps"]] == ["hello.greet", "hello.shout"]

    doctor = wf_cli(data, "doctor", "--json")
    assert doctor.returncode == 0, doctor.stdout + doctor.stderr
    assert json.loads(doctor.stdout)["findings"] == []


def test_a_worker_on_a_custom_world_drives_runs_a_client_started(tmp_path: Path) -> None:
    data = tmp_path / "custom"
    started = wf_cli(data, "start", f"{HELLO}:hello", '"ana"', "--json")
    assert started.returncode == 0, started.stderr
    run_id = json.loads(started.stdout)["run_id"]
    worker = subprocess.Popen([sys.executable, "-m", "wf.cli", "worker", HELLO], cwd=REPO, env=_env(data),
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while True:
            shown = json.loads(wf_cli(data, "inspect", run_id, "--json").stdout)["run"]
            if shown["status"] == "completed" or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert (shown["status"], shown["output"]) == ("completed", "HELLO, ANA!")
    finally:
        worker.terminate()
        assert worker.wait(30) == 0


def test_a_factory_that_does_not_exist_is_one_line_and_exit_2(tmp_path: Path) -> None:
    for spec, said in [("tests.custom_world:nope", "has no 'nope'"), ("no_such_mod:factory", "cannot import"),
                       ("redis://localhost", "unknown World URL scheme 'redis'")]:
        result = wf_cli(tmp_path, "inspect", "runs", world=spec)
        assert result.returncode == 2, (spec, result.stderr)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and said in lines[0] and "Traceback" not in result.stderr, (spec, result.stderr)
