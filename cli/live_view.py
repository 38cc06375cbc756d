"""The live view of `wf dev`: recent runs, newest first, and the last things `wf dev` said.

Rich's Live redraws the view in place; anything else written to the terminal meanwhile
would scroll the old drawing up (a repeated header) and be drawn over. So while the view is
up, `wf dev`'s own messages (reloads, reload failures) and the warnings the runtime logs are
shown inside it, under the table, and nothing else writes to the terminal.
"""

from __future__ import annotations

import collections
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from rich.console import Group, RenderableType
from rich.text import Text

from ..runtime.entities import utcnow
from ..runtime.flow_control import waiting_for_slots
from ..runtime.world import World
from .render import clip, error_line, fit_table, short_name, style_of

#: Runs shown, and messages kept under them.
RUNS_SHOWN = 12
MESSAGES_SHOWN = 6


class Messages:
    """The last few lines `wf dev` wants the user to see, with the time they came."""

    def __init__(self, keep: int = MESSAGES_SHOWN) -> None:
        self.lines: collections.deque[tuple[float, str, str]] = collections.deque(maxlen=keep)

    def add(self, text: str, style: str = "") -> None:
        self.lines.append((time.time(), text, style))

    def render(self) -> RenderableType:
        out = Text()
        for at, text, style in self.lines:
            out.append(time.strftime("%H:%M:%S ", time.localtime(at)), style="dim")
            out.append(text + "\n", style=style)
        return out


def message_style(text: str) -> str:
    """Red for failures, yellow for warnings, plain otherwise."""
    lowered = text.lower()
    if "failed" in lowered or "error" in lowered:
        return "red"
    if "warning" in lowered or "skipped" in lowered:
        return "yellow"
    return ""


class _ToMessages(logging.Handler):
    def __init__(self, messages: Messages) -> None:
        super().__init__(logging.WARNING)
        self.messages = messages

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = f"{record.levelname.lower()}: {record.getMessage()}"
        except Exception:  # noqa: BLE001 - a bad log call must not break the view
            return
        self.messages.add(text.splitlines()[0], "red" if record.levelno >= logging.ERROR else "yellow")


@contextmanager
def logs_into(messages: Messages) -> Iterator[None]:
    """While inside, log records go to `messages` instead of the terminal's stream handlers."""
    root = logging.getLogger()
    streams = [h for h in root.handlers if isinstance(h, logging.StreamHandler)
               and not isinstance(h, logging.FileHandler)]
    handler = _ToMessages(messages)
    for h in streams:
        root.removeHandler(h)
    root.addHandler(handler)
    try:
        yield
    finally:
        root.removeHandler(handler)
        for h in streams:
            root.addHandler(h)


async def render_view(world: World, messages: Messages, width: int, header: str = "wf dev — recent runs") -> Group:
    """The header, the table of recent runs (ids whole, at any width), and the messages."""
    page = await world.runs.list(limit=RUNS_SHOWN, resolve_data=False)
    now = utcnow()
    rows: list[list[str | Text]] = []
    for run in page.data:
        steps = (await world.steps.list(run.run_id, resolve_data=False)).data
        done = sum(1 for s in steps if s.status in ("completed", "failed"))
        age = (now - run.created_at).total_seconds() if run.created_at else 0.0
        rows.append([run.run_id, short_name(run.workflow_name), Text(str(run.status), style=style_of(run.status)),
                     f"{done}/{len(steps)}", await run_detail(world, run, steps), f"{age:,.0f}s"])
    parts: list[RenderableType] = [Text(header, style="bold")]
    if rows:
        parts.append(fit_table(["run", "workflow", "status", "steps", "waiting on / error", "age"], rows,
                               ("workflow", "waiting on / error"), width))
    else:
        parts.append(Text("no runs yet: start one with `wf start WORKFLOW ARGS…` or from the web UI", style="dim"))
    if messages.lines:
        parts.append(messages.render())
    return Group(*parts)


async def run_detail(world: World, run: Any, steps: list[Any]) -> str | Text:
    """What an active run waits for (steps, a retry, a timer, a hook), or why a failed run failed."""
    if run.status == "failed":
        return Text(clip(error_line(run.error), limit=200), style="red")
    if run.status.terminal:
        return ""
    running = [s.step_name.rsplit(".", 1)[-1] for s in steps if s.status == "running"]
    if running:
        return "step " + ", ".join(running[:2])
    retrying = [s for s in steps if s.status == "pending" and s.retry_after is not None]
    if retrying:
        first = min(retrying, key=lambda s: s.retry_after)
        return f"{first.step_name.rsplit('.', 1)[-1]}: retry at {first.retry_after.astimezone():%H:%M:%S}"
    waits = [w for w in (await world.waits.list(run_id=run.run_id)).data if w.status == "waiting"]
    if waits:
        return f"sleep until {min(w.resume_at for w in waits).astimezone():%H:%M:%S}"
    hooks = [h for h in (await world.hooks.list(run_id=run.run_id)).data if h.status == "active"]
    if hooks:
        return "hook " + hooks[0].token
    slots = await waiting_for_slots(world, run.run_id)
    if slots:
        return slots[0]
    pending = [s.step_name.rsplit(".", 1)[-1] for s in steps if s.status == "pending"]
    if pending:
        return "queued step " + ", ".join(pending[:2])
    return ""
