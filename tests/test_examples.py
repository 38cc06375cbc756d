"""Every example runs with the command its docstring gives, and prints what the docstring says."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "examples"


def documented(example: str, command: str) -> list[str]:
    """`command` split into arguments, after checking the example's docstring shows it verbatim."""
    assert command in (EXAMPLES / example).read_text(), f"{example}'s docstring no longer shows: {command}"
    args = shlex.split(command)
    assert args[0] == "wf"
    return args[1:]


def wf(args: list[str], data_dir: Path, *, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "WF_DATA_DIR": str(data_dir), "WF_FSYNC": "0"}
    return subprocess.run([sys.executable, "-m", "wf.cli", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=timeout)


def result_of(proc: subprocess.CompletedProcess[str]) -> Any:
    """The JSON document `--wait --json` prints after anything the steps printed."""
    lines = proc.stdout.splitlines()
    start = lines.index("{")
    return json.loads("\n".join(lines[start:]))


def run_documented(example: str, command: str, data_dir: Path) -> tuple[dict[str, Any], str]:
    proc = wf([*documented(example, command), "--json"], data_dir)
    assert proc.returncode in (0, 1), proc.stderr
    return result_of(proc), proc.stdout


def test_hello(tmp_path: Path) -> None:
    out, _ = run_documented("hello.py", """wf start examples/hello.py:hello '"world"' --wait""", tmp_path)
    assert out["output"] == "HELLO, WORLD!"


@pytest.mark.slow  # waits for real: the point is the documented command
def test_order_ships_after_two_retried_timeouts(tmp_path: Path) -> None:
    started = time.monotonic()
    out, _ = run_documented("order.py", """wf start examples/order.py:fulfil_order '"o-1"' '"4242"' --wait""",
                            tmp_path)
    assert out["output"] == {"order_id": "o-1", "status": "shipped", "charge": "ch_o-1",
                             "tracking": "TRK-O-1-BERLIN"}
    assert time.monotonic() - started >= 3  # backoff 1 s + 2 s, for real here


def test_order_declined_and_compensated(tmp_path: Path) -> None:
    out, printed = run_documented("order.py", """wf start examples/order.py:fulfil_order '"o-2"' '"0002"' --wait""",
                                  tmp_path)
    assert out["output"] == {"order_id": "o-2", "status": "declined", "reason": "card ending 0002 was declined"}
    assert "released res_o-2" in printed


@pytest.mark.slow  # waits for real: the point is the documented command
def test_order_shipping_failure_refunds_and_fails(tmp_path: Path) -> None:
    out, printed = run_documented(
        "order.py", """wf start examples/order.py:fulfil_order '"o-3"' '"4242"' '"Atlantis"' --wait""", tmp_path)
    assert out["status"] == "failed" and "no carrier delivers to Atlantis" in out["error"]["message"]
    assert printed.index("refunded ch_o-3") < printed.index("released res_o-3")


@pytest.mark.slow  # waits for real: the point is the documented command
def test_approval_by_hook_resume_command(tmp_path: Path) -> None:
    args = documented("approval.py", """wf start examples/approval.py:expense_approval '"exp-7"' 420 --wait""")
    env = {**os.environ, "WF_DATA_DIR": str(tmp_path), "WF_FSYNC": "0"}
    waiting = subprocess.Popen([sys.executable, "-m", "wf.cli", *args, "--json"], cwd=REPO, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        resume = documented("approval.py", """wf hook resume approve:exp-7 '{"approved": true, "by": "ana"}'""")
        deadline = time.monotonic() + 30
        while (proc := wf(resume, tmp_path)).returncode != 0:  # until the run has created its hook
            assert time.monotonic() < deadline, proc.stderr
            time.sleep(0.2)
        stdout, stderr = waiting.communicate(timeout=30)
    finally:
        waiting.kill()
    assert json.loads(stdout[stdout.index("{\n"):])["output"] == {"request_id": "exp-7", "status": "approved",
                                                                   "by": "ana"}, stderr


@pytest.mark.slow  # waits for real: the point is the documented command
def test_approval_escalates_on_timeout(tmp_path: Path) -> None:
    out, _ = run_documented(
        "approval.py", """wf start examples/approval.py:expense_approval '"exp-8"' 420 2 --wait""", tmp_path)
    assert out["output"] == {"request_id": "exp-8", "status": "escalated", "to": "manager@example.com"}
    assert out["seconds"] >= 2


def test_fanout(tmp_path: Path) -> None:
    out, _ = run_documented("fanout.py", "wf start examples/fanout.py:score_documents 20 --wait", tmp_path)
    assert out["output"] == {"documents": 20, "total_words": 1750, "longest": "doc-19"}
    assert out["seconds"] >= 0.5  # 20 steps of 0.1 s, 4 at a time


@pytest.mark.slow  # waits for real: the point is the documented command
def test_streaming_through_wf_stream(tmp_path: Path) -> None:
    env = {**os.environ, "WF_DATA_DIR": str(tmp_path), "WF_FSYNC": "0"}
    worker = subprocess.Popen([sys.executable, "-m", "wf.cli", "worker", "examples/streaming.py"], cwd=REPO, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        start = wf([*documented("streaming.py", """wf start examples/streaming.py:chat '"tell me about durable \
workflows"'""".replace("\\\n", "")), "--json"], tmp_path)
        assert start.returncode == 0, start.stderr
        run_id = json.loads(start.stdout)["run_id"]
        streamed = wf([*documented("streaming.py", "wf stream RUN_ID")[:-1], run_id], tmp_path)
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(20)
    assert streamed.returncode == 0, streamed.stderr
    assert streamed.stdout.strip().startswith("Durable workflows remember every step,")
    assert streamed.stdout.strip().endswith("instead of starting over.")


@pytest.mark.slow  # waits for real: the point is the documented command
def test_daily_digest(tmp_path: Path) -> None:
    out, _ = run_documented("digest.py", """wf start examples/digest.py:daily_digest '"ana"' 3 '"2s"' --wait""",
                            tmp_path)
    sent = out["output"]["sent"]
    assert [s.split(" (")[0] for s in sent] == [f"digest for ana, day {d}" for d in (1, 2, 3)]
    assert out["seconds"] >= 4


def test_children(tmp_path: Path) -> None:
    out, _ = run_documented(
        "children.py", """wf start examples/children.py:ship_batch '["o-1", "o-2", "o-3"]' --wait""", tmp_path)
    assert out["output"] == {"shipped": 3, "labels": ["LABEL-O-1", "LABEL-O-2", "LABEL-O-3"]}


@pytest.mark.parametrize("name", sorted(p.name for p in EXAMPLES.glob("*.py")))
def test_every_example_documents_its_command(name: str) -> None:
    text = (EXAMPLES / name).read_text()
    assert f"wf start examples/{name}:" in text
