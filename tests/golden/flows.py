"""The workflows behind the golden event logs. Their names and code are frozen: the logs in
`logs/` were recorded from them, and CI replays those logs with the current runtime. Change
them only together with a deliberate, documented change of the log format."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal

import wf


@dataclass
class Receipt:
    order: str
    cents: Decimal
    tags: tuple[str, ...]


_flaky_calls: dict[str, int] = {}


@wf.step(max_retries=3)
async def flaky(key: str, failures: int) -> str:
    """Fails `failures` times per key (in the recording process), then succeeds."""
    _flaky_calls[key] = _flaky_calls.get(key, 0) + 1
    if _flaky_calls[key] <= failures:
        raise ConnectionError(f"attempt {_flaky_calls[key]} of {key} failed")
    return f"ok:{key}"


@wf.step
async def charge(order: str, cents: int) -> Receipt:
    return Receipt(order, Decimal(cents) / 100, ("paid", "eur"))


@wf.step
def render(receipt: Receipt) -> str:
    return f"{receipt.order}: {receipt.cents}"


@wf.step
async def always_fails(why: str) -> None:
    raise wf.FatalError(why)


@wf.workflow
async def order(order_id: str, cents: int) -> dict:
    """Steps (async and sync), retries, a durable sleep, gather, a patched branch, rich values."""
    receipt = await charge(order_id, cents)
    retried = await flaky(order_id, 2)
    await wf.sleep(timedelta(hours=2))
    a, b = await asyncio.gather(render(receipt), flaky(order_id + "-b", 0))
    extra = await charge(order_id, 1) if wf.patched("second-charge") else None
    return {"receipt": receipt, "text": a, "retried": retried, "b": b, "extra": extra, "at": wf.now().isoformat()}


@wf.workflow
async def approval(request_id: str) -> dict:
    """A hook awaited twice (async for), a timeout raced against a hook, a hook conflict caught."""
    hook = wf.create_hook(token=f"approve:{request_id}", metadata={"request": request_id})
    got = []
    async for payload in hook:
        got.append(payload)
        if len(got) == 2:
            break
    try:
        async with asyncio.timeout(60):
            await wf.create_hook(token=f"never:{request_id}")
    except TimeoutError:
        timed_out = True
    try:
        await wf.create_hook(token="golden-held")
    except wf.HookConflictError:
        conflict = True
    return {"payloads": got, "timed_out": timed_out, "conflict": conflict}


@wf.workflow
async def holder() -> None:
    """Holds the token `golden-held` until it is cancelled."""
    await wf.create_hook(token="golden-held")


@wf.workflow
async def child(n: int) -> int:
    await wf.sleep("1s")
    return n * 10


@wf.workflow
async def parent(n: int) -> list[int]:
    """Child runs in parallel, one of them failing and caught."""
    results = list(await asyncio.gather(child(n), child(n + 1)))
    try:
        await failing()
    except wf.WorkflowRunFailedError:
        results.append(-1)
    return results


@wf.workflow
async def failing() -> None:
    """A step that fails for good; the run fails with its error."""
    await always_fails("card declined")
