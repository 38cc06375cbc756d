"""Per-step cost of OpenTelemetry: tracing on vs off vs the extra absent (issue 18; goal: ≤ 10 % on).

    python -m benchmarks.otel [--steps 200] [--rounds 5] [--fsync]

Each mode runs in a subprocess of its own (a LocalWorld on a temp dir, a worker in the same
event loop), running workflows of `--steps` zero-cost steps, half async, half sync:

- absent:    opentelemetry really not importable: `python -S` with a copy of site-packages
             (symlinks) that leaves every `opentelemetry*` entry out;
- off:       installed, `WF_OTEL=0`;
- no-sdk:    installed and on, the application configured no provider (spans are no-ops);
- traces:    the SDK's TracerProvider with a BatchSpanProcessor (an exporter that drops the
             spans): every span really made, no metrics SDK;
- on:        traces, and the SDK's MeterProvider with a reader: every metric recorded too.

Modes are interleaved over the rounds; each mode's figure is its best process (the one least
disturbed by other load on the machine), with the median beside it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import site
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
MODES = ("absent", "off", "no-sdk", "traces", "on")


# --- the child: one mode, timed ---


def _setup_sdk(with_metrics: bool) -> Any:
    from opentelemetry import metrics, trace
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

    class Dropping(SpanExporter):
        """Counts the spans and drops them (an exporter with no network)."""

        exported = 0

        def export(self, spans: Any) -> SpanExportResult:
            Dropping.exported += len(spans)
            return SpanExportResult.SUCCESS

    provider = TracerProvider()
    processor = BatchSpanProcessor(Dropping())
    provider.add_span_processor(processor)
    trace.set_tracer_provider(provider)
    if with_metrics:
        metrics.set_meter_provider(MeterProvider(metric_readers=[InMemoryMetricReader()]))
    return processor, Dropping


async def _child(mode: str, steps: int, runs: int, fsync: bool) -> dict[str, Any]:
    import importlib.util

    import wf
    from wf.runtime import telemetry
    from wf.runtime.config import started_world
    from wf.runtime.worker import Worker
    from wf.world_local.world import LocalWorld

    if mode == "absent":
        assert importlib.util.find_spec("opentelemetry") is None, "opentelemetry is importable"
    assert (mode in ("no-sdk", "traces", "on", "paired")) == telemetry.ON, (mode, telemetry.ON)
    sdk = _setup_sdk(with_metrics=mode in ("on", "paired")) if mode in ("traces", "on", "paired") else None

    @wf.step
    async def async_step(i: int) -> int:
        return i

    @wf.step
    def sync_step(i: int) -> int:
        return i

    @wf.workflow
    async def chain(n: int) -> int:
        total = 0
        for i in range(n):
            total += await (async_step(i) if i % 2 else sync_step(i))
        return total

    data = Path(tempfile.mkdtemp(prefix="wf-bench-otel-"))
    world = LocalWorld(data, fsync=fsync)
    wf.configure(world=world)
    await started_world(world)
    worker = Worker(world)
    task = asyncio.create_task(worker.run())
    async def timed() -> tuple[float, float]:
        t0, c0 = time.perf_counter(), time.process_time()
        run = await wf.start_async(chain, steps)
        assert await run.result_async(timeout=600) == steps * (steps - 1) // 2
        return time.perf_counter() - t0, time.process_time() - c0

    try:
        run = await wf.start_async(chain, 10)  # warm-up
        await run.result_async(timeout=120)
        if mode == "paired":  # one process, telemetry switched on and off between runs, in turns
            cpu_us: dict[bool, list[float]] = {True: [], False: []}
            for round_ in range(runs):
                for on in ((True, False) if round_ % 2 else (False, True)):
                    telemetry.ON = on
                    cpu_us[on].append(1e6 * (await timed())[1] / steps)
            telemetry.ON = True
            return {"mode": mode, "on_us": cpu_us[True], "off_us": cpu_us[False]}
        wall = cpu = 0.0
        for _ in range(runs):
            run_wall, run_cpu = await timed()
            wall += run_wall
            cpu += run_cpu
    finally:
        worker.stop()
        await task
        await world.close()
        shutil.rmtree(data, ignore_errors=True)
    out: dict[str, Any] = {"mode": mode, "wall_us": wall / (runs * steps) * 1e6, "cpu_us": cpu / (runs * steps) * 1e6}
    if sdk is not None:
        processor, exporter = sdk
        processor.force_flush()
        out["spans"] = exporter.exported
        expected = (runs * (steps + 1)) + 10 + 1  # a span per step and per run (with the warm-up)
        assert exporter.exported == expected, (exporter.exported, expected)
    return out


# --- the parent: subprocesses per mode ---


def _site_without_opentelemetry(into: Path) -> Path:
    """A directory of symlinks to this environment's site-packages entries, less opentelemetry's."""
    into.mkdir(parents=True, exist_ok=True)
    for directory in site.getsitepackages():
        for entry in Path(directory).iterdir():
            if entry.name.startswith("opentelemetry") or (into / entry.name).exists():
                continue
            (into / entry.name).symlink_to(entry)
    return into


def _child_command(mode: str, args: argparse.Namespace, hidden_site: Path) -> tuple[list[str], dict[str, str]]:
    child_args = ["--child", mode, "--steps", str(args.steps), "--runs", str(args.runs)]
    if args.fsync:
        child_args.append("--fsync")
    env = {k: v for k, v in os.environ.items() if k not in ("WF_OTEL", "PYTHONPATH")}
    if mode == "off":
        env["WF_OTEL"] = "0"
    if mode == "absent":
        bootstrap = (f"import site, sys, runpy; site.addsitedir({str(hidden_site)!r}); "
                     f"sys.path.insert(0, {str(ROOT)!r}); sys.argv = ['benchmarks.otel', *{child_args!r}]; "
                     "runpy.run_module('benchmarks.otel', run_name='__main__')")
        return [sys.executable, "-S", "-c", bootstrap], env
    return [sys.executable, "-m", "benchmarks.otel", *child_args], env


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200, help="steps per workflow run")
    parser.add_argument("--runs", type=int, default=3, help="timed runs per subprocess")
    parser.add_argument("--rounds", type=int, default=5, help="subprocesses per mode (interleaved)")
    parser.add_argument("--fsync", action="store_true", help="fsync the log (default off: overhead shows more)")
    parser.add_argument("--paired", type=int, default=16, help="runs each way of the paired comparison (0: none)")
    parser.add_argument("--child", choices=(*MODES, "paired"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(asyncio.run(_child(args.child, args.steps, args.runs, args.fsync))))
        return
    samples: dict[str, list[dict[str, Any]]] = {mode: [] for mode in MODES}
    with tempfile.TemporaryDirectory(prefix="wf-bench-site-") as tmp:
        hidden = _site_without_opentelemetry(Path(tmp) / "site")
        for round_ in range(args.rounds):
            for mode in MODES:
                command, env = _child_command(mode, args, hidden)
                proc = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800)
                if proc.returncode != 0:
                    raise SystemExit(f"mode {mode} failed:\n{proc.stderr}")
                sample = json.loads(proc.stdout.strip().splitlines()[-1])
                samples[mode].append(sample)
                print(f"  round {round_ + 1} {mode:>6}: {sample['wall_us']:7.1f} us/step wall, "
                      f"{sample['cpu_us']:7.1f} us/step CPU", file=sys.stderr)
    print(f"per-step cost, {args.steps}-step workflows (half async, half sync steps), fsync "
          f"{'on' if args.fsync else 'off'}, {args.rounds} processes x {args.runs} runs per mode; the best "
          "process (least disturbed by other load) and the median:")
    print(f"{'mode':>8} | {'wall us/step':>12} {'vs absent':>9} {'median':>8} | {'CPU us/step':>11} {'vs absent':>9} "
          f"{'median':>8}")
    best = {mode: (min(s["wall_us"] for s in samples[mode]), min(s["cpu_us"] for s in samples[mode]))
            for mode in MODES}
    for mode in MODES:
        wall, cpu = best[mode]
        median_wall = statistics.median(s["wall_us"] for s in samples[mode])
        median_cpu = statistics.median(s["cpu_us"] for s in samples[mode])
        print(f"{mode:>8} | {wall:12.1f} {100 * (wall / best['absent'][0] - 1):+8.1f}% {median_wall:8.1f} | "
              f"{cpu:11.1f} {100 * (cpu / best['absent'][1] - 1):+8.1f}% {median_cpu:8.1f}")
    if args.paired:
        command = [sys.executable, "-m", "benchmarks.otel", "--child", "paired", "--steps", str(args.steps),
                   "--runs", str(args.paired), *(["--fsync"] if args.fsync else [])]
        proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=1800)
        if proc.returncode != 0:
            raise SystemExit(f"the paired comparison failed:\n{proc.stderr}")
        paired = json.loads(proc.stdout.strip().splitlines()[-1])
        on_min, off_min = min(paired["on_us"]), min(paired["off_us"])
        on_median, off_median = statistics.median(paired["on_us"]), statistics.median(paired["off_us"])
        print(f"paired, one process with traces and metrics configured, telemetry switched on and off between "
              f"{args.paired} runs each way (CPU us/step): on {on_min:.1f} vs off {off_min:.1f} best "
              f"({100 * (on_min / off_min - 1):+.1f}%, {on_min - off_min:+.1f} us), on {on_median:.1f} vs off "
              f"{off_median:.1f} median ({100 * (on_median / off_median - 1):+.1f}%, {on_median - off_median:+.1f} us)")


if __name__ == "__main__":
    main()
