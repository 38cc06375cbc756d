"""Stream scenarios: time to first chunk across processes, a 1 MB pipeline, a fan-in of 10 streams."""

from __future__ import annotations

import time
from collections.abc import Callable

import wf

from . import workloads as w
from .harness import in_process, repeat, start_worker_processes, stop_worker_processes, wait_workers_live
from .results import Row, mode_name

PIPELINE_BYTES = 1024 * 1024
PIPELINE_CHUNK = 64 * 1024
PIPELINE_STAGES = 5
FAN_STREAMS = 10
FAN_CHUNKS = 10
FAN_CHUNK = 1024
FAN_TOTAL = FAN_STREAMS * FAN_CHUNKS * FAN_CHUNK


async def _first_chunk_s() -> float:
    t0 = time.perf_counter()
    run = await wf.start_async(w.stream_first_chunk)
    first = None
    async for _chunk in run.stream_async():
        first = time.perf_counter() - t0
        break
    await run.result_async(timeout=60)
    if first is None:
        raise AssertionError("the stream ended without a chunk")
    return first


async def first_chunk(fsync: bool, always_replay: bool, repeats: int) -> Row:
    """A writer step in a `wf worker` subprocess, the reader here: start -> first chunk read."""
    async with in_process(fsync=fsync, always_replay=always_replay, worker=False) as env:
        procs = start_worker_processes(env.world.data_dir, 1, fsync=fsync, always_replay=always_replay)
        try:
            await wait_workers_live(env.world, procs)
            samples = await repeat(_first_chunk_s, repeats, warmup=1)
        finally:
            stop_worker_processes(procs)
    return Row("streams", "time to first chunk (writer in another process)", mode_name(fsync, always_replay),
               samples)


async def run_streams(repeats: int, modes: list[tuple[bool, bool]],
                      progress: Callable[[str], None] = print) -> list[Row]:
    rows: list[Row] = []
    for fsync, always_replay in modes:
        mode = mode_name(fsync, always_replay)
        row = await first_chunk(fsync, always_replay, repeats)
        rows.append(row)
        progress(f"  streams: {row.scenario} [{mode}] median {row.median_ms:.1f} ms")
        async with in_process(fsync=fsync, always_replay=always_replay) as env:
            samples = await repeat(lambda env=env: env.time_run(
                w.stream_pipeline, PIPELINE_BYTES, PIPELINE_CHUNK, PIPELINE_STAGES, expect=PIPELINE_BYTES), repeats)
            rows.append(Row("streams", f"1 MB through a {PIPELINE_STAGES}-step pipeline", mode, samples,
                            steps=PIPELINE_STAGES, extra={"chunk_bytes": PIPELINE_CHUNK}))
            progress(f"  streams: {rows[-1].scenario} [{mode}] median {rows[-1].median_ms:.1f} ms")
            samples = await repeat(lambda env=env: env.time_run(
                w.stream_fan_in, FAN_STREAMS, FAN_CHUNKS, FAN_CHUNK, expect=FAN_TOTAL), repeats)
            rows.append(Row("streams", f"fan-out/fan-in of {FAN_STREAMS} streams", mode, samples,
                            steps=FAN_STREAMS + 1, extra={"bytes": FAN_TOTAL}))
            progress(f"  streams: {rows[-1].scenario} [{mode}] median {rows[-1].median_ms:.1f} ms")
    return rows
