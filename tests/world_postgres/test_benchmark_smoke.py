"""The Postgres benchmark still runs end to end (CI smoke: seconds, no timed assertions)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from .helpers import REPO


def test_postgres_benchmark_writes_latency_throughput_and_the_capacity_model(pg_url: str, tmp_path: Path) -> None:
    out = tmp_path / "pg.json"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.run([sys.executable, "-m", "benchmarks.postgres", "--url", pg_url, "--repeat", "1",
                           "--workers", "1", "--runs", "20", "--json", str(out)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-2000:]
    results = json.loads(out.read_text())
    latency = results["wf"]["latency"]
    assert latency["empty_ms"] > 0 and latency["per_step_ms"] > 0 and latency["gather50_ms"] > 0
    assert latency["per_step_server"]["statements"] > 0  # pg_stat_statements is loaded by tests/pg_server.py
    assert latency["per_step_server"]["wal_bytes"] > 0
    throughput = results["wf"]["throughput_1"]
    assert throughput["runs"] == 20 and throughput["steps_per_s"] > 0
    assert set(throughput["cpu_ms_per_step"]) == {"workers", "postgres", "client"}
    assert throughput["cpu_ms_per_step"]["workers"] > 0
