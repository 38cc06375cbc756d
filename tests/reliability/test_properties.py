"""Property tests: random event sequences against a real local World.

Whatever events arrive, in whatever order, the World either records them or refuses them
with one of the typed WorldErrors the runtime relies on (409/410/404/425), every log it
keeps replays through the state machine, and the materialized runs, steps, hooks and
waits equal the fold of the log after every single call. (Round-trips of values are in
tests/runtime/test_serialization.py.)
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from wf.runtime.entities import Event, EventType, HookStatus
from wf.runtime.errors import EntityConflictError, NotFoundError, RunExpiredError, TooEarlyError
from wf.runtime.state_machine import fold
from wf.world_local.world import LocalWorld

from .audit import _views_match, replay_through_state_machine

E = EventType
EXPECTED_ERRORS = (EntityConflictError, RunExpiredError, NotFoundError, TooEarlyError)
RUNS = ("wrun_a", "wrun_b")
_NOW = datetime.now(UTC)


def _data(event_type: EventType, draw: Any) -> dict[str, Any]:
    shift = timedelta(seconds=draw(st.sampled_from([-5, 5])))
    return {
        E.RUN_CREATED: {"workflow_name": "wf.prop", "input": None},
        E.RUN_STARTED: draw(st.sampled_from([{}, {"workflow_name": "wf.prop", "input": None}])),
        E.RUN_COMPLETED: {"output": 1},
        E.RUN_FAILED: {"error": {"type": "X", "message": "m"}},
        E.RUN_CANCELLED: {},
        E.STEP_CREATED: {"step_name": "prop.step", "input": None},
        E.STEP_STARTED: draw(st.sampled_from([{}, {"attempt": 1}, {"attempt": 2}])),
        E.STEP_COMPLETED: {"result": 1},
        E.STEP_RETRYING: {"error": {"type": "X"}, "retry_after": (_NOW + shift).isoformat()},
        E.STEP_FAILED: {"error": {"type": "X"}},
        E.HOOK_CREATED: {"token": draw(st.sampled_from(["tok1", "tok2"])), "metadata": None},
        E.HOOK_RECEIVED: {"payload": 1},
        E.HOOK_DISPOSED: {},
        E.HOOK_CONFLICT: {"token": "tok1"},
        E.WAIT_CREATED: {"resume_at": (_NOW + shift).isoformat()},
        E.WAIT_COMPLETED: {},
    }.get(event_type, {"kind": "patch", "name": "p1"})  # marker_recorded (and any newer type)


@st.composite
def events(draw: Any) -> tuple[str, Event]:
    run_id = draw(st.sampled_from(RUNS))
    event_type = draw(st.sampled_from(list(EventType)))
    cid = None
    if event_type.value.startswith(("step_", "hook_", "wait_")):
        cid = draw(st.sampled_from([f"{event_type.value.split('_')[0]}_{i}" for i in (1, 2)]))
    elif event_type == E.MARKER_RECORDED:
        cid = "patch_p1"
    return run_id, Event(run_id, event_type, cid, _data(event_type, draw))


async def _check(world: LocalWorld) -> None:
    live_tokens: list[str] = []
    for run_id in RUNS:
        try:
            log = await world.events.list(run_id)
        except NotFoundError:
            continue
        assert [e.seq for e in log] == list(range(len(log)))
        assert replay_through_state_machine(log) is None
        state = fold(log)
        assert await _views_match(world, run_id, state)
        live_tokens += [h.token for h in state.hooks.values() if h.status == HookStatus.ACTIVE]
    assert len(live_tokens) == len(set(live_tokens)), "one token held by two live hooks"
    for token in set(live_tokens):
        assert (await world.hooks.get_by_token(token)).token == token


async def _play(ops: list[tuple[bool, list[tuple[str, Event]]]]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        world = LocalWorld(Path(tmp) / "data", fsync=False)
        try:
            await world.start()
            for batch, items in ops:
                try:
                    if batch and len({r for r, _ in items}) == 1:
                        await world.events.create_batch(items[0][0], [e for _, e in items], skip_conflicts=True)
                    else:
                        for run_id, event in items:
                            try:
                                result = await world.events.create(run_id, event)
                            except EXPECTED_ERRORS:
                                continue
                            assert result.run == fold(await world.events.list(run_id)).run
                except EXPECTED_ERRORS:
                    pass
                await _check(world)
            await world.close()
            reopened = LocalWorld(Path(tmp) / "data", fsync=False)  # a restart sees the same state
            await reopened.start()
            await _check(reopened)
            await reopened.close()
        finally:
            await world.close()


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.booleans(), st.lists(events(), min_size=1, max_size=3)), min_size=1, max_size=25))
def test_random_event_sequences_never_leave_an_illegal_state(ops: list[tuple[bool, list[tuple[str, Event]]]]) -> None:
    asyncio.run(_play(ops))


@settings(max_examples=40, deadline=None)
@given(st.lists(events(), min_size=1, max_size=40))
def test_a_run_that_exists_always_begins_with_run_created(items: list[tuple[str, Event]]) -> None:
    async def play() -> None:
        with tempfile.TemporaryDirectory() as tmp:
            world = LocalWorld(Path(tmp) / "data", fsync=False)
            try:
                for run_id, event in items:
                    with contextlib.suppress(EXPECTED_ERRORS):
                        await world.events.create(run_id, event)
                for run_id in RUNS:
                    try:
                        log = await world.events.list(run_id)
                    except NotFoundError:
                        continue
                    assert log[0].event_type == E.RUN_CREATED
                    ends = [e for e in log if e.event_type in (E.RUN_COMPLETED, E.RUN_FAILED, E.RUN_CANCELLED)]
                    assert len(ends) <= 1 and (not ends or ends[0].seq == log[-1].seq)  # nothing after the end
            finally:
                await world.close()

    asyncio.run(play())

