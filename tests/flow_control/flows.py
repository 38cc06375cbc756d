"""Workflows the flow-control tests run in real `wf worker` processes."""

from __future__ import annotations

import asyncio
import os
import time

import wf


@wf.step(concurrency=3)
async def limited(i: int, seconds: float) -> int:
    """At most 3 attempts at once across every worker."""
    await asyncio.sleep(seconds)
    return i


@wf.step(concurrency=1, concurrency_key=lambda customer, *_: customer)
async def per_customer(customer: str, i: int, seconds: float) -> str:
    """One attempt at a time per customer."""
    await asyncio.sleep(seconds)
    return f"{customer}-{i}"


@wf.step(rate_limit="5/1s")
async def rated(i: int) -> int:
    """At most 5 attempts start in any second."""
    return i


@wf.step(concurrency=2)
def blocking_sleep(seconds: float) -> int:
    """A sync limited step that holds its slot while its worker may be killed."""
    time.sleep(seconds)
    return os.getpid()


@wf.workflow
async def fan(n: int, seconds: float) -> list[int]:
    return list(await asyncio.gather(*(limited(i, seconds) for i in range(n))))


@wf.workflow
async def customers(names: list[str], per: int, seconds: float) -> list[str]:
    return list(await asyncio.gather(*(per_customer(c, i, seconds) for c in names for i in range(per))))


@wf.workflow
async def burst(n: int) -> list[int]:
    return list(await asyncio.gather(*(rated(i) for i in range(n))))


@wf.workflow
async def hold(seconds: float) -> int:
    return await blocking_sleep(seconds)


@wf.workflow(concurrency=2)
async def exclusive(seconds: float) -> str:
    """At most 2 runs in progress; the others wait before run_started."""
    await wf.sleep(seconds)
    return "done"


@wf.workflow
async def tick() -> str:
    """Started by a schedule."""
    return wf.get_workflow_metadata().run_id


@wf.step
async def plain(i: int) -> int:
    return i


@wf.workflow
async def short(i: int) -> int:
    return await plain(i)


@wf.workflow
async def napper(seconds: float) -> int:
    """Active for a while: a step, a durable sleep, a step."""
    first = await plain(1)
    await wf.sleep(seconds)
    return first + await plain(2)
