"""DBOS Transact (SQLite system database) beside wf, on the workloads both can express.

DBOS is optional (`pip install dbos`, or the `bench` extra): when it cannot be imported or
launched, the suite reports why and measures nothing for it. DBOS is a process-wide
singleton, so it is launched once per harness run, on a SQLite file in a temp dir.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import tempfile
import time
from collections.abc import Callable
from typing import Any

import wf

from . import workloads as w
from .harness import in_process, repeat
from .results import Row, mode_name

PAYLOAD = 10 * 1024
_dbos: dict[str, Any] = {}


def define_peer_workflows() -> dict[str, Any]:
    """Import dbos and declare the peer workflows (once per process)."""
    if _dbos:
        return _dbos
    from dbos import DBOS

    @DBOS.step()
    async def d_work(i: int) -> int:
        return i

    @DBOS.step()
    async def d_echo(payload: str) -> str:
        return payload

    @DBOS.workflow()
    async def d_empty() -> None:
        return None

    @DBOS.workflow()
    async def d_sequential(n: int) -> int:
        total = 0
        for i in range(n):
            total += await d_work(i)
        return total

    @DBOS.workflow()
    async def d_gather(n: int) -> int:
        return sum(await asyncio.gather(*(d_work(i) for i in range(n))))

    @DBOS.workflow()
    async def d_payload_sequential(n: int, size: int) -> int:
        blob = "x" * size
        total = 0
        for _ in range(n):
            total += len(await d_echo(blob))
        return total

    @DBOS.workflow()
    async def d_payload_concurrent(n: int, size: int) -> int:
        blob = "x" * size
        return sum(len(r) for r in await asyncio.gather(*(d_echo(blob) for _ in range(n))))

    @DBOS.step()
    def d_work_sync(i: int) -> int:
        return i

    @DBOS.workflow()
    def d_empty_sync() -> None:
        return None

    @DBOS.workflow()
    def d_sequential_sync(n: int) -> int:
        return sum(d_work_sync(i) for i in range(n))

    _dbos.update(DBOS=DBOS, empty=d_empty, sequential=d_sequential, gather=d_gather,
                 payload_sequential=d_payload_sequential, payload_concurrent=d_payload_concurrent,
                 empty_sync=d_empty_sync, sequential_sync=d_sequential_sync)
    return _dbos


#: (scenario, wf workflow, DBOS workflow key, args, steps, expected result)
PAIRS: list[tuple[str, Any, str, tuple[Any, ...], int, Any]] = [
    ("empty workflow", w.empty, "empty", (), 0, None),
    ("1 sequential step", w.sequential, "sequential", (1,), 1, 0),
    ("10 sequential steps", w.sequential, "sequential", (10,), 10, 45),
    ("50 sequential steps", w.sequential, "sequential", (50,), 50, 1225),
    ("gather 10", w.gather, "gather", (10,), 10, 45),
    ("gather 50", w.gather, "gather", (50,), 50, 1225),
    ("10 KB payloads, 10 sequential", w.payload_sequential, "payload_sequential", (10, PAYLOAD), 10, 10 * PAYLOAD),
    ("10 KB payloads, 10 concurrent", w.payload_concurrent, "payload_concurrent", (10, PAYLOAD), 10, 10 * PAYLOAD),
]


#: The blocking APIs: wf.run(...) against DBOS.start_workflow(...).get_result() on sync workflows
#: and steps, each called from a thread of its own (as a sync program would), timed inside it.
SYNC_PAIRS: list[tuple[str, Any, str, tuple[Any, ...], int, Any]] = [
    ("empty workflow, blocking API", w.empty, "empty_sync", (), 0, None),
    ("50 sequential steps, blocking API", w.sequential, "sequential_sync", (50,), 50, 1225),
]


def _blocking_time(call: Callable[[], Any], what: str, expect: Any) -> float:
    t0 = time.perf_counter()
    result = call()
    elapsed = time.perf_counter() - t0
    if expect is not None and result != expect:
        raise AssertionError(f"{what} returned {result!r}, expected {expect!r}")
    return elapsed


async def _blocking(call: Callable[[], Any], what: str, expect: Any) -> float:
    return await asyncio.to_thread(_blocking_time, call, what, expect)


async def _dbos_time(fn: Any, args: tuple[Any, ...], expect: Any) -> float:
    dbos = _dbos["DBOS"]
    t0 = time.perf_counter()
    handle = await dbos.start_workflow_async(fn, *args)
    result = await handle.get_result()
    elapsed = time.perf_counter() - t0
    if expect is not None and result != expect:
        raise AssertionError(f"DBOS {fn.__name__}{args} returned {result!r}, expected {expect!r}")
    return elapsed


async def run_dbos(repeats: int, progress: Callable[[str], None] = print) -> tuple[list[Row], str | None]:
    """wf (fsync on and off, cached) and DBOS on the same workloads; (rows, why DBOS is missing)."""
    rows: list[Row] = []
    for fsync in (True, False):
        mode = mode_name(fsync, False)
        async with in_process(fsync=fsync, always_replay=False) as env:
            for name, wf_fn, _key, args, steps, expect in PAIRS:
                samples = await repeat(lambda f=wf_fn, a=args, e=expect: env.time_run(f, *a, expect=e), repeats)
                rows.append(Row("dbos", name, f"wf {mode}", samples, steps=steps))
                progress(f"  dbos: {name} [wf {mode}] median {rows[-1].median_ms:.1f} ms")
            for name, wf_fn, _key, args, steps, expect in SYNC_PAIRS:
                samples = await repeat(lambda f=wf_fn, a=args, e=expect: _blocking(
                    lambda: wf.run(f, *a), f"wf.run({f.__name__})", e), repeats)
                rows.append(Row("dbos", name, f"wf {mode}", samples, steps=steps))
                progress(f"  dbos: {name} [wf {mode}] median {rows[-1].median_ms:.1f} ms")
    try:
        defs = define_peer_workflows()
    except Exception as exc:  # noqa: BLE001 - reported, never faked
        return rows, f"dbos is not installed or failed to import: {type(exc).__name__}: {exc}"
    tmp = tempfile.mkdtemp(prefix="dbos-bench-")
    dbos_cls = defs["DBOS"]
    try:
        logging.getLogger("dbos").setLevel(logging.WARNING)
        dbos_cls(config={"name": "wf-bench", "system_database_url": f"sqlite:///{tmp}/dbos.sqlite",
                         "log_level": "WARNING"})
        dbos_cls.launch()
    except Exception as exc:  # noqa: BLE001 - reported, never faked
        shutil.rmtree(tmp, ignore_errors=True)
        return rows, f"DBOS failed to launch: {type(exc).__name__}: {exc}"
    try:
        from importlib.metadata import version

        label = f"DBOS {version('dbos')} (SQLite)"
        for name, _wf_fn, key, args, steps, expect in PAIRS:
            samples = await repeat(lambda f=defs[key], a=args, e=expect: _dbos_time(f, a, e), repeats)
            rows.append(Row("dbos", name, label, samples, steps=steps))
            progress(f"  dbos: {name} [{label}] median {rows[-1].median_ms:.1f} ms")
        for name, _wf_fn, key, args, steps, expect in SYNC_PAIRS:
            samples = await repeat(lambda f=defs[key], a=args, e=expect: _blocking(
                lambda: dbos_cls.start_workflow(f, *a).get_result(), f"DBOS {f.__name__}", e), repeats)
            rows.append(Row("dbos", name, label, samples, steps=steps))
            progress(f"  dbos: {name} [{label}] median {rows[-1].median_ms:.1f} ms")
    except Exception as exc:  # noqa: BLE001 - reported, never faked
        return rows, f"DBOS failed while running: {type(exc).__name__}: {exc}"
    finally:
        try:
            dbos_cls.destroy()
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return rows, None


def ratios(rows: list[Row]) -> list[dict[str, Any]]:
    """wf / DBOS median, scenario by scenario, for each wf mode (below 1 = wf faster)."""
    peer = {r.scenario: r for r in rows if r.mode.startswith("DBOS")}
    out = []
    for r in rows:
        if r.mode.startswith("wf") and r.scenario in peer:
            d = peer[r.scenario]
            out.append({"scenario": r.scenario, "wf_mode": r.mode.removeprefix("wf "), "wf_ms": round(r.median_ms, 2),
                        "dbos_ms": round(d.median_ms, 2), "ratio": round(r.median_ms / d.median_ms, 3)})
    return out


def per_step(rows: list[Row], mode_prefix: str, long: str = "50 sequential steps",
             short: str = "empty workflow") -> float | None:
    """Marginal cost of one sequential step: (time(50 steps) - time(empty)) / 50, in ms."""
    by = {r.scenario: r for r in rows if r.mode.startswith(mode_prefix)}
    if long not in by or short not in by:
        return None
    return (by[long].median_ms - by[short].median_ms) / by[long].steps
