"""`wf inspect RUN_ID` on a terminal: the story of a run in sections.

Header (workflow, status, input, output or error with its traceback, times, attributes),
steps, hooks, waits, streams, the timeline, each entity's path through its states, and
the event log. Payloads are cut to one line unless `full`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from rich.console import Console, Group, RenderableType
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from ..runtime.entities import Event, EventType
from ..runtime.state_paths import state_paths
from .render import (
    between,
    call_text,
    clip,
    duration,
    error_line,
    offset,
    payload_text,
    short_name,
    style_of,
    when,
)
from .run_story import RunStory
from .timeline import draw_timeline, timeline_rows

E = EventType
#: Without --full, longer event logs show their first and last this many events.
EVENTS_SHOWN = 100
#: Attributes every run has that say nothing to a reader.
_HIDDEN_ATTRIBUTES = {"seed"}


def attribute_text(key: str, value: Any) -> str:
    """A run attribute as shown: tags as `k=v, …`, the code's origin as its file (and module)."""
    if key == "tags" and isinstance(value, dict):
        return ", ".join(f"{k}={v}" for k, v in sorted(value.items()))
    if key == "code" and isinstance(value, dict):
        file, module = value.get("file"), value.get("module")
        return f"{file} (module {module})" if file else str(module)
    return str(value)


def render_story(console: Console, story: RunStory, *, full: bool = False) -> None:
    """Print every section of the run's story."""
    width = console.width
    limit = max(40, width - 40)
    console.print(header(story, full=full, limit=limit))
    sections: list[tuple[str, RenderableType | None]] = [
        ("Steps", steps_table(story, full=full, limit=limit)),
        ("Hooks", hooks_table(story, full=full, limit=limit)),
        ("Children", children_table(story)),
        ("Waits", waits_table(story)),
        ("Streams", streams_table(story)),
    ]
    for title, body in sections:
        if body is not None:
            console.print(Text(title, style="bold underline"))
            console.print(body)
    rows = timeline_rows(story.events, story.now)
    if rows:
        console.print(Text("Timeline", style="bold underline"))
        console.print(draw_timeline(rows, width - 1), soft_wrap=True)
    console.print(Text("State paths", style="bold underline"))
    console.print(paths_table(story))
    console.print(Text(f"Event log ({len(story.events)} events)", style="bold underline"))
    console.print(events_table(story, full=full, limit=max(30, width - 58)))


def header(story: RunStory, *, full: bool, limit: int) -> Panel:
    run = story.run
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column(overflow="fold")
    grid.add_row("workflow", run.workflow_name)
    grid.add_row("status", Text(str(run.status), style=style_of(run.status)))
    for line in story.waiting:
        grid.add_row("waiting", Text(line, style="yellow"))
    grid.add_row("input", call_text(run.input, full=full, limit=limit))
    if run.output is not None or str(run.status) == "completed":
        grid.add_row("output", payload_text(run.output, full=full, limit=limit))
    if run.error:
        grid.add_row("error", Text(error_line(run.error), style="red"))
    grid.add_row("created", when(run.created_at))
    grid.add_row("started", when(run.started_at))
    grid.add_row("ended", when(run.completed_at))
    total = story.duration()
    grid.add_row("duration", duration(total) + ("" if run.status.terminal else " so far"))
    for key, value in sorted(run.attributes.items()):
        if key not in _HIDDEN_ATTRIBUTES:
            grid.add_row(key.replace("_", " "), clip(attribute_text(key, value), full=full, limit=limit))
    parts: list[RenderableType] = [grid]
    if run.error:
        parts.extend(_traceback_lines(run.error))
    return Panel(Group(*parts), title=f"run {run.run_id}", title_align="left", border_style=style_of(run.status))


def _traceback_lines(error: dict[str, Any]) -> list[RenderableType]:
    out: list[RenderableType] = []
    tb = str(error.get("traceback") or "").rstrip()
    if tb:
        out.append(Text("traceback (user code):", style="bold"))
        out.append(Text(tb, style="red"))
    cause = error.get("step_error")
    if isinstance(cause, dict):
        out.append(Text(f"caused by the step's error: {error_line(cause)}", style="bold"))
        ctb = str(cause.get("traceback") or "").rstrip()
        if ctb:
            out.append(Text(ctb, style="red"))
    return out


def children_table(story: RunStory) -> Table | None:
    """The child runs the run started: id, workflow, status, duration."""
    if not story.children:
        return None
    table = Table(show_edge=False, pad_edge=False)
    for name in ("run", "workflow", "status", "duration"):
        table.add_column(name, no_wrap=name != "workflow")
    for child in story.children:
        end = child.completed_at or (None if child.status.terminal else story.now)
        status = Text(str(child.status), style=style_of(child.status))
        table.add_row(child.run_id, short_name(child.workflow_name), status, duration(between(child.created_at, end)))
    return table


def steps_table(story: RunStory, *, full: bool, limit: int) -> Table | None:
    if not story.own_steps:
        return None
    table = Table(show_edge=False, pad_edge=False, expand=False)
    for name in ("id", "name", "status", "attempts", "duration", "input", "output / last error"):
        table.add_column(name, overflow="fold", no_wrap=name in ("id", "status", "attempts", "duration"))
    cell = max(20, limit // 2)
    for step in story.own_steps:
        if step.status == "completed":
            result = Text(payload_text(step.output, full=full, limit=cell))
        elif step.error:
            retry = f" (retry at {offset(story.run.created_at, step.retry_after)})" if step.retry_after else ""
            result = Text(clip(error_line(step.error), full=full, limit=cell) + retry, style="red")
        else:
            result = Text("")
        end = step.completed_at or (None if step.status.terminal else story.now)
        table.add_row(
            step.step_id, short_name(step.step_name), Text(str(step.status), style=style_of(step.status)),
            str(step.attempt), duration(between(step.started_at, end)),
            call_text(step.input, full=full, limit=cell), result,
        )
    return table


def hooks_table(story: RunStory, *, full: bool, limit: int) -> Table | None:
    if not story.own_hooks:
        return None
    received: dict[str, list[str]] = {}
    for event in story.events:
        if event.event_type == E.HOOK_RECEIVED:
            received.setdefault(event.correlation_id or "", []).append(
                payload_text(event.data.get("payload"), full=full, limit=max(20, limit // 3)))
    table = Table(show_edge=False, pad_edge=False)
    for name in ("id", "token", "status", "received", "payloads"):
        table.add_column(name, overflow="fold")
    for hook in story.own_hooks:
        payloads = received.get(hook.hook_id, [])
        table.add_row(hook.hook_id, clip(hook.token, full=full, limit=60),
                      Text(str(hook.status), style=style_of(hook.status)), str(hook.received_count),
                      "\n".join(payloads) if payloads else "-")
    return table


def waits_table(story: RunStory) -> Table | None:
    if not story.waits:
        return None
    table = Table(show_edge=False, pad_edge=False)
    for name in ("id", "status", "resume at", "", "ended"):
        table.add_column(name)
    origin = story.run.created_at
    for wait in story.waits:
        table.add_row(wait.wait_id, Text(str(wait.status), style=style_of(wait.status)), when(wait.resume_at),
                      offset(origin, wait.resume_at), when(wait.completed_at))
    return table


def streams_table(story: RunStory) -> Table | None:
    if not story.streams:
        return None
    table = Table(show_edge=False, pad_edge=False)
    for name in ("stream", "chunks", "closed"):
        table.add_column(name)
    for info in story.streams:
        table.add_row(info.name, str(info.chunks), "yes" if info.closed else "no (still open)")
    return table


def paths_table(story: RunStory) -> Table:
    table = Table(show_edge=False, pad_edge=False, show_header=False)
    table.add_column(no_wrap=True)
    table.add_column(style="dim", no_wrap=True)
    table.add_column(overflow="fold")
    for path in state_paths(story.events):
        name = short_name(path.name) if path.kind in ("run", "step") else ""
        label = "run" if path.kind == "run" else path.entity_id
        states = Text()
        for i, state in enumerate(path.states):
            if i:
                states.append(" → ", style="dim")
            states.append(state, style=style_of(state.split(" ")[0]))
        table.add_row(label, name, states)
    return table


def events_table(story: RunStory, *, full: bool, limit: int) -> Table:
    events = story.events
    table = Table(show_edge=False, pad_edge=False)
    for name, justify in (("seq", "right"), ("time", "right"), ("type", "left"), ("correlation", "left"),
                          ("data", "left")):
        table.add_column(name, justify=justify, overflow="fold", no_wrap=name != "data")  # type: ignore[arg-type]
    origin = story.run.created_at
    shown: list[Event | None] = list(events)
    if not full and len(events) > 2 * EVENTS_SHOWN:
        shown = [*events[:EVENTS_SHOWN], None, *events[-EVENTS_SHOWN:]]
    for event in shown:
        if event is None:
            table.add_row("…", "", Text(f"{len(events) - 2 * EVENTS_SHOWN} events left out (--full shows all)",
                                        style="dim"), "", "")
            continue
        table.add_row(str(event.seq), offset(origin, event.created_at),
                      Text(str(event.event_type), style=_event_style(event.event_type)),
                      event.correlation_id or "", event_summary(event, origin, full=full, limit=limit))
    return table


def _event_style(et: EventType) -> str:
    if et in (E.RUN_FAILED, E.STEP_FAILED, E.HOOK_CONFLICT):
        return "red"
    if et == E.STEP_RETRYING:
        return "yellow"
    if et in (E.RUN_COMPLETED, E.STEP_COMPLETED):
        return "green"
    return ""


def event_summary(event: Event, origin: datetime | None, *, full: bool = False, limit: int = 80) -> str:
    """What an event says, in one short line."""
    data = event.data
    et = event.event_type
    if et == E.RUN_CREATED:
        return f"{data.get('workflow_name', '')}{call_text(data.get('input'), full=full, limit=limit)}"
    if et == E.RUN_COMPLETED:
        return payload_text(data.get("output"), full=full, limit=limit)
    if et in (E.RUN_FAILED, E.STEP_FAILED):
        return clip(error_line(data.get("error")), full=full, limit=limit)
    if et == E.RUN_CANCELLED:
        return str(data.get("reason") or "")
    if et == E.STEP_CREATED:
        return f"{short_name(str(data.get('step_name', '')))}{call_text(data.get('input'), full=full, limit=limit)}"
    if et == E.STEP_STARTED:
        return f"attempt {data['attempt']}" if "attempt" in data else ""
    if et == E.STEP_COMPLETED:
        return payload_text(data.get("result"), full=full, limit=limit)
    if et == E.STEP_RETRYING:
        retry = data.get("retry_after")
        at = offset(origin, datetime.fromisoformat(retry)) if isinstance(retry, str) else "?"
        return clip(error_line(data.get("error")), full=full, limit=limit) + f"; retry at {at}"
    if et in (E.HOOK_CREATED, E.HOOK_CONFLICT):
        return f"token {clip(str(data.get('token', '')), full=full, limit=limit)}"
    if et == E.HOOK_RECEIVED:
        return payload_text(data.get("payload"), full=full, limit=limit)
    if et == E.WAIT_CREATED:
        resume = data.get("resume_at")
        if isinstance(resume, str):
            return f"until {offset(origin, datetime.fromisoformat(resume))}"
    return clip(str(data), full=full, limit=limit) if data else ""
