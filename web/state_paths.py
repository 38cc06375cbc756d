"""Each entity's path through its states, read from the event log (as `wf inspect` shows them).

    run     pending → running → completed
    step_1  pending → running → pending (retry) → running → completed
"""

from __future__ import annotations

from typing import Any

from ..runtime.entities import Event, EventType

E = EventType
_RUN_END = {E.RUN_COMPLETED: "completed", E.RUN_FAILED: "failed", E.RUN_CANCELLED: "cancelled"}
_STEP_NEXT = {E.STEP_RETRYING: "pending (retry)", E.STEP_COMPLETED: "completed", E.STEP_FAILED: "failed"}
_OPEN_AT_END = {("hook", "active"), ("hook", "received"), ("wait", "waiting")}


def state_paths(events: list[Event]) -> list[dict[str, Any]]:
    """[{"kind", "id", "name", "states"}] in the order the entities were created."""
    paths: dict[tuple[str, str], dict[str, Any]] = {}

    def path(kind: str, cid: str) -> dict[str, Any]:
        found = paths.get((kind, cid))
        if found is None:  # its creation is not in the log we were given
            found = paths[(kind, cid)] = {"kind": kind, "id": cid, "name": "", "states": ["?"]}
        return found

    for event in events:
        et, cid, data = event.event_type, event.correlation_id or "", event.data
        if et == E.RUN_CREATED:
            paths[("run", "")] = {"kind": "run", "id": "run", "name": str(data.get("workflow_name", "")),
                                  "states": ["pending"]}
        elif et == E.RUN_STARTED:
            path("run", "")["states"].append("running")
        elif et in _RUN_END:
            path("run", "")["states"].append(_RUN_END[et])
            for (kind, _), item in paths.items():
                if (kind, item["states"][-1]) in _OPEN_AT_END:
                    item["states"].append("disposed (run ended)")
        elif et == E.STEP_CREATED:
            paths[("step", cid)] = {"kind": "step", "id": cid, "name": str(data.get("step_name", "")),
                                    "states": ["pending"]}
        elif et == E.STEP_STARTED:
            states = path("step", cid)["states"]
            states.append("running (restarted)" if states[-1].startswith("running") else "running")
        elif et in _STEP_NEXT:
            path("step", cid)["states"].append(_STEP_NEXT[et])
        elif et in (E.HOOK_CREATED, E.HOOK_CONFLICT):
            first = "active" if et == E.HOOK_CREATED else "conflict (token taken)"
            paths[("hook", cid)] = {"kind": "hook", "id": cid, "name": str(data.get("token", "")), "states": [first]}
        elif et == E.HOOK_RECEIVED:
            path("hook", cid)["states"].append("received")
        elif et == E.HOOK_DISPOSED:
            path("hook", cid)["states"].append("disposed")
        elif et == E.WAIT_CREATED:
            paths[("wait", cid)] = {"kind": "wait", "id": cid, "name": str(data.get("resume_at", "")),
                                    "states": ["waiting"]}
        elif et == E.WAIT_COMPLETED:
            path("wait", cid)["states"].append("completed")
    return list(paths.values())
