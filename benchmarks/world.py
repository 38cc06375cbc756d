"""The local World's own costs, beside the bare file-system operations they are built from.

    python -m benchmarks.world [--n 400] [--json out.json]

Prints p50/p99 of: a bare temp-write + fsync + rename (+ directory fsync) and a bare
append + fdatasync on the same disk; `events.create` of step events with fsync on and off;
the queue hand-off enqueue → take in-process (fsync on and off) and across processes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

from wf.runtime.entities import Event, EventType
from wf.world_local.world import LocalWorld

E = EventType


def _stats(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "p50_us": round(statistics.median(ordered) * 1e6, 1),
        "p99_us": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1e6, 1),
        "n": len(ordered),
    }


def bare_rename(root: Path, n: int) -> dict[str, float]:
    samples = []
    for i in range(n):
        start = time.perf_counter()
        tmp = root / f".x{i}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.write(fd, b'{"x": 1}' * 30)
        os.fsync(fd)
        os.close(fd)
        os.rename(tmp, root / f"x{i % 8}.json")
        dfd = os.open(root, os.O_RDONLY)
        os.fsync(dfd)
        os.close(dfd)
        samples.append(time.perf_counter() - start)
    return _stats(samples)


def bare_append(root: Path, n: int) -> dict[str, float]:
    fd = os.open(root / "log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    samples = []
    for _ in range(n):
        start = time.perf_counter()
        os.write(fd, b'{"x": 1}' * 30 + b"\n")
        os.fdatasync(fd)
        samples.append(time.perf_counter() - start)
    os.close(fd)
    return _stats(samples)


async def event_create(root: Path, n: int, fsync: bool) -> dict[str, float]:
    world = LocalWorld(root, fsync=fsync)
    await world.start()
    run_id = "wrun_bench"
    await world.events.create(run_id, Event(run_id, E.RUN_CREATED, data={"workflow_name": "bench", "input": None}))
    await world.events.create(run_id, Event(run_id, E.RUN_STARTED))
    samples = []
    for i in range(n):
        cid = f"step_{i}"
        for event in (Event(run_id, E.STEP_CREATED, cid, {"step_name": "s", "input": {"args": [i], "kwargs": {}}}),
                      Event(run_id, E.STEP_STARTED, cid),
                      Event(run_id, E.STEP_COMPLETED, cid, {"result": i})):
            start = time.perf_counter()
            await world.events.create(run_id, event)
            samples.append(time.perf_counter() - start)
    await world.close()
    return _stats(samples)


async def handoff_in_process(root: Path, n: int, fsync: bool) -> dict[str, float]:
    world = LocalWorld(root, fsync=fsync)
    await world.start()
    samples = []
    for i in range(n):
        start = time.perf_counter()
        await world.queue.enqueue("bench", {"i": i})
        message = await world.queue.take(["bench"], timeout=5)
        samples.append(time.perf_counter() - start)
        assert message is not None
        await world.queue.ack(message)
    await world.close()
    return _stats(samples)


TAKER = textwrap.dedent(
    """
    import asyncio, sys, time
    from wf.world_local.world import LocalWorld

    async def main():
        world = LocalWorld(sys.argv[1], fsync=False)
        await world.start()
        print("ready", flush=True)
        for _ in range(int(sys.argv[2])):
            message = await world.queue.take(["xbench"], timeout=10)
            print(time.time() - message.payload["sent"], flush=True)
            await world.queue.ack(message)
        await world.close()

    asyncio.run(main())
    """
)


async def handoff_across_processes(root: Path, n: int) -> dict[str, float]:
    world = LocalWorld(root, fsync=False)
    await world.start()
    taker = subprocess.Popen([sys.executable, "-c", TAKER, str(root), str(n)], stdout=subprocess.PIPE, text=True)
    assert taker.stdout is not None
    assert taker.stdout.readline().strip() == "ready"
    samples = []
    for _ in range(n):
        await world.queue.enqueue("xbench", {"sent": time.time()})
        samples.append(float(taker.stdout.readline()))
    taker.wait(timeout=30)
    await world.close()
    return _stats(samples)


async def measure(n: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(dir=os.environ.get("WF_BENCH_TMP")) as tmp:
        root = Path(tmp)
        for name in ("bare", "append", "ev_on", "ev_off", "q_on", "q_off", "q_x"):
            (root / name).mkdir()
        return {
            "bare temp+fsync+rename+dir fsync": bare_rename(root / "bare", n),
            "bare append+fdatasync": bare_append(root / "append", n),
            "events.create, fsync on": await event_create(root / "ev_on", n // 3 or 1, True),
            "events.create, fsync off": await event_create(root / "ev_off", n // 3 or 1, False),
            "enqueue→take in-process, fsync on": await handoff_in_process(root / "q_on", n, True),
            "enqueue→take in-process, fsync off": await handoff_in_process(root / "q_off", n, False),
            "enqueue→take across processes": await handoff_across_processes(root / "q_x", min(n, 200)),
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=400, help="samples per measure")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    results = asyncio.run(measure(args.n))
    width = max(len(k) for k in results)
    print(f"{'measure':<{width}}  {'p50 µs':>9}  {'p99 µs':>9}")
    for name, figures in results.items():
        print(f"{name:<{width}}  {figures['p50_us']:>9.1f}  {figures['p99_us']:>9.1f}")
    if args.json:
        args.json.write_text(json.dumps({"load": os.getloadavg(), "results": results}, indent=2))


if __name__ == "__main__":
    main()
