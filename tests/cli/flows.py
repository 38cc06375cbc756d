"""Workflows the CLI tests run: retries, failures, sleeps, hooks and streams."""

from __future__ import annotations

import wf


@wf.step
async def flaky(n: int) -> int:
    """Fails on its first attempt, succeeds on the next."""
    if wf.get_step_metadata().attempt < 2:
        raise RuntimeError(f"flaky {n}: transient failure")
    return n * 2


@wf.step
async def add(a: int, b: int) -> int:
    return a + b


@wf.workflow
async def retrying(n: int) -> dict:
    doubled = await flaky(n)
    total = await add(doubled, 1)
    return {"n": n, "total": total, "note": "x" * 300}


@wf.step
async def explode(reason: str) -> None:
    raise wf.FatalError(f"cannot go on: {reason}")


def _check(value: str) -> None:
    if value == "bad":
        raise ValueError(f"bad value {value!r}")


@wf.workflow
async def failing(value: str) -> str:
    await add(1, 2)
    _check(value)
    await explode(value)
    return "unreachable"


@wf.workflow
async def sleeper(seconds: float) -> str:
    await add(1, 1)
    await wf.sleep(seconds)
    return "woke"


@wf.workflow
async def waiter(token: str) -> object:
    hook = wf.create_hook(token=token)
    payload = await hook
    return {"got": payload}


@wf.step
async def emit(parts: list[str]) -> int:
    writer = wf.get_writable()
    for part in parts:
        writer.write(part)
    writer.write(b"raw-bytes")
    writer.write({"k": 1})
    writer.close()
    return len(parts)


@wf.workflow
async def streamer(parts: list[str]) -> int:
    return await emit(parts)


@wf.step
async def slow_step(seconds: float) -> str:
    import asyncio

    await asyncio.sleep(seconds)
    return "done"


@wf.workflow
async def two_steps(seconds: float) -> str:
    await add(1, 1)
    return await slow_step(seconds)


@wf.step
async def later() -> str:
    raise wf.RetryableError("not yet", retry_after="1h")


@wf.workflow
async def stalled() -> str:
    return await later()


@wf.step
async def say(text: str, last: bool) -> None:
    writer = wf.get_writable()
    writer.write(text)
    if last:
        writer.close()


@wf.workflow
async def chatty(token: str) -> str:
    await say("first\n", False)
    await wf.create_hook(token=token)
    await say("second\n", True)
    return "said"
