"""The trace and state paths the run page draws, built from logs recorded by a real World."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from wf.runtime.entities import Event, EventType, utcnow
from wf.runtime.ids import new_run_id
from wf.runtime.state_paths import state_paths
from wf.web.trace import build_trace

E = EventType


async def _record(world: Any, events: list[tuple[EventType, str | None, dict[str, Any]]]) -> list[Event]:
    run_id = new_run_id()
    at = utcnow()
    await world.events.create(run_id, Event(run_id, E.RUN_CREATED, data={"workflow_name": "shop.order", "input": None},
                                            created_at=at))
    for i, (et, cid, data) in enumerate(events, start=1):
        await world.events.create(run_id, Event(run_id, et, cid, data, created_at=at + timedelta(seconds=i)))
    return await world.events.list(run_id)


async def test_a_bar_per_attempt_with_the_gaps_between(wf_env: Any) -> None:
    later = (utcnow() + timedelta(seconds=3)).isoformat()
    log = await _record(wf_env.world, [
        (E.RUN_STARTED, None, {}),
        (E.STEP_CREATED, "step_1", {"step_name": "shop.charge", "input": None}),
        (E.STEP_STARTED, "step_1", {"attempt": 1}),
        (E.STEP_STARTED, "step_1", {"attempt": 2}),  # the worker running attempt 1 died
        (E.STEP_RETRYING, "step_1", {"error": {"type": "IOError", "message": "declined"}, "retry_after": later}),
        (E.STEP_STARTED, "step_1", {"attempt": 3}),
        (E.STEP_COMPLETED, "step_1", {"result": "ok"}),
        (E.WAIT_CREATED, "wait_1", {"resume_at": later}),
        (E.WAIT_COMPLETED, "wait_1", {}),
        (E.HOOK_CREATED, "hook_1", {"token": "approve:1", "metadata": None}),
        (E.HOOK_RECEIVED, "hook_1", {"payload": "yes"}),
    ])
    trace = build_trace(log, log[0].created_at, utcnow())
    rows = {row["id"]: row for row in trace["rows"]}
    assert list(rows) == ["run", "step_1", "wait_1", "hook_1"]
    spans = [(s["kind"], s.get("status"), s["start"], s["end"]) for s in rows["step_1"]["spans"]]
    assert spans == [
        ("queued", None, 2000, 3000),
        ("attempt", "crashed", 3000, 4000),
        ("attempt", "retried", 4000, 5000),
        ("backoff", None, 5000, 6000),
        ("attempt", "completed", 6000, 7000),
    ]
    assert [s.get("attempt") for s in rows["step_1"]["spans"] if s["kind"] == "attempt"] == [1, 2, 3]
    assert rows["step_1"]["spans"][2]["error"] == "IOError: declined"
    assert [(s["seq0"], s["seq1"]) for s in rows["step_1"]["spans"]] == [(2, 3), (3, 4), (4, 5), (5, 6), (6, 7)]
    assert [(s["kind"], s["start"], s["end"]) for s in rows["wait_1"]["spans"]] == [("sleep", 8000, 9000)]
    hook = rows["hook_1"]
    assert hook["marks"] == [{"at": 11000, "seq": 11}]
    assert hook["spans"][0]["kind"] == "hook" and hook["spans"][0]["open"] is True  # still waiting: drawn to now
    assert trace["end"] >= 11000


async def test_state_paths_follow_each_entitys_states(wf_env: Any) -> None:
    log = await _record(wf_env.world, [
        (E.RUN_STARTED, None, {}),
        (E.STEP_CREATED, "step_1", {"step_name": "shop.charge", "input": None}),
        (E.STEP_STARTED, "step_1", {"attempt": 1}),
        (E.STEP_STARTED, "step_1", {"attempt": 2}),
        (E.STEP_FAILED, "step_1", {"error": {"type": "IOError", "message": "declined"}}),
        (E.HOOK_CREATED, "hook_1", {"token": "t-1", "metadata": None}),
        (E.HOOK_RECEIVED, "hook_1", {"payload": 1}),
        (E.WAIT_CREATED, "wait_1", {"resume_at": utcnow().isoformat()}),
        (E.RUN_FAILED, None, {"error": {"type": "IOError", "message": "declined"}}),
    ])
    mine = [(p["kind"], p["name"], p["states"]) for p in (path.to_dict() for path in state_paths(log))]
    assert mine[1][2] == ["pending", "running", "running (restarted)", "failed"]
    assert mine[2][2][-1] == "disposed (run ended)"


async def test_a_forks_copied_events_start_the_time_axis(wf_env: Any) -> None:
    log = await _record(wf_env.world, [(E.RUN_STARTED, None, {})])
    trace = build_trace(log, log[0].created_at + timedelta(hours=1), utcnow())  # created after the copied events
    assert min(s["start"] for row in trace["rows"] for s in row["spans"]) == 0
