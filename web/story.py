"""Everything the run page shows about one run, read through the World contract as JSON."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from ..runtime.children import CHILD_TOKEN_PREFIX
from ..runtime.client import idempotent_run_id
from ..runtime.entities import Event, EventType, Page, Run, utcnow
from ..runtime.errors import InvalidIdError, NotFoundError
from ..runtime.ids import validate_id
from ..runtime.state_paths import state_paths
from ..runtime.world import World
from .limits import HttpError
from .trace import build_trace
from .values import iso, payload_json, seconds_between, short_name, shown

E = EventType
#: Event summaries are cut to this many characters (the step's panel shows whole values).
SUMMARY = 160


async def get_run(world: World, run_id: str, *, resolve_data: bool = True) -> Run:
    """The run, or HttpError 404 for an unknown or malformed id."""
    try:
        validate_id(run_id, "run id")
        return await world.runs.get(run_id, resolve_data=resolve_data)
    except (InvalidIdError, NotFoundError):
        raise HttpError(404, f"no run with id {run_id!r}") from None


async def _all(fetch: Any) -> list[Any]:
    items: list[Any] = []
    cursor = None
    while True:
        page: Page[Any] = await fetch(cursor)
        items.extend(page.data)
        if page.next_cursor is None:
            return items
        cursor = page.next_cursor


def run_json(run: Run, now: datetime | None = None) -> dict[str, Any]:
    """The run's own fields, payloads decoded."""
    end = run.completed_at or (None if run.status.terminal else (now or utcnow()))
    attributes = {k: v for k, v in run.attributes.items() if k != "seed"}
    return {
        "run_id": run.run_id, "workflow": run.workflow_name, "status": str(run.status),
        "input": shown(run.input), "output": shown(run.output), "error": run.error,
        "created_at": iso(run.created_at), "started_at": iso(run.started_at), "completed_at": iso(run.completed_at),
        "duration": seconds_between(run.created_at, end), "event_count": run.event_count,
        "attributes": attributes, "parent_run_id": attributes.get("parent_run_id"),
        "forked_from": attributes.get("forked_from"),
    }


def run_row(run: Run) -> dict[str, Any]:
    """A run as the runs list shows it (no payloads)."""
    return {"run_id": run.run_id, "workflow": run.workflow_name, "status": str(run.status),
            "created_at": iso(run.created_at), "completed_at": iso(run.completed_at),
            "duration": seconds_between(run.created_at, run.completed_at),
            "error": f"{run.error.get('type', 'Error')}: {run.error.get('message', '')}" if run.error else None,
            "tags": dict(run.attributes.get("tags") or {})}


async def run_story(world: World, run_id: str) -> dict[str, Any]:
    """The run page's data: run, steps, hooks, waits, streams, children, trace, state paths, events."""
    run = await get_run(world, run_id)
    now = utcnow()
    steps = await _all(lambda c: world.steps.list(run_id, cursor=c, resolve_data=False))  # payloads: step_json
    hooks = await _all(lambda c: world.hooks.list(run_id=run_id, cursor=c))
    waits = await _all(lambda c: world.waits.list(run_id=run_id, cursor=c))
    streams = await world.streams.list(run_id)
    events = await world.events.list(run_id)
    children = []
    hook_items = []
    for hook in hooks:
        item = {"hook_id": hook.hook_id, "token": hook.token, "status": str(hook.status),
                "received_count": hook.received_count, "metadata": payload_json(hook.metadata),
                "created_at": iso(hook.created_at), "disposed_at": iso(hook.disposed_at), "child_run_id": None}
        meta = item["metadata"]
        if hook.token.startswith(CHILD_TOKEN_PREFIX) and isinstance(meta, dict) and meta.get("child_workflow"):
            child_id = idempotent_run_id(str(meta["child_workflow"]), hook.token)
            item["child_run_id"] = child_id
            children.append({"run_id": child_id, "workflow": meta["child_workflow"], "hook_id": hook.hook_id})
        hook_items.append(item)
    origin = run.created_at
    if events and events[0].created_at is not None and (origin is None or events[0].created_at < origin):
        origin = events[0].created_at  # a fork keeps its original's first events and their times
    trace = build_trace(events, origin, now)
    child_of_hook = {c["hook_id"]: c for c in children}
    for row in trace["rows"]:
        child = child_of_hook.get(row["id"])
        if child is not None:
            row.update(kind="child", label=f"child {short_name(str(child['workflow']))}", child_run_id=child["run_id"])
    return {
        "run": run_json(run, now),
        "steps": [_step_json(s) for s in steps],
        "hooks": hook_items,
        "waits": [{"wait_id": w.wait_id, "status": str(w.status), "resume_at": iso(w.resume_at),
                   "created_at": iso(w.created_at), "completed_at": iso(w.completed_at)} for w in waits],
        "streams": [{"name": s.name, "chunks": s.chunks, "closed": s.closed} for s in streams],
        "children": children,
        "trace": trace,
        "state_paths": [path.to_dict() for path in state_paths(events)],
        "events": [event_row(e, origin) for e in events],
        "now": iso(now),
    }


async def step_json(world: World, run_id: str, step_id: str) -> dict[str, Any]:
    """One step with its input and output (the run page fetches them when a bar is selected)."""
    await get_run(world, run_id, resolve_data=False)
    try:
        validate_id(step_id, "step id")
        step = await world.steps.get(run_id, step_id)
    except (InvalidIdError, NotFoundError):
        raise HttpError(404, f"run {run_id} has no step {step_id!r}") from None
    return {**_step_json(step), "input": shown(step.input), "output": shown(step.output)}


def _step_json(step: Any) -> dict[str, Any]:
    """A step without its payloads."""
    return {"step_id": step.step_id, "name": step.step_name, "status": str(step.status), "attempt": step.attempt,
            "error": step.error,
            "created_at": iso(step.created_at), "started_at": iso(step.started_at),
            "completed_at": iso(step.completed_at), "retry_after": iso(step.retry_after),
            "duration": seconds_between(step.started_at, step.completed_at)}


def event_row(event: Event, origin: datetime | None) -> dict[str, Any]:
    at = seconds_between(origin, event.created_at)
    return {"seq": event.seq, "at": None if at is None else round(at * 1000, 3), "type": str(event.event_type),
            "cid": event.correlation_id, "summary": event_summary(event)}


def _clip(text: str) -> str:
    text = text.replace("\n", "\\n")
    return text if len(text) <= SUMMARY else text[:SUMMARY] + "…"


def _short(value: Any) -> str:
    import orjson

    return _clip(orjson.dumps(payload_json(value), default=str).decode())


def event_summary(event: Event) -> str:
    """What an event says, in one short line."""
    data, et = event.data, event.event_type
    if et == E.RUN_CREATED:
        return _clip(f"{data.get('workflow_name', '')} {_short(data.get('input'))}")
    if et == E.RUN_COMPLETED:
        return _short(data.get("output"))
    if et in (E.RUN_FAILED, E.STEP_FAILED, E.STEP_RETRYING):
        error = data.get("error") or {}
        text = f"{error.get('type', 'Error')}: {error.get('message', '')}"
        return _clip(text + (f"; retry at {data['retry_after']}" if data.get("retry_after") else ""))
    if et == E.RUN_CANCELLED:
        return _clip(str(data.get("reason") or ""))
    if et == E.STEP_CREATED:
        return _clip(f"{short_name(str(data.get('step_name', '')))} {_short(data.get('input'))}")
    if et == E.STEP_STARTED:
        return f"attempt {data['attempt']}" if "attempt" in data else ""
    if et == E.STEP_COMPLETED:
        return _short(data.get("result"))
    if et in (E.HOOK_CREATED, E.HOOK_CONFLICT):
        return _clip(f"token {data.get('token', '')}")
    if et == E.HOOK_RECEIVED:
        return _short(data.get("payload"))
    if et == E.WAIT_CREATED:
        return f"until {data.get('resume_at', '?')}"
    return _clip(str(data)) if data else ""
