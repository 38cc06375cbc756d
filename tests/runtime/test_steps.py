"""Steps: retries, errors, metadata, and how failures reach the workflow and the caller."""

from __future__ import annotations

import time
from collections import Counter

import pytest

import wf
from wf.runtime.entities import EventType

ATTEMPTS: Counter[str] = Counter()
SEEN: dict[str, list] = {}


@wf.step(max_retries=3)
async def flaky(key: str, fail_times: int) -> str:
    ATTEMPTS[key] += 1
    if ATTEMPTS[key] <= fail_times:
        raise wf.RetryableError(f"try again ({ATTEMPTS[key]})", retry_after=0.01)
    return f"ok after {ATTEMPTS[key]}"


@wf.step
async def declined(key: str) -> None:
    ATTEMPTS[key] += 1
    raise wf.FatalError("card declined")


@wf.step(max_retries=0)
async def no_retries(key: str) -> None:
    ATTEMPTS[key] += 1
    raise ValueError("boom")


@wf.step(max_retries=1)
async def plain_error(key: str) -> None:
    ATTEMPTS[key] += 1
    SEEN.setdefault(key, []).append(time.monotonic())
    raise ConnectionError("service unavailable")


@wf.workflow
async def call_flaky(key: str, fail_times: int) -> str:
    return await flaky(key, fail_times)


@wf.workflow
async def call_declined(key: str) -> None:
    await declined(key)


@wf.workflow
async def call_no_retries(key: str) -> None:
    await no_retries(key)


@wf.workflow
async def call_plain_error(key: str) -> None:
    await plain_error(key)


@wf.workflow
async def catches_failure(key: str) -> dict:
    try:
        await declined(key)
    except wf.StepFailedError as exc:
        return {"type": exc.error_type, "message": exc.error_message}
    return {}


async def test_retry_succeeds_on_attempt_3(worker):
    run = await wf.start_async(call_flaky, "r3", 2)
    assert await run.result_async(timeout=10) == "ok after 3"
    events = await run.events_async()
    assert [e.event_type for e in events].count(EventType.STEP_RETRYING) == 2
    started = [e for e in events if e.event_type == EventType.STEP_STARTED]
    assert len(started) == 3


async def test_fatal_error_fails_at_attempt_1(world, worker):
    run = await wf.start_async(call_declined, "fatal")
    with pytest.raises(wf.WorkflowRunFailedError) as err:
        await run.result_async(timeout=10)
    assert ATTEMPTS["fatal"] == 1
    assert "card declined" in err.value.error_message
    step = (await world.steps.list(run.id)).data[0]
    assert step.status == "failed" and step.attempt == 1


async def test_retries_disabled_means_one_attempt(worker):
    run = await wf.start_async(call_no_retries, "once")
    with pytest.raises(wf.WorkflowRunFailedError):
        await run.result_async(timeout=10)
    assert ATTEMPTS["once"] == 1


async def test_default_backoff_waits_a_second_before_the_retry(worker):
    run = await wf.start_async(call_plain_error, "backoff")
    with pytest.raises(wf.WorkflowRunFailedError) as err:
        await run.result_async(timeout=10)
    first, second = SEEN["backoff"]
    assert second - first >= 0.95
    assert err.value.error_type == "StepFailedError"
    assert "ConnectionError" in err.value.error_message


async def test_a_failed_step_can_be_caught_with_its_original_type_and_message(worker):
    run = await wf.start_async(catches_failure, "caught")
    assert await run.result_async(timeout=10) == {"type": "FatalError", "message": "card declined"}


@wf.workflow
async def raises_in_workflow() -> None:
    raise KeyError("missing-key")


async def test_an_unhandled_workflow_error_fails_the_run_with_a_user_traceback(worker):
    run = await wf.start_async(raises_in_workflow)
    with pytest.raises(wf.WorkflowRunFailedError) as err:
        await run.result_async(timeout=10)
    assert err.value.error_type == "KeyError"
    assert "missing-key" in err.value.error_message
    assert "test_steps.py" in err.value.error_traceback
    assert "raise KeyError" in err.value.error_traceback
    assert "runtime/replay.py" not in err.value.error_traceback


@wf.step
async def step_meta() -> dict:
    meta = wf.get_step_metadata()
    wmeta = wf.get_workflow_metadata()
    return {"step_name": meta.step_name, "attempt": meta.attempt, "step_id": meta.step_id,
            "run_id": wmeta.run_id, "workflow": wmeta.workflow_name}


@wf.workflow
async def metadata_workflow() -> dict:
    meta = wf.get_workflow_metadata()
    inner = await step_meta()
    return {"run_id": meta.run_id, "workflow": meta.workflow_name, "started": meta.started_at is not None,
            "step": inner}


async def test_workflow_and_step_metadata(worker):
    run = await wf.start_async(metadata_workflow)
    result = await run.result_async(timeout=10)
    assert result["run_id"] == run.id
    assert result["workflow"].endswith("metadata_workflow")
    assert result["started"] is True
    assert result["step"]["attempt"] == 1
    assert result["step"]["step_name"].endswith("step_meta")
    assert result["step"]["run_id"] == run.id
    assert result["step"]["step_id"] == "step_1"


async def test_step_redelivered_with_attempts_spent_fails_cleanly(world, start_worker):
    """A worker died during a step's last attempt: the redelivered step is failed, not run again."""
    from wf.runtime.entities import Event
    run = await wf.start_async(call_no_retries, "crashed")
    rid = run.id
    await world.events.create(rid, Event(rid, EventType.RUN_STARTED))
    await world.events.create(rid, Event(rid, EventType.STEP_CREATED, correlation_id="step_1",
                                         data={"step_name": no_retries.name, "input": {"args": ["crashed"],
                                                                                       "kwargs": {}}}))
    await world.events.create(rid, Event(rid, EventType.STEP_STARTED, correlation_id="step_1"))
    # ... and here the worker running it inline died. A new worker takes the run over:
    start_worker()
    with pytest.raises(wf.WorkflowRunFailedError) as err:
        await run.result_async(timeout=10)
    assert "interrupted during its last attempt" in err.value.error_message
    assert ATTEMPTS["crashed"] == 0
