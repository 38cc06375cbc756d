"""Issue 15, item 14: the local World writes one JSON file per step, hook and wait behind the log, current
within about a second while the run goes on and at once when it ends; the log stays the truth."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest

from wf.runtime.client import resume_hook_in
from wf.runtime.state_machine import fold
from wf.world_local.entity_files import ENTITY_WRITE_DELAY, EntityFiles
from wf.world_local.world import LocalWorld

from .conftest import ended, reached, start, worker_on


@pytest.fixture(autouse=True)
def entity_files_on(monkeypatch: pytest.MonkeyPatch) -> None:
    """The files are off by default (their cost, see wf/world_local/entity_files.py): these tests turn them on."""
    monkeypatch.setenv("WF_ENTITY_FILES", "1")


def _files(data_dir: Path, run_id: str) -> dict[str, dict]:
    run_dir = data_dir / "runs" / run_id
    return {f"{p.parent.name}/{p.stem}": json.loads(p.read_text()) for kind in ("steps", "hooks", "waits")
            for p in sorted((run_dir / kind).glob("*.json"))}


def _truth(events: list) -> dict[str, dict]:
    state = fold(events)
    out = {}
    for kind, entities in (("steps", state.steps), ("hooks", state.hooks), ("waits", state.waits)):
        for entity_id, entity in entities.items():
            out[f"{kind}/{entity_id}"] = json.loads(json.dumps(entity.to_dict(), default=str))
    return out


def _without_log_events(files: dict[str, dict]) -> dict[str, dict]:
    return {k: {f: v for f, v in doc.items() if f != "log_events"} for k, doc in files.items()}


async def test_files_follow_a_live_run_within_a_second_and_at_once_when_it_ends(fresh: Path) -> None:
    async with worker_on(fresh) as world:
        run_id = await start(world, "chatty", "tok-entity-files")
        await reached(world, run_id, "hook_created")
        deadline = time.monotonic() + ENTITY_WRITE_DELAY + 1.5
        while "hooks/hook_1" not in _files(fresh, run_id):
            assert time.monotonic() < deadline, "the hook's file did not appear within about a second"
            await asyncio.sleep(0.05)
        live = _files(fresh, run_id)
        assert live["hooks/hook_1"]["status"] == "active" and live["steps/step_1"]["status"] == "completed"

        await resume_hook_in(world, "tok-entity-files", None)
        await ended(world, run_id)
        await asyncio.sleep(0.3)  # well under ENTITY_WRITE_DELAY: the end writes at once
        files = _files(fresh, run_id)
        events = await world.events.list(run_id)
        assert _without_log_events(files) == _truth(events)
        assert all(0 < doc["log_events"] <= len(events) for doc in files.values())  # unchanged ones: not rewritten
        run_view = json.loads((fresh / "runs" / run_id / "run.json").read_text())
        assert run_view["status"] == "completed"


async def test_a_writer_behind_never_replaces_a_newer_file(fresh: Path) -> None:
    async with worker_on(fresh) as world:
        run_id = await start(world, "retrying", 2)
        await ended(world, run_id)
        events = await world.events.list(run_id)
    await asyncio.sleep(0.1)
    path = fresh / "runs" / run_id / "steps" / "step_1.json"
    newest = path.read_text()
    older = fold(events[:4]).steps["step_1"]
    writer = EntityFiles(enabled=True)
    writer._write(str(path), older, 4)
    assert path.read_text() == newest
    writer._write(str(path), fold(events).steps["step_1"], len(events) + 1)
    assert json.loads(path.read_text())["log_events"] == len(events) + 1


async def test_they_are_off_without_the_setting(fresh: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WF_ENTITY_FILES")
    world = LocalWorld(fresh, fsync=False)
    await world.start()
    await world.close()
    async with worker_on(fresh) as world:
        run_id = await start(world, "retrying", 1)
        await ended(world, run_id)
    assert _files(fresh, run_id) == {}
    assert (fresh / "runs" / run_id / "run.json").exists()
