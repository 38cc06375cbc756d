"""The local World's data directory: format checks, hostile ids, restarts, torn and corrupt files,
and the recovery `start()` performs after a crash (real `kill -9` of a writer process)."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from wf.runtime.entities import EventType, HookStatus, RunStatus, WaitStatus
from wf.runtime.errors import CorruptDataError, DataDirError, EntityConflictError, InvalidIdError, NotFoundError
from wf.runtime.ids import new_run_id
from wf.runtime.world import WORKFLOW_QUEUE, World
from wf.world_local.world import LocalWorld
from wf.world_testing.builders import assert_views_match_log, ev, event_types, new_run, new_step

MakeWorld = Callable[[], Awaitable[World]]


@pytest.fixture
async def make_world(data_dir: Path) -> AsyncIterator[MakeWorld]:
    """Open (and start) another LocalWorld on the test's data dir; all are closed at the end."""
    opened: list[World] = []

    async def make() -> World:
        world = LocalWorld(data_dir)
        await world.start()
        opened.append(world)
        return world

    yield make
    for world in reversed(opened):
        await world.close()


def _log(data_dir: Path, run_id: str) -> Path:
    return data_dir / "runs" / run_id / "events.jsonl"


def _run_child(data_dir: Path, body: str) -> subprocess.CompletedProcess[str]:
    """Run `body` in a fresh Python process with `world` = LocalWorld(data_dir) started."""
    script = textwrap.dedent("""
        import asyncio, os, signal, sys
        from wf.runtime.entities import Event, EventType
        from wf.world_local.world import LocalWorld

        def ev(run_id, et, cid=None, **data):
            return Event(run_id=run_id, event_type=EventType(et), correlation_id=cid, data=data)

        async def main():
            world = LocalWorld(sys.argv[1])
            await world.start()
        {body}
        asyncio.run(main())
    """).replace("{body}", textwrap.indent(textwrap.dedent(body), "    "))
    return subprocess.run([sys.executable, "-c", script, str(data_dir)], capture_output=True, text=True, timeout=60)


# --- the directory ---


async def test_a_new_data_dir_is_created_with_its_format_marker(data_dir: Path) -> None:
    world = LocalWorld(data_dir / "nested")
    await world.start()
    marker = json.loads((data_dir / "nested" / "wf-data.json").read_text())
    assert marker == {"format": "wf-local", "version": 1}
    await world.close()


async def test_an_empty_existing_dir_is_initialised(data_dir: Path) -> None:
    data_dir.mkdir()
    world = LocalWorld(data_dir)
    await world.start()
    assert (data_dir / "wf-data.json").exists()
    await world.close()


async def test_a_dir_of_another_format_is_refused(data_dir: Path) -> None:
    data_dir.mkdir()
    (data_dir / "wf-data.json").write_text('{"format": "something-else", "version": 1}')
    with pytest.raises(DataDirError, match="something-else"):
        LocalWorld(data_dir)


async def test_a_dir_of_another_version_is_refused(data_dir: Path) -> None:
    data_dir.mkdir()
    (data_dir / "wf-data.json").write_text('{"format": "wf-local", "version": 99}')
    with pytest.raises(DataDirError, match="version 99"):
        LocalWorld(data_dir)


async def test_a_non_empty_dir_without_marker_is_refused_and_left_untouched(data_dir: Path) -> None:
    data_dir.mkdir()
    (data_dir / "thesis.tex").write_text("precious")
    with pytest.raises(DataDirError, match="not a wf data directory"):
        LocalWorld(data_dir)
    assert sorted(os.listdir(data_dir)) == ["thesis.tex"]


async def test_a_data_dir_path_that_is_a_file_is_refused(data_dir: Path) -> None:
    data_dir.write_text("x")
    with pytest.raises(DataDirError, match="is a file"):
        LocalWorld(data_dir)


async def test_env_vars_choose_data_dir_and_fsync(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WF_DATA_DIR", str(tmp_path / "from-env"))
    monkeypatch.setenv("WF_FSYNC", "0")
    world = LocalWorld()
    assert world.data_dir == tmp_path / "from-env" and world.fsync is False
    await world.close()
    monkeypatch.delenv("WF_FSYNC")
    world = LocalWorld()
    assert world.fsync is True
    await world.close()


# --- hostile ids ---

HOSTILE = ["../../etc", "a/b", "", "x" * 500, "\x00", "/etc/passwd", "..", ".hidden", "a\nb"]


def _tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


@pytest.mark.parametrize("bad", HOSTILE)
async def test_hostile_ids_are_refused_and_create_nothing(world: World, data_dir: Path, tmp_path: Path,
                                                          bad: str) -> None:
    run_id = await new_run(world)
    before = _tree(tmp_path)
    attempts = [
        world.events.create(bad, ev(bad, "run_created", workflow_name="w", input=None)),
        world.events.create(bad, ev(bad, "run_started", workflow_name="w", input=None)),
        world.events.create(run_id, ev(run_id, "step_created", bad, step_name="x", input=None)),
        world.events.create(run_id, ev(run_id, "hook_created", bad, token="t", metadata=None)),
        world.events.create(run_id, ev(run_id, "wait_created", bad, resume_at="2030-01-01T00:00:00+00:00")),
        world.runs.get(bad),
        world.steps.get(run_id, bad),
        world.steps.get(bad, "s1"),
        world.steps.list(bad),
        world.events.list(bad),
        world.hooks.get(run_id, bad),
        world.events.wait(bad, after_seq=0, timeout=0),
    ]
    for attempt in attempts:
        with pytest.raises(InvalidIdError):
            await attempt
    assert _tree(tmp_path) == before
    assert await event_types(world, run_id) == ["run_created", "run_started"]


# --- restarts ---


async def test_a_new_world_on_the_same_dir_sees_everything(make_world: MakeWorld) -> None:
    first = await make_world()
    run_id = await new_run(first, input={"a": 1})
    await new_step(first, run_id, "s1", started=True)
    await first.events.create(run_id, ev(run_id, "hook_created", "h1", token="restart", metadata=None))
    await first.close()

    second = await make_world()
    assert (await second.runs.get(run_id)).input == {"a": 1}
    assert (await second.hooks.get_by_token("restart")).run_id == run_id
    result = await second.events.create(run_id, ev(run_id, "step_completed", "s1", result=5))
    assert result.events[0].seq == 5
    await assert_views_match_log(second, run_id)


async def test_two_worlds_in_one_process_see_each_others_writes(make_world: MakeWorld) -> None:
    a = await make_world()
    b = await make_world()
    run_id = await new_run(a)
    await new_step(b, run_id, "s1", started=True)
    await a.events.create(run_id, ev(run_id, "step_completed", "s1", result=1))
    with pytest.raises(EntityConflictError):
        await b.events.create(run_id, ev(run_id, "step_completed", "s1", result=2))
    await assert_views_match_log(b, run_id)


async def test_start_enqueues_one_workflow_message_per_active_run(make_world: MakeWorld) -> None:
    first = await make_world()
    pending = await new_run(first, started=False)
    running = await new_run(first)
    done = await new_run(first)
    await first.events.create(done, ev(done, "run_completed"))
    await first.close()

    second = await make_world()
    await second.start()  # twice: still one message per run
    messages = await second.queue.list(WORKFLOW_QUEUE)
    assert sorted(m.payload["run_id"] for m in messages) == sorted([pending, running])
    assert {m.idempotency_key for m in messages} == {f"run:{pending}", f"run:{running}"}


# --- torn and corrupt files ---


async def test_a_torn_last_line_is_ignored_then_cut_by_the_next_write(world: World, data_dir: Path,
                                                                       make_world: MakeWorld) -> None:
    run_id = await new_run(world)
    log = _log(data_dir, run_id)
    intact = log.read_bytes()
    with log.open("ab") as f:
        f.write(b'{"run_id":"' + run_id.encode() + b'","event_type":"step_crea')  # a crash mid-write
    other = await make_world()  # another process's view, without any cache
    assert await event_types(other, run_id) == ["run_created", "run_started"]
    result = await other.events.create(run_id, ev(run_id, "step_created", "s1", step_name="a", input=None))
    assert result.events[0].seq == 2
    assert log.read_bytes().startswith(intact) and log.read_bytes().count(b"\n") == 3
    assert await event_types(world, run_id) == ["run_created", "run_started", "step_created"]
    await assert_views_match_log(world, run_id)


async def test_a_torn_batch_is_not_part_of_the_log(world: World, data_dir: Path, make_world: MakeWorld) -> None:
    run_id = await new_run(world)
    await world.events.create_batch(run_id, [
        ev(run_id, "step_created", "s1", step_name="a", input=None),
        ev(run_id, "step_created", "s2", step_name="b", input=None),
        ev(run_id, "step_created", "s3", step_name="c", input=None),
    ])
    log = _log(data_dir, run_id)
    lines = log.read_bytes().splitlines(keepends=True)
    assert lines[2].startswith(b'{"batch":3,')
    log.write_bytes(b"".join(lines[:4]))  # the crash kept two of the batch's three lines
    other = await make_world()
    assert await event_types(other, run_id) == ["run_created", "run_started"]
    await other.events.create(run_id, ev(run_id, "step_created", "s2", step_name="b2", input=None))
    assert [e.correlation_id for e in await world.events.list(run_id)][2:] == ["s2"]


async def test_a_corrupt_event_line_is_reported_with_file_and_line(world: World, data_dir: Path,
                                                                    make_world: MakeWorld) -> None:
    run_id = await new_run(world)
    await new_step(world, run_id, "s1")
    log = _log(data_dir, run_id)
    lines = log.read_bytes().splitlines(keepends=True)
    log.write_bytes(lines[0] + b"garbage that is not json\n" + lines[2])
    other = await make_world()
    with pytest.raises(CorruptDataError, match=r"events\.jsonl: line 2") as caught:
        await other.events.list(run_id)
    assert caught.value.path == str(log)
    with pytest.raises(CorruptDataError, match="line 2"):
        await other.events.create(run_id, ev(run_id, "step_started", "s1"))


async def test_a_damaged_run_view_is_ignored_for_the_log_and_a_corrupt_log_is_skipped_by_listings(
        world: World, data_dir: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    good = await new_run(world)
    bad_view = await new_run(world)
    bad_log = await new_run(world)
    await world.close()  # every view written
    (data_dir / "runs" / bad_view / "run.json").write_bytes(b'{"run_id": "trunc')
    (data_dir / "runs" / bad_log / "events.jsonl").write_bytes(b'{"run_id": "trunc\n')
    (data_dir / "runs" / bad_log / "run.json").write_bytes(b'{"run_id": "trunc')
    other = LocalWorld(data_dir)  # not started: nothing repairs the views
    assert (await other.runs.get(bad_view)).status == RunStatus.RUNNING  # run.json only mirrors the log
    with pytest.raises(CorruptDataError, match=r"events\.jsonl"):
        await other.runs.get(bad_log)
    with caplog.at_level(logging.WARNING, logger="wf.world_local"):
        listed = await other.runs.list()
    assert sorted(r.run_id for r in listed.data) == sorted([good, bad_view])
    assert bad_log in caplog.text
    await other.close()


async def test_start_repairs_a_corrupt_view_of_an_active_run(world: World, data_dir: Path,
                                                              make_world: MakeWorld) -> None:
    run_id = await new_run(world)
    await new_step(world, run_id, "s1")
    world._store.view_writer.flush()  # type: ignore[attr-defined]  # views are written behind the log
    (data_dir / "runs" / run_id / "run.json").write_bytes(b"")
    restarted = await make_world()
    await assert_views_match_log(restarted, run_id)


async def test_steps_hooks_and_waits_are_served_from_the_log_with_no_file_of_their_own(
        world: World, data_dir: Path) -> None:
    run_id = await new_run(world)
    await new_step(world, run_id, "s1")
    await new_step(world, run_id, "s2")
    world._store.view_writer.flush()  # type: ignore[attr-defined]
    # One view file per run; its steps are folded from the log (where they are current).
    assert sorted(p.name for p in (data_dir / "runs" / run_id).iterdir()) == ["events.jsonl", "run.json"]
    assert (await world.steps.get(run_id, "s1")).step_name
    assert [s.step_id for s in (await world.steps.list(run_id)).data] == ["s1", "s2"]


async def test_one_unreadable_run_does_not_stop_start(world: World, data_dir: Path, make_world: MakeWorld,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    broken = await new_run(world)
    healthy = await new_run(world)
    log = _log(data_dir, broken)
    lines = log.read_bytes().splitlines(keepends=True)
    log.write_bytes(b"[1, 2]\n" + lines[1])
    await world.close()
    with caplog.at_level(logging.WARNING, logger="wf.world_local"):
        restarted = await make_world()
    assert broken in caplog.text and "events.jsonl" in caplog.text
    assert [m.payload["run_id"] for m in await restarted.queue.list(WORKFLOW_QUEUE)] == [healthy]
    assert (await restarted.runs.get(healthy)).status == RunStatus.RUNNING


async def test_junk_in_the_runs_folder_is_ignored_by_listings(world: World, data_dir: Path) -> None:
    run_id = await new_run(world)
    (data_dir / "runs" / "README").write_text("hello")
    (data_dir / "runs" / "wrun_empty").mkdir()
    assert [r.run_id for r in (await world.runs.list()).data] == [run_id]
    assert (await world.hooks.list(status=HookStatus.DISPOSED)).data == []
    assert (await world.waits.list(status=WaitStatus.COMPLETED)).data == []


async def test_a_world_without_fsync_keeps_everything_across_restarts(data_dir: Path) -> None:
    world = LocalWorld(data_dir, fsync=False)
    await world.start()
    run_id = await new_run(world)
    await new_step(world, run_id, "s1", started=True)
    await world.events.create(run_id, ev(run_id, "run_completed", output="ok"))
    await world.close()
    again = LocalWorld(data_dir, fsync=False)
    await again.start()
    assert (await again.runs.get(run_id)).output == "ok"
    await assert_views_match_log(again, run_id)
    await again.close()


# --- crashes (a real kill -9 of the writing process at a chosen point) ---


async def test_start_repairs_views_when_a_writer_died_between_commit_and_views(
        world: World, data_dir: Path, make_world: MakeWorld) -> None:
    run_id = await new_run(world)
    await new_step(world, run_id, "s1", started=True)
    child = _run_child(data_dir, f"""
        import wf.world_local.run_store as run_store
        run_store.RunStore._write_views = lambda *a, **k: os.kill(os.getpid(), signal.SIGKILL)
        await world.events.create("{run_id}", ev("{run_id}", "step_completed", "s1", result=42))
    """)
    assert child.returncode == -9, child.stderr
    await world.close()  # writes the views still pending in this process
    on_disk = json.loads((data_dir / "runs" / run_id / "run.json").read_bytes())
    # Written when the run started (2), or by the child's start-up repair (4): it lags the log's 5 events...
    assert on_disk["event_count"] in (2, 4)
    reader = LocalWorld(data_dir)  # not started: nothing repairs the view
    assert (await reader.runs.get(run_id)).event_count == 5  # ...and readers see past it
    assert [r.event_count for r in (await reader.runs.list()).data] == [5]
    await reader.close()

    restarted = await make_world()
    await assert_views_match_log(restarted, run_id)
    assert (await restarted.steps.get(run_id, "s1")).output == 42


async def test_start_finishes_the_end_of_a_run_a_writer_died_in(
        world: World, data_dir: Path, make_world: MakeWorld) -> None:
    run_id = await new_run(world)
    await world.events.create(run_id, ev(run_id, "hook_created", "h1", token="dying", metadata=None))
    child = _run_child(data_dir, f"""
        import wf.world_local.run_store as run_store
        run_store.RunStore._write_views = lambda *a, **k: os.kill(os.getpid(), signal.SIGKILL)
        await world.events.create("{run_id}", ev("{run_id}", "run_completed", output=1))
    """)
    assert child.returncode == -9, child.stderr
    restarted = await make_world()
    await assert_views_match_log(restarted, run_id)
    assert [r.run_id for r in (await restarted.runs.list(status=RunStatus.COMPLETED)).data] == [run_id]
    assert (await restarted.runs.list(status=RunStatus.RUNNING)).data == []
    with pytest.raises(NotFoundError):
        await restarted.hooks.get_by_token("dying")


async def test_a_run_whose_creation_died_before_commit_does_not_exist(
        world: World, data_dir: Path, make_world: MakeWorld) -> None:
    run_id = new_run_id()
    child = _run_child(data_dir, f"""
        import wf.world_local.run_store as run_store
        run_store.RunStore._append = lambda *a, **k: os.kill(os.getpid(), signal.SIGKILL)
        await world.events.create("{run_id}", ev("{run_id}", "run_started", workflow_name="w", input=None))
    """)
    assert child.returncode == -9, child.stderr
    restarted = await make_world()
    with pytest.raises(NotFoundError):
        await restarted.runs.get(run_id)
    assert (await restarted.runs.list(status=RunStatus.RUNNING)).data == []
    assert await restarted.queue.list(WORKFLOW_QUEUE) == []
    # ...and the run can still be created for real.
    await restarted.events.create(run_id, ev(run_id, "run_started", workflow_name="w", input=None))
    assert (await restarted.runs.get(run_id)).status == RunStatus.RUNNING


async def test_a_token_left_by_a_writer_that_died_before_commit_is_taken_over(
        world: World, data_dir: Path) -> None:
    dead = await new_run(world)
    child = _run_child(data_dir, f"""
        import wf.world_local.run_store as run_store
        run_store.RunStore._append = lambda *a, **k: os.kill(os.getpid(), signal.SIGKILL)
        await world.events.create("{dead}", ev("{dead}", "hook_created", "h1", token="orphan", metadata=None))
    """)
    assert child.returncode == -9, child.stderr
    assert list((data_dir / "tokens").glob("*.json"))  # the claim survived the crash
    alive = await new_run(world)
    result = await world.events.create(alive, ev(alive, "hook_created", "h1", token="orphan", metadata=None))
    assert result.events[0].event_type == EventType.HOOK_CREATED
    assert (await world.hooks.get_by_token("orphan")).run_id == alive
