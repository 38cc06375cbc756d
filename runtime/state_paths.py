"""The path each entity of a run took through its state machine, read from the event log.

    run     pending → running → completed
    step_1  pending → running → pending (retry) → running → completed
    hook_1  active → received → received → disposed
    wait_1  waiting → completed

An entity's states follow `wf.runtime.state_machine.apply`: a step restarted after a crash
shows `running → running (restarted)`; hooks and waits still open when the run ended show
that end (`disposed (run ended)`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .entities import Event, EventType

E = EventType

_RUN_END = {E.RUN_COMPLETED: "completed", E.RUN_FAILED: "failed", E.RUN_CANCELLED: "cancelled"}


@dataclass(slots=True)
class StatePath:
    """One entity's states, oldest first."""

    kind: str  # "run", "step", "hook" or "wait"
    entity_id: str
    name: str
    states: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """{"kind", "id", "name", "states"}: the shape the JSON API and `wf inspect --json` show."""
        return {"kind": self.kind, "id": self.entity_id, "name": self.name, "states": list(self.states)}

    def text(self) -> str:
        return " → ".join(self.states)


def state_paths(events: list[Event]) -> list[StatePath]:
    """Every entity's path through its states, in the order the entities were created."""
    paths: dict[tuple[str, str], StatePath] = {}
    run_key = ("run", "")
    for event in events:
        et = event.event_type
        cid = event.correlation_id or ""
        if et == E.RUN_CREATED:
            paths[run_key] = StatePath("run", event.run_id, str(event.data.get("workflow_name", "")), ["pending"])
        elif et == E.RUN_STARTED:
            _path(paths, run_key, "run", event.run_id).states.append("running")
        elif et in _RUN_END:
            _path(paths, run_key, "run", event.run_id).states.append(_RUN_END[et])
            for (kind, _), path in paths.items():
                last = path.states[-1] if path.states else ""
                if (kind, last) in (("hook", "active"), ("hook", "received"), ("wait", "waiting")):
                    path.states.append("disposed (run ended)")
        elif et == E.STEP_CREATED:
            paths[("step", cid)] = StatePath("step", cid, str(event.data.get("step_name", "")), ["pending"])
        elif et == E.STEP_STARTED:
            path = _path(paths, ("step", cid), "step", cid)
            path.states.append("running (restarted)" if path.states and path.states[-1].startswith("running")
                               else "running")
        elif et == E.STEP_RETRYING:
            _path(paths, ("step", cid), "step", cid).states.append("pending (retry)")
        elif et == E.STEP_COMPLETED:
            _path(paths, ("step", cid), "step", cid).states.append("completed")
        elif et == E.STEP_FAILED:
            _path(paths, ("step", cid), "step", cid).states.append("failed")
        elif et == E.HOOK_CREATED:
            paths[("hook", cid)] = StatePath("hook", cid, str(event.data.get("token", "")), ["active"])
        elif et == E.HOOK_CONFLICT:
            paths[("hook", cid)] = StatePath("hook", cid, str(event.data.get("token", "")), ["conflict (token taken)"])
        elif et == E.HOOK_RECEIVED:
            _path(paths, ("hook", cid), "hook", cid).states.append("received")
        elif et == E.HOOK_DISPOSED:
            _path(paths, ("hook", cid), "hook", cid).states.append("disposed")
        elif et == E.WAIT_CREATED:
            paths[("wait", cid)] = StatePath("wait", cid, str(event.data.get("resume_at", "")), ["waiting"])
        elif et == E.WAIT_COMPLETED:
            _path(paths, ("wait", cid), "wait", cid).states.append("completed")
    return list(paths.values())


def _path(paths: dict[tuple[str, str], StatePath], key: tuple[str, str], kind: str, entity_id: str) -> StatePath:
    # An event for an entity whose creation is not in the slice we were given.
    path = paths.get(key)
    if path is None:
        path = paths[key] = StatePath(kind, entity_id, "", ["?"])
    return path
