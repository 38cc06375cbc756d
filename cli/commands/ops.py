"""Operator commands: cancel, hook resume, stream, queue ls/fail-pending/drain, recover, doctor."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import typer
from rich.table import Table
from rich.text import Text

from ...runtime.doctor import Finding, diagnose, repair
from ...runtime.entities import EventType, RunStatus, utcnow
from ...runtime.errors import (
    HookNotFoundError,
    NotFoundError,
    RunNotFoundError,
)
from ...runtime.operations import cancel_run, drain_workers, fail_pending, recover_runs
from ...runtime.streams import DEFAULT_STREAM
from ...runtime.world import Message, World
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
from ..render import decode, fit_table, jsonable, short_name, style_of
from ..run_story import checked_run_id

E = EventType

hook_app = typer.Typer(help="Send payloads to hooks.", no_args_is_help=True)
queue_app = typer.Typer(help="Look at and act on the work queue.", no_args_is_help=True)



def register(app: typer.Typer) -> None:
    """Add the operator commands to the app."""
    app.command("cancel")(cancel)
    app.command("stream")(stream)
    app.command("recover")(recover)
    app.command("doctor")(doctor)
    app.add_typer(hook_app, name="hook")
    app.add_typer(queue_app, name="queue")
    hook_app.command("resume")(hook_resume)
    queue_app.command("ls")(queue_ls)
    queue_app.command("fail-pending")(queue_fail_pending)
    queue_app.command("drain")(queue_drain)


async def _get_run(world: World, run_id: str) -> Any:
    checked_run_id(run_id)
    try:
        return await world.runs.get(run_id, resolve_data=False)
    except NotFoundError:
        raise RunNotFoundError(f"no run with id {run_id!r}") from None


# --- wf cancel ---


@handle_errors
def cancel(
    run_id: str = typer.Argument(..., help="The run to cancel."),
    reason: str = typer.Option(None, "--reason", help="Recorded with the cancellation."),
    children: bool = typer.Option(True, "--children/--no-children",
                                  help="Also cancel the child runs it still awaits (default), or leave them running."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
    data_dir: Path = DATA_DIR,
    world_url: str = WORLD,
) -> None:
    """Cancel a run: it ends as cancelled; steps in flight may finish, its sleeps and hooks are dropped.

    The child runs it still awaits are cancelled too, at any depth (--no-children detaches them:
    they run on, and their end reaches no one). Exit 1 if the run had already completed or failed.
    """
    world = open_world(data_dir, world_url, create=False)
    code = run_async(_cancel(world, run_id, reason, children, as_json))
    raise typer.Exit(code)


async def _cancel(world: World, run_id: str, reason: str | None, children: bool, as_json: bool) -> int:
    try:
        result = await cancel_run(world, run_id, reason=reason, children=children)
    finally:
        await world.close()
    if result.cancelled:
        message, code = f"cancelled run {run_id}", 0
        if result.children:
            message += f" and {len(result.children)} child run(s): {', '.join(result.children)}"
    elif result.status == RunStatus.CANCELLED:
        message, code = f"run {run_id} was already cancelled", 0
    else:
        message, code = f"run {run_id} already {result.status}: nothing to cancel", EXIT_CHECK_FAILED
    if as_json:
        print_json({"run_id": run_id, "status": str(result.status), "message": message,
                    "children_cancelled": result.children})
    elif code:
        err_console.print(message, markup=False)
    else:
        console.print(message, markup=False)
    return code


# --- wf hook resume ---


@handle_errors
def hook_resume(
    token: str = typer.Argument(..., help="The hook's token."),
    payload: str = typer.Argument(..., help="The payload, a JSON value."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
    data_dir: Path = DATA_DIR,
    world_url: str = WORLD,
) -> None:
    """Send a JSON payload to the live hook holding TOKEN (exit 2 if no live hook holds it)."""
    value = parse_json_arg(payload, "the payload")
    world = open_world(data_dir, world_url, create=False)
    run_async(_hook_resume(world, token, value, as_json))


async def _hook_resume(world: World, token: str, value: Any, as_json: bool) -> None:
    from ...runtime.client import resume_hook_in

    try:
        try:
            hook = await world.hooks.get_by_token(token)
            await resume_hook_in(world, token, value)
        except (NotFoundError, HookNotFoundError):
            fail(f"no live hook has token {token!r}: it may not exist yet (its run has not reached it: "
                 "try again in a moment), its run may have ended, or the token is misspelt")
    finally:
        await world.close()
    if as_json:
        print_json({"token": token, "run_id": hook.run_id, "hook_id": hook.hook_id})
    else:
        console.print(f"delivered to hook {hook.hook_id} of run {hook.run_id}", markup=False)


# --- wf stream ---


@handle_errors
def stream(
    run_id: str = typer.Argument(..., help="The run whose stream to print."),
    namespace: str = typer.Option(None, "--namespace", "-n", help=f"Which stream (default {DEFAULT_STREAM!r})."),
    start: int = typer.Option(0, "--from", min=0, help="Start at this chunk index."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per chunk: {index, chunk}."),
    data_dir: Path = DATA_DIR,
    world_url: str = WORLD,
) -> None:
    """Print a run's stream live, until it is closed or the run ends.

    Text and UTF-8 bytes are written as they are; other values one JSON line each.
    """
    world = open_world(data_dir, world_url, create=False)
    run_async(_stream(world, run_id, namespace or DEFAULT_STREAM, start, as_json))


async def _stream(world: World, run_id: str, name: str, start: int, as_json: bool) -> None:
    from ...runtime.serving import no_live_worker, no_worker_hint

    try:
        run = await _get_run(world, run_id)
        if run.status.terminal:
            names = [s.name for s in await world.streams.list(run_id)]
            if name not in names:
                others = f"; its streams: {', '.join(names)}" if names else "; it wrote no stream"
                fail(f"run {run_id} has no stream {name!r}{others}")
        elif await no_live_worker(world):
            err_console.print(f"note: run {run_id} is {run.status} and {no_worker_hint(run)}; waiting for its "
                              "stream (Ctrl-C to stop)", markup=False)
        out = _ChunkPrinter(as_json, start)
        index = start
        while True:
            got = False
            async for chunk in world.streams.tail(run_id, name, start=index, timeout=0.5):
                got = True
                index += 1
                out.write(chunk)
            chunks, closed = await world.streams.read(run_id, name, start=index)
            for chunk in chunks:
                index += 1
                out.write(chunk)
            if closed:
                break
            if not got and not chunks and (await world.runs.get(run_id, resolve_data=False)).status.terminal:
                break
        out.finish()
    finally:
        await world.close()


class _ChunkPrinter:
    def __init__(self, as_json: bool, start: int) -> None:
        self.as_json = as_json
        self.index = start
        self.at_line_start = True

    def write(self, data: Any) -> None:
        value, _ = decode(data)
        if self.as_json:
            text = _json_line({"index": self.index, "chunk": jsonable(value)})
        elif isinstance(value, str):
            text = value
        elif isinstance(value, bytes | bytearray):
            text = bytes(value).decode("utf-8", errors="backslashreplace")
        else:
            text = ("" if self.at_line_start else "\n") + _json_line(jsonable(value))
        self.index += 1
        if text:
            sys.stdout.write(text)
            sys.stdout.flush()
            self.at_line_start = text.endswith("\n")

    def finish(self) -> None:
        if not self.at_line_start:
            sys.stdout.write("\n")
            sys.stdout.flush()


def _json_line(value: Any) -> str:
    import json

    return json.dumps(value, ensure_ascii=False, default=repr) + "\n"


# --- wf queue ls ---


@handle_errors
def queue_ls(
    queue: str = typer.Option(None, "--queue", "-q", help="Only this queue (workflow or step)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
    data_dir: Path = DATA_DIR,
    world_url: str = WORLD,
) -> None:
    """List queued messages (ready, delayed, leased), the oldest run's first."""
    world = open_world(data_dir, world_url, create=False)
    run_async(_queue_ls(world, queue, as_json))


async def _queue_ls(world: World, queue: str | None, as_json: bool) -> None:
    try:
        messages = await world.queue.list(queue)
    finally:
        await world.close()
    if as_json:
        print_json([_message_json(m) for m in messages])
        return
    if not messages:
        console.print("the queue is empty", style="dim")
        return
    now = utcnow()
    rows: list[list[str | Text]] = []
    for m in messages:
        due = (m.available_at - now).total_seconds()
        rows.append([str(m.payload.get("run_id", "")), str(m.payload.get("step_id", "")), m.queue,
                     Text(m.state, style=style_of(m.state)), str(m.attempts), f"in {due:.1f}s" if due > 0 else "now",
                     f"{(m.lease_until - now).total_seconds():.0f}s left" if m.lease_until else "", m.message_id])
    table = fit_table(["run", "step", "queue", "state", "attempts", "available", "lease", "message"], rows,
                      ("message",), console.width)
    console.print(table)
    counts = {state: sum(1 for m in messages if m.state == state) for state in ("ready", "delayed", "leased")}
    console.print(Text(", ".join(f"{n} {state}" for state, n in counts.items()), style="dim"))


def _message_json(m: Message) -> dict[str, Any]:
    return {
        "message_id": m.message_id, "queue": m.queue, "state": m.state, "payload": m.payload,
        "order_key": m.order_key, "available_at": m.available_at.isoformat(), "attempts": m.attempts,
        "idempotency_key": m.idempotency_key,
        "lease_until": m.lease_until.isoformat() if m.lease_until else None, **m.extra,
    }


# --- wf queue fail-pending ---


@handle_errors
def queue_fail_pending(
    run: str = typer.Option(None, "--run", help="Only the steps of this run."),
    workflow: str = typer.Option(None, "--workflow", help="Only the steps of runs of this workflow (full name)."),
    all_: bool = typer.Option(False, "--all", help="Every queued step, of every run."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
    data_dir: Path = DATA_DIR,
    world_url: str = WORLD,
) -> None:
    """Fail the queued steps so that their runs end (as failures) instead of hanging.

    Each queued step message that matches: the step is recorded failed with an operator
    error, the message removed, and the run's workflow message enqueued, so that the next
    worker lets the workflow see the failure. Steps leased by a live worker (running now)
    are left alone. Name --run, --workflow or --all.
    """
    if run is None and workflow is None and not all_:
        fail("name the steps to fail: --run RUN_ID, --workflow NAME, or --all")
    if run is not None:
        checked_run_id(run)
    world = open_world(data_dir, world_url, create=False)
    run_async(_fail_pending(world, run, workflow, as_json))


async def _fail_pending(world: World, run_filter: str | None, workflow: str | None, as_json: bool) -> None:
    try:
        results = await fail_pending(world, run_id=run_filter, workflow=workflow)
    finally:
        await world.close()
    failed = [r for r in results if r.failed]
    skipped = [r for r in results if not r.failed]
    if as_json:
        print_json({
            "failed": [{"run_id": r.run_id, "step_id": r.step_id, "message_id": r.message_id, "outcome": r.outcome}
                       for r in failed],
            "skipped": [{"run_id": r.run_id, "step_id": r.step_id, "message_id": r.message_id, "why": r.outcome}
                        for r in skipped],
        })
        return
    if not results:
        console.print("no queued step matches", style="dim")
    for r in failed:
        console.print(f"{r.run_id} {r.step_id}: {r.outcome}", markup=False)
    for r in skipped:
        console.print(f"{r.run_id} {r.step_id}: {r.outcome}", markup=False, style="dim")


# --- wf queue drain ---


@handle_errors
def queue_drain(
    wait: float = typer.Option(None, "--wait", help="Wait up to this many seconds for the workers to exit."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
    data_dir: Path = DATA_DIR,
    world_url: str = WORLD,
) -> None:
    """Ask every running worker to finish its in-flight work and exit (workers started later are not affected).

    With --wait, exit 1 if workers are still alive when the time is up.
    """
    world = open_world(data_dir, world_url, create=False)
    raise typer.Exit(run_async(_drain(world, wait, as_json)))


async def _drain(world: World, wait: float | None, as_json: bool) -> int:
    try:
        try:
            result = await drain_workers(world, wait=wait)
        except NotImplementedError as exc:
            fail(str(exc), EXIT_CHECK_FAILED)
    finally:
        await world.close()
    code = EXIT_CHECK_FAILED if result.still_running else 0
    if as_json:
        print_json({"generation": result.generation, "workers": result.workers,
                    "still_running": result.still_running})
    else:
        console.print(f"drain requested: {result.workers} live worker(s) finish their in-flight work and exit",
                      markup=False)
        if wait is not None:
            console.print("all workers have exited" if not result.still_running else
                          f"{result.still_running} worker(s) still running after {wait}s", markup=False)
    return code


# --- wf recover ---


@handle_errors
def recover(
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
    data_dir: Path = DATA_DIR,
    world_url: str = WORLD,
) -> None:
    """Re-enqueue every active (pending or running) run, repairing views a crash left behind."""
    world = open_world(data_dir, world_url, create=False)
    run_async(_recover(world, as_json))


async def _recover(world: World, as_json: bool) -> None:
    try:
        active = await recover_runs(world)
    finally:
        await world.close()
    if as_json:
        print_json({"enqueued": len(active), "run_ids": [r.run_id for r in active]})
        return
    console.print(f"re-enqueued {len(active)} active run(s)", markup=False)
    for run in active[:20]:
        console.print(f"  {run.run_id} {short_name(run.workflow_name)} ({run.status})", markup=False, style="dim")


# --- wf doctor ---


@handle_errors
def doctor(
    fix: bool = typer.Option(False, "--fix", help="Repair what can be repaired, then check again."),
    run: list[str] = typer.Option(None, "--run", help="Check only these runs."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
    data_dir: Path = DATA_DIR,
    world_url: str = WORLD,
) -> None:
    """Check that every active run will be driven, views agree with logs, no lease is held by a dead process.

    Checks: "queue" (an active run that no message, step or live hook will drive again),
    "views" (a run, step, hook or wait that differs from its event log), "log" (an event log
    that cannot be read: restore it), "lease" (a message held by a dead worker). Notes, which
    do not fail the check, name active runs that no live worker will run. Exit 1 if a problem
    remains (with --fix: after repairing). The invariant is explained in the docstring of
    the module wf.runtime.doctor (runtime/doctor.py in the repository).
    """
    for run_id in run or []:
        checked_run_id(run_id)
    world = open_world(data_dir, world_url, create=False)
    raise typer.Exit(run_async(_doctor(world, fix, list(run) if run else None, as_json)))


async def _doctor(world: World, fix: bool, run_ids: list[str] | None, as_json: bool) -> int:
    from ...runtime.serving import worker_notes

    try:
        findings = await diagnose(world, run_ids)
        remaining = findings
        if fix and findings:
            await repair(world, findings)
            remaining = await diagnose(world, run_ids)
        notes = await worker_notes(world) if run_ids is None else []
    finally:
        await world.close()
    if as_json:
        print_json({"findings": [f.to_dict() for f in findings], "remaining": [f.to_dict() for f in remaining],
                    "notes": notes})
        return EXIT_CHECK_FAILED if remaining else 0
    if not findings:
        console.print("no problems found", style="green")
    else:
        console.print(_findings_table(findings, fix))
        if fix:
            if remaining:
                console.print(f"{len(remaining)} problem(s) remain after repair", style="red")
            else:
                console.print("all problems repaired", style="green")
        else:
            fixable = sum(1 for f in findings if _fixable(f))
            if fixable == len(findings):
                console.print(f"{len(findings)} problem(s); `wf doctor --fix` repairs them", style="red")
            elif fixable:
                console.print(f"{len(findings)} problem(s); `wf doctor --fix` repairs {fixable} of them "
                              "(the others say what to do)", style="red")
            else:
                console.print(f"{len(findings)} problem(s) that `wf doctor --fix` cannot repair "
                              "(each says what to do)", style="red")
    for note in notes:
        console.print(f"note: {note}", markup=False, style="yellow")
    return EXIT_CHECK_FAILED if remaining else 0


def _fixable(finding: Finding) -> bool:
    """Whether `--fix` can act on the finding (a corrupt log, for one, it cannot)."""
    return finding.check in ("views", "queue", "lease") and not finding.fix.startswith("none")


def _findings_table(findings: list[Finding], fix: bool) -> Table:
    table = Table(show_edge=False, pad_edge=False, header_style="bold", expand=True)
    table.add_column("check", no_wrap=True)
    table.add_column("run", no_wrap=True)
    table.add_column("problem", overflow="fold", ratio=3)
    table.add_column("fixed" if fix else "fix", overflow="fold", ratio=1)
    for f in findings:
        outcome = ("yes: " + f.fix if f.fixed else "no: " + f.fix) if fix else f.fix
        table.add_row(f.check, f.run_id, f.problem, outcome)
    return table

