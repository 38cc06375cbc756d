"""`wf replay` (the offline debugger) and `wf fork` (retry a run from a point on new code)."""

from __future__ import annotations

import bdb
import contextlib
import json
import sys
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from ...runtime.config import started_world
from ...runtime.debugger import ReplayReport, frame_locals, replay_run, user_frames
from ...runtime.entities import Event, EventType, Run
from ...runtime.errors import SerializationError, WorkflowNotFoundError
from ...runtime.loader import load_code, load_origin
from ...runtime.operations import check_replay, fork_run, get_run, workflow_for
from ...runtime.registry import REGISTRY, WorkflowFunction
from ...runtime.replay import WorkflowInstance
from ...runtime.serialization import deserialize
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
    print_json,
    run_async,
)
from .run_cmds import warn_skipped

E = EventType


def register(app: typer.Typer) -> None:
    app.command("replay")(replay)
    app.command("fork")(fork)


def _short(value: Any, width: int = 60) -> str:
    with contextlib.suppress(SerializationError):
        value = deserialize(value)
    text = repr(value) if not isinstance(value, str) else json.dumps(value)
    return text if len(text) <= width else text[: width - 1] + "…"


async def _load_run(world: World, run_id: str) -> tuple[Run, list[Event]]:
    await started_world(world)
    run = await get_run(world, run_id)
    return run, await world.events.list(run_id)


def _load_code_of(run: Run | None, paths: list[Path] | None) -> None:
    """Import the code to replay against: the paths named, else the code the run recorded, else the default."""
    if paths:
        warn_skipped(load_code(paths).warnings)
        return
    if run is not None and load_origin(run.workflow_name, run.attributes) is not None:
        return
    warn_skipped(load_code().warnings)


def _workflow_for(run: Run) -> WorkflowFunction:
    try:
        return workflow_for(run)
    except WorkflowNotFoundError:
        fail(f"workflow {run.workflow_name} (of run {run.run_id}) is not defined in the loaded code; "
             "pass the file or folder that defines it: wf replay RUN_ID --path path/to/code")


def _trace_line(event: Event, instance: WorkflowInstance) -> None:
    cid = event.correlation_id or ""
    what = ""
    call = instance.steps.get(cid)
    if event.event_type == E.STEP_COMPLETED and call is not None:
        what = f"await {call.step.name.rsplit('.', 1)[-1]}(…) -> {_short(event.data.get('result'))}"
    elif event.event_type == E.STEP_FAILED and call is not None:
        err = event.data.get("error") or {}
        what = f"await {call.step.name.rsplit('.', 1)[-1]}(…) raised {err.get('type')}: {err.get('message')}"
    elif event.event_type == E.WAIT_COMPLETED:
        what = "timer fired"
    elif event.event_type == E.HOOK_RECEIVED:
        what = f"hook payload {_short(event.data.get('payload'))}"
    elif event.event_type in (E.STEP_CREATED, E.WAIT_CREATED, E.HOOK_CREATED):
        command = call.command if call is not None else None
        where = f"  [{command.location}]" if command is not None and command.location else ""
        what = f"called{where}"
    clock = instance.now().strftime("%H:%M:%S.%f")[:-3]
    console.print(f"{event.seq:>4}  {clock}  {event.event_type:<15} {cid:<10} {what}", markup=False, highlight=False)


@handle_errors
def replay(
    run_id: str = typer.Argument(None, help="The run to replay (omit with --workflow)."),
    path: list[Path] = typer.Option(None, "--path", "-p", help="Code to load (default: the file the run was "
                                    "started from, else the workflow modules of the current folder)."),
    workflow: str = typer.Option(None, "--workflow", help="Replay every recorded run of this workflow."),
    trace: bool = typer.Option(False, "--trace", help="Print each event the code consumes, with the workflow clock."),
    until: int = typer.Option(None, "--until", help="Stop after event N and show the workflow's local variables."),
    pdb: bool = typer.Option(False, "--pdb", help="Open the debugger at --until or at the divergence."),
    as_json: bool = typer.Option(False, "--json"),
    data_dir: Path = DATA_DIR,
    world_url: str = WORLD,
) -> None:
    """Re-run the current workflow code against a run's event log: no step runs, nothing is written."""
    if (run_id is None) == (workflow is None):
        fail("give a RUN_ID, or --workflow NAME to replay all its runs")
    if pdb and not (sys.stdin.isatty() and sys.stdout.isatty()):
        fail("--pdb needs a terminal: run it from an interactive shell (or use --until N to print the locals)")
    world = open_world(data_dir, world_url, create=False)
    if workflow is not None:
        raise typer.Exit(run_async(_replay_all(world, workflow, path, as_json)))
    raise typer.Exit(run_async(_replay_one(world, run_id, path, trace, until, pdb, as_json)))


async def _replay_one(world: World, run_id: str, paths: list[Path] | None, trace: bool, until: int | None,
                      pdb: bool, as_json: bool) -> int:
    try:
        run, events = await _load_run(world, run_id)
    except BaseException:
        await world.close()
        raise
    if until is not None and not 0 <= until < len(events):
        fail(f"--until must be between 0 and {len(events) - 1} for this run")
    _load_code_of(run, paths)
    fn = _workflow_for(run)
    if trace and not as_json:
        console.print(f"replaying {run_id} ({run.workflow_name}, {len(events)} events)", markup=False)
    report = replay_run(fn, run, events, until=until, on_event=_trace_line if trace and not as_json else None)
    await world.close()
    if as_json:
        print_json({"run_id": run_id, "clean": report.clean, "summary": report.summary(), "fed": report.fed,
                    "events": report.events, "pending_calls": report.pending_calls,
                    "divergence": _divergence_json(report)})
        return 0 if report.clean else EXIT_CHECK_FAILED
    if until is not None:
        _show_locals(report)
    if report.clean:
        console.print(f"[green]✓[/green] {run_id} {report.summary()}")
        if report.pending_calls and not run.status.terminal:
            console.print("  next, the code calls: " + "; ".join(report.pending_calls), markup=False)
    else:
        console.print(f"[red]✗[/red] {run_id}: ", end="")
        console.print(report.summary(), markup=False)
    if pdb:
        _open_pdb(report)
    return 0 if report.clean else EXIT_CHECK_FAILED


def _divergence_json(report: ReplayReport) -> dict[str, Any] | None:
    d = report.divergence
    if d is None:
        return None
    return {"position": d.position, "recorded": d.recorded, "code": d.code, "location": d.location}


def _show_locals(report: ReplayReport) -> None:
    assert report.instance is not None
    frames = user_frames(report.instance)
    console.print(f"stopped after event {report.fed - 1}; workflow clock {report.instance.now().isoformat()}",
                  markup=False)
    if not frames:
        console.print("(no workflow task is suspended at this point)")
    for name, frame in frames:
        table = Table(title=f"{name} at {frame.f_code.co_filename}:{frame.f_lineno}", title_justify="left")
        table.add_column("variable")
        table.add_column("value")
        for key, value in frame_locals(frame).items():
            text = repr(value)
            table.add_row(key, text if len(text) < 120 else text[:119] + "…")
        console.print(table)


def _open_pdb(report: ReplayReport) -> None:
    import pdb as _pdb

    assert report.instance is not None
    frames = user_frames(report.instance)
    if not frames:
        console.print("no suspended workflow frame to debug")
        return
    name, frame = frames[0]
    console.print(f"entering pdb in {name} ({frame.f_code.co_filename}:{frame.f_lineno}); `c` to leave",
                  markup=False)
    debugger = _pdb.Pdb()
    debugger.reset()  # what set_trace does first: `c`, `n` and `q` need its bookkeeping (botframe)
    try:
        debugger.interaction(frame, None)
    except bdb.BdbQuit:
        pass  # `q`: leave the debugger
    finally:
        sys.settrace(None)


async def _replay_all(world: World, name: str, paths: list[Path] | None, as_json: bool) -> int:
    from ...runtime.config import started_world

    await started_world(world)
    first = (await world.runs.list(workflow_name=name, limit=1)).data
    _load_code_of(first[0] if first else None, paths)
    fn = REGISTRY.workflows.get(name)
    if fn is None:
        await world.close()
        fail(f"workflow {name} is not defined in the loaded code (pass --path)")
    results: list[tuple[str, ReplayReport]] = []
    cursor = None
    while True:
        page = await world.runs.list(workflow_name=name, limit=200, cursor=cursor)
        for run in page.data:
            results.append((run.run_id, replay_run(fn, run, await world.events.list(run.run_id))))
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    await world.close()
    bad = [(rid, r) for rid, r in results if not r.clean]
    if as_json:
        print_json({"workflow": name, "runs": len(results), "clean": len(results) - len(bad),
                    "diverged": [{"run_id": rid, "summary": r.summary()} for rid, r in bad]})
    else:
        for rid, r in bad:
            console.print(f"[red]✗[/red] {rid}: ", end="")
            console.print(r.summary(), markup=False)
        console.print(f"{name}: {len(results)} run(s), {len(results) - len(bad)} replay cleanly, "
                      f"{len(bad)} diverge", markup=False)
    return 0 if not bad else EXIT_CHECK_FAILED


# --- wf fork ---


@handle_errors
def fork(
    run_id: str = typer.Argument(..., help="The run to fork."),
    at: int = typer.Option(None, "--at", help="Keep events 0..N-1 (default: up to the first failure)."),
    path: list[Path] = typer.Option(None, "--path", "-p", help="Code to check the fork against (default: the file "
                                    "the run was started from, else the workflow modules of the current folder)."),
    as_json: bool = typer.Option(False, "--json"),
    data_dir: Path = DATA_DIR,
    world_url: str = WORLD,
) -> None:
    """Start a new run that reuses the first N events of RUN_ID and continues on the current code.

    The run's code is loaded to check that it still fits the events kept (a warning if not).
    """
    world = open_world(data_dir, world_url, create=False)
    new_id, kept, problem = run_async(_fork(world, run_id, at, path))
    if problem:
        err_console.print(f"warning: the fork will diverge on the current code: {problem}", markup=False)
    if as_json:
        print_json({"run_id": new_id, "forked_from": run_id, "events_kept": kept, "divergence": problem})
    else:
        console.print(new_id, markup=False)


async def _fork(world: World, run_id: str, at: int | None, paths: list[Path] | None) -> tuple[str, int, str | None]:
    await started_world(world)
    try:
        try:
            result = await fork_run(world, run_id, at=at)
        except ValueError as exc:
            fail(str(exc).replace("the fork point", "--at"))
        fork = await get_run(world, result.run_id, resolve_data=False)
        _load_code_of(fork, paths)
        problem = None
        if fork.workflow_name in REGISTRY.workflows:
            report = await check_replay(world, result.run_id)
            problem = None if report.clean else report.summary()
    finally:
        await world.close()
    return result.run_id, result.events_kept, problem
