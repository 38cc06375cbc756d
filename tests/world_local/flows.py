"""Workflows of the local World's tests (registered under explicit names, imported in-process or by `wf worker`)."""

from __future__ import annotations

import asyncio
from typing import Any

import wf


@wf.step(name="wl.add")
async def add(x: int, y: int) -> int:
    return x + y


@wf.workflow(name="wl.hold")
async def hold(token: str) -> Any:
    """Waits for one payload on `token`, then returns it."""
    return await wf.create_hook(token=token)


@wf.workflow(name="wl.chain")
async def chain(x: int) -> int:
    a = await add(x, 1)
    b = await add(a, 2)
    return await add(b, 3)


@wf.workflow(name="wl.nap")
async def nap(seconds: float) -> list[str]:
    """The workflow clock before and after a sleep (ISO strings)."""
    before = wf.now()
    await wf.sleep(seconds)
    return [before.isoformat(), wf.now().isoformat()]


@wf.step(name="wl.slow_add")
async def slow_add(x: int, y: int) -> int:
    await asyncio.sleep(0.2)
    return x + y


@wf.workflow(name="wl.slow_chain")
async def slow_chain(x: int) -> int:
    a = await slow_add(x, 1)
    return await slow_add(a, 2)


@wf.workflow(name="wl.parent")
async def parent(x: int) -> int:
    """Waits for one child run (`wl.chain`)."""
    return await chain(x) + 100
