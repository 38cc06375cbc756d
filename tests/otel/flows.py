"""Workflows the OpenTelemetry tests run (imported by path, here and in worker subprocesses)."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from opentelemetry import trace

import wf

#: The crash test's files: the blocking step writes BLOCKED_FILE, and returns once GO_FILE exists.
BLOCKED_ENV = "WF_OTEL_TEST_BLOCKED"
GO_ENV = "WF_OTEL_TEST_GO"


@wf.step
async def add(a: int, b: int) -> int:
    return a + b


@wf.step
def sync_double(a: int) -> int:
    return a * 2


@wf.step
async def flaky(fail_times: int) -> str:
    attempt = wf.get_step_metadata().attempt
    if attempt <= fail_times:
        raise ValueError(f"attempt {attempt} fails")
    return f"ok after {attempt}"


@wf.step
async def fatal() -> None:
    raise wf.FatalError("no way")


@wf.step
async def async_user_span() -> str:
    with trace.get_tracer("user").start_as_current_span("user-async") as span:
        await asyncio.sleep(0)
        return format(span.get_span_context().span_id, "016x")


@wf.step
def sync_user_span() -> str:
    with trace.get_tracer("user").start_as_current_span("user-sync") as span:
        return format(span.get_span_context().span_id, "016x")


@wf.step
async def blocking() -> str:
    Path(os.environ[BLOCKED_ENV]).write_text(str(os.getpid()))
    while not Path(os.environ[GO_ENV]).exists():
        await asyncio.sleep(0.02)
    return "went"


@wf.workflow
async def sequential(n: int) -> int:
    total = 0
    for i in range(n):
        total = await add(total, i)
    return total


@wf.workflow
async def fanout(n: int) -> int:
    return sum(await asyncio.gather(*(add(i, 1) for i in range(n))))


@wf.workflow
async def retried(fail_times: int) -> str:
    return await flaky(fail_times)


@wf.workflow
async def failing() -> None:
    await fatal()


@wf.workflow
async def sleeper(seconds: float) -> int:
    await wf.sleep(seconds)
    return await add(1, 2)


@wf.workflow
async def hooked(token: str) -> object:
    payload = await wf.create_hook(token=token)
    return await add(len(str(payload)), 0)


@wf.workflow
async def child(n: int) -> int:
    return await sync_double(await add(n, 0))


@wf.workflow
async def parent(n: int) -> int:
    return await child(n) + 1


@wf.workflow
async def user_spans() -> list[str]:
    return [await async_user_span(), await sync_user_span()]


@wf.workflow
async def crashy() -> str:
    first = await add(1, 1)
    went = await blocking()
    return f"{first} {went} {await add(2, 2)}"
