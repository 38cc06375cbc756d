"""The benchmark harness still runs end to end (CI smoke: seconds, no timed assertions)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_smoke_run_writes_json_with_every_section(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, "-m", "benchmarks", "--smoke", "--json", str(out)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(out.read_text())
    assert {"machine", "rows", "goals", "scale", "seconds"} <= report.keys()
    assert {"cores", "python", "kernel", "timestamp"} <= report["machine"].keys()

    scenarios = {(r["section"], r["scenario"], r["mode"]) for r in report["rows"]}
    assert ("overhead", "empty workflow", "fsync off, cached") in scenarios
    assert ("overhead", "10 sequential steps", "fsync off, always-replay") in scenarios
    assert any(s == "streams" and "first chunk" in name for s, name, _ in scenarios)
    for row in report["rows"]:
        assert row["repeats"] == len(row["samples_ms"]) >= 1
        assert 0 < row["median_ms"] <= row["p90_ms"]

    (scale,) = report["scale"]
    assert scale["workflows"] == 20
    assert scale["stuck_runs"] == 0
    assert scale["statuses"] == {"completed": 20}
    assert scale["worker_peak_rss_mb"][0] > 0
    assert scale["client_cpu_ms_per_run"] > 0
    shares = scale["machine_cpu"]
    assert 0 <= shares["idle_pct"] <= 100 and 0 <= shares["steal_pct"] <= 100
    assert {g["goal"] for g in report["goals"]} >= {"empty workflow, fsync on", "FIFO (worst scale run)"}
    assert "Overhead" in proc.stdout  # the table was printed


def test_bad_arguments_are_one_line_and_exit_2(tmp_path: Path) -> None:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, "-m", "benchmarks", "--suite", "nope"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "invalid choice" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_world_benchmark_prints_and_writes_every_measure(tmp_path: Path) -> None:
    out = tmp_path / "world.json"
    env = dict(os.environ, PYTHONPATH=str(ROOT), WF_BENCH_TMP=str(tmp_path))
    proc = subprocess.run([sys.executable, "-m", "benchmarks.world", "--n", "6", "--json", str(out)], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    results = json.loads(out.read_text())["results"]
    assert {"bare append+fdatasync", "events.create, fsync on", "enqueue→take across processes"} <= results.keys()
    for figures in results.values():
        assert 0 < figures["p50_us"] <= figures["p99_us"]
    assert "events.create, fsync on" in proc.stdout
