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
from ...runtime.errors import WorkflowRunCancelledError, WorkflowRunFailedError
from ...runtime.loader import load_code
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


@handle_errors
def start(
    workflow: str = typer.Argument(..., help="A workflow name (full, or its last part when unambiguous), "
                                   "path/to/file.py:function or package.module:function."),
    args: list[str] = typer.Argument(None, help="Positional arguments, each a JSON value."),
    kwargs: str = typer.Option(None, "--kwargs", help="Keyword arguments as a JSON object."),
    wait: bool = typer.Option(False, "--wait", "-w", help="Show progress and print the result."),
    idempotency_key: str = typer.Option(None, "--idempotency-key", help="Same key, same run."),
    tag: list[str] = typer.Option(None, "--tag", help="KEY=VALUE stored with the run (repeatable); "
                                  "`wf inspect runs --tag KEY=VALUE` finds it."),
    timeout: float = typer.Option(None, "--timeout", help="With --wait: give up after this many seconds."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
    data_dir: Path = DATA_DIR,
    world_url: str = WORLD,
) -> None:
    """Start a run of WORKFLOW and print its id (with --wait, its result).

    A name is looked up in the code `wf worker` would load here ([tool.wf] paths in
    pyproject.toml, else the workflow modules under the current folder). The arguments are
    checked against the workflow's signature before anything is recorded.
    """
    positional = [parse_json_arg(a, f"argument {i + 1}") for i, a in enumerate(args or [])]
    keywords: dict[str, Any] = {}
    if kwargs is not None:
        keywords = parse_json_arg(kwargs, "--kwargs")
        if not isinstance(keywords, dict):
            fail("--kwargs must be a JSON object")
    tags = parse_tags(tag or [])
    world = open_world(data_dir, world_url)
    started = _Started()
    try:
        code = run_async(_start_and_close(world, started, workflow, positional, keywords, wait, idempotency_key,
                                          timeout, as_json, tags))
    except KeyboardInterrupt:
        if started.run_id is None:
            raise
        err_console.print(f"interrupted: run {started.run_id} goes on ({started.carried_by}); follow it with "
                          f"`wf inspect {started.run_id}`", markup=False)
        raise typer.Exit(130) from None
    raise typer.Exit(code)


def warn_skipped(warnings: list[str]) -> None:
    """One `warning:` line on stderr per module that failed to import."""
    for warning in warnings:
        err_console.print(f"warning: {warning}", markup=False)


def parse_tags(pairs: list[str]) -> dict[str, str]:
    """`--tag KEY=VALUE` options as a dict; exit 2 for one without `=` or with an empty key."""
    tags: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            fail(f"--tag takes KEY=VALUE, not {pair!r}")
        tags[key.strip()] = value
    return tags


class _Started:
    """What `wf start` has done so far, for the message after Ctrl-C."""

    run_id: str | None = None
    carried_by: str = "a running worker carries it on"


async def _start_and_close(world: World, started: _Started, *args: Any) -> int:
    try:
        return await _start(world, started, *args)
    finally:
        await world.close()  # writes the views still pending, removes this process's inbox


def no_worker_hint(origin: str | None) -> str:
    """The sentence that says nothing will drive a run yet."""
    where = origin or "PATH"
    return f"no worker is running: start `wf worker {where}` or `wf dev {where}` to run it"


async def _start(world: World, started: _Started, ref: str, args: list[Any], kwargs: dict[str, Any], wait: bool,
                 idempotency_key: str | None, timeout: float | None, as_json: bool, tags: dict[str, str]) -> int:
    from ...runtime.client import start_run
    from ...runtime.config import started_world
    from ...runtime.resolving import resolve_target

    await started_world(world)
    target = await resolve_target(world, ref)
    warn_skipped(target.warnings)
    try:
        run = await start_run(world, target.function or target.name, args, kwargs, idempotency_key=idempotency_key,
                              tags=tags or None)
    except TypeError as exc:
        fail(str(exc))
    started.run_id = run.id
    name = target.name
    origin = _origin_path(target.function)
    presence = "workers" in world.capabilities
    workers = await world.live_workers() if presence else []
    if not wait:
        if as_json:
            print_json({"run_id": run.id, "workflow": name, "status": await run.status_async()})
        else:
            console.print(run.id, markup=False)
        if presence and not workers:
            err_console.print(f"note: {no_worker_hint(origin)}", markup=False)
        return 0
    local: Any = None
    task = None
    if not workers:
        if target.function is None:
            fail(f"{no_worker_hint(origin)} ({name} is not loaded here: name the workflow as "
                 "path/to/file.py:function to run it in this process)")
        from ...runtime.own_run import own_run_worker

        local = own_run_worker(world, run.id)
        task = asyncio.create_task(local.run())
        started.carried_by = f"when a worker runs: {no_worker_hint(origin)}"
    try:
        return await _wait_and_report(world, run.id, name, timeout, as_json)
    finally:
        if local is not None and task is not None:
            local.stop()
            await task


def _origin_path(function: Any) -> str | None:
    """The workflow's file, relative to the current folder when under it."""
    if function is None:
        return None
    from ...runtime.loader import origin_of

    origin = origin_of(function) or {}
    file = origin.get("file")
    if not file:
        return None
    with contextlib.suppress(ValueError):
        return str(Path(file).relative_to(Path.cwd()))
    return file


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
    paths: list[Path] = typer.Argument(None, help="Workflow files, packages or folders (default: [tool.wf] paths "
                                       "in pyproject.toml, else the workflow modules under the current folder)."),
    concurrency: int = typer.Option(100, "--concurrency", "-c", min=1, help="Steps (and messages) handled at once."),
    data_dir: Path = DATA_DIR,
    world_url: str = WORLD,
) -> None:
    """Run a worker: execute workflows and steps until SIGTERM/SIGINT, then drain and exit.

    In a folder, only modules whose source defines workflows are imported (never `__main__.py`,
    tests, virtualenvs or hidden folders); one that fails to import is a warning.
    """
    loaded = load_code(paths)
    warn_skipped(loaded.warnings)
    world = open_world(data_dir, world_url)
    if not REGISTRY.workflows:
        err_console.print(f"warning: no workflows found in {len(loaded.modules)} module(s)", markup=False)
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
