"""`wf schedule ls | pause | resume | trigger | rm`: the schedules workers fire (runtime/schedules.py)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from ...runtime.entities import utcnow
from ...runtime.errors import NotFoundError
from ...runtime.flow_contract import ScheduleRecord
from ...runtime.schedules import describe, fire_slot
from ...runtime.world import World
from ..common import DATA_DIR, WORLD, console, fail, handle_errors, open_world, print_json, run_async

schedule_app = typer.Typer(help="List, pause, resume, trigger and remove schedules.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    """Add `wf schedule ...` to the app."""
    app.add_typer(schedule_app, name="schedule")
    schedule_app.command("ls")(ls)
    schedule_app.command("pause")(pause)
    schedule_app.command("resume")(resume)
    schedule_app.command("trigger")(trigger)
    schedule_app.command("rm")(rm)


def _open(data_dir: Path | None, world_url: str | None) -> World:
    world = open_world(data_dir, world_url, create=False)
    if "schedules" not in world.capabilities:
        fail(f"{type(world).__name__} has no schedules (the 'schedules' capability)")
    return world


def _as_json(record: ScheduleRecord) -> dict[str, object]:
    spec = record.spec
    return {"schedule_id": record.schedule_id, "workflow": spec.get("workflow_name"), "when": describe(record),
            "catchup": spec.get("catchup"), "paused": record.paused, "next_at": record.next_at.isoformat(),
            "created_at": record.created_at.isoformat() if record.created_at else None}


# --- wf schedule ls ---


@handle_errors
def ls(
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
    data_dir: Path = DATA_DIR,
    world_url: str = WORLD,
) -> None:
    """List the schedules: workflow, when, next slot, paused or not."""
    run_async(_ls(_open(data_dir, world_url), as_json))


async def _ls(world: World, as_json: bool) -> None:
    try:
        records = await world.schedules.list()
    finally:
        await world.close()
    if as_json:
        print_json([_as_json(r) for r in records])
        return
    if not records:
        console.print("no schedules")
        return
    table = Table(box=None, pad_edge=False)
    for column in ("SCHEDULE", "WORKFLOW", "WHEN", "CATCHUP", "NEXT", "STATE"):
        table.add_column(column, no_wrap=column != "WORKFLOW")
    now = utcnow()
    for r in records:
        wait = (r.next_at - now).total_seconds()
        nxt = f"{r.next_at:%Y-%m-%d %H:%M:%S}Z" + (f" (in {wait:.0f}s)" if 0 <= wait < 3600 else "")
        table.add_row(r.schedule_id, str(r.spec.get("workflow_name")), describe(r), str(r.spec.get("catchup")),
                      nxt, "paused" if r.paused else "active")
    console.print(table)


# --- wf schedule pause / resume ---


@handle_errors
def pause(
    schedule_id: str = typer.Argument(..., help="The schedule to pause."),
    data_dir: Path = DATA_DIR,
    world_url: str = WORLD,
) -> None:
    """Stop firing a schedule (its slots pass unfired until it is resumed; `catchup` decides then)."""
    run_async(_set_paused(_open(data_dir, world_url), schedule_id, True))


@handle_errors
def resume(
    schedule_id: str = typer.Argument(..., help="The schedule to resume."),
    data_dir: Path = DATA_DIR,
    world_url: str = WORLD,
) -> None:
    """Fire a paused schedule again."""
    run_async(_set_paused(_open(data_dir, world_url), schedule_id, False))


async def _set_paused(world: World, schedule_id: str, paused: bool) -> None:
    try:
        await world.schedules.set_paused(schedule_id, paused)
    except NotFoundError:
        fail(f"no schedule {schedule_id!r} (see wf schedule ls)")
    finally:
        await world.close()
    console.print(f"{'paused' if paused else 'resumed'} schedule {schedule_id}", markup=False)


# --- wf schedule trigger ---


@handle_errors
def trigger(
    schedule_id: str = typer.Argument(..., help="The schedule whose workflow to start now."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
    data_dir: Path = DATA_DIR,
    world_url: str = WORLD,
) -> None:
    """Start one run of the schedule's workflow now, outside its slots (its cursor does not move)."""
    run_async(_trigger(_open(data_dir, world_url), schedule_id, as_json))


async def _trigger(world: World, schedule_id: str, as_json: bool) -> None:
    try:
        try:
            record = await world.schedules.get(schedule_id)
        except NotFoundError:
            fail(f"no schedule {schedule_id!r} (see wf schedule ls)")
        run_id = await fire_slot(world, record, None)
    finally:
        await world.close()
    if as_json:
        print_json({"schedule_id": schedule_id, "run_id": run_id})
    else:
        console.print(f"started run {run_id} of schedule {schedule_id}", markup=False)


# --- wf schedule rm ---


@handle_errors
def rm(
    schedule_id: str = typer.Argument(..., help="The schedule to remove."),
    data_dir: Path = DATA_DIR,
    world_url: str = WORLD,
) -> None:
    """Remove a schedule (runs it started are kept). A program that declares it again re-creates it."""
    run_async(_rm(_open(data_dir, world_url), schedule_id))


async def _rm(world: World, schedule_id: str) -> None:
    try:
        if not await world.schedules.delete(schedule_id):
            fail(f"no schedule {schedule_id!r} (see wf schedule ls)")
    finally:
        await world.close()
    console.print(f"removed schedule {schedule_id}", markup=False)
