"""Recording a new run and delivering a hook payload: what `wf.start` and `wf.resume_hook` write.

Below the client (`client.py`, which wraps these in handles and blocking twins) and below
child workflows (`children.py`), which start their children and report to their parents with
these same functions.
"""

from __future__ import annotations

import hashlib
import inspect
import secrets
from typing import Any

from . import telemetry
from .calls import serialize_call_input
from .entities import Event, EventType
from .errors import EntityConflictError, HookNotFoundError, InvalidIdError, NotFoundError, RunExpiredError, WorldError
from .ids import new_run_id
from .loader import ORIGIN_ATTRIBUTE, origin_of
from .messages import enqueue_workflow
from .registry import WorkflowFunction
from .serialization import serialize
from .world import WORKFLOW_QUEUE, World, run_order_key, workflow_message_key

E = EventType


def workflow_name_of(workflow: WorkflowFunction | str) -> str:
    """The registered name of a workflow function, or the name given; TypeError for anything else."""
    if isinstance(workflow, WorkflowFunction):
        return workflow.name
    if isinstance(workflow, str) and workflow:
        return workflow
    raise TypeError(f"expected a @wf.workflow function or a workflow name, got {workflow!r}")


def check_arguments(workflow: WorkflowFunction, args: list[Any] | tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    """TypeError, naming the workflow, if the arguments do not fit its signature."""
    try:
        signature = inspect.signature(workflow.fn)
    except (TypeError, ValueError):
        return  # a signature Python cannot read: let the run say
    try:
        signature.bind(*args, **kwargs)
    except TypeError as exc:
        shown = signature.replace(return_annotation=inspect.Signature.empty)
        raise TypeError(f"wrong arguments for workflow {workflow.name}{shown}: {exc}") from None


def idempotent_run_id(workflow_name: str, key: str) -> str:
    """The run id a (workflow, idempotency key) pair always maps to."""
    digest = hashlib.sha256(f"{workflow_name}\x00{key}".encode()).hexdigest()[:26]
    return f"wrun_k{digest}"


#: Priorities a run may be started with.
PRIORITY_RANGE = range(-1000, 1001)


def with_priority(run_id: str, priority: int) -> str:
    """The id of a run started with `priority` (≠ 0): `<id>_p<priority>`. ValueError for a bad priority."""
    if isinstance(priority, bool) or not isinstance(priority, int) or priority not in PRIORITY_RANGE:
        raise ValueError(f"priority must be an int from -1000 to 1000, got {priority!r}")
    return f"{run_id}_p{priority}"


async def record_run(
    world: World,
    workflow: WorkflowFunction | str,
    args: list[Any] | tuple[Any, ...],
    kwargs: dict[str, Any],
    *,
    idempotency_key: str | None = None,
    attributes: dict[str, Any] | None = None,
    priority: int = 0,
    run_id: str | None = None,
) -> tuple[str, bool]:
    """Record a run and queue it for a worker; return (run id, lazy).

    `priority`: higher is served first (see `world.run_order_key`); it is part of the run id
    (`wrun_<ULID>_p<N>`), so every message of the run carries it. `run_id` (with an
    idempotency key): the id to use instead of the key's hash (schedules: time-ordered ids).

    Given the workflow function (not only its name), the arguments are checked against its
    signature first (TypeError, nothing recorded) and the run records where its code is.

    `lazy` is True when storage refused the write but the queue took the start: the worker
    creates the run then (seed 001). The same idempotency key always gives the same run.
    """
    name = workflow_name_of(workflow)
    extra: dict[str, Any] = {}
    if isinstance(workflow, WorkflowFunction):
        check_arguments(workflow, args, kwargs)
        origin = origin_of(workflow)
        if origin is not None:
            extra[ORIGIN_ATTRIBUTE] = origin
    data: dict[str, Any] = {
        "workflow_name": name,
        "input": serialize_call_input(args, kwargs, where=f"the arguments of workflow {name}"),
        "attributes": {"seed": secrets.token_hex(16), **extra, **(attributes or {})},
    }
    if telemetry.ON:  # the span current at wf.start: the run's trace is linked to it (a child's nests in it)
        telemetry.carry(data["attributes"])
    if idempotency_key is not None:
        if not isinstance(idempotency_key, str) or not idempotency_key:
            raise InvalidIdError("idempotency_key must be a non-empty string")
        try:
            idempotency_key.encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidIdError(f"idempotency_key {idempotency_key!r} cannot be encoded as UTF-8") from None
        run_id = run_id or idempotent_run_id(name, idempotency_key)
        data["attributes"]["idempotency_key"] = idempotency_key
    else:
        run_id = new_run_id()
    if priority:
        run_id = with_priority(run_id, priority)
    try:
        await world.events.create(run_id, Event(run_id, E.RUN_CREATED, data=data))
    except EntityConflictError:
        if idempotency_key is None:
            raise
        await enqueue_workflow(world, run_id)  # its first enqueue may have failed (a retried start_child)
        return run_id, False  # the same key already made this run
    except WorldError as exc:
        if isinstance(exc, InvalidIdError):
            raise
        # Storage failed but the queue may not have: let the worker create the run (seed 001).
        await world.queue.enqueue(
            WORKFLOW_QUEUE, {"run_id": run_id, "start": data}, idempotency_key=workflow_message_key(run_id),
            order_key=run_order_key(run_id),
        )
        return run_id, True
    await enqueue_workflow(world, run_id)
    return run_id, False


async def resume_hook_in(world: World, token: str, payload: Any) -> None:
    """Deliver `payload` to the live hook holding `token` in `world`; HookNotFoundError if none does."""
    try:
        hook = await world.hooks.get_by_token(token)
        data = {"payload": serialize(payload, where="the hook payload")}
        result = await world.events.create(hook.run_id, Event(hook.run_id, E.HOOK_RECEIVED,
                                                              correlation_id=hook.hook_id, data=data))
    except (NotFoundError, RunExpiredError):
        raise HookNotFoundError(f"no live hook has token {token!r}") from None
    if telemetry.ON:
        telemetry.recorded([result])
    await enqueue_workflow(world, hook.run_id)
