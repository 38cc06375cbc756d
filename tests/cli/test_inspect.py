"""`wf inspect RUN_ID` and `wf inspect runs|steps|events|hooks|waits`, run as a user runs them."""

from __future__ import annotations

import json
from typing import Any

from rich.console import Console

from wf.cli.listings import Filters, list_kind
from wf.cli.run_report import render_story
from wf.cli.run_story import load_story
from wf.world_local.world import LocalWorld

from .conftest import WIDTH, Runs, flow, wf_cli


async def rendered(recorded: Runs, label: str, *, full: bool = False) -> str:
    """`wf inspect RUN_ID` as printed on a terminal WIDTH columns wide."""
    world = LocalWorld(recorded.data_dir, fsync=False)
    try:
        story = await load_story(world, recorded.ids[label])
    finally:
        await world.close()
    console = Console(width=WIDTH, record=True, color_system=None, file=open("/dev/null", "w"))  # noqa: SIM115
    render_story(console, story, full=full)
    return console.export_text()


def inspect_json(recorded: Runs, *args: str) -> Any:
    result = wf_cli(recorded.data_dir, "inspect", *args, "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def line_with(text: str, needle: str) -> str:
    return next(line for line in text.splitlines() if needle in line)


def test_a_run_with_a_retry_tells_its_story(recorded: Runs) -> None:
    run_id = recorded.ids["retrying"]
    result = wf_cli(recorded.data_dir, "inspect", run_id)  # COLUMNS=WIDTH
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert max(len(line) for line in out.splitlines()) <= WIDTH
    assert f"run {run_id}" in out and flow("retrying") in out
    assert "completed" in line_with(out, "status")
    assert "(3)" in line_with(out, "input")
    # The retried step: two attempts, its path through the state machine, its bar on the timeline.
    assert "step_1 │ flaky" in out and "2" in line_with(out, "step_1 │ flaky").split("│")[3]
    assert "pending → running → pending (retry) → running → completed" in out
    timeline = out[out.index("Timeline"):out.index("State paths")]
    flaky_bar = line_with(timeline, "step_1 flaky")
    assert flaky_bar.count("╌") > 10, "the backoff between the two attempts is drawn"
    assert flaky_bar.index("━") < flaky_bar.index("╌") < flaky_bar.rindex("━")
    add_bar = line_with(timeline, "step_2 add")
    assert add_bar.index("━") > flaky_bar.index("╌"), "the second step starts after the first one's retry"
    # The event log, in order, with the retry's error.
    log = out[out.index("Event log"):]
    assert "Event log (11 events)" in log
    types = [t for t in ("run_created", "step_retrying", "step_completed", "run_completed") if t in log]
    assert types == ["run_created", "step_retrying", "step_completed", "run_completed"]
    assert "RuntimeError: flaky 3: transient failure" in line_with(log, "step_retrying")


async def test_long_payloads_are_cut_unless_full(recorded: Runs) -> None:
    short = await rendered(recorded, "retrying")
    assert "x" * 300 not in short
    assert "--full shows all" in short
    whole = await rendered(recorded, "retrying", full=True)
    assert "x" * 300 in whole.replace("\n", "").replace("│", "").replace(" ", "")


async def test_a_failed_run_shows_the_user_code_traceback(recorded: Runs) -> None:
    out = await rendered(recorded, "bad")
    assert "failed" in line_with(out, "status")
    assert "ValueError: bad value 'bad'" in line_with(out, "error")
    assert "traceback (user code):" in out
    assert 'flows.py", line' in out and "in _check" in out and "raise ValueError" in out
    assert "pending → running → failed" in out


async def test_a_run_failed_by_its_step_shows_the_step_error(recorded: Runs) -> None:
    out = await rendered(recorded, "step_failed")
    assert "StepFailedError" in line_with(out, "error")
    assert "caused by the step's error: FatalError: cannot go on: ok" in out
    assert "in explode" in out
    assert "FatalError: cannot go on: ok" in line_with(out, "step_2 │ explode")


async def test_hooks_and_streams_are_shown(recorded: Runs) -> None:
    hook_out = await rendered(recorded, "hook")
    hook_row = line_with(hook_out, "hook_1 │ tok-recorded")
    assert "disposed" in hook_row and '{"approved": true}' in hook_row
    assert "active → received → disposed (run ended)" in hook_out
    assert "◆" in line_with(hook_out[hook_out.index("Timeline"):], "hook_1 hook")
    stream_out = await rendered(recorded, "stream")
    streams = stream_out[stream_out.index("Streams"):stream_out.index("Timeline")]
    assert "default" in streams and " 4 " in line_with(streams, "default") and "yes" in line_with(streams, "default")


def test_json_holds_the_run_its_steps_and_its_log(recorded: Runs) -> None:
    run_id = recorded.ids["retrying"]
    doc = inspect_json(recorded, run_id)
    run = doc["run"]
    assert run["run_id"] == run_id and run["status"] == "completed"
    assert run["workflow_name"] == flow("retrying")
    assert run["input"] == {"args": [3], "kwargs": {}}
    assert run["output"] == {"n": 3, "total": 7, "note": "x" * 300}
    assert [s["step_id"] for s in doc["steps"]] == ["step_1", "step_2"]
    assert doc["steps"][0]["attempt"] == 2 and doc["steps"][0]["output"] == 6
    assert doc["steps"][1]["input"] == {"args": [6, 1], "kwargs": {}}
    assert doc["state_paths"]["step:step_1"] == ["pending", "running", "pending (retry)", "running", "completed"]
    assert [e["seq"] for e in doc["events"]] == list(range(run["event_count"]))
    assert doc["events"][4]["event_type"] == "step_retrying"
    failed = inspect_json(recorded, recorded.ids["bad"])["run"]
    assert failed["status"] == "failed" and failed["output"] is None
    assert failed["error"]["type"] == "ValueError" and "_check" in failed["error"]["traceback"]


async def follow_pages(recorded: Runs, kind: str, filters: Filters, limit: int = 2) -> list[list[Any]]:
    """Every page of a listing, following its cursors (what `--cursor` does)."""
    world = LocalWorld(recorded.data_dir, fsync=False)
    pages: list[list[Any]] = []
    cursor: str | None = None
    try:
        while True:
            listing = await list_kind(world, kind, filters, limit, cursor)
            pages.append(listing.items)
            cursor = listing.next_cursor
            if cursor is None:
                return pages
            assert len(pages) < 20
    finally:
        await world.close()


def test_runs_are_listed_newest_first_with_filters(recorded: Runs) -> None:
    runs = inspect_json(recorded, "runs")["items"]
    ids = [r["run_id"] for r in runs]
    assert sorted(ids) == sorted(recorded.ids.values())
    assert ids == sorted(ids, reverse=True)
    table = wf_cli(recorded.data_dir, "inspect", "runs", "--status", "failed", "--limit", "1").stdout
    lines = table.splitlines()
    assert lines[0].split() == ["run", "id", "workflow", "status", "created", "duration", "error"]
    assert lines[1].startswith(recorded.ids["step_failed"]) and " failed " in lines[1]
    assert lines[2] == f"next page: --cursor {recorded.ids['step_failed']}"
    second = inspect_json(recorded, "runs", "--status", "failed", "--cursor", recorded.ids["step_failed"])
    assert [r["run_id"] for r in second["items"]] == [recorded.ids["bad"]] and second["next_cursor"] is None


async def test_runs_page_with_a_cursor(recorded: Runs) -> None:
    pages = await follow_pages(recorded, "runs", Filters())
    assert [len(p) for p in pages] == [2, 2, 1]
    assert [r.run_id for page in pages for r in page] == sorted(recorded.ids.values(), reverse=True)
    by_workflow = await follow_pages(recorded, "runs", Filters(workflow=flow("failing")))
    assert [r.run_id for page in by_workflow for r in page] == [recorded.ids["step_failed"], recorded.ids["bad"]]


async def test_steps_page_across_runs_newest_first(recorded: Runs) -> None:
    pages = await follow_pages(recorded, "steps", Filters())
    steps = [(s.run_id, s.step_id) for page in pages for s in page]
    assert len(steps) == len(set(steps)) == 6  # 2 + 1 + 2 + 1 + 0
    assert all(len(p) == 2 for p in pages[:-1])
    assert steps[0][0] == recorded.ids["stream"]  # the newest run with a step
    retrying = [sid for rid, sid in steps if rid == recorded.ids["retrying"]]
    assert retrying == ["step_2", "step_1"]
    failed = inspect_json(recorded, "steps", "--status", "failed")["items"]
    assert [(s["run_id"], s["step_name"]) for s in failed] == [(recorded.ids["step_failed"], flow("explode"))]


async def test_events_hooks_and_waits_listings(recorded: Runs) -> None:
    run_id = recorded.ids["retrying"]
    pages = await follow_pages(recorded, "events", Filters(run=run_id), limit=3)
    assert [e.seq for page in pages for e in page] == list(range(10, -1, -1))
    retries = inspect_json(recorded, "events", "--type", "step_retrying")["items"]
    assert [(e["run_id"], e["correlation_id"]) for e in retries] == [(run_id, "step_1")]
    hooks = (await follow_pages(recorded, "hooks", Filters()))[0]
    assert [(h.token, h.status, h.received_count) for h in hooks] == [("tok-recorded", "disposed", 1)]
    active = await follow_pages(recorded, "hooks", Filters(status="active"))
    assert active == [[]]
    waits = await follow_pages(recorded, "waits", Filters())
    assert waits == [[]]
