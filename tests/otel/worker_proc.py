"""A worker subprocess for the crash test: the SDK exporting spans to a file, a LocalWorld, flows.py.

    python tests/otel/worker_proc.py DATA_DIR SPANS_FILE
"""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> None:
    sys.path.insert(0, str(HERE.parents[1]))  # the repository, for `tests.otel.helpers`
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor

    from tests.otel.helpers import JsonLinesExporter
    from wf.runtime import worker as worker_module
    from wf.runtime.config import configure, started_world
    from wf.runtime.loader import import_path
    from wf.world_local.world import LocalWorld

    data_dir, spans_file = Path(sys.argv[1]), Path(sys.argv[2])
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(JsonLinesExporter(spans_file)))
    trace.set_tracer_provider(provider)
    worker_module.LEASE_SECONDS = 1.0  # a killed worker's run is taken over within a second or two
    import_path(HERE / "flows.py")

    async def run() -> None:
        world = LocalWorld(data_dir, fsync=False)
        configure(world=world)
        await started_world(world)
        worker = worker_module.Worker(world, concurrency=10)
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, worker.stop)
        print("ready", flush=True)
        await worker.run()
        await world.close()

    asyncio.run(run())


if __name__ == "__main__":
    main()
