"""`wf start` and `wf worker`: putting runs in motion."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from pathlib import Path
from typing import Any

import typer
from rich.live import Live
from rich.text import Text

from ...runtime.entities import EventType, RunStatus
from ...runtime.errors import WorkflowNotFoundError, WorkflowRunCancelledError, WorkflowRunFailedError
from ...runtime.loader import import_paths, resolve_workflow
from ...runtime.registry import REGISTRY
from ...runtime.serialization import deserialize
from ...runtime.worker import Worker
from ...runtime.world import World
from ..common import (
    DATA_DIR,
    EXIT_CHECK_FAILED,
    WORLD,
    console,
    err_console,
    fail,
    handle_errors,
    open_world,
    parse_json_arg,
    print_json,
    run_async,
)

E = EventType


def register(app: typer.Typer) -> None:
    app.command("start")(start)
    app.command("worker")(worker)


# --- wf start ---


async def _known_workflow_names(world: World) -> list[str]:
    names = set(REGISTRY.workflows)
    cursor = None
    for _ in range(20):  # recent history is enough for suggestions
        page = await world.runs.list(limit=500, cursor=cursor, resolve_data=False)
        names.update(r.workflow_name for r in page.data)
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    return sorted(names)


async def _resolve_name(world: World, ref: str) -> str:
    if ":" in ref:
        return resolve_workflow(ref).name
    if ref in REGISTRY.workflows:
        return ref
    known = await _known_workflow_names(world)
    if ref in known:
        return ref
    import difflib

    close = difflib.get_close_matches(ref, known, n=3, cutoff=0.4)
    close += [k for k in known if k.rsplit(".", 1)[-1] == ref and k not in close]
    hint = f"; did you mean {', '.join(close)}?" if close else (
        "; name it as path/to/file.py:function or package.module:function" if not known else
        f"; known workflows: {', '.join(known[:8])}")
    raise WorkflowNotFoundError(f"unknown workflow {ref!r}{hint}")


@handle_errors
def start(
    workflow: str = typer.Argument(..., help="A workflow name, path/to/file.py:function or package.module:function."),
    args: list[str] = typer.Argument(None, help="Positional arguments, each a JSON value."),
    kwargs: str = typer.Option(None, "--kwargs", help="Keyword arguments as a JSON object."),
    wait: bool = typer.Option(False, "--wait", "-w", help="Show progress and print the result."),
    idempotency_key: str = typer.Option(None, "--idempotency-key", help="Same key, same run."),
    timeout: float = typer.Option(None, "--timeout", help="With --wait: give up after this many seconds."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
    data_dir: Path = DATA_DIR,
    world_url: str = WORLD,
) -> None:
    """Start a run of WORKFLOW and print its id (with --wait, its result)."""
    positional = [parse_json_arg(a, f"argument {i + 1}") for i, a in enumerate(args or [])]
    keywords: dict[str, Any] = {}
    if kwargs is not None:
        keywords = parse_json_arg(kwargs, "--kwargs")
        if not isinstance(keywords, dict):
            fail("--kwargs must be a JSON object")
    world = open_world(data_dir, world_url)
    code = run_async(_start_and_close(world, workflow, positional, keywords, wait, idempotency_key, timeout, as_json))
    raise typer.Exit(code)


async def _start_and_close(world: World, *args: Any) -> int:
    try:
        return await _start(world, *args)
    finally:
        await world.close()  # writes the views still pending, removes this process's inbox


async def _start(world: World, ref: str, args: list[Any], kwargs: dict[str, Any], wait: bool,
                 idempotency_key: str | None, timeout: float | None, as_json: bool) -> int:
    from ...runtime.client import start_run
    from ...runtime.config import started_world

    await started_world(world)
    name = await _resolve_name(world, ref)
    run = await start_run(world, name, args, kwargs, idempotency_key=idempotency_key)
    if not wait:
        if as_json:
            print_json({"run_id": run.id, "workflow": name, "status": await run.status_async()})
        else:
            console.print(run.id, markup=False)
        return 0
    local: Worker | None = None
    task = None
    if not await world.live_workers():
        if name not in REGISTRY.workflows:
            fail(f"no worker is running and {name} is not loaded here: start `wf worker`, "
                 "or name the workflow as path/to/file.py:function")
        local = Worker(world)
        task = asyncio.create_task(local.run())
    try:
        return await _wait_and_report(world, run.id, name, timeout, as_json)
    finally:
        if local is not None and task is not None:
            local.stop()
            await task


async def _progress(world: World, run_id: str, started: float) -> Text:
    steps = (await world.steps.list(run_id, resolve_data=False)).data
    done = sum(1 for s in steps if s.status in ("completed", "failed"))
    current = [s.step_name.rsplit(".", 1)[-1] for s in steps if s.status == "running"]
    waits = [w for w in (await world.waits.list(run_id=run_id)).data if w.status == "waiting"]
    line = Text()
    line.append(f"{time.monotonic() - started:6.1f}s ", style="dim")
    line.append(f"steps done {done}/{len(steps)}")
    if current:
        line.append("  running " + ", ".join(current[:3]), style="cyan")
    if waits:
        line.append(f"  sleeping until {min(w.resume_at for w in waits):%H:%M:%S}", style="yellow")
    return line


async def _wait_and_report(world: World, run_id: str, name: str, timeout: float | None, as_json: bool) -> int:
    from ...runtime.client import Run

    handle = Run(run_id, world)
    started = time.monotonic()
    show_live = console.is_terminal and not as_json
    deadline = None if timeout is None else started + timeout
    live = Live(Text(f"{run_id} {name}"), console=err_console, transient=True) if show_live else None
    with live if live is not None else contextlib.nullcontext():
        while True:
            info = await world.runs.get(run_id, resolve_data=False)
            if info.status.terminal:
                break
            if live is not None:
                live.update(await _progress(world, run_id, started))
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                fail(f"run {run_id} is still {info.status} after {timeout} s", EXIT_CHECK_FAILED)
            await world.events.wait(run_id, after_seq=info.event_count - 1,
                                    timeout=0.5 if remaining is None else min(0.5, remaining))
    info = await world.runs.get(run_id)
    elapsed = time.monotonic() - started
    if as_json:
        print_json({"run_id": run_id, "workflow": name, "status": str(info.status),
                    "output": deserialize(info.output) if info.status == RunStatus.COMPLETED else None,
                    "error": info.error, "seconds": round(elapsed, 3)})
        return 0 if info.status == RunStatus.COMPLETED else EXIT_CHECK_FAILED
    try:
        result = await handle.result_async(timeout=0)
    except WorkflowRunFailedError as exc:
        err_console.print(f"run {run_id} failed: {exc.error_type}: {exc.error_message}", markup=False)
        if exc.error_traceback:
            err_console.print(exc.error_traceback.rstrip(), markup=False, style="dim")
        return EXIT_CHECK_FAILED
    except WorkflowRunCancelledError:
        err_console.print(f"run {run_id} was cancelled", markup=False)
        return EXIT_CHECK_FAILED
    err_console.print(f"run {run_id} completed in {elapsed:.2f}s", markup=False, style="dim")
    if _is_json(result):
        console.print_json(data=result)
    else:
        console.print(repr(result), markup=False)
    return 0


def _is_json(value: Any) -> bool:
    import json

    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return False
    return True


# --- wf worker ---


@handle_errors
def worker(
    paths: list[Path] = typer.Argument(None, help="Workflow files, packages or folders (default: the current folder)."),
    concurrency: int = typer.Option(100, "--concurrency", "-c", min=1, help="Steps (and messages) handled at once."),
    data_dir: Path = DATA_DIR,
    world_url: str = WORLD,
) -> None:
    """Run a worker: execute workflows and steps until SIGTERM/SIGINT, then drain and exit."""
    modules = import_paths(paths or [Path(".")])
    world = open_world(data_dir, world_url)
    if not REGISTRY.workflows:
        err_console.print(f"warning: no workflows found in {len(modules)} module(s)", markup=False)
    run_async(_serve(world, concurrency))


async def _serve(world: World, concurrency: int, *, on_ready: Any = None) -> None:
    """Run a worker until a signal asks it to drain."""
    from ...runtime.config import started_world

    await started_world(world)
    w = Worker(world, concurrency=concurrency)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    task = asyncio.create_task(w.run())
    err_console.print(f"wf worker ready: {len(REGISTRY.workflows)} workflow(s), concurrency {concurrency}",
                      markup=False)
    if on_ready is not None:
        on_ready()
    try:
        stopper = asyncio.create_task(stop.wait())
        await asyncio.wait([task, stopper], return_when=asyncio.FIRST_COMPLETED)
        stopper.cancel()
        if not task.done():
            err_console.print("draining: finishing in-flight work...", markup=False)
            w.stop()
        try:
            await task
        except Exception as exc:  # noqa: BLE001 - the worker died: say so in one line, exit non-zero
            fail(f"the worker stopped: {type(exc).__name__}: {exc}", EXIT_CHECK_FAILED)
    finally:
        await world.close()
