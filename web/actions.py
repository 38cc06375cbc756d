"""What the UI can do to runs: start, cancel, fork, resume a hook, check a replay, find call sites.

Each goes through the runtime's operations (`wf.runtime.operations`) or client; this
module only checks the request's shape and turns typed errors into HTTP answers.
"""

from __future__ import annotations

from typing import Any

from ..runtime import operations
from ..runtime.client import resume_hook_in, start_run
from ..runtime.entities import EventType
from ..runtime.errors import (
    HookNotFoundError,
    InvalidIdError,
    NotFoundError,
    RunNotFoundError,
    SerializationError,
    WfError,
    WorkflowNotFoundError,
)
from ..runtime.loader import LoadError, load_origin
from ..runtime.registry import REGISTRY, WorkflowFunction
from ..runtime.replay import WorkflowInstance
from ..runtime.world import World
from .limits import HttpError
from .story import get_run

E = EventType
_CREATIONS = (E.STEP_CREATED, E.WAIT_CREATED, E.HOOK_CREATED, E.HOOK_CONFLICT)


async def start(world: World, data: Any) -> str:
    """Start a run from {"workflow": NAME, "args": [...], "kwargs": {...}, "tags": {...}}; returns its id."""
    if not isinstance(data, dict) or not isinstance(data.get("workflow"), str):
        raise HttpError(400, 'expected {"workflow": NAME, "args": [...], "kwargs": {...}}')
    name = data["workflow"]
    args, kwargs = data.get("args") or [], data.get("kwargs") or {}
    if not isinstance(args, list) or not isinstance(kwargs, dict):
        raise HttpError(400, "args must be a list and kwargs an object")
    key = data.get("idempotency_key")
    tags = data.get("tags") or None
    try:
        REGISTRY.workflow(name)
        run = await start_run(world, name, args, kwargs, idempotency_key=key, tags=tags)
    except WorkflowNotFoundError as exc:
        raise HttpError(404, str(exc)) from None
    except (SerializationError, InvalidIdError, TypeError) as exc:  # TypeError: arguments that do not fit
        raise HttpError(400, str(exc).splitlines()[0]) from None
    return run.id


async def resume_hook(world: World, token: Any, payload: Any) -> None:
    if not isinstance(token, str) or not token:
        raise HttpError(400, 'expected {"token": TOKEN, "payload": ...}')
    try:
        await resume_hook_in(world, token, payload)
    except HookNotFoundError:
        raise HttpError(404, "no live hook has this token") from None
    except (InvalidIdError, SerializationError) as exc:
        raise HttpError(400, str(exc)) from None


async def cancel(world: World, run_id: str, reason: Any) -> dict[str, Any]:
    """Cancel the run and the children it awaits; says whether this call ended it."""
    await get_run(world, run_id, resolve_data=False)
    if reason is not None and not isinstance(reason, str):
        raise HttpError(400, "reason must be a string")
    try:
        result = await operations.cancel_run(world, run_id, reason=reason or None)
    except (RunNotFoundError, NotFoundError):
        raise HttpError(404, f"no run with id {run_id!r}") from None
    return {"run_id": result.run_id, "status": str(result.status), "cancelled": result.cancelled,
            "children": list(result.children)}


async def fork(world: World, run_id: str, at: Any) -> dict[str, Any]:
    """A new run keeping events 0..at-1 of this one (default: up to the first failure), on the loaded code."""
    await get_run(world, run_id, resolve_data=False)
    if at is not None and (not isinstance(at, int) or isinstance(at, bool)):
        raise HttpError(400, "at must be an event number (seq) of the run")
    try:
        result = await operations.fork_run(world, run_id, at=at)
    except (RunNotFoundError, NotFoundError):
        raise HttpError(404, f"no run with id {run_id!r}") from None
    except ValueError as exc:
        raise HttpError(400, str(exc)) from None
    return {"run_id": result.run_id, "forked_from": result.forked_from, "events_kept": result.events_kept}


def workflow_of(run: Any) -> WorkflowFunction | None:
    """The run's workflow in the loaded code, else imported from where the run recorded its code (as `wf replay`)."""
    try:
        return load_origin(run.workflow_name, run.attributes)
    except (LoadError, ImportError, SyntaxError) as exc:
        raise HttpError(409, f"cannot load the code of workflow {run.workflow_name}: {exc}".splitlines()[0]) from None


async def check_replay(world: World, run_id: str) -> dict[str, Any]:
    """Replay the run against the loaded code: clean, or the divergence with both sides and file:line."""
    run = await get_run(world, run_id, resolve_data=False)
    if workflow_of(run) is None:
        raise HttpError(409, f"workflow {run.workflow_name} is not defined in the loaded code")
    try:
        report = await operations.check_replay(world, run_id, registry=REGISTRY)
    except WorkflowNotFoundError as exc:
        raise HttpError(409, str(exc)) from None
    out: dict[str, Any] = {"clean": report.clean, "summary": report.summary(), "divergence": None,
                           "outcome_mismatch": report.outcome_mismatch}
    div = report.divergence
    if div is not None:
        out["divergence"] = {"position": div.position, "recorded": div.recorded, "code": div.code,
                             "location": div.location}
    return out


async def call_sites(world: World, run_id: str) -> dict[str, Any]:
    """file:line of the call that made each step, sleep and hook, found by replaying the log on the loaded code.

    Replay stops at the first divergence; entities after it have no call site.
    """
    run = await get_run(world, run_id)
    workflow = workflow_of(run)
    if workflow is None:
        return {"sites": {}, "note": f"workflow {run.workflow_name} is not defined in the loaded code"}
    events = await world.events.list(run_id)
    instance = WorkflowInstance(workflow, run)
    instance.expect_history(events)
    sites: dict[str, str] = {}
    note = None
    try:
        for event in events:
            cid = event.correlation_id or ""
            if event.event_type in _CREATIONS:
                site = instance.call_site_of(cid)
                if site:
                    sites[cid] = site
            instance.feed(event)
    except WfError as exc:
        note = str(exc).splitlines()[0]
    except Exception as exc:  # noqa: BLE001 - user code may raise anything while replaying
        note = f"replay stopped: {type(exc).__name__}: {exc}"
    return {"sites": sites, "note": note}


def workflows() -> list[dict[str, Any]]:
    """The workflows the loaded code defines, with their parameters."""
    import inspect

    out = []
    for name, fn in sorted(REGISTRY.workflows.items()):
        try:
            signature = str(inspect.signature(fn.fn))
        except (TypeError, ValueError):
            signature = "(...)"
        doc = (inspect.getdoc(fn.fn) or "").split("\n\n", 1)[0]
        source = inspect.getsourcefile(fn.fn) or ""
        out.append({"name": name, "signature": signature, "doc": doc, "source": source})
    return out

