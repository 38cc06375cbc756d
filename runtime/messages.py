"""The two kinds of queue message the runtime sends: "drive run R" and "run step S of run R"."""

from __future__ import annotations

from typing import Any

from .world import STEP_QUEUE, WORKFLOW_QUEUE, World, run_order_key, step_message_key, workflow_message_key


async def enqueue_workflow(world: World, run_id: str, *, delay: float = 0.0) -> None:
    """Ask for run `run_id` to be driven (coalesced with any message already waiting)."""
    await world.queue.enqueue(
        WORKFLOW_QUEUE, {"run_id": run_id}, idempotency_key=workflow_message_key(run_id),
        delay=max(delay, 0.0), order_key=run_order_key(run_id),
    )


async def enqueue_step(world: World, run_id: str, step_id: str, *, delay: float = 0.0,
                       restart: bool = False) -> None:
    """Ask for step `step_id` of run `run_id` to be run by some worker.

    `restart`: the step is recorded as running but whoever ran it is gone (its run was
    taken over after a crash): start a new attempt even though it looks busy.
    """
    payload: dict[str, Any] = {"run_id": run_id, "step_id": step_id}
    if restart:
        payload["restart"] = True
    await world.queue.enqueue(
        STEP_QUEUE, payload, idempotency_key=step_message_key(run_id, step_id), delay=max(delay, 0.0),
        order_key=run_order_key(run_id),
    )
