"""Server-rendered HTML: the layout, the runs page (and its table fragment), the run page's shell, workflows."""

from __future__ import annotations

from datetime import datetime
from html import escape
from typing import Any
from urllib.parse import urlencode

from ..runtime.entities import RunStatus
from .runs_query import RunsPage, RunsQuery
from .story import run_row
from .values import short_name

STATUSES = [s.value for s in RunStatus]


def layout(title: str, body: str, *, active: str, scripts: tuple[str, ...] = (), preload: str = "") -> str:
    nav = "".join(
        f'<a href="{href}"{" class=active" if key == active else ""}>{label}</a>'
        for key, href, label in (("runs", "/", "Runs"), ("workflows", "/workflows", "Workflows"))
    )
    tags = "".join(f'<script src="/static/{name}" defer></script>' for name in ("common.js", *scripts))
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        '<meta name=viewport content="width=device-width, initial-scale=1">'
        f"<title>{escape(title)} · wf</title>"
        '<link rel=icon href="data:,"><link rel=stylesheet href="/static/app.css">'
        + (f'<link rel=preload href="{escape(preload)}" as=fetch crossorigin>' if preload else "") +
        f"{tags}</head><body><header><a class=brand href='/'>wf</a><nav>{nav}</nav>"
        "<span id=live-state class=live title='live updates'></span></header>"
        f"<main>{body}</main></body></html>"
    )


def _fmt_time(iso_text: str | None) -> str:
    if not iso_text:
        return "-"
    return f'<time datetime="{escape(iso_text)}">{escape(iso_text[:19].replace("T", " "))}</time>'


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes}m{secs:02d}s" if minutes < 60 else f"{minutes // 60}h{minutes % 60:02d}m"


def _local_input(value: datetime | None) -> str:
    return value.astimezone().strftime("%Y-%m-%dT%H:%M") if value else ""


def runs_page(query: RunsQuery, page: RunsPage, counts: dict[str, int] | None, workflows: list[str]) -> str:
    status_options = "".join(
        f'<option value="{s}"{" selected" if query.status == s else ""}>{s}</option>' for s in STATUSES)
    wf_options = "".join(
        f'<option value="{escape(w)}"{" selected" if query.workflow == w else ""}>{escape(w)}</option>'
        for w in sorted(set(workflows) | ({query.workflow} if query.workflow else set())))
    form = (
        '<form id=filters class=filters method=get action="/">'
        f'<input type=search name=q placeholder="run id, input, output or error text" '
        f'value="{escape(query.q or "")}" aria-label=search>'
        f'<select name=status aria-label=status><option value="">any status</option>{status_options}</select>'
        f'<select name=workflow aria-label=workflow><option value="">any workflow</option>{wf_options}</select>'
        f'<input name=tag placeholder="tag KEY=VALUE" value="{escape(query.tags[0] if query.tags else "")}" '
        'aria-label=tag size=14>'
        f'<label>from <input type=datetime-local name=since value="{_local_input(query.since)}"></label>'
        f'<label>to <input type=datetime-local name=until value="{_local_input(query.until)}"></label>'
        "<button type=submit>Filter</button> <a href='/'>clear</a></form>"
    )
    body = (f"<h1>Runs</h1>{form}<div id=runs-table data-live='/api/live/runs'>"
            f"{runs_fragment(query, page, counts)}</div>")
    return layout("Runs", body, active="runs", scripts=("runs.js",))


def runs_fragment(query: RunsQuery, page: RunsPage, counts: dict[str, int] | None) -> str:
    """The counts and the table of one page of runs (swapped in live by runs.js)."""
    base: dict[str, Any] = {k: v for k, v in (("q", query.q), ("workflow", query.workflow)) if v}
    if query.tags:
        base["tag"] = query.tags
    if counts is None:
        count_html = "<span class=muted>counting…</span>"
    else:
        total = sum(counts.values())
        links = [f'<a class="count{" on" if not query.status else ""}" href="/?{urlencode(base, doseq=True)}">'
                 f"all <b>{total}</b></a>"]
        for s in STATUSES:
            on = " on" if query.status == s else ""
            href = "/?" + urlencode({**base, "status": s}, doseq=True)
            count = counts.get(s, 0)
            links.append(f'<a class="count st-{s}{on}" data-status="{s}" href="{href}">{s} <b>{count}</b></a>')
        count_html = "".join(links)
    rows = []
    for run in page.runs:
        row = run_row(run)
        error = f'<div class="err small">{escape(row["error"][:200])}</div>' if row["error"] else ""
        tags = "".join(f'<span class="tag">{escape(k)}={escape(v)}</span>' for k, v in row["tags"].items())
        rows.append(
            f'<tr data-run-id="{escape(row["run_id"])}"><td><a class=mono href="/runs/{escape(row["run_id"])}">'
            f'{escape(row["run_id"])}</a>{tags}</td><td>{escape(short_name(row["workflow"]))}'
            f'<div class="muted small">{escape(row["workflow"])}</div></td>'
            f'<td><span class="badge st-{row["status"]}">{row["status"]}</span>{error}</td>'
            f'<td>{_fmt_time(row["created_at"])}</td><td>{_duration(row["duration"])}</td></tr>')
    if not rows:
        rows.append("<tr><td colspan=5 class=muted>No runs match.</td></tr>")
    more = ""
    params: dict[str, Any] = {k: v for k, v in (
        ("q", query.q), ("status", query.status), ("workflow", query.workflow), ("since", _local_input(query.since)),
        ("until", _local_input(query.until)), ("limit", str(query.limit) if query.limit != 50 else "")) if v}
    if query.tags:
        params["tag"] = query.tags
    if query.cursor:
        more += f'<a href="/?{urlencode(params, doseq=True)}">« newest</a> '
    if page.next_cursor:
        label = f"search older runs » <span class=muted>({page.scanned} searched here)</span>" if page.partial \
            else "older »"
        more += f'<a id=next-page href="/?{urlencode({**params, "cursor": page.next_cursor}, doseq=True)}">{label}</a>'

    return (f"<div class=counts>{count_html}</div><table class=runs><thead><tr><th>run</th><th>workflow</th>"
            f"<th>status</th><th>created</th><th>duration</th></tr></thead><tbody>{''.join(rows)}</tbody></table>"
            f"<div class=pager>{more}</div>")


def run_page(run_id: str) -> str:
    """The run page's shell; run.js fills it from /api/runs/<id> and keeps it live."""
    body = f"""
<div id=run data-run-id="{escape(run_id)}">
  <section id=summary class=card><p class=muted>Loading run {escape(run_id)}…</p></section>
  <section id=actions class=card></section>
  <section class=card><h2>Trace <span class="muted small" id=trace-note></span></h2>
    <div class=trace-tools>
      <button type=button data-zoom=in title="zoom in (ctrl+wheel)">+</button>
      <button type=button data-zoom=out title="zoom out">&minus;</button>
      <button type=button data-zoom=fit>fit</button>
      <span class="legend"><i class="k-attempt s-completed"></i>attempt ok <i class="k-attempt s-retried"></i>
      failed, retried <i class="k-attempt s-failed"></i>failed <i class="k-backoff"></i>retry wait
      <i class="k-queued"></i>queued <i class="k-sleep"></i>sleep <i class="k-hook"></i>hook / child</span>
    </div>
    <div id=trace class=trace></div>
    <div id=detail class=detail hidden></div>
  </section>
  <section id=hooks class=card></section>
  <section id=streams class=card></section>
  <section id=paths class=card></section>
  <section class=card><h2>Event log</h2><div id=events class=events></div></section>
</div>"""
    return layout(f"Run {run_id}", body, active="runs", scripts=("run.js",), preload=f"/api/runs/{run_id}")


def workflows_page(items: list[dict[str, Any]]) -> str:
    cards = []
    for item in items:
        name = escape(item["name"])
        cards.append(
            f'<section class=card data-workflow="{name}"><h2>{escape(short_name(item["name"]))}'
            f'<span class="muted small"> {name}{escape(item["signature"])}</span></h2>'
            f'<p>{escape(item["doc"])}</p><p class="muted small mono">{escape(item["source"])}</p>'
            f'<form class=start-form data-workflow="{name}">'
            f'<label>args (a JSON list) <input name=args value="[]" class=mono></label>'
            f'<label>kwargs (a JSON object) <input name=kwargs value="{{}}" class=mono></label>'
            "<button type=submit>Start run</button> <span class=result></span></form></section>")
    if not cards:
        cards.append("<p class=muted>No workflows are loaded. <code>wf dev path/to/workflows.py</code> loads "
                     "them; <code>wf ui</code> shows the runs of any World without code.</p>")
    return layout("Workflows", "<h1>Workflows</h1>" + "".join(cards), active="workflows", scripts=("workflows.js",))
