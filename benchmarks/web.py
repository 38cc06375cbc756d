"""The web UI's page timings: the runs page with 10,000 runs, and a run page with 1,000 steps.

    python -m benchmarks.web [--runs 10000] [--steps 1000] [--data-dir PATH] [--no-browser]
    python -m benchmarks.web --flood 400     # memory of `wf ui` while 400 clients each send a 1 MB body

Fills a local World (kept in --data-dir and reused on the next call) with runs recorded
straight through the World contract, and one real run of a 1,000-step workflow driven by a
worker; serves the web app in this process and prints, per request, the median and 95th
percentile of the server's own time (its `Server-Timing` header) and of the wall time seen by
the client. With Chromium at /usr/bin/chromium, it also times the run page in a browser: from
navigation to the whole trace drawn.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import wf
from wf.runtime.entities import Event, EventType
from wf.runtime.ids import new_run_id
from wf.runtime.replay import serialize_call_input
from wf.runtime.worker import Worker
from wf.web import WebServer, WebSettings, create_app

E = EventType
REPEAT = 30


@wf.step
async def bump(i: int) -> int:
    return i + 1


@wf.workflow
async def many_steps(n: int) -> int:
    total = 0
    for i in range(n):
        total += await bump(i)
    return total


async def fill_runs(world: Any, count: int) -> None:
    """`count` runs of three workflows, a third each completed, failed and cancelled (no worker may pick them up)."""
    have = 0
    cursor = None
    while have < count:
        page = await world.runs.list(limit=1000, cursor=cursor, resolve_data=False)
        have += len(page.data)
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    started = time.perf_counter()
    for i in range(have, count):
        run_id = new_run_id()
        name = f"bench.flow_{i % 3}"
        data = {"workflow_name": name, "input": serialize_call_input([f"order-{i}", i], {}, where="input"),
                "attributes": {}}
        events = [Event(run_id, E.RUN_STARTED)]
        if i % 3 == 0:
            events.append(Event(run_id, E.RUN_COMPLETED, data={"output": {"ok": i}}))
        elif i % 3 == 1:
            events.append(Event(run_id, E.RUN_FAILED, data={"error": {"type": "ValueError", "message": f"bad {i}",
                                                                     "traceback": ""}}))
        else:
            events.append(Event(run_id, E.RUN_CANCELLED, data={"reason": "benchmark"}))
        await world.events.create(run_id, Event(run_id, E.RUN_CREATED, data=data))
        await world.events.create_batch(run_id, events)
        if i and i % 2000 == 0:
            print(f"  {i} runs recorded ({time.perf_counter() - started:.0f}s)", file=sys.stderr)


async def big_run(world: Any, steps: int) -> str:
    """The id of a completed run of `many_steps(steps)` (made once per data dir)."""
    page = await world.runs.list(workflow_name=many_steps.name, limit=1, resolve_data=False)
    if page.data and page.data[0].status == "completed":
        return page.data[0].run_id
    from wf.runtime.client import start_run

    run = await start_run(world, many_steps, [steps], {})
    worker = Worker(world)
    task = asyncio.create_task(worker.run())
    try:
        await run.result_async(timeout=600)
    finally:
        worker.stop()
        await task
    return run.id


async def timed(port: int, path: str, repeat: int = REPEAT) -> tuple[list[float], list[float], int]:
    """(server ms, wall ms, bytes) of `repeat` GETs."""
    server, wall = [], []
    size = 0
    for _ in range(repeat):
        started = time.perf_counter()
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n".encode())
        data = await reader.read(-1)
        writer.close()
        wall.append((time.perf_counter() - started) * 1000)
        head, _, body = data.partition(b"\r\n\r\n")
        size = len(body)
        status = head.split(b" ", 2)[1]
        if status != b"200":
            raise SystemExit(f"GET {path} answered {status.decode()}: {body[:200]!r}")
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"server-timing:"):
                server.append(float(line.split(b"dur=")[1]))
    return server, wall, size


def _p(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def browser_time(url: str) -> float | None:
    """Milliseconds from navigation to the first frame painted with the whole run (trace, event log), in Chromium."""
    if not Path("/usr/bin/chromium").exists():
        return None
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        return None
    args = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--no-first-run"]
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=args)
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        times = []
        for _ in range(3):
            page.goto(url)
            page.wait_for_function("() => performance.getEntriesByName('wf-run-drawn').length > 0", timeout=30_000)
            assert page.evaluate("document.querySelectorAll('#trace .row').length") > 1000
            assert page.evaluate("document.querySelectorAll('#events .erow').length") > 3000
            times.append(page.evaluate("performance.getEntriesByName('wf-run-drawn')[0].startTime"))
        browser.close()
    return statistics.median(times)


async def main_async(args: argparse.Namespace) -> None:
    from wf.world_local import LocalWorld

    os.environ.setdefault("WF_FSYNC", "0")
    world = LocalWorld(Path(args.data_dir))
    await world.start()
    print(f"data dir {args.data_dir}: recording runs (reused on the next call)...", file=sys.stderr)
    run_id = await big_run(world, args.steps)
    await fill_runs(world, args.runs)
    app = create_app(world, WebSettings())
    server = WebServer(app, "127.0.0.1", 0)
    await server.start()
    try:
        await app.web.counts.get(world)  # start the background count, as a first visit does
        while app.web.counts.counts is None:
            await asyncio.sleep(0.1)
        total = sum(app.web.counts.counts.values())
        print(f"\n{total} runs in the World; the big run {run_id} has {args.steps} steps\n")
        print(f"{'request':<44} {'server ms p50':>13} {'p95':>7} {'wall ms p50':>12} {'p95':>7} {'KB':>7}")
        paths = [
            ("runs page /", "/"),
            ("runs page, status filter", "/?status=failed"),
            ("runs page, workflow filter", "/?workflow=bench.flow_1"),
            ("runs page, 2nd page", None),
            ("runs page, search (one budgeted slice)", "/?q=order-9999"),
            ("runs JSON /api/runs", "/api/runs"),
            ("run page shell /runs/<big>", f"/runs/{run_id}"),
            ("run story /api/runs/<big> (1,000 steps)", f"/api/runs/{run_id}"),
            ("call sites /api/runs/<big>/callsites", f"/api/runs/{run_id}/callsites"),
        ]
        first = (await app.web.counts.get(world)) is not None
        assert first
        from wf.web.runs_query import RunsQuery, list_runs

        cursor = (await list_runs(world, RunsQuery())).next_cursor
        for label, path in paths:
            path = path or f"/?cursor={cursor}"
            repeat = 5 if "callsites" in path or "q=" in path else REPEAT
            server_ms, wall_ms, size = await timed(server.port, path, repeat)
            print(f"{label:<44} {statistics.median(server_ms):>13.1f} {_p(server_ms, .95):>7.1f} "
                  f"{statistics.median(wall_ms):>12.1f} {_p(wall_ms, .95):>7.1f} {size / 1024:>7.0f}")
        world_ms = []
        for _ in range(REPEAT):
            started = time.perf_counter()
            await world.runs.list(limit=50, resolve_data=False)
            world_ms.append((time.perf_counter() - started) * 1000)
        print(f"{'(the World alone: runs.list(limit=50))':<44} {statistics.median(world_ms):>13.1f} "
              f"{_p(world_ms, .95):>7.1f}")
        load = os.getloadavg()[0]
        print(f"(machine load average {load:.1f} on {os.cpu_count()} CPUs)")
        if not args.no_browser:
            shown = await asyncio.to_thread(browser_time, f"http://127.0.0.1:{server.port}/runs/{run_id}")
            if shown is not None:
                print(f"\n1,000-step run page in Chromium, from navigation to the whole run drawn: {shown:.0f} ms")
    finally:
        await server.stop()
        await app.web.close()
        await world.close()


def _rss_mb(pid: int) -> tuple[float, float]:
    """(resident, peak resident) MB of a process, from /proc."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


async def flood(data_dir: str, clients: int, size: int = 1024 * 1024) -> None:
    """`clients` connections each POST a `size`-byte body to a webhook at once; server memory idle and at peak."""
    import socket
    import subprocess

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "WF_FSYNC": "0"}
    proc = subprocess.Popen([sys.executable, "-m", "wf.cli", "ui", "--data-dir", data_dir, "--port", str(port)],
                            env=env, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr is not None
        print(proc.stderr.readline().strip(), file=sys.stderr)
        idle, _ = _rss_mb(proc.pid)
        body = b"x" * size
        statuses: dict[int, int] = {}

        async def one() -> None:
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.write(f"POST /.well-known/workflow/v1/webhook/nobody HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                             f"Content-Length: {size}\r\nConnection: close\r\n\r\n".encode() + body)
                await writer.drain()
                head = await reader.readuntil(b"\r\n\r\n")
                status = int(head.split(b" ", 2)[1])
                writer.close()
            except (OSError, asyncio.IncompleteReadError):
                status = 0  # the server cut the connection
            statuses[status] = statuses.get(status, 0) + 1

        started = time.perf_counter()
        await asyncio.gather(*(one() for _ in range(clients)))
        took = time.perf_counter() - started
        now, peak = _rss_mb(proc.pid)
        answers = ", ".join(f"{n} x {code or 'cut'}" for code, n in sorted(statuses.items()))
        print(f"{clients} clients x {size // 1024} KB bodies in {took:.1f}s: {answers}; "
              f"server memory {idle:.0f} MB idle, {peak:.0f} MB at peak, {now:.0f} MB after")
    finally:
        proc.terminate()
        proc.wait(10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--steps", type=int, default=1_000)
    parser.add_argument("--data-dir", default=str(Path(tempfile.gettempdir()) / "wf-web-bench"))
    parser.add_argument("--no-browser", action="store_true")
    parser.add_argument("--flood", type=int, metavar="CLIENTS", help="measure memory under concurrent 1 MB bodies")
    args = parser.parse_args()
    if args.flood:
        asyncio.run(flood(args.data_dir, args.flood))
    else:
        asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
