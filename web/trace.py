"""A run's trace: one row per step, sleep and hook; one span per step attempt, with the gaps between.

Times are milliseconds from the run's creation. Span kinds: `queued` (created, not started),
`attempt` (running; status completed/failed/retried/running/crashed), `backoff` (waiting
for a retry), `sleep`, `hook` (open, waiting for payloads). Each span names the events that
opened and closed it (`seq0`, `seq1`), so the event log and the trace point at each other.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from ..runtime.entities import Event, EventType
from .values import short_name

E = EventType

_RUN_END = {E.RUN_COMPLETED: "completed", E.RUN_FAILED: "failed", E.RUN_CANCELLED: "cancelled"}
_ATTEMPT_END = {E.STEP_COMPLETED: "completed", E.STEP_FAILED: "failed", E.STEP_RETRYING: "retried"}


def build_trace(events: list[Event], origin: datetime | None, now: datetime) -> dict[str, Any]:
    """{"end": ms, "rows": [{"id", "kind", "label", "spans": [...], "marks": [...]}]}."""
    times = [e.created_at for e in events if e.created_at is not None]
    if times and (origin is None or times[0] < origin):
        origin = times[0]  # a fork keeps its original's first events and their times
    if origin is None:
        origin = now

    def ms(at: datetime) -> float:
        return round((at - origin).total_seconds() * 1000, 3)

    rows: dict[str, dict[str, Any]] = {}
    open_: dict[str, dict[str, Any]] = {}  # row id -> the span in progress
    attempts: dict[str, int] = {}
    end_at: datetime | None = None
    last = origin

    def open_span(row: str, kind: str, at: datetime, seq: int, **extra: Any) -> None:
        open_[row] = {"kind": kind, "start": ms(at), "end": None, "seq0": seq, "seq1": None, **extra}

    def close_span(row: str, at: datetime, seq: int, **extra: Any) -> None:
        span = open_.pop(row, None)
        if span is None or row not in rows:
            return
        span.update(end=max(ms(at), span["start"]), seq1=seq, **extra)
        rows[row]["spans"].append(span)

    for event in events:
        at = event.created_at
        if at is None:
            continue
        last = max(last, at)
        et, seq, cid = event.event_type, event.seq, event.correlation_id or ""
        if et == E.RUN_CREATED:
            rows["run"] = {"id": "run", "kind": "run", "label": "run", "spans": [], "marks": []}
            open_span("run", "queued", at, seq)
        elif et == E.RUN_STARTED:
            close_span("run", at, seq)
            open_span("run", "attempt", at, seq, status="running")
        elif et in _RUN_END:
            end_at = at
            close_span("run", at, seq, status=_RUN_END[et])
            for row in list(open_):
                close_span(row, at, seq, ended_by_run=True)
        elif et == E.STEP_CREATED:
            name = str(event.data.get("step_name", ""))
            rows[cid] = {"id": cid, "kind": "step", "label": short_name(name), "name": name, "spans": [],
                         "marks": []}
            open_span(cid, "queued", at, seq)
        elif et == E.STEP_STARTED:
            span = open_.get(cid)
            if span is not None and span["kind"] == "attempt":  # restarted after a crash
                close_span(cid, at, seq, status="crashed")
            else:
                close_span(cid, at, seq)
            attempts[cid] = int(event.data.get("attempt") or attempts.get(cid, 0) + 1)
            open_span(cid, "attempt", at, seq, status="running", attempt=attempts[cid])
        elif et in _ATTEMPT_END:
            extra: dict[str, Any] = {"status": _ATTEMPT_END[et]}
            error = event.data.get("error")
            if isinstance(error, dict):
                extra["error"] = f"{error.get('type', 'Error')}: {error.get('message', '')}"
            close_span(cid, at, seq, **extra)
            if et == E.STEP_RETRYING:
                open_span(cid, "backoff", at, seq)
        elif et == E.WAIT_CREATED:
            rows[cid] = {"id": cid, "kind": "wait", "label": "sleep", "spans": [], "marks": [],
                         "resume_at": event.data.get("resume_at")}
            open_span(cid, "sleep", at, seq)
        elif et == E.WAIT_COMPLETED:
            close_span(cid, at, seq, status="completed")
        elif et in (E.HOOK_CREATED, E.HOOK_CONFLICT):
            token = str(event.data.get("token", ""))
            rows[cid] = {"id": cid, "kind": "hook", "label": "hook", "token": token, "spans": [], "marks": []}
            if et == E.HOOK_CREATED:
                open_span(cid, "hook", at, seq)
        elif et == E.HOOK_RECEIVED:
            row = rows.get(cid)
            if row is not None:
                row["marks"].append({"at": ms(at), "seq": seq})
        elif et == E.HOOK_DISPOSED:
            close_span(cid, at, seq, status="disposed")
    end = end_at or max(now, last)
    for row in list(open_):
        span = open_.pop(row)
        if row in rows:
            span.update(end=max(ms(end), span["start"]), open=True)
            rows[row]["spans"].append(span)
    return {"end": ms(end), "rows": list(rows.values())}
