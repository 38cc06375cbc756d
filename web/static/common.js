// Shared helpers of wf's pages: JSON requests, element building, durations and the live marker.
"use strict";
const wf = {
  async api(method, url, body) {
    const init = {method, headers: {"Accept": "application/json"}};
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    const response = await fetch(url, init);
    const text = await response.text();
    let data = null;
    try { data = text ? JSON.parse(text) : null; } catch (e) { data = {error: text}; }
    if (!response.ok) {
      const message = (data && data.error) || response.statusText;
      throw new Error(`${response.status}: ${message}`);
    }
    return data;
  },
  el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (key === "class") node.className = value;
      else if (key === "text") node.textContent = value;
      else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
      else if (key === "dataset") Object.assign(node.dataset, value);
      else node.setAttribute(key, value === true ? "" : value);
    }
    for (const child of children.flat(Infinity)) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  },
  dur(ms) {
    if (ms === null || ms === undefined) return "-";
    if (ms < 1) return `${ms.toFixed(2)}ms`;
    if (ms < 1000) return `${Math.round(ms)}ms`;
    const s = ms / 1000;
    if (s < 60) return `${s.toFixed(s < 10 ? 2 : 1)}s`;
    const m = Math.floor(s / 60);
    if (m < 60) return `${m}m${String(Math.round(s % 60)).padStart(2, "0")}s`;
    return `${Math.floor(m / 60)}h${String(m % 60).padStart(2, "0")}m`;
  },
  json(value) {
    return JSON.stringify(value, null, 2);
  },
  time(iso) {
    return iso ? iso.slice(0, 23).replace("T", " ") : "-";
  },
  setLive(state) {
    const marker = document.getElementById("live-state");
    if (!marker) return;
    marker.textContent = state === "live" ? "● live" : state === "ended" ? "○ ended" : "○ reconnecting";
    marker.className = `live ${state}`;
  },
  listen(url, handlers) {
    const source = new EventSource(url);
    source.onopen = () => wf.setLive("live");
    source.onerror = () => wf.setLive(source.readyState === EventSource.CLOSED ? "ended" : "reconnecting");
    for (const [name, fn] of Object.entries(handlers)) {
      source.addEventListener(name, (event) => fn(JSON.parse(event.data), source));
    }
    window.addEventListener("pagehide", () => source.close());
    return source;
  },
};
