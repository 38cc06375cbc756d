"""Record the golden event logs: `python -m tests.golden.record` (from the repository root).

Runs every workflow of `flows.py` on a fresh local World with time skipping, then writes each
run's log to `logs/<name>.jsonl`, one event (`Event.to_dict()`) per line. Run it only when the
log format changes on purpose; CI replays what is committed.
"""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

import orjson

from wf.runtime.operations import cancel_run, child_run_ids
from wf.testing import WorkflowEnv

from . import flows

LOGS = Path(__file__).with_name("logs")


async def record() -> dict[str, str]:
    """Run the flows; return {log name: run id}."""
    with tempfile.TemporaryDirectory() as tmp:
        async with WorkflowEnv(Path(tmp) / "data") as env:
            names: dict[str, str] = {}
            names["order"] = (run := await env.start(flows.order, "o-1", 4200)).id
            await run.result_async(timeout=30)

            held = await env.start(flows.holder)
            await env.wait_for_hook("golden-held")
            names["holder_cancelled"] = held.id
            run = await env.start(flows.approval, "r-1")
            names["approval"] = run.id
            await env.resume_hook("approve:r-1", {"ok": True})
            await env.resume_hook("approve:r-1", {"ok": "again"})
            await run.result_async(timeout=30)
            await cancel_run(env.world, held.id, reason="golden")

            run = await env.start(flows.parent, 4)
            names["parent"] = run.id
            await run.result_async(timeout=30)
            for i, child_id in enumerate(await child_run_ids(env.world, run.id)):
                names[f"parent_child_{i}"] = child_id
            LOGS.mkdir(exist_ok=True)
            for name, run_id in names.items():
                events = await env.world.events.list(run_id)
                (LOGS / f"{name}.jsonl").write_bytes(b"".join(orjson.dumps(e.to_dict()) + b"\n" for e in events))
            return names


if __name__ == "__main__":
    for name, run_id in asyncio.run(record()).items():
        print(f"{name}: {run_id}")
