"""Conformance: the step, hook and wait state machines through `events.create`, and their listings."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from wf.runtime.entities import EventType, HookStatus, StepStatus, WaitStatus
from wf.runtime.errors import (
    EntityConflictError,
    InvalidIdError,
    NotFoundError,
    RunExpiredError,
    TooEarlyError,
)
from wf.runtime.world import World

from .builders import assert_views_match_log, ev, event_types, iso, new_run, new_step

# --- steps ---


async def test_step_created_makes_a_pending_step(world: World) -> None:
    run_id = await new_run(world)
    result = await world.events.create(run_id, ev(run_id, "step_created", "s1", step_name="mod.add", input=[1, 2]))
    step = await world.steps.get(run_id, "s1")
    assert result.step == step
    assert (step.status, step.step_name, step.input, step.attempt) == (StepStatus.PENDING, "mod.add", [1, 2], 0)


async def test_step_created_twice_is_a_conflict(world: World) -> None:
    run_id = await new_run(world)
    await new_step(world, run_id, "s1")
    with pytest.raises(EntityConflictError):
        await world.events.create(run_id, ev(run_id, "step_created", "s1", step_name="again", input=None))
    assert await event_types(world, run_id) == ["run_created", "run_started", "step_created"]


async def test_step_started_makes_it_running_and_counts_the_attempt(world: World) -> None:
    run_id = await new_run(world)
    await new_step(world, run_id, "s1")
    result = await world.events.create(run_id, ev(run_id, "step_started", "s1"))
    assert result.step is not None
    assert (result.step.status, result.step.attempt) == (StepStatus.RUNNING, 1)
    assert result.step.started_at is not None


async def test_step_started_again_while_running_is_a_redelivery(world: World) -> None:
    run_id = await new_run(world)
    await new_step(world, run_id, "s1", started=True)
    result = await world.events.create(run_id, ev(run_id, "step_started", "s1"))
    assert result.step is not None and (result.step.status, result.step.attempt) == (StepStatus.RUNNING, 2)


async def test_step_retrying_returns_the_step_to_pending_until_retry_after(world: World) -> None:
    run_id = await new_run(world)
    await new_step(world, run_id, "s1", started=True)
    retry_after = iso(3600)
    await world.events.create(run_id, ev(run_id, "step_retrying", "s1", error={"message": "flaky"},
                                         retry_after=retry_after))
    step = await world.steps.get(run_id, "s1")
    assert step.status == StepStatus.PENDING and step.error == {"message": "flaky"}
    assert step.retry_after == datetime.fromisoformat(retry_after)


async def test_step_started_before_retry_after_is_too_early(world: World) -> None:
    run_id = await new_run(world)
    await new_step(world, run_id, "s1", started=True)
    retry_after = iso(3600)
    await world.events.create(run_id, ev(run_id, "step_retrying", "s1", error={}, retry_after=retry_after))
    with pytest.raises(TooEarlyError) as caught:
        await world.events.create(run_id, ev(run_id, "step_started", "s1"))
    assert caught.value.retry_after == datetime.fromisoformat(retry_after)
    assert (await world.steps.get(run_id, "s1")).attempt == 1


async def test_step_started_after_retry_after_starts_the_next_attempt(world: World) -> None:
    run_id = await new_run(world)
    await new_step(world, run_id, "s1", started=True)
    await world.events.create(run_id, ev(run_id, "step_retrying", "s1", error={}, retry_after=iso(-1)))
    result = await world.events.create(run_id, ev(run_id, "step_started", "s1"))
    assert result.step is not None
    assert (result.step.status, result.step.attempt, result.step.retry_after) == (StepStatus.RUNNING, 2, None)


async def test_step_completed_records_the_result(world: World) -> None:
    run_id = await new_run(world)
    await new_step(world, run_id, "s1", started=True)
    await world.events.create(run_id, ev(run_id, "step_completed", "s1", result={"sum": 3}))
    step = await world.steps.get(run_id, "s1")
    assert (step.status, step.output) == (StepStatus.COMPLETED, {"sum": 3}) and step.completed_at is not None


async def test_step_completed_twice_is_a_conflict(world: World) -> None:
    run_id = await new_run(world)
    await new_step(world, run_id, "s1", started=True)
    await world.events.create(run_id, ev(run_id, "step_completed", "s1", result=1))
    with pytest.raises(EntityConflictError):
        await world.events.create(run_id, ev(run_id, "step_completed", "s1", result=2))
    assert (await world.steps.get(run_id, "s1")).output == 1


async def test_step_completed_on_a_pending_step_is_a_conflict(world: World) -> None:
    run_id = await new_run(world)
    await new_step(world, run_id, "s1")
    with pytest.raises(EntityConflictError):
        await world.events.create(run_id, ev(run_id, "step_completed", "s1", result=1))


async def test_step_failed_on_a_pending_step_fails_it(world: World) -> None:
    run_id = await new_run(world)
    await new_step(world, run_id, "s1")
    await world.events.create(run_id, ev(run_id, "step_failed", "s1", error={"message": "no"}))
    assert (await world.steps.get(run_id, "s1")).status == StepStatus.FAILED


@pytest.mark.parametrize("then", ["step_started", "step_completed", "step_failed", "step_retrying"])
async def test_events_on_a_failed_step_are_conflicts(world: World, then: str) -> None:
    run_id = await new_run(world)
    await new_step(world, run_id, "s1", started=True)
    await world.events.create(run_id, ev(run_id, "step_failed", "s1", error={"message": "no"}))
    with pytest.raises(EntityConflictError):
        await world.events.create(run_id, ev(run_id, then, "s1", error={}, retry_after=iso(1)))


@pytest.mark.parametrize("event_type", ["step_started", "step_completed", "step_failed", "step_retrying"])
async def test_events_on_an_unknown_step_are_not_found(world: World, event_type: str) -> None:
    run_id = await new_run(world)
    with pytest.raises(NotFoundError):
        await world.events.create(run_id, ev(run_id, event_type, "nope", error={}, retry_after=iso(1)))
    with pytest.raises(NotFoundError):
        await world.steps.get(run_id, "nope")


@pytest.mark.parametrize("ending", ["run_completed", "run_failed", "run_cancelled"])
@pytest.mark.parametrize(
    "event",
    [
        ("step_created", "s9", {"step_name": "x", "input": None}),
        ("step_started", "s1", {}),
        ("hook_created", "h1", {"token": "t-ended", "metadata": None}),
        ("wait_created", "w1", {"resume_at": "2030-01-01T00:00:00+00:00"}),
    ],
)
async def test_creating_work_on_an_ended_run_is_expired(
    world: World, ending: str, event: tuple[str, str, dict[str, object]]
) -> None:
    run_id = await new_run(world)
    await new_step(world, run_id, "s1")
    await world.events.create(run_id, ev(run_id, ending))
    event_type, cid, data = event
    with pytest.raises(RunExpiredError):
        await world.events.create(run_id, ev(run_id, event_type, cid, **data))
    assert len(await world.events.list(run_id)) == 4


async def test_step_event_without_correlation_id_is_not_found(world: World) -> None:
    run_id = await new_run(world)
    with pytest.raises(NotFoundError):
        await world.events.create(run_id, ev(run_id, "step_created", None, step_name="x", input=None))


async def test_steps_list_keeps_creation_order_and_pages(world: World) -> None:
    run_id = await new_run(world)
    order = ["zeta", "alpha", "mid", "beta", "a"]
    for step_id in order:
        await new_step(world, run_id, step_id)
    await world.events.create(run_id, ev(run_id, "step_started", "alpha"))
    first = await world.steps.list(run_id, limit=2)
    assert [s.step_id for s in first.data] == order[:2] and first.next_cursor is not None
    second = await world.steps.list(run_id, limit=2, cursor=first.next_cursor)
    assert [s.step_id for s in second.data] == order[2:4]
    last = await world.steps.list(run_id, limit=2, cursor=second.next_cursor)
    assert [s.step_id for s in last.data] == order[4:] and last.next_cursor is None
    assert first.data[1].status == StepStatus.RUNNING


async def test_steps_list_of_a_run_without_steps_is_empty(world: World) -> None:
    run_id = await new_run(world)
    assert (await world.steps.list(run_id)).data == []


async def test_steps_of_an_unknown_run_are_not_found(world: World) -> None:
    with pytest.raises(NotFoundError):
        await world.steps.list("wrun_unknown")
    with pytest.raises(NotFoundError):
        await world.steps.get("wrun_unknown", "s1")


# --- hooks ---


async def _hook(world: World, run_id: str, hook_id: str, token: str) -> EventType:
    result = await world.events.create(run_id, ev(run_id, "hook_created", hook_id, token=token, metadata={"k": 1}))
    return result.events[0].event_type


async def test_hook_created_is_found_by_its_token(world: World) -> None:
    run_id = await new_run(world)
    assert await _hook(world, run_id, "h1", "approve:o-1") == EventType.HOOK_CREATED
    hook = await world.hooks.get_by_token("approve:o-1")
    assert (hook.run_id, hook.hook_id, hook.status, hook.metadata) == (run_id, "h1", HookStatus.ACTIVE, {"k": 1})
    assert await world.hooks.get(run_id, "h1") == hook


async def test_any_string_can_be_a_token(world: World) -> None:
    run_id = await new_run(world)
    token = "../../etc/passwd\x00 é/∞"
    assert await _hook(world, run_id, "h1", token) == EventType.HOOK_CREATED
    assert (await world.hooks.get_by_token(token)).hook_id == "h1"


async def test_hook_created_without_a_token_is_refused(world: World) -> None:
    run_id = await new_run(world)
    with pytest.raises(InvalidIdError):
        await world.events.create(run_id, ev(run_id, "hook_created", "h1", metadata=None))


async def test_unknown_token_is_not_found(world: World) -> None:
    with pytest.raises(NotFoundError):
        await world.hooks.get_by_token("nobody-has-this")


async def test_hook_received_counts_payloads(world: World) -> None:
    run_id = await new_run(world)
    await _hook(world, run_id, "h1", "tok")
    for payload in (1, 2):
        await world.events.create(run_id, ev(run_id, "hook_received", "h1", payload=payload))
    assert (await world.hooks.get(run_id, "h1")).received_count == 2
    events = await world.events.list_by_correlation_id(run_id, "h1")
    assert [e.data.get("payload") for e in events[1:]] == [1, 2]


async def test_token_held_by_a_live_hook_of_another_run_is_recorded_as_a_conflict(world: World) -> None:
    first = await new_run(world)
    second = await new_run(world)
    await _hook(world, first, "h1", "shared")
    result = await world.events.create(second, ev(second, "hook_created", "h2", token="shared", metadata=None))
    assert [e.event_type for e in result.events] == [EventType.HOOK_CONFLICT]
    assert result.events[0].data == {"token": "shared"} and result.hook is None
    assert (await world.hooks.get_by_token("shared")).run_id == first
    with pytest.raises(NotFoundError):
        await world.hooks.get(second, "h2")
    await assert_views_match_log(world, second)


async def test_token_conflict_within_one_run(world: World) -> None:
    run_id = await new_run(world)
    await _hook(world, run_id, "h1", "same")
    assert await _hook(world, run_id, "h2", "same") == EventType.HOOK_CONFLICT


async def test_hook_disposed_releases_the_token_for_another_run(world: World) -> None:
    first = await new_run(world)
    await _hook(world, first, "h1", "reuse-me")
    await world.events.create(first, ev(first, "hook_disposed", "h1"))
    assert (await world.hooks.get(first, "h1")).status == HookStatus.DISPOSED
    with pytest.raises(NotFoundError):
        await world.hooks.get_by_token("reuse-me")
    second = await new_run(world)
    assert await _hook(world, second, "h1", "reuse-me") == EventType.HOOK_CREATED
    assert (await world.hooks.get_by_token("reuse-me")).run_id == second


@pytest.mark.parametrize("ending", ["run_completed", "run_failed", "run_cancelled"])
async def test_token_is_released_when_its_run_ends_and_can_be_reused(world: World, ending: str) -> None:
    first = await new_run(world)
    await _hook(world, first, "h1", "order-7")
    await world.events.create(first, ev(first, ending))
    hook = await world.hooks.get(first, "h1")
    assert hook.status == HookStatus.DISPOSED and hook.disposed_at is not None
    with pytest.raises(NotFoundError):
        await world.hooks.get_by_token("order-7")
    second = await new_run(world)
    assert await _hook(world, second, "h1", "order-7") == EventType.HOOK_CREATED


async def test_hook_received_on_a_disposed_hook_is_not_found(world: World) -> None:
    run_id = await new_run(world)
    await _hook(world, run_id, "h1", "tok")
    await world.events.create(run_id, ev(run_id, "hook_disposed", "h1"))
    with pytest.raises(NotFoundError):
        await world.events.create(run_id, ev(run_id, "hook_received", "h1", payload=1))


async def test_hook_received_after_the_run_ended_is_not_found(world: World) -> None:
    run_id = await new_run(world)
    await _hook(world, run_id, "h1", "tok")
    await world.events.create(run_id, ev(run_id, "run_completed"))
    with pytest.raises(NotFoundError):
        await world.events.create(run_id, ev(run_id, "hook_received", "h1", payload=1))


async def test_hook_disposed_twice_is_a_conflict(world: World) -> None:
    run_id = await new_run(world)
    await _hook(world, run_id, "h1", "tok")
    await world.events.create(run_id, ev(run_id, "hook_disposed", "h1"))
    with pytest.raises(EntityConflictError):
        await world.events.create(run_id, ev(run_id, "hook_disposed", "h1"))


async def test_hook_created_twice_is_a_conflict(world: World) -> None:
    run_id = await new_run(world)
    await _hook(world, run_id, "h1", "tok")
    with pytest.raises(EntityConflictError):
        await world.events.create(run_id, ev(run_id, "hook_created", "h1", token="other", metadata=None))
    with pytest.raises(NotFoundError):
        await world.hooks.get_by_token("other")


async def test_failed_batch_does_not_keep_its_hook_tokens(world: World) -> None:
    run_id = await new_run(world)
    with pytest.raises(EntityConflictError):
        await world.events.create_batch(run_id, [
            ev(run_id, "hook_created", "h1", token="batch-token", metadata=None),
            ev(run_id, "run_started"),
            ev(run_id, "run_completed"),
            ev(run_id, "run_completed"),
        ])
    other = await new_run(world)
    assert await _hook(world, other, "h1", "batch-token") == EventType.HOOK_CREATED


async def test_hooks_list_of_a_run_in_creation_order_with_status_filter(world: World) -> None:
    run_id = await new_run(world)
    for hook_id in ("hz", "ha", "hm"):
        await _hook(world, run_id, hook_id, f"tok-{hook_id}")
    await world.events.create(run_id, ev(run_id, "hook_disposed", "ha"))
    assert [h.hook_id for h in (await world.hooks.list(run_id=run_id)).data] == ["hz", "ha", "hm"]
    active = await world.hooks.list(run_id=run_id, status=HookStatus.ACTIVE)
    assert [h.hook_id for h in active.data] == ["hz", "hm"]
    page = await world.hooks.list(run_id=run_id, limit=1)
    rest = await world.hooks.list(run_id=run_id, limit=5, cursor=page.next_cursor)
    assert [h.hook_id for h in page.data + rest.data] == ["hz", "ha", "hm"]


async def test_hooks_list_without_run_shows_every_live_hook(world: World) -> None:
    first = await new_run(world)
    second = await new_run(world)
    ended = await new_run(world)
    await _hook(world, first, "h1", "t1")
    await _hook(world, second, "h2", "t2")
    await _hook(world, second, "h3", "t3")
    await world.events.create(second, ev(second, "hook_disposed", "h3"))
    await _hook(world, ended, "h4", "t4")
    await world.events.create(ended, ev(ended, "run_cancelled"))
    live = await world.hooks.list()
    assert sorted((h.run_id, h.hook_id) for h in live.data) == sorted([(first, "h1"), (second, "h2")])
    page = await world.hooks.list(limit=1)
    rest = await world.hooks.list(limit=1, cursor=page.next_cursor)
    assert len(page.data + rest.data) == 2 and rest.next_cursor is None
    assert {h.hook_id for h in page.data + rest.data} == {"h1", "h2"}
    disposed = await world.hooks.list(status=HookStatus.DISPOSED)
    assert sorted(h.hook_id for h in disposed.data) == ["h3", "h4"]


# --- waits ---


async def test_wait_created_then_completed(world: World) -> None:
    run_id = await new_run(world)
    resume_at = iso(60)
    result = await world.events.create(run_id, ev(run_id, "wait_created", "w1", resume_at=resume_at))
    assert result.wait is not None
    assert (result.wait.status, result.wait.resume_at) == (WaitStatus.WAITING, datetime.fromisoformat(resume_at))
    result = await world.events.create(run_id, ev(run_id, "wait_completed", "w1"))
    assert result.wait is not None and result.wait.status == WaitStatus.COMPLETED
    assert (await world.waits.list(run_id=run_id)).data == [result.wait]


async def test_wait_created_twice_is_a_conflict(world: World) -> None:
    run_id = await new_run(world)
    await world.events.create(run_id, ev(run_id, "wait_created", "w1", resume_at=iso(60)))
    with pytest.raises(EntityConflictError):
        await world.events.create(run_id, ev(run_id, "wait_created", "w1", resume_at=iso(60)))


async def test_wait_completed_twice_is_a_conflict(world: World) -> None:
    run_id = await new_run(world)
    await world.events.create(run_id, ev(run_id, "wait_created", "w1", resume_at=iso(0)))
    await world.events.create(run_id, ev(run_id, "wait_completed", "w1"))
    with pytest.raises(EntityConflictError):
        await world.events.create(run_id, ev(run_id, "wait_completed", "w1"))


async def test_wait_completed_for_an_unknown_wait_is_not_found(world: World) -> None:
    run_id = await new_run(world)
    with pytest.raises(NotFoundError):
        await world.events.create(run_id, ev(run_id, "wait_completed", "w404"))


async def test_waits_of_an_ended_run_are_disposed(world: World) -> None:
    run_id = await new_run(world)
    await world.events.create(run_id, ev(run_id, "wait_created", "w1", resume_at=iso(60)))
    await world.events.create(run_id, ev(run_id, "run_cancelled"))
    [wait] = (await world.waits.list(run_id=run_id)).data
    assert wait.status == WaitStatus.DISPOSED and wait.completed_at is not None
    assert (await world.waits.list()).data == []


async def test_waits_list_without_run_shows_the_waiting_waits_of_active_runs(world: World) -> None:
    first = await new_run(world)
    second = await new_run(world)
    for run_id in (first, second):
        await world.events.create(run_id, ev(run_id, "wait_created", "w1", resume_at=iso(60)))
        await world.events.create(run_id, ev(run_id, "wait_created", "w2", resume_at=iso(0)))
    await world.events.create(first, ev(first, "wait_completed", "w2"))
    waiting = await world.waits.list()
    assert sorted((w.run_id, w.wait_id) for w in waiting.data) == sorted(
        [(first, "w1"), (second, "w1"), (second, "w2")])
    page = await world.waits.list(limit=2)
    rest = await world.waits.list(limit=2, cursor=page.next_cursor)
    assert len(page.data) == 2 and len(rest.data) == 1 and rest.next_cursor is None
    completed = await world.waits.list(status=WaitStatus.COMPLETED)
    assert [(w.run_id, w.wait_id) for w in completed.data] == [(first, "w2")]


async def test_waits_list_of_one_run_filters_by_status(world: World) -> None:
    run_id = await new_run(world)
    await world.events.create(run_id, ev(run_id, "wait_created", "w1", resume_at=iso(60)))
    await world.events.create(run_id, ev(run_id, "wait_created", "w2", resume_at=iso(0)))
    await world.events.create(run_id, ev(run_id, "wait_completed", "w2"))
    page = await world.waits.list(run_id=run_id, status=WaitStatus.WAITING)
    assert [w.wait_id for w in page.data] == ["w1"]


async def test_resume_at_is_kept_as_an_aware_datetime(world: World) -> None:
    run_id = await new_run(world)
    await world.events.create(run_id, ev(run_id, "wait_created", "w1", resume_at="2031-05-06T07:08:09+00:00"))
    [wait] = (await world.waits.list(run_id=run_id)).data
    assert wait.resume_at == datetime(2031, 5, 6, 7, 8, 9, tzinfo=UTC)
