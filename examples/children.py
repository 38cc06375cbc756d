"""A parent workflow starting child workflows: awaiting a workflow inside a workflow runs it as a child run.

    wf start examples/children.py:ship_batch '["o-1", "o-2", "o-3"]' --wait
        # three child runs (each with its own id, steps and log) run in parallel, then prints
        # {"shipped": 3, "labels": ["LABEL-O-1", "LABEL-O-2", "LABEL-O-3"]}

`wf inspect PARENT_ID` lists the child runs; each child can be inspected, replayed or
cancelled on its own, and the parent's log records each child's outcome once.
"""

import asyncio

import wf


@wf.step
async def pack(order_id: str) -> str:
    return f"box-{order_id}"


@wf.step
async def print_label(box: str) -> str:
    return box.replace("box", "label").upper()


@wf.workflow
async def ship_order(order_id: str) -> str:
    box = await pack(order_id)
    return await print_label(box)


@wf.workflow
async def ship_batch(order_ids: list[str]) -> dict:
    labels = await asyncio.gather(*(ship_order(o) for o in order_ids))  # each call is a child run
    return {"shipped": len(labels), "labels": labels}
