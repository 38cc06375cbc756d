"""`wf inspect RUN_ID` (the story of one run) and `wf inspect runs|steps|events|hooks|waits` (listings)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.table import Table
from rich.text import Text

from ...runtime.entities import Event, Hook, Run, Step, Wait, utcnow
from ...runtime.run_search import RunFilter, parse_tag_filters, parse_when
from ...runtime.world import World
from ..common import DATA_DIR, WORLD, console, fail, handle_errors, open_world, print_json, run_async
from ..listings import KINDS, Filters, Listing, list_kind
from ..render import between, clip, duration, error_line, fit_table, short_name, style_of, when_short
from ..run_report import attribute_text, render_story
from ..run_story import load_story, story_json

HELP = (
    "Show the story of one run, or list runs, steps, events, hooks or waits.\n\n"
    "[bold]wf inspect RUN_ID[/]: header (workflow, status, input, output or error with its traceback, times, "
    "attributes), steps, hooks, waits, streams, a timeline, each entity's path through its states, and the event "
    "log. Long payloads are cut; [bold]--full[/] shows them whole.\n\n"
    "[bold]wf inspect runs|steps|events|hooks|waits[/]: a listing, newest first, filtered by [bold]--status[/], "
    "[bold]--workflow[/], [bold]--run[/] (and [bold]--type[/] for events). Runs also by [bold]--since[/]/"
    "[bold]--until[/] (a time, or a duration ago: 2h), [bold]--search[/] TEXT (id, input, output, error) and "
    "[bold]--tag[/] KEY=VALUE, with counts per status. [bold]--limit[/] items a page; pass the "
    "printed next cursor to [bold]--cursor[/] for the next page."
)


def register(app: typer.Typer) -> None:
    """Add `wf inspect` to the app."""
    app.command("inspect", help=HELP)(inspect)


@handle_errors
def inspect(
    target: str = typer.Argument(..., metavar="RUN_ID|runs|steps|events|hooks|waits",
                                 help="A run id, or what to list."),
    status: str = typer.Option(None, "--status", help="Listings: only items with this status."),
    workflow: str = typer.Option(None, "--workflow", help="Listings: only runs of this workflow (full name)."),
    run: str = typer.Option(None, "--run", help="Listings of steps/events/hooks/waits: only this run."),
    event_type: str = typer.Option(None, "--type", help="`inspect events`: only this event type."),
    since: str = typer.Option(None, "--since", help="`inspect runs`: created at or after this time "
                              "(2026-01-31T12:00) or this long ago (2h, 30m, 1d)."),
    until: str = typer.Option(None, "--until", help="`inspect runs`: created at or before this time or this long ago."),
    search: str = typer.Option(None, "--search", "-s", help="`inspect runs`: runs whose id, input, output or error "
                               "holds this text (any case)."),
    tag: list[str] = typer.Option(None, "--tag", help="`inspect runs`: runs tagged KEY=VALUE (or KEY, any value); "
                                  "repeatable."),
    limit: int = typer.Option(20, "--limit", "-n", help="Listings: items per page."),
    cursor: str = typer.Option(None, "--cursor", help="Listings: carry on from a previous page's next cursor."),
    full: bool = typer.Option(False, "--full", help="Show long payloads and every event whole."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
    data_dir: Path = DATA_DIR,
    world_url: str = WORLD,
) -> None:
    if target not in KINDS:
        given = [name for name, value in (("--status", status), ("--workflow", workflow), ("--run", run),
                                          ("--type", event_type), ("--cursor", cursor), ("--since", since),
                                          ("--until", until), ("--search", search), ("--tag", tag or None))
                 if value is not None]
        if given:
            fail(f"{', '.join(given)} apply to listings (wf inspect runs|steps|events|hooks|waits), not to a run id")
    world = open_world(data_dir, world_url, create=False)
    run_filter = run_filter_of(target, since, until, search, tag or [])
    if target in KINDS:
        filters = Filters(status=status, workflow=workflow, run=run, event_type=event_type, runs=run_filter)
        run_async(_listing(world, target, filters, limit, cursor, as_json))
    else:
        run_async(_story(world, target, full, as_json))


def run_filter_of(target: str, since: str | None, until: str | None, search: str | None,
                  tags: list[str]) -> RunFilter:
    """The run filters of the command line; exit 2 for a bad time or tag, or when listing something else."""
    if target != "runs" and target in KINDS and (since or until or search or tags):
        fail("--since, --until, --search and --tag apply to `wf inspect runs`")
    try:
        return RunFilter(since=parse_when(since) if since else None, until=parse_when(until) if until else None,
                         search=search or None, tags=parse_tag_filters(tags))
    except ValueError as exc:
        fail(f"{exc}")


async def _story(world: World, run_id: str, full: bool, as_json: bool) -> None:
    try:
        story = await load_story(world, run_id)
    finally:
        await world.close()
    if as_json:
        print_json(story_json(story))
    else:
        render_story(console, story, full=full)


async def _listing(world: World, kind: str, filters: Filters, limit: int, cursor: str | None, as_json: bool) -> None:
    try:
        listing = await list_kind(world, kind, filters, limit, cursor)
    finally:
        await world.close()
    if as_json:
        doc = {"kind": kind, "items": [_item_json(i) for i in listing.items], "next_cursor": listing.next_cursor}
        if listing.counts is not None:
            doc["counts"] = listing.counts
        print_json(doc)
        return
    if not listing.items:
        console.print(f"no {kind} found", style="dim")
    else:
        console.print(_table(listing))
    if listing.next_cursor:
        console.print(Text(f"next page: --cursor {listing.next_cursor}", style="dim"))
    if listing.counts is not None:
        console.print(Text(counts_line(listing.counts), style="dim"))


def counts_line(counts: dict[str, int]) -> str:
    """`3 completed · 1 failed · 2 running` (statuses with no run left out)."""
    shown = [f"{n} {status}" for status, n in counts.items() if n]
    return "runs by status: " + (" · ".join(shown) if shown else "none")


def _item_json(item: Any) -> dict[str, Any]:
    data = item.to_dict()
    for key in ("input", "output"):
        data.pop(key, None)  # listings leave payloads out: `wf inspect RUN_ID --json` has them
    if isinstance(item, Event):
        data.pop("data", None)
    return data


def _table(listing: Listing) -> Table:
    """The listing as a borderless table; ids, statuses and times are never cut, names and errors
    are shortened with … when the terminal is too narrow."""
    now = utcnow()
    items = listing.items
    headers: list[str]
    elastic: tuple[str, ...] = ()
    rows: list[list[str | Text]] = []
    if listing.kind == "runs":
        with_error = any(run.error for run in items)
        with_tags = any(run.attributes.get("tags") for run in items)
        headers = ["run id", "workflow", "status", "created", "duration", *(["tags"] if with_tags else []),
                   *(["error"] if with_error else [])]
        elastic = ("workflow", "tags", "error")
        for run in items:
            assert isinstance(run, Run)
            end = run.completed_at or (None if run.status.terminal else now)
            row: list[str | Text] = [run.run_id, short_name(run.workflow_name),
                                     Text(str(run.status), style=style_of(run.status)), when_short(run.created_at),
                                     duration(between(run.created_at, end))]
            if with_tags:
                row.append(attribute_text("tags", run.attributes.get("tags") or {}))
            if with_error:
                row.append(Text(clip(error_line(run.error), limit=80), style="red"))
            rows.append(row)
    elif listing.kind == "steps":
        with_error = any(step.error for step in items)
        headers = ["run id", "step", "name", "status", "attempts", "duration", *(["last error"] if with_error else [])]
        elastic = ("name", "last error")
        for step in items:
            assert isinstance(step, Step)
            end = step.completed_at or (None if step.status.terminal else now)
            row = [step.run_id, step.step_id, short_name(step.step_name),
                   Text(str(step.status), style=style_of(step.status)), str(step.attempt),
                   duration(between(step.started_at, end))]
            if with_error:
                row.append(Text(clip(error_line(step.error), limit=80), style="red"))
            rows.append(row)
    elif listing.kind == "events":
        headers = ["run id", "seq", "time", "type", "correlation"]
        for event in items:
            assert isinstance(event, Event)
            rows.append([event.run_id, str(event.seq), when_short(event.created_at), str(event.event_type),
                         event.correlation_id or ""])
    elif listing.kind == "hooks":
        headers = ["run id", "hook", "token", "status", "received", "created"]
        elastic = ("token",)
        for hook in items:
            assert isinstance(hook, Hook)
            rows.append([hook.run_id, hook.hook_id, clip(hook.token, limit=60),
                         Text(str(hook.status), style=style_of(hook.status)), str(hook.received_count),
                         when_short(hook.created_at)])
    else:
        headers = ["run id", "wait", "status", "resume at", "ended"]
        for wait in items:
            assert isinstance(wait, Wait)
            rows.append([wait.run_id, wait.wait_id, Text(str(wait.status), style=style_of(wait.status)),
                         when_short(wait.resume_at), when_short(wait.completed_at)])
    return fit_table(headers, rows, elastic, console.width)
