"""The web UI in a real browser: Debian's Chromium driven by Playwright, against `wf dev` run as a user would.

The workflow file (browser_flows.py, copied to a temp dir) has a step that fails twice and is
retried, a sleep, a hook and a child run that writes a stream. Every page is checked for
console errors. Set WF_UI_SCREENSHOTS=docs to refresh the README's screenshots.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import playwright.sync_api as playwright_api
import pytest

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"]
FLOWS = Path(__file__).with_name("browser_flows.py")
TIMEOUT = 15_000

if not CHROMIUM.exists():
    pytest.fail(f"{CHROMIUM} is missing: apt-get install -y chromium (.ci/run does)", pytrace=False)


class Dev:
    """`wf dev` on the flows file in a temp dir, with a tiny JSON client."""

    def __init__(self, root: Path, port: int, proc: subprocess.Popen[str]) -> None:
        self.root, self.port, self.proc = root, port, proc
        self.base = f"http://127.0.0.1:{port}"

    def call(self, method: str, path: str, data: Any = None) -> tuple[int, Any]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=15)
        try:
            body = None if data is None else json.dumps(data).encode()
            conn.request(method, path, body=body, headers={"Content-Type": "application/json"} if body else {})
            response = conn.getresponse()
            return response.status, json.loads(response.read() or b"null")
        finally:
            conn.close()

    def start(self, order: str) -> str:
        code, body = self.call("POST", "/api/runs", {"workflow": "flows.order_flow", "args": [order]})
        assert code == 201, body
        return str(body["run_id"])

    def story(self, run_id: str) -> dict[str, Any]:
        code, body = self.call("GET", f"/api/runs/{run_id}")
        assert code == 200, body
        return body

    def until(self, run_id: str, check: Any, what: str, timeout: float = 15.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            story = self.story(run_id)
            if check(story):
                return story
            if time.monotonic() > deadline:
                raise AssertionError(f"run {run_id}: {what} did not happen; it is {story['run']['status']}")
            time.sleep(0.05)

    def hook_open(self, run_id: str) -> dict[str, Any]:
        return self.until(run_id, lambda s: any(h["status"] == "active" and h["token"].startswith("approve:")
                                                for h in s["hooks"]), "a hook opening")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def dev(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dev]:
    root = tmp_path_factory.mktemp("ui")
    shutil.copy(FLOWS, root / "flows.py")
    port = _free_port()
    env = {**os.environ, "WF_FSYNC": "0", "WF_DATA_DIR": str(root / ".wf")}
    proc = subprocess.Popen([sys.executable, "-m", "wf.cli", "dev", "flows.py", "--port", str(port), "--no-live"],
                            cwd=root, env=env, stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    line = proc.stderr.readline()
    assert f"web UI at http://127.0.0.1:{port}/" in line, line
    yield Dev(root, port, proc)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=20) == 0


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with playwright_api.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    """A fresh page; the test fails if any page it opened logged a console error."""
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    tab = context.new_page()
    tab.set_default_timeout(TIMEOUT)
    errors: list[str] = []
    tab.on("console", lambda m: errors.append(f"{tab.url}: {m.text}") if m.type == "error" else None)
    tab.on("pageerror", lambda e: errors.append(f"{tab.url}: {e}"))
    yield tab
    context.close()
    assert errors == []


def _status_is(page: Any, status: str) -> None:
    page.wait_for_function(f"() => document.getElementById('run-status')?.textContent === {status!r}")


def _shot(page: Any, name: str, tmp_path: Path) -> None:
    folder = Path(os.environ.get("WF_UI_SCREENSHOTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(folder / name), full_page=False)
    assert (folder / name).stat().st_size > 10_000


def test_a_started_run_appears_on_the_runs_page_without_a_reload(dev: Dev, page: Any, tmp_path: Path) -> None:
    page.goto(dev.base + "/")
    page.wait_for_selector("#live-state.live.live")
    page.evaluate("window.__sameDocument = true")
    run_id = dev.start("o-list")
    page.wait_for_selector(f'tr[data-run-id="{run_id}"]')
    assert page.evaluate("window.__sameDocument") is True  # no reload
    page.wait_for_selector('.count[data-status="running"]')
    dev.hook_open(run_id)
    page.fill("input[name=q]", "o-list")
    page.press("input[name=q]", "Enter")
    page.wait_for_url(re.compile(r"q=o-list"))
    rows = page.locator("table.runs tbody tr[data-run-id]")
    assert rows.count() == 1 and rows.first.get_attribute("data-run-id") == run_id
    page.goto(dev.base + "/")
    page.wait_for_selector(f'tr[data-run-id="{run_id}"]')
    _shot(page, "ui-runs.png", tmp_path)


def test_the_trace_has_a_bar_per_attempt_and_a_hook_resumed_by_form_completes_the_run(
        dev: Dev, page: Any, tmp_path: Path) -> None:
    run_id = dev.start("o-trace")
    dev.hook_open(run_id)
    page.goto(f"{dev.base}/runs/{run_id}")
    step = page.locator('#trace .row[data-row="step_1"]')
    step.locator(".bar").first.wait_for()
    attempts = step.locator(".bar.k-attempt")
    assert attempts.count() == 3
    assert step.locator(".bar.k-attempt.s-retried").count() == 2
    assert step.locator(".bar.k-attempt.s-completed").count() == 1
    assert step.locator(".bar.k-backoff").count() == 2  # the retry gaps
    assert page.locator('#trace .row[data-row="wait_1"] .bar.k-sleep').count() == 1
    assert page.locator('#trace .row[data-row="hook_1"] .bar.k-hook').count() == 1
    wait_bar = page.locator('#trace .row[data-row="wait_1"] .bar.k-sleep')
    width = wait_bar.bounding_box()["width"]
    page.click("[data-zoom=in]")
    assert abs(wait_bar.bounding_box()["width"] - 2 * width) < 2  # zoomed in: twice as wide
    page.click("[data-zoom=fit]")
    assert abs(wait_bar.bounding_box()["width"] - width) < 2
    step.locator(".bar.k-attempt.s-completed").click()
    detail = page.locator("#detail")
    detail.locator(".step-output").wait_for()
    assert "charged:o-trace" in detail.locator(".step-output").inner_text()
    page.wait_for_function("() => document.getElementById('call-site').textContent.includes('flows.py:')")
    assert re.search(r"flows\.py:\d+$", detail.locator("#call-site").inner_text())
    assert "card declined (attempt 2)" in detail.locator("table.attempts").inner_text()
    detail.locator(".ev-link").first.click()
    assert page.locator("#events .erow.hl").count() >= 1  # the event log is cross-linked
    form = page.locator('#hooks form.resume-form[data-token="approve:o-trace"]')
    form.locator("textarea").fill('{"approved": true, "by": "ada"}')
    form.locator("button[type=submit]").click()
    _status_is(page, "completed")
    child = page.locator('#trace .row.kind-child a.child-link')
    assert child.count() == 1
    output = page.locator("#summary").inner_text()
    assert '"by": "ada"' in output and '"total": 42' in output
    page.locator('#trace .row[data-row="step_1"] .bar.k-attempt.s-completed').click()
    page.locator("#detail .step-output").wait_for()
    page.set_viewport_size({"width": 1400, "height": 1250})
    page.evaluate("window.scrollTo(0, 0)")
    _shot(page, "ui-run.png", tmp_path)
    page.set_viewport_size({"width": 1400, "height": 900})
    child.click()
    page.wait_for_url(re.compile(r"/runs/wrun_"))
    _status_is(page, "completed")
    page.locator('pre.stream[data-stream="default"]').wait_for()
    page.wait_for_function("() => document.querySelector('pre.stream').textContent.includes('item 21')")


def test_cancel_from_the_run_page(dev: Dev, page: Any) -> None:
    run_id = dev.start("o-cancel")
    dev.hook_open(run_id)
    page.goto(f"{dev.base}/runs/{run_id}")
    _status_is(page, "running")
    page.once("dialog", lambda dialog: dialog.accept())
    page.fill("#actions input[name=reason]", "customer changed their mind")
    page.click("#cancel-run")
    _status_is(page, "cancelled")
    assert dev.story(run_id)["run"]["status"] == "cancelled"
    assert page.locator("#cancel-run").is_disabled()


def test_replay_check_is_clean_then_shows_the_divergence_after_an_edit_and_fork_runs_new_code(
        dev: Dev, page: Any) -> None:
    run_id = dev.start("o-replay")
    dev.hook_open(run_id)
    assert dev.call("POST", "/.well-known/workflow/v1/webhook/approve:o-replay", {"ok": 1})[0] == 202
    dev.until(run_id, lambda s: s["run"]["status"] == "completed", "completion")
    page.goto(f"{dev.base}/runs/{run_id}")
    page.click("#replay-check")
    assert "replays cleanly" in page.locator("#replay-result").inner_text()
    source = dev.root / "flows.py"
    original = source.read_text()
    source.write_text(original.replace("charged = await charge(order)", 'charged = "on the house"'))
    try:
        deadline = time.monotonic() + 15
        while dev.call("GET", f"/api/runs/{run_id}/replay")[1]["clean"]:  # wf dev reloads the edit
            assert time.monotonic() < deadline, "wf dev did not reload the edited file"
            time.sleep(0.1)
        page.click("#replay-check")
        result = page.locator("#replay-result")
        result.wait_for()
        page.wait_for_function("() => document.getElementById('replay-result').textContent.includes('diverges')")
        text = result.inner_text()
        assert "diverges at event 2" in text
        assert "step_created step_1" in text and "flows.charge" in text  # the log's side
        assert "create hook" in text or "sleep until" in text  # the code's side
        assert re.search(r"flows\.py:\d+", result.locator(".site").inner_text())
        page.locator('#trace .row[data-row="step_1"] .bar.k-attempt.s-completed').click()
        page.click("#detail button.fork-here")
        page.locator("#fork-link").click()
        page.wait_for_url(re.compile(r"/runs/wrun_"))
        forked = page.url.rsplit("/", 1)[1]
        assert forked != run_id
        page.wait_for_function("() => document.querySelector('#summary') && "
                               "document.querySelector('#summary').textContent.includes('forked from')")
        dev.hook_open(forked)
        assert dev.call("POST", "/.well-known/workflow/v1/webhook/approve:o-replay", {"ok": 2})[0] == 202
        _status_is(page, "completed")
        assert dev.story(forked)["run"]["output"]["charged"] == "on the house"
    finally:
        source.write_text(original)


def test_the_workflows_page_starts_a_run_with_json_arguments(dev: Dev, page: Any) -> None:
    page.goto(f"{dev.base}/workflows")
    form = page.locator('form.start-form[data-workflow="flows.child_total"]')
    form.locator("input[name=args]").fill("[5]")
    form.locator("button[type=submit]").click()
    form.locator(".result a").click()
    _status_is(page, "completed")
    assert "10" in page.locator("#summary").inner_text()
    bad = page.locator('form.start-form[data-workflow="flows.child_total"]')
    page.goto(f"{dev.base}/workflows")
    bad.locator("input[name=args]").fill("[5")
    bad.locator("button[type=submit]").click()
    assert "not JSON" in bad.locator(".result").inner_text()


def test_a_stream_is_tailed_live_while_its_step_writes(dev: Dev, page: Any) -> None:
    code, body = dev.call("POST", "/api/runs", {"workflow": "flows.ticker", "args": [12]})
    assert code == 201, body
    run_id = body["run_id"]
    dev.until(run_id, lambda s: any(x["name"] == "ticks" for x in s["streams"]), "the stream opening")
    page.goto(f"{dev.base}/runs/{run_id}")
    stream = page.locator('pre.stream[data-stream="ticks"]')
    stream.wait_for()
    page.evaluate("window.__sameDocument = true")
    first = stream.inner_text()
    assert "tick 11" not in first  # the step is still writing
    page.wait_for_function("() => document.querySelector('pre.stream').textContent.includes('tick 11')")
    assert page.evaluate("window.__sameDocument") is True
    lines = stream.inner_text().split()
    assert lines == [word for i in range(12) for word in ("tick", str(i))]  # every chunk once, in order
    page.wait_for_function("() => document.querySelector('#streams h3').textContent.includes('closed (12 chunks)')")


def test_wf_ui_alone_serves_the_runs_and_replays_them_on_the_code_they_recorded(dev: Dev, tmp_path: Path) -> None:
    run_id = dev.start("o-ui")
    dev.hook_open(run_id)
    assert dev.call("POST", "/.well-known/workflow/v1/webhook/approve:o-ui", {"ok": 3})[0] == 202
    dev.until(run_id, lambda s: s["run"]["status"] == "completed", "completion")
    port = _free_port()
    env = {**os.environ, "WF_FSYNC": "0"}
    ui = subprocess.Popen([sys.executable, "-m", "wf.cli", "ui", "--data-dir", str(dev.root / ".wf"), "--port",
                           str(port)], cwd=tmp_path, env=env, stderr=subprocess.PIPE, text=True)
    try:
        assert ui.stderr is not None
        line = ui.stderr.readline()
        assert f"open http://127.0.0.1:{port}/" in line and "0 workflow(s) loaded" in line, line
        alone = Dev(dev.root, port, ui)
        assert alone.story(run_id)["run"]["output"]["approval"]["body"] == {"ok": 3}
        code, report = alone.call("GET", f"/api/runs/{run_id}/replay")  # imports flows.py from the run's record
        assert code == 200 and report["clean"] is True, report
        code, sites = alone.call("GET", f"/api/runs/{run_id}/callsites")
        assert code == 200 and re.search(r"flows\.py:\d+$", sites["sites"]["step_1"]), sites
    finally:
        ui.send_signal(signal.SIGINT)
        assert ui.wait(timeout=15) == 0
