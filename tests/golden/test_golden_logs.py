"""Golden event logs: runs recorded by an earlier wf (see record.py) replay cleanly on the current code.

The log format is a promise to users whose runs are in flight across an upgrade: if a change
to the runtime makes one of these logs diverge or end differently, that change breaks them.
"""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from wf.runtime.debugger import replay_run
from wf.runtime.entities import Event, EventType
from wf.runtime.registry import REGISTRY
from wf.runtime.state_machine import fold

from . import flows  # noqa: F401 - registers the workflows the logs were recorded from

LOGS = sorted(Path(__file__).with_name("logs").glob("*.jsonl"))
#: In the event model, but no runtime path records it (a hook is released by its run's end).
NEVER_RECORDED = {EventType.HOOK_DISPOSED}


def load(path: Path) -> list[Event]:
    return [Event.from_dict(orjson.loads(line)) for line in path.read_bytes().splitlines() if line.strip()]


def test_the_golden_logs_cover_every_event_type_the_runtime_records() -> None:
    seen = {event.event_type for path in LOGS for event in load(path)}
    assert seen == set(EventType) - NEVER_RECORDED


@pytest.mark.parametrize("path", LOGS, ids=[p.stem for p in LOGS])
def test_a_golden_log_replays_cleanly_to_its_recorded_end(path: Path) -> None:
    events = load(path)
    assert [e.seq for e in events] == list(range(len(events)))
    run = fold(events).run
    assert run is not None and run.status.terminal, f"{path.name} should hold a finished run"
    report = replay_run(REGISTRY.workflow(run.workflow_name), run, events)
    assert report.divergence is None, str(report.divergence)
    assert report.outcome_mismatch is None, report.outcome_mismatch
    assert report.fed == len(events) and report.pending_calls == []
