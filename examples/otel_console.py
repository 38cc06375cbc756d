"""OpenTelemetry: wf's spans and metrics, printed by the SDK's console exporters.

    pip install 'wf[otel]' opentelemetry-sdk
    python examples/otel_console.py

One trace for the run, linked to the `checkout request` span that started it: the run's
span; under it a span per step attempt (`charge` fails once and is retried: two spans, the
first with an error status and the exception), the durable sleep, and the span the
`reserve` step opens itself, nested under that step's span. Then the step metrics. To send
all this to a collector instead, see the README's "OpenTelemetry" section.

With the CLI (the worker `--wait` runs prints the spans, then the result):

    OTEL_TRACES_EXPORTER=console wf start examples/otel_console.py:checkout '"book"' 42 --wait
"""

from __future__ import annotations

import asyncio
import os
import tempfile

from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import ConsoleMetricExporter, PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SimpleSpanProcessor

import wf

tracer = trace.get_tracer("shop")


@wf.step
def reserve(item: str) -> str:  # a sync step: its span is current in the worker's thread too
    with tracer.start_as_current_span("inventory lookup") as span:
        span.set_attribute("shop.item", item)
        return f"res-{item}"


@wf.step
async def charge(amount: int) -> str:
    if wf.get_step_metadata().attempt == 1:
        raise ConnectionError("the payment gateway timed out")  # retried after 1 s
    return f"ch-{amount}"


@wf.workflow
async def checkout(item: str, amount: int) -> dict[str, str]:
    reservation = await reserve(item)
    await wf.sleep("500ms")
    payment = await charge(amount)
    return {"reservation": reservation, "payment": payment}


def use_console_exporters() -> tuple[TracerProvider, MeterProvider]:
    """Spans printed as they end, metrics when the process exits (or the meter provider shuts down)."""
    resource = Resource.create({"service.name": "shop"})
    tracer_provider = TracerProvider(resource=resource)
    tracer_provider.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter()))
    trace.set_tracer_provider(tracer_provider)
    reader = PeriodicExportingMetricReader(ConsoleMetricExporter(), export_interval_millis=3_600_000)
    meter_provider = MeterProvider(resource=resource, metric_readers=[reader])
    metrics.set_meter_provider(meter_provider)
    return tracer_provider, meter_provider


if __name__ != "__main__" and os.environ.get("OTEL_TRACES_EXPORTER") == "console":
    use_console_exporters()  # loaded by `wf start`/`wf worker`: configured as the process starts


async def main() -> None:
    tracer_provider, meter_provider = use_console_exporters()
    with tempfile.TemporaryDirectory() as data_dir:
        wf.configure(data_dir=data_dir)
        with tracer.start_as_current_span("checkout request"):
            result = await wf.run_async(checkout, "book", 42)
    meter_provider.shutdown()  # prints the metrics once
    tracer_provider.shutdown()
    print("result:", result)


if __name__ == "__main__":
    asyncio.run(main())
