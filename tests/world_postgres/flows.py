"""Workflows run by `wf worker` processes in the Postgres World's tests."""

from __future__ import annotations

import asyncio

import wf


@wf.step
async def bump(x: int, pause: float) -> int:
    await asyncio.sleep(pause)
    return x + 1


@wf.workflow
async def chain(steps: int, pause: float = 0.0) -> int:
    """`steps` sequential steps, each adding one."""
    x = 0
    for _ in range(steps):
        x = await bump(x, pause)
    return x
