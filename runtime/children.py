"""Child workflows: a workflow awaiting another workflow function starts it as a child run.

Built from the existing primitives, so it replays like everything else: the parent creates
a hook with a token derived from its run and the call's position, a built-in step starts
the child (idempotently, so a retried step never starts two children), and when the child
ends the worker recording its end sends its outcome to that hook.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any

from .entities import Run
from .errors import (
    HookNotFoundError,
    NotFoundError,
    RunExpiredError,
    WorkflowRunCancelledError,
    WorkflowRunFailedError,
)
from .loader import ORIGIN_ATTRIBUTE, origin_of
from .registry import REGISTRY, step
from .serialization import deserialize
from .starting import idempotent_run_id, record_run, resume_hook_in
from .step_context import current_step
from .workflow_context import create_hook

if TYPE_CHECKING:
    from .registry import WorkflowFunction
    from .replay import WorkflowInstance
    from .world import World

CHILD_TOKEN_PREFIX = "wfchild_"


@step(name="wf.start_child")
async def start_child(workflow_name: str, args: list[Any], kwargs: dict[str, Any], parent_run_id: str,
                      token: str) -> str:
    """Start the child run (same id on every retry) and return its id."""

    ctx = current_step()
    assert ctx is not None
    attributes: dict[str, Any] = {"parent_run_id": parent_run_id, "parent_token": token}
    loaded = REGISTRY.workflows.get(workflow_name)
    origin = origin_of(loaded) if loaded is not None else None
    if origin is not None:
        attributes[ORIGIN_ATTRIBUTE] = origin  # so that `wf replay CHILD` finds its code from anywhere
    run_id, _ = await record_run(ctx.world, workflow_name, args, kwargs, idempotency_key=token, attributes=attributes)
    return run_id


async def run_child(instance: WorkflowInstance, workflow: WorkflowFunction, args: tuple[Any, ...],
                    kwargs: dict[str, Any], location: str | None = None) -> Any:
    """The parent side: start the child and wait durably for its outcome.

    `location` is the workflow's line of the call, given to the hook and step made for it.
    """

    position = instance._next_cid("child")
    # Derived from the run's secret seed: nobody who only knows the run id can fake a child's result.
    token = CHILD_TOKEN_PREFIX + instance.secret_token(position)
    instance.call_site = location
    try:
        hook = create_hook(token=token, metadata={"child_workflow": workflow.name})
        starting = start_child(workflow.name, list(args), dict(kwargs), instance.run_id, token)
    finally:
        instance.call_site = None
    child_id = await starting
    outcome = await hook
    status = outcome.get("status")
    if status == "completed":
        return deserialize(outcome.get("output"))
    if status == "cancelled":
        raise WorkflowRunCancelledError(child_id)
    raise WorkflowRunFailedError(child_id, outcome.get("error"))


async def notify_parent(world: World, run: Run) -> None:
    """If `run` is a child that just ended, deliver its outcome to the parent's hook."""
    token = run.attributes.get("parent_token")
    if not token:
        return

    payload = {"status": str(run.status), "output": run.output, "error": run.error, "run_id": run.run_id}
    with contextlib.suppress(NotFoundError, RunExpiredError, HookNotFoundError):  # the parent is over: nobody waits
        await resume_hook_in(world, token, payload)


async def redeliver_child_outcomes(world: World, instance: WorkflowInstance) -> None:
    """For each child the parent still waits on: if the child already ended (its worker died
    before telling the parent), deliver its outcome now. Idempotent."""

    for hook in instance.hooks.values():
        if not hook.token.startswith(CHILD_TOKEN_PREFIX) or not isinstance(hook.metadata, dict):
            continue
        if hook._payloads or hook_delivered(instance, hook.hook_id):
            continue
        name = hook.metadata.get("child_workflow")
        if not isinstance(name, str):
            continue
        try:
            child = await world.runs.get(idempotent_run_id(name, hook.token))
        except NotFoundError:
            continue
        if child.status.terminal:
            await notify_parent(world, child)


def hook_delivered(instance: WorkflowInstance, hook_id: str) -> bool:
    """Whether the log fed to `instance` already holds a payload for this hook."""
    return hook_id in instance.received_hooks
