"""The workflows and steps the benchmarks run.

Imported as `benchmarks.workloads` by the harness and by `wf worker benchmarks/workloads.py`
subprocesses, so the workflow names agree across processes. Steps cost nothing unless
given a `delay` (seconds of `asyncio.sleep`, a simulated service call).
"""

from __future__ import annotations

import asyncio

import wf

# --- zero-cost (or `delay`-second) steps ---


@wf.step
async def work(i: int, delay: float = 0.0) -> int:
    """A step that returns its index, after sleeping `delay` seconds if asked."""
    if delay:
        await asyncio.sleep(delay)
    return i


@wf.step
async def echo(payload: str) -> str:
    """A step that returns its (large) argument: the payload goes to the log twice."""
    return payload


@wf.workflow
async def empty() -> None:
    """No steps at all: the fixed cost of a run."""
    return None


@wf.workflow
async def sequential(n: int, delay: float = 0.0) -> int:
    """`n` steps one after another."""
    total = 0
    for i in range(n):
        total += await work(i, delay)
    return total


@wf.workflow
async def gather(n: int, delay: float = 0.0) -> int:
    """`n` steps at once with asyncio.gather."""
    return sum(await asyncio.gather(*(work(i, delay) for i in range(n))))


@wf.workflow
async def race(n: int, delay: float = 0.0) -> int:
    """`n` steps at once; the first to finish wins (asyncio.wait FIRST_COMPLETED)."""
    tasks = [asyncio.ensure_future(work(i, delay)) for i in range(n)]
    done, _pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    return next(iter(done)).result()


@wf.workflow
async def payload_sequential(n: int, size: int) -> int:
    """`n` steps one after another, each taking and returning `size` bytes of text."""
    blob = "x" * size
    total = 0
    for _ in range(n):
        total += len(await echo(blob))
    return total


@wf.workflow
async def payload_concurrent(n: int, size: int) -> int:
    """`n` steps at once, each taking and returning `size` bytes of text."""
    blob = "x" * size
    return sum(len(r) for r in await asyncio.gather(*(echo(blob) for _ in range(n))))


# --- streams ---


@wf.step
async def emit(chunks: int, size: int, namespace: str | None = None) -> int:
    """Write `chunks` chunks of `size` bytes to a stream of this run, then close it."""
    writer = wf.get_writable(namespace)
    block = b"\x00" * size
    for _ in range(chunks):
        writer.write(block)
    writer.close()
    return chunks * size


@wf.step
async def relay(source: str, target: str | None) -> int:
    """Copy this run's stream `source` to `target` chunk by chunk, live; return the bytes copied."""
    run = await wf.get_run_async(wf.get_workflow_metadata().run_id)
    writer = wf.get_writable(target)
    copied = 0
    async for chunk in run.stream_async(source):
        writer.write(chunk)
        copied += len(chunk)
    writer.close()
    return copied


@wf.step
async def merge(sources: list[str], target: str | None) -> int:
    """Read this run's streams `sources` concurrently into `target`; return the bytes merged."""
    run = await wf.get_run_async(wf.get_workflow_metadata().run_id)
    writer = wf.get_writable(target)

    async def pump(name: str) -> int:
        n = 0
        async for chunk in run.stream_async(name):
            writer.write(chunk)
            n += len(chunk)
        return n

    total = sum(await asyncio.gather(*(pump(s) for s in sources)))
    writer.close()
    return total


@wf.workflow
async def stream_first_chunk() -> int:
    """One step writes one small chunk to the default stream (time to first chunk)."""
    return await emit(1, 16)


@wf.workflow
async def stream_pipeline(total_bytes: int, chunk_bytes: int, stages: int) -> int:
    """A producer and `stages - 1` relays run at once: s0 -> s1 -> ... -> the default stream."""
    names = [f"s{i}" for i in range(stages - 1)]
    chunks = total_bytes // chunk_bytes
    relays = [relay(names[i], names[i + 1] if i + 1 < len(names) else None) for i in range(len(names))]
    results = await asyncio.gather(emit(chunks, chunk_bytes, names[0]), *relays)
    return results[-1]


@wf.workflow
async def stream_fan_in(streams: int, chunks: int, chunk_bytes: int) -> int:
    """`streams` producers write a stream each; one step merges them into the default stream."""
    names = [f"p{i}" for i in range(streams)]
    results = await asyncio.gather(*(emit(chunks, chunk_bytes, n) for n in names), merge(names, None))
    return results[-1]


# --- scale: four simulated 50 ms service calls ---


@wf.step
async def service_call(i: int, k: int, latency: float) -> int:
    """A simulated remote call: `latency` seconds of waiting, no CPU."""
    await asyncio.sleep(latency)
    return i + k


@wf.workflow
async def four_calls(i: int, latency: float = 0.05) -> int:
    """Four sequential service calls (the scale and fairness workload)."""
    total = 0
    for k in range(4):
        total += await service_call(i, k, latency)
    return total
