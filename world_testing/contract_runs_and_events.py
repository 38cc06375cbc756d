"""Conformance: the run state machine through `events.create`, batches, listings, and the event log."""

from __future__ import annotations

import asyncio
import time

import pytest

from wf.runtime.entities import EventType, RunStatus
from wf.runtime.errors import (
    EntityConflictError,
    InvalidIdError,
    NotFoundError,
    RunExpiredError,
    SerializationError,
)
from wf.runtime.ids import new_run_id
from wf.runtime.world import World

from .builders import WORKFLOW, assert_views_match_log, ev, event_types, new_run, new_step

# --- the run's life ---


async def test_run_created_makes_a_pending_run(world: World) -> None:
    run_id = new_run_id()
    result = await world.events.create(
        run_id, ev(run_id, "run_created", workflow_name=WORKFLOW, input={"x": 1}, attributes={"idempotency_key": "k"})
    )
    assert [e.event_type for e in result.events] == [EventType.RUN_CREATED]
    run = await world.runs.get(run_id)
    assert run.status == RunStatus.PENDING
    assert (run.workflow_name, run.input, run.attributes) == (WORKFLOW, {"x": 1}, {"idempotency_key": "k"})
    assert run.event_count == 1 and run.created_at is not None
    assert result.run == run


async def test_world_assigns_seq_event_id_and_created_at(world: World) -> None:
    run_id = await new_run(world)
    await new_step(world, run_id, "s1", started=True)
    events = await world.events.list(run_id)
    assert [e.seq for e in events] == [0, 1, 2, 3]
    assert all(e.event_id for e in events)
    assert [e.event_id for e in events] == sorted(e.event_id for e in events)
    assert all(e.created_at is not None and e.created_at.tzinfo is not None for e in events)


async def test_run_started_moves_a_pending_run_to_running(world: World) -> None:
    run_id = await new_run(world, started=False)
    result = await world.events.create(run_id, ev(run_id, "run_started"))
    assert [e.event_type for e in result.events] == [EventType.RUN_STARTED]
    run = await world.runs.get(run_id)
    assert run.status == RunStatus.RUNNING and run.started_at is not None


async def test_run_started_on_a_running_run_records_nothing(world: World) -> None:
    run_id = await new_run(world)
    result = await world.events.create(run_id, ev(run_id, "run_started"))
    assert result.events == []
    assert result.run.status == RunStatus.RUNNING
    assert await event_types(world, run_id) == ["run_created", "run_started"]


async def test_run_completed_records_the_output(world: World) -> None:
    run_id = await new_run(world)
    await world.events.create(run_id, ev(run_id, "run_completed", output={"total": 133}))
    run = await world.runs.get(run_id)
    assert run.status == RunStatus.COMPLETED
    assert run.output == {"total": 133} and run.completed_at is not None


async def test_run_failed_records_the_error(world: World) -> None:
    run_id = await new_run(world)
    error = {"type": "ValueError", "message": "bad", "traceback": "..."}
    await world.events.create(run_id, ev(run_id, "run_failed", error=error))
    run = await world.runs.get(run_id)
    assert run.status == RunStatus.FAILED and run.error == error


async def test_a_running_run_can_be_cancelled(world: World) -> None:
    run_id = await new_run(world)
    await world.events.create(run_id, ev(run_id, "run_cancelled", reason="operator"))
    assert (await world.runs.get(run_id)).status == RunStatus.CANCELLED


async def test_a_pending_run_can_be_cancelled(world: World) -> None:
    run_id = await new_run(world, started=False)
    await world.events.create(run_id, ev(run_id, "run_cancelled"))
    assert (await world.runs.get(run_id)).status == RunStatus.CANCELLED


async def test_cancelling_a_cancelled_run_records_nothing(world: World) -> None:
    run_id = await new_run(world)
    await world.events.create(run_id, ev(run_id, "run_cancelled"))
    result = await world.events.create(run_id, ev(run_id, "run_cancelled"))
    assert result.events == [] and result.run.status == RunStatus.CANCELLED
    assert await event_types(world, run_id) == ["run_created", "run_started", "run_cancelled"]


async def test_run_completed_on_a_pending_run_is_a_conflict(world: World) -> None:
    run_id = await new_run(world, started=False)
    with pytest.raises(EntityConflictError):
        await world.events.create(run_id, ev(run_id, "run_completed", output=1))
    assert (await world.runs.get(run_id)).status == RunStatus.PENDING


@pytest.mark.parametrize("ending", ["run_completed", "run_failed", "run_cancelled"])
@pytest.mark.parametrize("then", ["run_completed", "run_failed"])
async def test_ending_an_ended_run_again_is_a_conflict(world: World, ending: str, then: str) -> None:
    run_id = await new_run(world)
    await world.events.create(run_id, ev(run_id, ending))
    with pytest.raises(EntityConflictError):
        await world.events.create(run_id, ev(run_id, then))
    assert len(await world.events.list(run_id)) == 3


async def test_cancelling_a_completed_run_is_a_conflict(world: World) -> None:
    run_id = await new_run(world)
    await world.events.create(run_id, ev(run_id, "run_completed", output=None))
    with pytest.raises(EntityConflictError):
        await world.events.create(run_id, ev(run_id, "run_cancelled"))
    assert (await world.runs.get(run_id)).status == RunStatus.COMPLETED


@pytest.mark.parametrize("ending", ["run_completed", "run_failed", "run_cancelled"])
async def test_run_started_on_an_ended_run_is_expired(world: World, ending: str) -> None:
    run_id = await new_run(world)
    await world.events.create(run_id, ev(run_id, ending))
    with pytest.raises(RunExpiredError):
        await world.events.create(run_id, ev(run_id, "run_started"))


async def test_run_created_twice_is_a_conflict(world: World) -> None:
    run_id = await new_run(world)
    with pytest.raises(EntityConflictError):
        await world.events.create(run_id, ev(run_id, "run_created", workflow_name="other", input=None))
    assert (await world.runs.get(run_id)).workflow_name == WORKFLOW


async def test_run_created_without_workflow_name_is_refused_and_creates_nothing(world: World) -> None:
    run_id = new_run_id()
    with pytest.raises(NotFoundError):
        await world.events.create(run_id, ev(run_id, "run_created", input=None))
    with pytest.raises(NotFoundError):
        await world.runs.get(run_id)
    assert (await world.runs.list()).data == []


@pytest.mark.parametrize("event_type", ["run_started", "run_completed", "run_cancelled", "step_created"])
async def test_events_for_an_unknown_run_are_not_found_and_create_nothing(world: World, event_type: str) -> None:
    run_id = new_run_id()
    with pytest.raises(NotFoundError):
        await world.events.create(run_id, ev(run_id, event_type, "s1" if event_type == "step_created" else None,
                                             step_name="x"))
    with pytest.raises(NotFoundError):
        await world.runs.get(run_id)
    with pytest.raises(NotFoundError):
        await world.events.list(run_id)
    assert (await world.runs.list()).data == []


async def test_event_naming_another_run_is_refused(world: World) -> None:
    run_id = await new_run(world)
    other = new_run_id()
    with pytest.raises(InvalidIdError):
        await world.events.create(run_id, ev(other, "run_completed"))
    assert (await world.runs.get(run_id)).status == RunStatus.RUNNING


async def test_event_data_that_is_not_json_is_refused_and_records_nothing(world: World) -> None:
    run_id = await new_run(world)
    with pytest.raises(SerializationError):
        await world.events.create(run_id, ev(run_id, "step_created", "s1", step_name="a", input=object()))
    assert await event_types(world, run_id) == ["run_created", "run_started"]
    await world.events.create(run_id, ev(run_id, "step_created", "s1", step_name="a", input=1))


# --- lazy creation ---


async def test_run_started_with_workflow_name_creates_the_run(world: World) -> None:
    run_id = new_run_id()
    result = await world.events.create(run_id, ev(run_id, "run_started", workflow_name=WORKFLOW, input=[3]))
    assert [e.event_type for e in result.events] == [EventType.RUN_CREATED, EventType.RUN_STARTED]
    assert [e.seq for e in result.events] == [0, 1]
    run = await world.runs.get(run_id)
    assert run.status == RunStatus.RUNNING and run.input == [3] and run.workflow_name == WORKFLOW
    assert [r.run_id for r in (await world.runs.list(status=RunStatus.RUNNING)).data] == [run_id]


async def test_lazy_run_started_on_an_existing_pending_run_only_starts_it(world: World) -> None:
    run_id = await new_run(world, started=False, input="original")
    result = await world.events.create(run_id, ev(run_id, "run_started", workflow_name=WORKFLOW, input="other"))
    assert [e.event_type for e in result.events] == [EventType.RUN_STARTED]
    assert (await world.runs.get(run_id)).input == "original"
    assert await event_types(world, run_id) == ["run_created", "run_started"]


# --- batches ---


async def test_create_batch_records_all_events_in_order(world: World) -> None:
    run_id = await new_run(world)
    results = await world.events.create_batch(run_id, [
        ev(run_id, "step_created", "s1", step_name="a", input=None),
        ev(run_id, "step_created", "s2", step_name="b", input=None),
        ev(run_id, "wait_created", "w1", resume_at="2030-01-01T00:00:00+00:00"),
    ])
    assert [r.events[0].seq for r in results] == [2, 3, 4]
    assert results[0].step is not None and results[0].step.step_id == "s1"
    assert results[2].wait is not None and results[2].run.event_count == 5
    assert await event_types(world, run_id) == [
        "run_created", "run_started", "step_created", "step_created", "wait_created"]
    await assert_views_match_log(world, run_id)


async def test_create_batch_with_a_failing_event_records_nothing(world: World) -> None:
    run_id = await new_run(world)
    await new_step(world, run_id, "s1")
    before = await world.events.list(run_id)
    with pytest.raises(EntityConflictError):
        await world.events.create_batch(run_id, [
            ev(run_id, "step_created", "s2", step_name="b", input=None),
            ev(run_id, "step_created", "s1", step_name="dup", input=None),
            ev(run_id, "step_created", "s3", step_name="c", input=None),
        ])
    assert await world.events.list(run_id) == before
    with pytest.raises(NotFoundError):
        await world.steps.get(run_id, "s2")
    await assert_views_match_log(world, run_id)
    # The run's state was not left half-applied: s2 can still be created.
    await world.events.create(run_id, ev(run_id, "step_created", "s2", step_name="b", input=None))


async def test_create_batch_skip_conflicts_leaves_out_only_the_conflicts(world: World) -> None:
    run_id = await new_run(world)
    await new_step(world, run_id, "s1")
    results = await world.events.create_batch(run_id, [
        ev(run_id, "step_created", "s1", step_name="dup", input=None),
        ev(run_id, "step_created", "s2", step_name="b", input=None),
        ev(run_id, "step_created", "s2", step_name="dup", input=None),
    ], skip_conflicts=True)
    assert [len(r.events) for r in results] == [0, 1, 0]
    assert results[0].step is not None and results[0].step.step_name == "tests.step"
    assert await event_types(world, run_id) == ["run_created", "run_started", "step_created", "step_created"]
    await assert_views_match_log(world, run_id)


async def test_create_batch_skip_conflicts_still_aborts_on_other_errors(world: World) -> None:
    run_id = await new_run(world)
    before = await world.events.list(run_id)
    with pytest.raises(NotFoundError):
        await world.events.create_batch(run_id, [
            ev(run_id, "step_created", "s1", step_name="a", input=None),
            ev(run_id, "step_started", "missing"),
        ], skip_conflicts=True)
    assert await world.events.list(run_id) == before


async def test_create_batch_can_create_and_start_a_run(world: World) -> None:
    run_id = new_run_id()
    await world.events.create_batch(run_id, [
        ev(run_id, "run_created", workflow_name=WORKFLOW, input=None),
        ev(run_id, "run_started"),
        ev(run_id, "step_created", "s1", step_name="a", input=None),
    ])
    assert (await world.runs.get(run_id)).status == RunStatus.RUNNING
    await assert_views_match_log(world, run_id)


async def test_empty_batch_records_nothing(world: World) -> None:
    run_id = await new_run(world)
    assert await world.events.create_batch(run_id, []) == []
    assert len(await world.events.list(run_id)) == 2


# --- listing runs ---


async def _runs(world: World, n: int, **kwargs: object) -> list[str]:
    return [await new_run(world, **kwargs) for _ in range(n)]  # type: ignore[arg-type]


async def test_runs_list_pages_newest_first_with_a_cursor(world: World) -> None:
    ids = await _runs(world, 5)
    first = await world.runs.list(limit=2)
    assert [r.run_id for r in first.data] == ids[::-1][:2]
    assert first.next_cursor == ids[3]
    second = await world.runs.list(limit=2, cursor=first.next_cursor)
    assert [r.run_id for r in second.data] == [ids[2], ids[1]]
    last = await world.runs.list(limit=2, cursor=second.next_cursor)
    assert [r.run_id for r in last.data] == [ids[0]] and last.next_cursor is None


async def test_runs_list_oldest_first(world: World) -> None:
    ids = await _runs(world, 3)
    page = await world.runs.list(newest_first=False, limit=2)
    assert [r.run_id for r in page.data] == ids[:2]
    rest = await world.runs.list(newest_first=False, limit=2, cursor=page.next_cursor)
    assert [r.run_id for r in rest.data] == ids[2:] and rest.next_cursor is None


async def test_runs_list_page_of_exactly_limit_has_no_next_cursor(world: World) -> None:
    await _runs(world, 2)
    assert (await world.runs.list(limit=2)).next_cursor is None


async def test_runs_list_filters_by_status(world: World) -> None:
    pending = await new_run(world, started=False)
    running = await new_run(world)
    done = await new_run(world)
    await world.events.create(done, ev(done, "run_completed"))
    assert [r.run_id for r in (await world.runs.list(status=RunStatus.PENDING)).data] == [pending]
    assert [r.run_id for r in (await world.runs.list(status=RunStatus.COMPLETED)).data] == [done]
    active = await world.runs.list(status=[RunStatus.PENDING, RunStatus.RUNNING])
    assert {r.run_id for r in active.data} == {pending, running}
    assert (await world.runs.list(status=RunStatus.FAILED)).data == []


async def test_runs_list_filters_by_workflow_name_across_pages(world: World) -> None:
    a = await _runs(world, 3, workflow_name="wf.a")
    await _runs(world, 2, workflow_name="wf.b")
    page = await world.runs.list(workflow_name="wf.a", limit=2)
    assert [r.run_id for r in page.data] == a[::-1][:2]
    rest = await world.runs.list(workflow_name="wf.a", limit=2, cursor=page.next_cursor)
    assert [r.run_id for r in rest.data] == [a[0]]


async def test_runs_list_orders_by_creation_time_not_by_id(world: World) -> None:
    """Hashed ids (`wrun_k…`, idempotency keys and child runs) sort among the others by `created_at`."""
    from wf.runtime.starting import idempotent_run_id

    order = []
    for i in range(4):
        order.append(await new_run(world, run_id=idempotent_run_id(WORKFLOW, f"key-{i}") if i % 2 else None))
        await asyncio.sleep(0.003)  # distinct milliseconds
    newest = [r.run_id for r in (await world.runs.list()).data]
    assert newest == order[::-1]
    assert [r.run_id for r in (await world.runs.list(newest_first=False)).data] == order
    paged, cursor = [], None
    while True:
        page = await world.runs.list(limit=1, cursor=cursor)
        paged.extend(r.run_id for r in page.data)
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert paged == order[::-1]
    with pytest.raises(InvalidIdError):
        await world.runs.list(cursor="wrun_knosuchrun")


async def test_runs_list_rejects_a_non_positive_limit(world: World) -> None:
    with pytest.raises(ValueError):
        await world.runs.list(limit=0)


# --- resolve_data ---


async def test_resolve_data_false_leaves_payloads_out(world: World) -> None:
    run_id = await new_run(world, input={"secret": 1})
    await world.events.create(run_id, ev(run_id, "step_created", "s1", step_name="a", input={"big": "x"}))
    await world.events.create(run_id, ev(run_id, "step_started", "s1"))
    await world.events.create(run_id, ev(run_id, "step_completed", "s1", result={"out": 2}))
    await world.events.create(run_id, ev(run_id, "run_completed", output={"done": True}))

    run = await world.runs.get(run_id, resolve_data=False)
    assert run.input is None and run.output is None and run.status == RunStatus.COMPLETED
    assert [r.input for r in (await world.runs.list(resolve_data=False)).data] == [None]
    step = await world.steps.get(run_id, "s1", resolve_data=False)
    assert step.input is None and step.output is None and step.step_name == "a"
    assert (await world.steps.list(run_id, resolve_data=False)).data == [step]
    events = await world.events.list(run_id, resolve_data=False)
    assert not any({"input", "output", "result", "payload", "metadata"} & set(e.data) for e in events)
    assert events[0].data == {"workflow_name": WORKFLOW}
    # ...and the data is still there when asked for.
    assert (await world.runs.get(run_id)).output == {"done": True}
    assert (await world.steps.get(run_id, "s1")).output == {"out": 2}


# --- reading the log ---


async def test_events_list_after_seq_and_limit(world: World) -> None:
    run_id = await new_run(world)
    for i in range(4):
        await new_step(world, run_id, f"s{i}")
    assert [e.seq for e in await world.events.list(run_id, after_seq=2)] == [3, 4, 5]
    assert [e.seq for e in await world.events.list(run_id, after_seq=0, limit=2)] == [1, 2]
    assert await world.events.list(run_id, after_seq=5) == []


async def test_events_list_by_correlation_id(world: World) -> None:
    run_id = await new_run(world)
    await new_step(world, run_id, "s1", started=True)
    await new_step(world, run_id, "s10")
    await world.events.create(run_id, ev(run_id, "step_completed", "s1", result=1))
    events = await world.events.list_by_correlation_id(run_id, "s1")
    assert [e.event_type.value for e in events] == ["step_created", "step_started", "step_completed"]
    assert await world.events.list_by_correlation_id(run_id, "nothing") == []


async def test_events_wait_returns_at_once_when_the_event_is_there(world: World) -> None:
    run_id = await new_run(world)
    assert await world.events.wait(run_id, after_seq=0, timeout=5) is True


async def test_events_wait_times_out_without_new_events(world: World) -> None:
    run_id = await new_run(world)
    started = time.monotonic()
    assert await world.events.wait(run_id, after_seq=1, timeout=0.2) is False
    assert 0.15 <= time.monotonic() - started < 2


async def test_events_wait_wakes_when_an_event_is_recorded(world: World) -> None:
    run_id = await new_run(world)

    async def later() -> float:
        await asyncio.sleep(0.1)
        await new_step(world, run_id, "s1")
        return time.monotonic()

    writer = asyncio.create_task(later())
    assert await world.events.wait(run_id, after_seq=1, timeout=5) is True
    woke = time.monotonic()
    assert woke - await writer < 0.5


async def test_events_wait_for_a_run_that_does_not_exist_yet(world: World) -> None:
    run_id = new_run_id()

    async def later() -> None:
        await asyncio.sleep(0.05)
        await new_run(world, run_id=run_id, started=False)

    writer = asyncio.create_task(later())
    assert await world.events.wait(run_id, after_seq=-1, timeout=5) is True
    await writer


# --- the invariant ---


async def test_views_equal_the_fold_of_the_log_after_every_operation(world: World) -> None:
    run_id = await new_run(world, started=False, input=[1])
    steps: list[tuple[str, str | None, dict[str, object]]] = [
        ("run_started", None, {}),
        ("step_created", "s1", {"step_name": "a", "input": 1}),
        ("step_started", "s1", {}),
        ("step_retrying", "s1", {"error": {"message": "x"}, "retry_after": "2000-01-01T00:00:00+00:00"}),
        ("step_started", "s1", {}),
        ("step_completed", "s1", {"result": 2}),
        ("hook_created", "h1", {"token": "tok-views", "metadata": {"m": 1}}),
        ("hook_received", "h1", {"payload": 1}),
        ("wait_created", "w1", {"resume_at": "2030-01-01T00:00:00+00:00"}),
        ("wait_created", "w2", {"resume_at": "2000-01-01T00:00:00+00:00"}),
        ("wait_completed", "w2", {}),
        ("step_created", "s2", {"step_name": "b", "input": None}),
        ("step_failed", "s2", {"error": {"message": "fatal"}}),
        ("run_completed", None, {"output": 3}),
    ]
    await assert_views_match_log(world, run_id)
    for event_type, cid, data in steps:
        await world.events.create(run_id, ev(run_id, event_type, cid, **data))
        await assert_views_match_log(world, run_id)


async def test_a_run_read_here_shows_what_another_writer_committed_since(world: World, make_world) -> None:  # type: ignore[no-untyped-def]
    # This World has the run's state in memory from its own commits; another World (as another
    # process would) moves the run on: reads here must show that at once, not the remembered state.
    run_id = await new_run(world)
    await new_step(world, run_id, "s1", started=True)
    assert (await world.runs.get(run_id)).status == RunStatus.RUNNING
    other = await make_world()
    await other.events.create(run_id, ev(run_id, "step_completed", "s1", result=1))
    await other.events.create(run_id, ev(run_id, "run_completed", output="done"))
    run = await world.runs.get(run_id)
    assert (run.status, run.output, run.event_count) == (RunStatus.COMPLETED, "done", 6)
    assert [r.run_id for r in (await world.runs.list(status=RunStatus.COMPLETED)).data] == [run_id]
