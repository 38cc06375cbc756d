"""The workflows of the acceptance suite.

Loaded by the test process and by `wf worker tests/e2e/workflows.py` under the same module
name (`tests.e2e.workflows`, see wf.runtime.loader), so both give them the same names.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

import wf

# --- add-ten, gather, race, any ---


@wf.step
async def add(x: int, y: int) -> int:
    return x + y


@wf.workflow
async def add_ten(x: int) -> int:
    a = await add(x, 2)
    b = await add(a, 3)
    return await add(b, 5)


@wf.step
async def after(seconds: float, value: Any) -> Any:
    await asyncio.sleep(seconds)
    return value


@wf.workflow
async def gather_keeps_order() -> list[str]:
    return await asyncio.gather(after(0.3, "a"), after(0.1, "b"), after(0.2, "c"), after(0.0, "d"))


@wf.workflow
async def race_fastest() -> dict:
    racers = [asyncio.ensure_future(after(d, name)) for d, name in ((0.6, "slow"), (0.05, "fast"), (0.3, "mid"))]
    done, pending = await wf.wait(racers, return_when=asyncio.FIRST_COMPLETED)
    winner = done[0].result()
    losers = await asyncio.gather(*pending)  # let the losers finish: their results land in the log
    return {"winner": winner, "losers": sorted(losers)}


@wf.step(max_retries=0)
async def fatal_after(seconds: float) -> str:
    await asyncio.sleep(seconds)
    raise wf.FatalError("this one never succeeds")


@wf.workflow
async def any_skips_fatal() -> str:
    """Like Promise.any: the first success, skipping failures."""
    pending = [asyncio.ensure_future(c) for c in (fatal_after(0.0), after(0.3, "second"), after(0.6, "third"))]
    while pending:
        done, pending = await wf.wait(pending, return_when=asyncio.FIRST_COMPLETED)
        for fut in done:
            if fut.exception() is None:
                for rest in pending:
                    rest.cancel()
                return str(fut.result())
    raise RuntimeError("every step failed")


# --- hooks ---


@wf.workflow
async def three_payloads(token: str) -> dict:
    hook = wf.create_hook(token=token, metadata={"purpose": "e2e", "n": 3})
    got = []
    async for payload in hook:
        got.append(payload)
        if len(got) == 3:
            break
    return {"payloads": got, "metadata": hook.metadata, "token": hook.token}


@wf.workflow
async def hold_token(token: str) -> Any:
    return await wf.create_hook(token=token)


@wf.workflow
async def try_token(token: str) -> str:
    try:
        await wf.create_hook(token=token)
    except wf.HookConflictError as exc:
        return f"conflict: {exc}"
    return "received"


# --- time ---


@wf.workflow
async def sleep_clock(seconds: float) -> float:
    before = wf.now()
    await wf.sleep(seconds)
    return (wf.now() - before).total_seconds()


@wf.workflow
async def parallel_sleeps(n: int, seconds: float) -> int:
    await asyncio.gather(*(wf.sleep(seconds) for _ in range(n)))
    return n


@wf.workflow
async def sleep_forever() -> str:
    await wf.sleep("1h")
    return "woke up"


# --- values, metadata, streams ---


@wf.step
async def echo(value: Any) -> Any:
    return value


@wf.workflow
async def null_bytes(text: str, blob: bytes) -> dict:
    return {"text": await echo(text + "\x00end"), "blob": await echo(blob + b"\x00\xff")}


@wf.step
async def step_metadata() -> dict:
    step = wf.get_step_metadata()
    workflow = wf.get_workflow_metadata()
    return {"step_id": step.step_id, "step_name": step.step_name, "attempt": step.attempt,
            "started_at": step.started_at, "run_id": workflow.run_id}


@wf.workflow
async def metadata() -> dict:
    meta = wf.get_workflow_metadata()
    return {"run_id": meta.run_id, "workflow_name": meta.workflow_name, "started_at": meta.started_at,
            "step": await step_metadata()}


@wf.step
def write_chunks(chunks: list[Any]) -> int:  # a sync step: write() is a plain call here too
    out = wf.get_writable()
    for chunk in chunks:
        out.write(chunk)
    out.close()
    side = wf.get_writable("side")
    side.write("namespaced")
    side.close()
    return len(chunks)


@wf.workflow
async def output_stream(chunks: list[Any]) -> int:
    return await write_chunks(chunks)


@dataclass(frozen=True)
class Money:
    amount: Decimal
    currency: str


@dataclass(frozen=True)
class Invoice:
    number: str
    lines: tuple[Money, ...]
    issued: datetime

    def total(self) -> Money:
        return Money(sum((m.amount for m in self.lines), Decimal(0)), self.lines[0].currency)


@wf.step
async def settle(invoice: Invoice) -> Money:
    return invoice.total()


@wf.workflow
async def dataclass_round_trip(invoice: Invoice) -> dict:
    return {"invoice": invoice, "total": await settle(invoice)}


# --- errors and retries ---


def attempt() -> int:
    return wf.get_step_metadata().attempt


@wf.step(max_retries=0)
async def explode(message: str) -> None:
    raise ValueError(message)


@wf.workflow
async def step_error(message: str) -> None:
    await explode(message)


@wf.workflow
async def workflow_error(message: str) -> None:
    raise KeyError(message)


@wf.step
async def flaky_until_third() -> int:
    if attempt() < 3:
        raise wf.RetryableError(f"attempt {attempt()} failed", retry_after="50ms")
    return attempt()


@wf.workflow
async def retry_until_third() -> int:
    return await flaky_until_third()


@wf.step
async def always_fatal() -> None:
    raise wf.FatalError("no way")


@wf.workflow
async def fatal() -> None:
    await always_fatal()


@wf.step(max_retries=1)
async def retry_after_delay(delay: float) -> int:
    if attempt() == 1:
        raise wf.RetryableError("later", retry_after=delay)
    return attempt()


@wf.workflow
async def custom_retry_delay(delay: float) -> int:
    return await retry_after_delay(delay)


@wf.step(max_retries=0)
async def fails_once() -> None:
    raise ConnectionError("down")


@wf.workflow
async def retries_disabled() -> None:
    await fails_once()


# --- children ---


@wf.workflow
async def child(x: int) -> int:
    return await add(x, 1)


@wf.workflow
async def parent(x: int) -> dict:
    return {"child": await child(x), "meta": wf.get_workflow_metadata().run_id}


@wf.step
async def start_independent(x: int) -> str:
    run = await wf.start_async(child, x)  # from a step: an independent run, not awaited
    return run.id


@wf.workflow
async def start_from_step(x: int) -> str:
    return await start_independent(x)
