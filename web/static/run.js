// The run page: summary, actions, a zoomable trace (one bar per step attempt), the bar's detail,
// hooks with a resume form, streams tailed live, state paths and the event log, cross-linked.
"use strict";
(function () {
  const root = document.getElementById("run");
  if (!root) return;
  const runId = root.dataset.runId;
  const el = wf.el;
  const state = {story: null, zoom: null, zoomed: false, selected: null, sites: null, tails: new Map(), timer: null,
    steps: new Map()};
  const LABEL_W = 220;
  const ESC = {"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"};
  const esc = (text) => String(text === null || text === undefined ? "" : text).replace(/[&<>"']/g, (c) => ESC[c]);

  async function load() {
    const story = await wf.api("GET", `/api/runs/${runId}`);
    state.story = story;
    render();
    return story;
  }

  function scheduleRefresh() {
    if (state.timer) return;
    state.timer = setTimeout(async () => {
      state.timer = null;
      await load();
    }, 400);
  }

  function render() {
    const s = state.story;
    renderSummary(s);
    renderActions(s);
    renderTrace(s);
    renderHooks(s);
    renderStreams(s);
    renderPaths(s);
    renderEvents(s);
    if (!performance.getEntriesByName("wf-run-drawn").length) {
      // After the first frame that shows the whole run (benchmarks/web.py reads this mark).
      requestAnimationFrame(() => setTimeout(() => performance.mark("wf-run-drawn")));
    }
    const typing = document.activeElement && document.getElementById("detail").contains(document.activeElement);
    if (state.selected && !typing) showDetail(state.selected, false);  // never under the user's cursor
  }

  // --- summary ---

  function pre(value, cls) {
    if (value && typeof value === "object" && "truncated" in value && "preview" in value) {
      return el("div", {}, el("pre", {class: cls || "value"}, value.preview),
        el("div", {class: "muted small"}, `${Math.round(value.truncated / 1024)} KB in all; only the start is shown`));
    }
    return el("pre", {class: cls || "value"}, typeof value === "string" ? value : wf.json(value));
  }

  // A step's input and output, fetched when it is selected (the story leaves payloads out).
  function stepPayloads(step) {
    const key = `${step.step_id}:${step.status}:${step.attempt}`;
    if (!state.steps.has(key)) {
      const found = wf.api("GET", `/api/runs/${runId}/steps/${step.step_id}`);
      found.catch(() => state.steps.delete(key));
      state.steps.set(key, found);
    }
    return state.steps.get(key);
  }

  function renderSummary(s) {
    const run = s.run;
    const rows = [
      ["workflow", run.workflow],
      ["status", el("span", {class: `badge st-${run.status}`, id: "run-status"}, run.status)],
      ["input", pre(run.input)],
    ];
    if (run.status === "completed") rows.push(["output", pre(run.output)]);
    if (run.error) {
      rows.push(["error", el("div", {}, el("div", {class: "err"}, `${run.error.type}: ${run.error.message}`),
        run.error.traceback ? pre(run.error.traceback, "tb") : null,
        run.error.step_error ? el("div", {}, el("div", {class: "err"},
          `caused by the step's error: ${run.error.step_error.type}: ${run.error.step_error.message}`),
          pre(run.error.step_error.traceback || "", "tb")) : null)]);
    }
    rows.push(["created", wf.time(run.created_at)], ["started", wf.time(run.started_at)],
      ["ended", wf.time(run.completed_at)],
      ["duration", wf.dur(run.duration === null ? null : run.duration * 1000) + (run.completed_at ? "" : " so far")]);
    if (run.parent_run_id) rows.push(["parent", el("a", {href: `/runs/${run.parent_run_id}`, class: "mono"}, run.parent_run_id)]);
    if (run.forked_from) {
      const from = run.forked_from;
      rows.push(["forked from", el("span", {}, el("a", {href: `/runs/${from.run_id}`, class: "mono"}, from.run_id),
        ` (first ${from.at} events)`)]);
    }
    if (s.children.length) {
      rows.push(["children", el("span", {}, s.children.map((c) =>
        el("div", {}, el("a", {href: `/runs/${c.run_id}`, class: "mono child-link"}, c.run_id), ` ${c.workflow}`)))]);
    }
    for (const [key, value] of Object.entries(run.attributes)) {
      if (["parent_run_id", "forked_from", "parent_token"].includes(key)) continue;
      const shown = value !== null && typeof value === "object"
        ? Object.entries(value).map(([k, v]) => `${k}=${typeof v === "string" ? v : JSON.stringify(v)}`).join("  ")
        : String(value);
      rows.push([key.replaceAll("_", " "), el("span", {class: "mono small"}, shown)]);
    }
    const grid = el("dl", {class: "grid"}, rows.map(([k, v]) => [el("dt", {}, k), el("dd", {}, v)]));
    document.getElementById("summary").replaceChildren(
      el("h1", {}, "Run ", el("span", {class: "mono"}, run.run_id)), grid);
    document.title = `Run ${run.run_id} · ${run.status} · wf`;
  }

  // --- actions ---

  function renderActions(s) {
    const box = document.getElementById("actions");
    if (box.dataset.built === String(s.run.status) + s.steps.length) return;
    box.dataset.built = String(s.run.status) + s.steps.length;
    const out = el("div", {class: "action-result", id: "action-result"});
    const terminal = ["completed", "failed", "cancelled"].includes(s.run.status);
    const reason = el("input", {name: "reason", placeholder: "reason (optional)"});
    const cancel = el("button", {type: "button", id: "cancel-run", disabled: terminal, onclick: async () => {
      if (!window.confirm(`Cancel run ${runId}?`)) return;
      await act(out, () => wf.api("POST", `/api/runs/${runId}/cancel`, {reason: reason.value || null}),
        (r) => `run is now ${r.status}`);
      scheduleRefresh();
    }}, "Cancel run");
    const created = state.story.events.filter((e) => e.type === "step_created");
    const forkAt = el("select", {name: "at", id: "fork-at"},
      el("option", {value: ""}, "default: before the first failure"),
      created.map((e) => el("option", {value: String(e.seq)}, `from ${e.cid} ${e.summary.split(" ")[0]} (keep events 0..${e.seq - 1})`)));
    const fork = el("button", {type: "button", id: "fork-run", onclick: () => forkFrom(out, forkAt.value === "" ? null : Number(forkAt.value))},
      "Fork");
    const replay = el("button", {type: "button", id: "replay-check", onclick: () => replayCheck(out)}, "Check replay against current code");
    box.replaceChildren(el("h2", {}, "Actions"),
      el("div", {class: "actions"}, el("span", {}, cancel, " ", reason), el("span", {}, forkAt, " ", fork), replay), out);
  }

  async function act(out, call, describe) {
    out.replaceChildren(el("span", {class: "muted"}, "…"));
    try {
      const result = await call();
      out.replaceChildren(describe(result));
      return result;
    } catch (e) {
      out.replaceChildren(el("span", {class: "err"}, e.message));
      return null;
    }
  }

  function forkFrom(out, at) {
    return act(out, () => wf.api("POST", `/api/runs/${runId}/fork`, {at}), (r) =>
      el("span", {}, `forked (${r.events_kept} events kept): `, el("a", {href: `/runs/${r.run_id}`, class: "mono", id: "fork-link"}, r.run_id)));
  }

  function replayCheck(out) {
    return act(out, () => wf.api("GET", `/api/runs/${runId}/replay`), (r) => {
      if (r.clean) return el("div", {class: "ok", id: "replay-result"}, "✓ ", r.summary);
      const d = r.divergence;
      if (!d) return el("div", {class: "err", id: "replay-result"}, r.summary);
      return el("div", {class: "divergence", id: "replay-result"},
        el("div", {class: "err"}, `✗ replay diverges at event ${d.position}`),
        el("dl", {class: "grid"},
          el("dt", {}, "the log holds"), el("dd", {}, el("a", {href: `#ev-${d.position}`, class: "mono"}, d.recorded)),
          el("dt", {}, "the code now does"), el("dd", {class: "mono"}, d.code),
          el("dt", {}, "at"), el("dd", {class: "mono site"}, d.location || "unknown")));
    });
  }

  // --- trace ---

  function fitZoom(s) {
    const width = Math.max(300, document.getElementById("trace").clientWidth - LABEL_W - 24);
    return width / Math.max(s.trace.end, 1);
  }

  function renderTrace(s) {
    const box = document.getElementById("trace");
    if (!state.zoomed) state.zoom = fitZoom(s);  // until the user zooms, the whole run fits
    box.style.setProperty("--z", state.zoom);
    const rows = s.trace.rows;
    document.getElementById("trace-note").textContent =
      `${rows.length} rows, ${rows.reduce((n, r) => n + (r.kind === "step" ? r.spans.filter((x) => x.kind === "attempt").length : 0), 0)} attempts, ${wf.dur(s.trace.end)}`;
    const html = [];
    for (const row of rows) {
      const name = esc(row.name || row.token || row.label);
      const child = row.child_run_id ? ` <a href="/runs/${esc(row.child_run_id)}" class="child-link">→</a>` : "";
      html.push(`<div class="row kind-${row.kind}" data-row="${esc(row.id)}"><div class="label" title="${name}">` +
        `<span class="mono small">${row.id === "run" ? "" : esc(row.id) + " "}</span>${esc(row.label)}${child}</div><div class="lane">`);
      row.spans.forEach((span, i) => {
        const kind = row.kind === "child" && span.kind === "hook" ? "hook child" : span.kind;
        const title = `${row.id} ${span.kind}${span.attempt ? " #" + span.attempt : ""} ${span.status || ""} ${wf.dur(span.end - span.start)}`;
        html.push(`<div class="bar k-${kind} s-${span.status || "none"}${span.open ? " open" : ""}" data-span="${i}" ` +
          `style="left: calc(${span.start}px * var(--z)); width: max(2px, calc(${span.end - span.start}px * var(--z)))" ` +
          `title="${esc(title)}"></div>`);
      });
      for (const mark of row.marks) {
        html.push(`<div class="mark" style="left: calc(${mark.at}px * var(--z))" title="payload (event ${mark.seq})"></div>`);
      }
      html.push("</div></div>");
    }
    const scrollLeft = box.scrollLeft, scrollTop = box.scrollTop;
    box.innerHTML = html.join("");
    box.prepend(axis(s.trace.end));
    box.scrollLeft = scrollLeft;
    box.scrollTop = scrollTop;
    if (state.selected) markSelected();
  }

  function axis(end) {
    const line = el("div", {class: "row axis"}, el("div", {class: "label muted small"}, "time from start"));
    const lane = el("div", {class: "lane"});
    const ticks = 8;
    for (let i = 0; i <= ticks; i++) {
      const at = (end * i) / ticks;
      lane.append(el("div", {class: "tick", style: `left: calc(${at}px * var(--z))`}, wf.dur(at)));
    }
    line.append(lane);
    return line;
  }

  function zoom(factor, anchorX) {
    const box = document.getElementById("trace");
    const old = state.zoom;
    state.zoomed = factor !== "fit";
    state.zoom = factor === "fit" ? fitZoom(state.story) : Math.min(Math.max(old * factor, 1e-6), 1e4);
    const x = anchorX === undefined ? box.clientWidth / 2 : anchorX;
    const timeAt = (box.scrollLeft + x - LABEL_W) / old;
    box.style.setProperty("--z", state.zoom);
    renderTicks();
    box.scrollLeft = Math.max(0, timeAt * state.zoom - x + LABEL_W);
  }

  function renderTicks() {
    const box = document.getElementById("trace");
    const old = box.querySelector(".axis");
    if (old) old.replaceWith(axis(state.story.trace.end));
  }

  document.querySelectorAll("[data-zoom]").forEach((button) => button.addEventListener("click", () => {
    const how = button.dataset.zoom;
    zoom(how === "in" ? 2 : how === "out" ? 0.5 : "fit");
  }));
  document.getElementById("trace").addEventListener("wheel", (event) => {
    if (!event.ctrlKey && !event.metaKey) return;
    event.preventDefault();
    const rect = event.currentTarget.getBoundingClientRect();
    zoom(event.deltaY < 0 ? 1.25 : 0.8, event.clientX - rect.left);
  }, {passive: false});
  document.getElementById("trace").addEventListener("click", (event) => {
    const target = event.target.closest(".bar, .mark, .label");
    if (!target || event.target.closest("a")) return;
    const rowEl = target.closest(".row");
    if (!rowEl || !rowEl.dataset.row) return;
    const span = target.dataset.span !== undefined ? Number(target.dataset.span) : null;
    select({row: rowEl.dataset.row, span}, true);
  });

  function select(sel, scroll) {
    state.selected = sel;
    showDetail(sel, scroll);
  }

  function markSelected() {
    document.querySelectorAll("#trace .selected").forEach((n) => n.classList.remove("selected"));
    const sel = state.selected;
    if (!sel) return;
    const rowEl = document.querySelector(`#trace .row[data-row="${sel.row}"]`);
    if (!rowEl) return;
    rowEl.classList.add("selected");
    if (sel.span !== null) {
      const bar = rowEl.querySelector(`.bar[data-span="${sel.span}"]`);
      if (bar) bar.classList.add("selected");
    }
  }

  // --- the selected bar's detail ---

  async function callSite(cid) {
    if (state.sites === null) {
      state.sites = wf.api("GET", `/api/runs/${runId}/callsites`).catch((e) => ({sites: {}, note: e.message}));
    }
    const found = await state.sites;
    return found.sites[cid] || (found.note ? `unknown (${found.note})` : "unknown");
  }

  function showDetail(sel, scroll) {
    markSelected();
    const s = state.story;
    const row = s.trace.rows.find((r) => r.id === sel.row);
    const box = document.getElementById("detail");
    if (!row) { box.hidden = true; return; }
    const parts = [el("h3", {}, row.id === "run" ? "run" : `${row.id} · ${row.label}`)];
    const grid = [];
    const span = sel.span !== null ? row.spans[sel.span] : null;
    if (span) {
      grid.push(["selected", `${span.kind}${span.attempt ? " #" + span.attempt : ""} ${span.status || ""}`],
        ["from", `+${wf.dur(span.start)}`], ["for", wf.dur(span.end - span.start)]);
      if (span.error) grid.push(["error", el("span", {class: "err"}, span.error)]);
    }
    if (row.kind === "step") {
      const step = s.steps.find((x) => x.step_id === row.id) || {};
      grid.push(["step", el("span", {class: "mono"}, step.name || row.name)], ["status", el("span", {class: `badge st-${step.status}`}, step.status)],
        ["call site", el("span", {class: "mono site", id: "call-site"}, "…")],
        ["input", el("div", {id: "step-input"}, el("span", {class: "muted"}, "…"))]);
      if (step.status === "completed") grid.push(["output", el("div", {id: "step-output"}, el("span", {class: "muted"}, "…"))]);
      stepPayloads(step).then((full) => {
        const input = document.getElementById("step-input");
        const output = document.getElementById("step-output");
        if (input) input.replaceChildren(pre(full.input));
        if (output) output.replaceChildren(pre(full.output, "value step-output"));
      }).catch((e) => {
        const input = document.getElementById("step-input");
        if (input) input.replaceChildren(el("span", {class: "err"}, e.message));
      });
      if (step.error && step.status !== "completed") grid.push([step.status === "failed" ? "error" : "last error", el("div", {}, el("div", {class: "err"}, `${step.error.type}: ${step.error.message}`),
        step.error.traceback ? pre(step.error.traceback, "tb") : null)]);
      grid.push(["created", wf.time(step.created_at)], ["started", wf.time(step.started_at)], ["ended", wf.time(step.completed_at)],
        ["attempts", attemptsTable(row)]);
      callSite(row.id).then((site) => { const n = document.getElementById("call-site"); if (n) n.textContent = site; });
    } else if (row.kind === "wait") {
      const wait = s.waits.find((w) => w.wait_id === row.id) || {};
      grid.push(["status", wait.status], ["resume at", wf.time(wait.resume_at)], ["ended", wf.time(wait.completed_at)],
        ["call site", el("span", {class: "mono site", id: "call-site"}, "…")]);
      callSite(row.id).then((site) => { const n = document.getElementById("call-site"); if (n) n.textContent = site; });
    } else if (row.kind === "hook" || row.kind === "child") {
      const hook = s.hooks.find((h) => h.hook_id === row.id) || {};
      if (row.child_run_id) grid.push(["child run", el("a", {href: `/runs/${row.child_run_id}`, class: "mono child-link"}, row.child_run_id)]);
      grid.push(["token", el("span", {class: "mono"}, hook.token)], ["status", hook.status], ["payloads", String(hook.received_count)],
        ["call site", el("span", {class: "mono site", id: "call-site"}, "…")]);
      const received = s.events.filter((e) => e.cid === row.id && e.type === "hook_received");
      if (received.length) grid.push(["received", el("div", {}, received.map((e) => el("div", {class: "mono small"}, `#${e.seq} ${e.summary}`)))]);
      if (hook.status === "active" && !row.child_run_id) grid.push(["resume", resumeForm(hook.token)]);
      callSite(row.id).then((site) => { const n = document.getElementById("call-site"); if (n) n.textContent = site; });
    } else {
      grid.push(["status", s.run.status], ["duration", wf.dur(s.trace.end)]);
    }
    parts.push(el("dl", {class: "grid"}, grid.map(([k, v]) => [el("dt", {}, k), el("dd", {}, v)])));
    const related = s.events.filter((e) => (row.id === "run" ? e.cid === null : e.cid === row.id));
    if (row.kind === "step") {
      const first = related.find((e) => e.type === "step_created");
      if (first) parts.push(el("button", {type: "button", class: "fork-here", onclick: () =>
        forkFrom(document.getElementById("action-result"), first.seq).then(() => document.getElementById("actions").scrollIntoView())},
        "Fork from this step"));
    }
    parts.push(el("div", {class: "muted small"}, "events: ", related.map((e) =>
      el("a", {href: `#ev-${e.seq}`, class: "ev-link", onclick: () => highlightEvents([e.seq], true)}, `${e.seq} `))));
    box.replaceChildren(...parts);
    box.hidden = false;
    const seqs = span ? [span.seq0, span.seq1].filter((x) => x !== null && x !== undefined) : related.map((e) => e.seq);
    highlightEvents(seqs, false);
    if (scroll) box.scrollIntoView({block: "nearest"});
  }

  function attemptsTable(row) {
    const attempts = row.spans.filter((x) => x.kind === "attempt");
    if (!attempts.length) return "none yet";
    return el("table", {class: "small attempts"}, el("tr", {}, el("th", {}, "#"), el("th", {}, "start"), el("th", {}, "took"),
      el("th", {}, "outcome")), attempts.map((a) => el("tr", {}, el("td", {}, a.attempt || ""), el("td", {}, `+${wf.dur(a.start)}`),
      el("td", {}, wf.dur(a.end - a.start)), el("td", {class: a.status === "completed" ? "" : "err"}, a.error ? `${a.status}: ${a.error}` : a.status))));
  }

  function resumeForm(token) {
    const input = el("textarea", {name: "payload", rows: "2", class: "mono"}, "{}");
    const out = el("span", {class: "result"});
    const form = el("form", {class: "resume-form", dataset: {token}, onsubmit: async (event) => {
      event.preventDefault();
      let payload;
      try { payload = JSON.parse(input.value || "null"); } catch (e) {
        out.replaceChildren(el("span", {class: "err"}, `not JSON: ${e.message}`));
        return;
      }
      await act(out, () => wf.api("POST", "/api/hooks/resume", {token, payload}), () => "delivered");
      scheduleRefresh();
    }}, input, el("button", {type: "submit"}, "Resume hook"), out);
    return form;
  }

  // --- hooks, streams, state paths, events ---

  function renderHooks(s) {
    const box = document.getElementById("hooks");
    if (!s.hooks.length) { box.hidden = true; return; }
    box.hidden = false;
    const open = box.querySelector("textarea:focus");
    if (open) return;  // do not replace a form the user is typing in
    box.replaceChildren(el("h2", {}, "Hooks"), el("table", {class: "hooks"},
      el("tr", {}, el("th", {}, "id"), el("th", {}, "token"), el("th", {}, "status"), el("th", {}, "payloads"), el("th", {}, "")),
      s.hooks.map((h) => el("tr", {dataset: {hook: h.hook_id}},
        el("td", {}, el("a", {href: "#trace", class: "mono", onclick: () => select({row: h.hook_id, span: null}, true)}, h.hook_id)),
        el("td", {class: "mono small"}, h.token), el("td", {}, el("span", {class: `badge st-${h.status}`}, h.status)),
        el("td", {}, String(h.received_count)),
        el("td", {}, h.child_run_id ? el("a", {href: `/runs/${h.child_run_id}`, class: "child-link"}, "child run")
          : h.status === "active" ? resumeForm(h.token) : "")))));
  }

  function renderStreams(s) {
    const box = document.getElementById("streams");
    if (!s.streams.length) { box.hidden = true; return; }
    box.hidden = false;
    if (!box.querySelector("h2")) box.append(el("h2", {}, "Streams"));
    for (const info of s.streams) {
      if (state.tails.has(info.name)) continue;
      const lines = el("pre", {class: "stream", dataset: {stream: info.name}});
      const status = el("span", {class: "muted small"}, "tailing…");
      box.append(el("div", {}, el("h3", {}, info.name, " ", status), lines));
      const source = new EventSource(`/api/live/runs/${runId}/streams/${encodeURIComponent(info.name)}`);
      source.addEventListener("chunk", (event) => {
        const data = JSON.parse(event.data);
        lines.append(`${typeof data.chunk === "string" ? data.chunk : JSON.stringify(data.chunk)}\n`);
        lines.scrollTop = lines.scrollHeight;
      });
      source.addEventListener("end", (event) => {
        status.textContent = `closed (${JSON.parse(event.data).chunks} chunks)`;
        source.close();
      });
      window.addEventListener("pagehide", () => source.close());
      state.tails.set(info.name, source);
    }
  }

  // The big lists are rows of divs (not tables): the browser lays out only the rows in view.

  function renderPaths(s) {
    const rows = s.state_paths.map((p) => `<div class="prow"><span class="mono">${esc(p.id)}</span><span class="muted small">` +
      `${p.kind === "step" || p.kind === "run" ? esc(p.name.split(".").pop()) : ""}</span><span>` +
      p.states.map((st) => `<span class="st-${esc(st.split(" ")[0])}">${esc(st)}</span>`).join('<span class="muted"> → </span>') +
      "</span></div>");
    document.getElementById("paths").innerHTML = `<h2>State paths</h2><div class="paths">${rows.join("")}</div>`;
  }

  function renderEvents(s) {
    const rows = s.events.map((e) => `<div id="ev-${e.seq}" class="erow t-${e.type}"><span class="num">${e.seq}</span>` +
      `<span class="num">${e.at === null ? "" : "+" + wf.dur(e.at)}</span><span class="etype">${e.type}</span>` +
      `<span>${e.cid ? `<a href="#trace" class="mono cid" data-seq="${e.seq}">${esc(e.cid)}</a>` : ""}</span>` +
      `<span class="mono small">${esc(e.summary)}</span></div>`);
    document.getElementById("events").innerHTML = '<div class="erow head"><span class="num">seq</span>' +
      `<span class="num">time</span><span>type</span><span>entity</span><span>data</span></div>${rows.join("")}`;
  }

  document.getElementById("events").addEventListener("click", (event) => {
    const link = event.target.closest("a.cid");
    if (!link) return;
    const found = state.story.events.find((e) => e.seq === Number(link.dataset.seq));
    if (found) select({row: found.cid, span: spanOf(found)}, true);
  });

  function spanOf(event) {
    const row = state.story.trace.rows.find((r) => r.id === event.cid);
    if (!row) return null;
    const i = row.spans.findIndex((x) => x.seq0 === event.seq || x.seq1 === event.seq);
    return i >= 0 ? i : null;
  }

  function highlightEvents(seqs, scroll) {
    document.querySelectorAll("#events .erow.hl").forEach((n) => n.classList.remove("hl"));
    for (const seq of seqs) {
      const row = document.getElementById(`ev-${seq}`);
      if (row) row.classList.add("hl");
    }
    if (scroll && seqs.length) {
      const first = document.getElementById(`ev-${seqs[0]}`);
      if (first) first.scrollIntoView({block: "center"});
    }
  }

  load().then((story) => {
    const terminal = ["completed", "failed", "cancelled"].includes(story.run.status);
    if (terminal) { wf.setLive("ended"); return; }
    wf.listen(`/api/live/runs/${runId}?after=${story.run.event_count - 1}`, {
      run: () => scheduleRefresh(),
      end: (data, source) => { source.close(); wf.setLive("ended"); scheduleRefresh(); },
    });
  }).catch((e) => {
    document.getElementById("summary").replaceChildren(el("p", {class: "err"}, e.message));
  });
})();
