"""examples/otel_console.py runs as its docstring says and prints one nested trace and the metrics."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]


def json_documents(text: str) -> list[Any]:
    """The JSON documents printed one after another (the console exporters' output)."""
    decoder, out, index = json.JSONDecoder(), [], 0
    while True:
        start = text.find("{", index)
        if start < 0 or text.startswith("result:", index):
            return out
        document, index = decoder.raw_decode(text, start)
        out.append(document)
        while index < len(text) and text[index].isspace():
            index += 1


def test_the_console_example_prints_one_nested_trace_and_the_metrics() -> None:
    assert "python examples/otel_console.py" in (REPO / "examples" / "otel_console.py").read_text()
    proc = subprocess.run([sys.executable, "examples/otel_console.py"], cwd=REPO, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.rstrip().endswith("result: {'reservation': 'res-book', 'payment': 'ch-42'}")
    documents = json_documents(proc.stdout)
    spans = [d for d in documents if "context" in d]
    by_name: dict[str, list[dict[str, Any]]] = {}
    for span in spans:
        by_name.setdefault(span["name"], []).append(span)
    (request,) = by_name["checkout request"]
    (run,) = by_name["wf.run __main__.checkout"]
    (reserve,) = by_name["wf.step __main__.reserve"]
    charges = by_name["wf.step __main__.charge"]
    (sleep,) = by_name["wf.sleep"]
    (lookup,) = by_name["inventory lookup"]
    assert [link["context"]["span_id"] for link in run["links"]] == [request["context"]["span_id"]]
    assert run["parent_id"] is None
    trace_id = run["context"]["trace_id"]
    for span in [reserve, *charges, sleep, lookup]:
        assert span["context"]["trace_id"] == trace_id
    for span in [reserve, *charges, sleep]:
        assert span["parent_id"] == run["context"]["span_id"]
    assert lookup["parent_id"] == reserve["context"]["span_id"]
    assert [c["status"]["status_code"] for c in charges] == ["ERROR", "UNSET"]
    assert [c["attributes"]["wf.step.attempt"] for c in charges] == [1, 2]
    metrics = {m["name"] for d in documents if "resource_metrics" in d for r in d["resource_metrics"]
               for s in r["scope_metrics"] for m in s["metrics"]}
    assert {"wf.steps.started", "wf.steps.completed", "wf.steps.retried", "wf.step.duration"} <= metrics


def test_the_documented_wf_start_command_prints_the_runs_spans(tmp_path: Path) -> None:
    command = """OTEL_TRACES_EXPORTER=console wf start examples/otel_console.py:checkout '"book"' 42 --wait"""
    assert command in (REPO / "examples" / "otel_console.py").read_text()
    env = {**os.environ, "OTEL_TRACES_EXPORTER": "console", "WF_DATA_DIR": str(tmp_path / "data"), "WF_FSYNC": "0"}
    proc = subprocess.run([sys.executable, "-m", "wf.cli", *shlex.split(command)[2:]], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    spans = [d for d in json_documents(proc.stdout) if "context" in d]
    names = sorted(s["name"] for s in spans)
    assert names == ["inventory lookup", "wf.run otel_console.checkout", "wf.sleep", "wf.step otel_console.charge",
                     "wf.step otel_console.charge", "wf.step otel_console.reserve"]
    assert len({s["context"]["trace_id"] for s in spans}) == 1
