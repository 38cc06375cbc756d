"""Workflows for the crash soak and the concurrent-worker test, loaded by `wf worker` subprocesses.

Every step appends what it computed — (run, step, attempt, nonce, value) — to the side
file named by `WF_SOAK_LOG` with one O_APPEND write *before* returning, so the checker
can tell that a result recorded in a log came from a real execution (its nonce is there).
Names are explicit so that the harness and the workers agree whatever the import path.
`expected(kind, x)` is what each workflow must end with.
"""

from __future__ import annotations

import asyncio
import os
import random
from typing import Any

import orjson

import wf

#: The environment variable naming the side file of step executions.
SIDE_FILE_ENV = "WF_SOAK_LOG"
#: How long steps dawdle (seconds, upper bound), to widen the windows a kill can hit.
STEP_DELAY_ENV = "WF_SOAK_STEP_DELAY"
HOOK_PAYLOAD = {"n": 100}

KINDS = ("chain", "fan", "sleeper", "flaky", "hooked", "parent", "doomed")


def _record(value: Any) -> dict[str, Any]:
    """Append this execution to the side file; return the step's result (value + nonce)."""
    step = wf.get_step_metadata()
    run_id = wf.get_workflow_metadata().run_id
    nonce = os.urandom(8).hex()
    path = os.environ.get(SIDE_FILE_ENV)
    if path:
        line = orjson.dumps({"run": run_id, "step": step.step_id, "attempt": step.attempt, "nonce": nonce,
                             "value": value, "pid": os.getpid()}) + b"\n"
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line)
        finally:
            os.close(fd)
    return {"v": value, "nonce": nonce}


async def _dawdle() -> None:
    limit = float(os.environ.get(STEP_DELAY_ENV, "0.02"))
    if limit > 0:
        await asyncio.sleep(random.uniform(0, limit))


@wf.step(name="soak.add")
async def add(x: int, y: int) -> dict[str, Any]:
    await _dawdle()
    return _record(x + y)


@wf.step(name="soak.flaky_add", max_retries=3)
async def flaky_add(x: int, y: int) -> dict[str, Any]:
    """Fails its first two attempts (retried after 100 ms), then adds."""
    await _dawdle()
    if wf.get_step_metadata().attempt < 3:
        raise wf.RetryableError("not yet", retry_after=0.1)
    return _record(x + y)


@wf.step(name="soak.explode", max_retries=0)
async def explode(x: int) -> dict[str, Any]:
    raise wf.FatalError(f"boom {x}")


@wf.workflow(name="soak.chain")
async def chain(x: int) -> int:
    a = await add(x, 1)
    b = await add(a["v"], 2)
    c = await add(b["v"], 3)
    return c["v"]


@wf.workflow(name="soak.fan")
async def fan(x: int) -> int:
    results = await asyncio.gather(add(x, 1), add(x, 2), add(x, 3), add(x, 4))
    return sum(r["v"] for r in results)


@wf.workflow(name="soak.sleeper")
async def sleeper(x: int) -> int:
    a = await add(x, 1)
    await wf.sleep(0.3 + (x % 5) * 0.2)
    b = await add(a["v"], 1)
    return b["v"]


@wf.workflow(name="soak.flaky")
async def flaky(x: int) -> int:
    r = await flaky_add(x, 10)
    return r["v"]


@wf.workflow(name="soak.hooked")
async def hooked(x: int) -> int:
    payload = await wf.create_hook(token=hook_token(x))
    r = await add(payload["n"], x)
    return r["v"]


@wf.workflow(name="soak.parent")
async def parent(x: int) -> int:
    c, d = await asyncio.gather(chain(x), add(x, 0))
    e = await add(c + d["v"], 1)
    return e["v"]


@wf.workflow(name="soak.adopter")
async def adopter(x: int) -> int:
    """Only waits for a child: nothing else would wake it."""
    return await chain(x)


@wf.workflow(name="soak.doomed")
async def doomed(x: int) -> int:
    await add(x, 1)
    r = await explode(x)
    return r["v"]


@wf.workflow(name="soak.quick")
async def quick(x: int) -> int:
    """Two small steps: the concurrent-workers test runs a thousand of these."""
    a = await add(x, 1)
    b = await add(a["v"], 1)
    return b["v"]


def hook_token(x: int) -> str:
    return f"soak:{x}"


def expected(kind: str, x: int) -> tuple[str, int | None]:
    """(terminal status, output) a run of `soak.<kind>` with input x must end with."""
    outputs = {
        "chain": x + 6,
        "fan": 4 * x + 10,
        "sleeper": x + 2,
        "flaky": x + 10,
        "hooked": x + HOOK_PAYLOAD["n"],
        "parent": (x + 6) + x + 1,
        "quick": x + 2,
    }
    if kind == "doomed":
        return "failed", None
    return "completed", outputs[kind]
