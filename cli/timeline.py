"""A run's timeline drawn in the terminal: one bar per step, wait and hook along the run's time axis.

    run         ━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━  1.0s
    step_1 flaky ━━╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌━           1.0s
    step_2 add                                            ━  2ms

`━` an attempt running (green: it completed, yellow: it failed and was retried, red: it
failed, cyan: still running), `─` queued (created, not started), `╌` waiting for a retry,
`┄` a sleep, `┈` a hook open and `◆` a payload it received. Times come from the events.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from rich.text import Text

from ..runtime.entities import Event, EventType
from .render import between, duration, short_name

E = EventType


@dataclass(slots=True)
class Segment:
    start: datetime
    end: datetime
    char: str
    style: str


@dataclass(slots=True)
class Row:
    label: str
    segments: list[Segment] = field(default_factory=list)
    marks: list[tuple[datetime, str, str]] = field(default_factory=list)

    def span(self) -> float | None:
        if not self.segments:
            return None
        return between(min(s.start for s in self.segments), max(s.end for s in self.segments))


_ATTEMPT_END_STYLE = {E.STEP_COMPLETED: "green", E.STEP_FAILED: "red", E.STEP_RETRYING: "yellow"}
_RUN_STYLE = {E.RUN_COMPLETED: "green", E.RUN_FAILED: "red", E.RUN_CANCELLED: "magenta"}


def timeline_rows(events: list[Event], now: datetime) -> list[Row]:
    """The rows of the timeline: the run, then every step, wait and hook in creation order."""
    rows: dict[tuple[str, str], Row] = {}
    open_: dict[tuple[str, str], tuple[datetime, str]] = {}  # what is in progress: since when, which char
    run_end: datetime | None = None
    for event in events:
        at = event.created_at
        if at is None:
            continue
        et = event.event_type
        cid = event.correlation_id or ""
        if et == E.RUN_CREATED:
            rows[("run", "")] = Row("run")
            open_[("run", "")] = (at, "queued")
        elif et == E.RUN_STARTED:
            _close(rows, open_, ("run", ""), at, "─", "dim")
            open_[("run", "")] = (at, "running")
        elif et in _RUN_STYLE:
            run_end = at
            _close(rows, open_, ("run", ""), at, "━", _RUN_STYLE[et])
            for key in list(open_):
                _close_open(rows, open_, key, at)
        elif et == E.STEP_CREATED:
            rows[("step", cid)] = Row(f"{cid} {short_name(str(event.data.get('step_name', '')))}")
            open_[("step", cid)] = (at, "queued")
        elif et == E.STEP_STARTED:
            key = ("step", cid)
            state = open_.get(key)
            if state is not None and state[1] == "running":  # restarted after a crash
                _close(rows, open_, key, at, "━", "red dim")
            else:
                _close(rows, open_, key, at, "─" if state is None or state[1] == "queued" else "╌", "dim")
            open_[key] = (at, "running")
        elif et in _ATTEMPT_END_STYLE:
            key = ("step", cid)
            _close(rows, open_, key, at, "━", _ATTEMPT_END_STYLE[et])
            if et == E.STEP_RETRYING:
                open_[key] = (at, "backoff")
        elif et == E.WAIT_CREATED:
            rows[("wait", cid)] = Row(f"{cid} sleep")
            open_[("wait", cid)] = (at, "sleep")
        elif et == E.WAIT_COMPLETED:
            _close(rows, open_, ("wait", cid), at, "┄", "blue")
        elif et == E.HOOK_CREATED:
            rows[("hook", cid)] = Row(f"{cid} hook")
            open_[("hook", cid)] = (at, "hook")
        elif et == E.HOOK_RECEIVED:
            row = rows.get(("hook", cid))
            if row is not None:
                row.marks.append((at, "◆", "bold magenta"))
        elif et == E.HOOK_DISPOSED:
            _close(rows, open_, ("hook", cid), at, "┈", "magenta")
    end = run_end or now
    for key in list(open_):  # still in progress: drawn up to now
        _close_open(rows, open_, key, end)
    return list(rows.values())


_OPEN_DRAW = {"queued": ("─", "dim"), "running": ("━", "cyan"), "backoff": ("╌", "dim"), "sleep": ("┄", "blue"),
              "hook": ("┈", "magenta")}


def _close_open(rows: dict[tuple[str, str], Row], open_: dict[tuple[str, str], tuple[datetime, str]],
                key: tuple[str, str], at: datetime) -> None:
    state = open_.get(key)
    if state is None:
        return
    char, style = _OPEN_DRAW.get(state[1], ("─", "dim"))
    _close(rows, open_, key, at, char, style)


def _close(rows: dict[tuple[str, str], Row], open_: dict[tuple[str, str], tuple[datetime, str]],
           key: tuple[str, str], at: datetime, char: str, style: str) -> None:
    state = open_.pop(key, None)
    row = rows.get(key)
    if state is None or row is None:
        return
    row.segments.append(Segment(state[0], max(at, state[0]), char, style))


def draw_timeline(rows: list[Row], width: int) -> Text:
    """The rows as lines of text, `width` columns wide in all."""
    starts = [s.start for r in rows for s in r.segments]
    ends = [s.end for r in rows for s in r.segments] + [m[0] for r in rows for m in r.marks]
    out = Text()
    if not starts:
        out.append("(no recorded times)", style="dim")
        return out
    origin, last = min(starts), max(ends)
    total = max((last - origin).total_seconds(), 1e-6)
    label_w = min(max(len(r.label) for r in rows), 28)
    dur_w = 8
    bar_w = max(width - label_w - dur_w - 2, 10)

    def col(at: datetime) -> int:
        return min(bar_w - 1, max(0, int((at - origin).total_seconds() / total * (bar_w - 1) + 0.5)))

    axis = Text(" " * (label_w + 1))
    axis.append(_axis(bar_w, total), style="dim")
    out.append_text(axis)
    out.append("\n")
    for row in rows:
        cells: list[tuple[str, str]] = [(" ", "")] * bar_w
        # Waiting stretches first, attempts on top: a quick attempt stays visible beside its backoff.
        for seg in sorted(row.segments, key=lambda s: s.char == "━"):
            for c in range(col(seg.start), col(seg.end) + 1):
                cells[c] = (seg.char, seg.style)
        for at, char, style in row.marks:
            cells[col(at)] = (char, style)
        label = row.label if len(row.label) <= label_w else row.label[: label_w - 1] + "…"
        line = Text(label.ljust(label_w) + " ")
        for char, style in cells:
            line.append(char, style=style)
        line.append(" " + duration(row.span()).rjust(dur_w - 1), style="dim")
        out.append_text(line)
        out.append("\n")
    out.rstrip()
    return out


def _axis(width: int, total: float) -> str:
    """`0` at the left, the run's span at the right, a tick in the middle."""
    left, mid, right = "0", duration(total / 2), duration(total)
    line = [" "] * width
    for i, ch in enumerate(left):
        line[i] = ch
    start_mid = width // 2 - len(mid) // 2
    if start_mid > len(left) + 1 and start_mid + len(mid) < width - len(right) - 1:
        for i, ch in enumerate(mid):
            line[start_mid + i] = ch
    for i, ch in enumerate(right):
        line[width - len(right) + i] = ch
    return "".join(line)
