"""Fixtures of the OpenTelemetry tests: the SDK's in-memory span exporter and metric reader set as
the global providers (once per session: OpenTelemetry allows no second), a World and workers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import wf
from wf.runtime import telemetry
from wf.runtime.config import started_world, world_from_url
from wf.runtime.loader import import_path
from wf.runtime.worker import Worker
from wf.runtime.world import World
from wf.world_testing.stores import fresh_store

from .helpers import Switch

FLOWS_FILE = Path(__file__).resolve().parent / "flows.py"


@dataclass
class Otel:
    exporter: InMemorySpanExporter
    reader: InMemoryMetricReader
    switch: Switch

    def spans(self) -> list[ReadableSpan]:
        return list(self.exporter.get_finished_spans())

    def metric(self, name: str) -> dict[frozenset[tuple[str, Any]], float]:
        """The points of metric `name`: attributes -> value (counters' sums, histograms' counts)."""
        out: dict[frozenset[tuple[str, Any]], float] = {}
        data = self.reader.get_metrics_data()
        for resource in data.resource_metrics if data else []:
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    if metric.name != name:
                        continue
                    for point in metric.data.data_points:
                        value = getattr(point, "value", None)
                        if value is None:
                            value = point.count
                        out[frozenset((point.attributes or {}).items())] = value
        return out


@pytest.fixture(scope="session")
def otel_providers() -> Otel:
    if not telemetry.ON:
        pytest.skip("opentelemetry is not installed (or WF_OTEL=0)")
    exporter = InMemorySpanExporter()
    switch = Switch(SimpleSpanProcessor(exporter))
    provider = TracerProvider()
    provider.add_span_processor(switch)
    trace.set_tracer_provider(provider)
    reader = InMemoryMetricReader()
    metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))
    return Otel(exporter, reader, switch)


@pytest.fixture
def otel(otel_providers: Otel) -> Iterator[Otel]:
    """Spans recorded during the test only; metrics are cumulative (compare before and after)."""
    otel_providers.exporter.clear()
    otel_providers.switch.on = True
    yield otel_providers
    otel_providers.switch.on = False
    otel_providers.exporter.clear()


@pytest.fixture(scope="session")
def flows() -> Any:
    return import_path(FLOWS_FILE)


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    store = fresh_store(tmp_path)
    w = world_from_url(store.url)
    wf.configure(world=w)
    await started_world(w)
    yield w
    await w.close()
    await store.drop()


@pytest.fixture
async def start_worker(world: World) -> AsyncIterator[Callable[..., Worker]]:
    running: list[tuple[Worker, asyncio.Task[None]]] = []

    def start(**kwargs: Any) -> Worker:
        kwargs.setdefault("skip_time", True)  # retries without their backoff
        worker = Worker(world, **kwargs)
        running.append((worker, asyncio.create_task(worker.run())))
        return worker

    yield start
    for worker, _ in running:
        worker.stop()
    for _, task in running:
        await asyncio.wait_for(task, 30)
