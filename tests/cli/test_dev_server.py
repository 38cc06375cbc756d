"""`wf dev` as a user runs it: a real subprocess, real HTTP requests, a real file edit, real signals.

The web app's security rules and limits have their own tests in tests/web/test_http_rules.py.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

WORKFLOWS = textwrap.dedent(
    """
    import wf

    @wf.step
    async def label(x: str) -> str:
        return "v1:" + x

    @wf.workflow
    async def approve(order: str) -> dict:
        first = await label(order)
        payload = await wf.create_hook(token="approve:" + order)
        second = await label(order)
        return {"first": first, "second": second, "body": payload["body"]}
    """
)


class DevServer:
    def __init__(self, proc: subprocess.Popen[str], port: int, root: Path) -> None:
        self.proc = proc
        self.port = port
        self.root = root

    def request(self, method: str, path: str, body: bytes | None = None,
                headers: dict[str, str] | None = None) -> tuple[int, dict]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            response = conn.getresponse()
            return response.status, json.loads(response.read() or b"{}")
        finally:
            conn.close()

    def wait_run(self, run_id: str, status: str, timeout: float = 10.0) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            code, story = self.request("GET", f"/api/runs/{run_id}")
            run = story.get("run", story)
            if code == 200 and run["status"] == status:
                return run
            if time.monotonic() > deadline:
                raise AssertionError(f"run {run_id} is {run.get('status')}, expected {status}")
            time.sleep(0.05)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def dev(tmp_path: Path):
    (tmp_path / "approvals.py").write_text(WORKFLOWS)
    port = _free_port()
    env = {**os.environ, "WF_FSYNC": "0", "WF_DATA_DIR": str(tmp_path / ".wf")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "wf.cli", "dev", "approvals.py", "--port", str(port), "--no-live"],
        cwd=tmp_path, env=env, stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    assert proc.stderr is not None
    line = proc.stderr.readline()
    assert "wf dev ready" in line, line
    server = DevServer(proc, port, tmp_path)
    yield server
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=15)


def _start(dev: DevServer, order: str) -> str:
    data = json.dumps({"workflow": "approvals.approve", "args": [order]}).encode()
    code, body = dev.request("POST", "/api/runs", data, {"Content-Type": "application/json"})
    assert code == 201, body
    return str(body["run_id"])


def _wait_hook(dev: DevServer, token: str) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        code, _ = dev.request("POST", f"/.well-known/workflow/v1/webhook/{token}-probe")
        assert code == 404
        if (dev.root / ".wf" / "tokens").exists() and any((dev.root / ".wf" / "tokens").iterdir()):
            return
        time.sleep(0.05)
    raise AssertionError("the hook never appeared")


def test_webhook_resumes_the_run_with_the_request(dev: DevServer) -> None:
    run_id = _start(dev, "o-1")
    _wait_hook(dev, "approve:o-1")
    code, body = dev.request("POST", "/.well-known/workflow/v1/webhook/approve:o-1", b'{"approved": true}',
                             {"Content-Type": "application/json"})
    assert (code, body) == (202, {"ok": True})
    run = dev.wait_run(run_id, "completed")
    assert run["output"]["body"] == {"approved": True}


def test_unknown_token_is_404_and_bad_bodies_are_refused(dev: DevServer) -> None:
    assert dev.request("POST", "/.well-known/workflow/v1/webhook/nobody")[0] == 404
    assert dev.request("GET", "/api/runs/..%2F..%2Fetc%2Fpasswd")[0] == 404
    assert dev.request("POST", "/api/runs", b"{not json", {"Content-Type": "application/json"})[0] == 400
    deep = b"[" * 200 + b"]" * 200
    run_id = _start(dev, "o-deep")
    _wait_hook(dev, "approve:o-deep")
    code, _ = dev.request("POST", "/.well-known/workflow/v1/webhook/approve:o-deep", deep,
                          {"Content-Type": "application/json"})
    assert code == 400
    big = b"x" * (1024 * 1024 + 1)
    assert dev.request("POST", "/.well-known/workflow/v1/webhook/approve:o-deep", big)[0] == 413
    assert dev.request("GET", "/health")[1]["ok"] is True
    assert dev.wait_run(run_id, "running")["status"] == "running"  # nothing was delivered


def test_editing_code_reloads_it_for_later_steps(dev: DevServer) -> None:
    run_id = _start(dev, "o-2")
    _wait_hook(dev, "approve:o-2")
    source = dev.root / "approvals.py"
    source.write_text(WORKFLOWS.replace('"v1:"', '"v2:"'))
    time.sleep(1.0)  # the watcher debounces, then reloads
    dev.request("POST", "/.well-known/workflow/v1/webhook/approve:o-2", b"go")
    run = dev.wait_run(run_id, "completed")
    assert run["output"]["first"] == "v1:o-2"  # recorded before the edit: replayed, not re-run
    assert run["output"]["second"] == "v2:o-2"  # ran after the edit, on the new code


def test_an_edit_that_breaks_history_fails_the_run_with_a_divergence(dev: DevServer) -> None:
    run_id = _start(dev, "o-3")
    _wait_hook(dev, "approve:o-3")
    source = dev.root / "approvals.py"
    source.write_text(WORKFLOWS.replace("first = await label(order)", "first = order"))
    time.sleep(1.0)
    dev.request("POST", "/.well-known/workflow/v1/webhook/approve:o-3", b"go")
    run = dev.wait_run(run_id, "failed")
    assert run["error"]["type"] == "ReplayDivergenceError"
    assert "wf replay" in run["error"]["message"]


def test_sigint_drains_and_exits_cleanly(dev: DevServer) -> None:
    dev.proc.send_signal(signal.SIGINT)
    assert dev.proc.wait(timeout=15) == 0
    assert dev.proc.stderr is not None
    rest = dev.proc.stderr.read()
    assert "stopped" in rest and "Traceback" not in rest


def test_runs_survive_a_restart_of_wf_dev(dev: DevServer, tmp_path: Path) -> None:
    run_id = _start(dev, "o-4")
    _wait_hook(dev, "approve:o-4")
    dev.proc.send_signal(signal.SIGINT)
    dev.proc.wait(timeout=15)
    port = _free_port()
    env = {**os.environ, "WF_FSYNC": "0", "WF_DATA_DIR": str(tmp_path / ".wf")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "wf.cli", "dev", "approvals.py", "--port", str(port), "--no-live"],
        cwd=tmp_path, env=env, stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    try:
        assert proc.stderr is not None and "wf dev ready" in proc.stderr.readline()
        again = DevServer(proc, port, tmp_path)
        assert again.request("POST", "/.well-known/workflow/v1/webhook/approve:o-4", b"later")[0] == 202
        assert again.wait_run(run_id, "completed")["output"]["body"] == "later"
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=15)


def test_sigint_with_live_pages_open_ends_their_streams_and_exits_cleanly(dev: DevServer) -> None:
    import socket

    run_id = _start(dev, "o-5")
    _wait_hook(dev, "approve:o-5")
    streams = []
    for path in ("/api/live/runs", f"/api/live/runs/{run_id}"):
        sock = socket.create_connection(("127.0.0.1", dev.port), timeout=10)
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{dev.port}\r\n\r\n".encode())
        assert b"200 OK" in sock.recv(4096)
        streams.append(sock)
    started = time.monotonic()
    dev.proc.send_signal(signal.SIGINT)
    assert dev.proc.wait(timeout=15) == 0
    assert time.monotonic() - started < 1.5  # the streams ended at once, not at a graceful-shutdown timeout
    for sock in streams:
        sock.settimeout(5)
        while sock.recv(4096):  # the server finished the response and closed
            pass
        sock.close()
    assert dev.proc.stderr is not None
    rest = dev.proc.stderr.read()
    assert "stopped" in rest and "Traceback" not in rest and "ERROR" not in rest
