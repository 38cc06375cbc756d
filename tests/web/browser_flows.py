"""Workflows for the web UI's browser tests: retries, a sleep, a hook, a child run and a stream."""

import wf

ATTEMPTS: dict[str, int] = {}


@wf.step(max_retries=3)
async def charge(order: str) -> str:
    n = ATTEMPTS.get(order, 0) + 1
    ATTEMPTS[order] = n
    if n < 3:
        raise wf.RetryableError(f"card declined (attempt {n})", retry_after=0.3)
    return f"charged:{order}"


@wf.step
async def tally(items: list) -> int:
    out = wf.get_writable()
    for item in items:
        out.write(f"item {item}")
    out.close()
    return sum(items)


@wf.workflow
async def child_total(x: int) -> int:
    return await tally([x, x])


@wf.workflow
async def order_flow(order: str) -> dict:
    charged = await charge(order)
    await wf.sleep("300ms")
    approval = await wf.create_hook(token="approve:" + order)
    total = await child_total(21)
    return {"charged": charged, "approval": approval, "total": total}


@wf.step
async def tick(n: int) -> int:
    import asyncio

    out = wf.get_writable("ticks")
    for i in range(n):
        out.write(f"tick {i}")
        await asyncio.sleep(0.25)
    out.close()
    return n


@wf.workflow
async def ticker(n: int) -> int:
    return await tick(n)
