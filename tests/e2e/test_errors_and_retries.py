"""Errors reach the caller with message and traceback; retries follow the step's policy."""

from __future__ import annotations

from types import ModuleType

import pytest

import wf

from .conftest import E2E


async def test_a_step_error_propagates_with_message_and_traceback(e2e: E2E, workflows: ModuleType) -> None:
    run = await e2e.env.start(workflows.step_error, "disk on fire")
    with pytest.raises(wf.WorkflowRunFailedError) as caught:
        await run.result_async(timeout=20)
    err = caught.value
    assert err.error_type == "StepFailedError" and "ValueError: disk on fire" in err.error_message
    assert "workflows.py" in err.error_traceback and "await explode(message)" in err.error_traceback
    (step,) = await e2e.env.steps(run)
    assert step.error is not None and step.error["type"] == "ValueError"
    assert "raise ValueError(message)" in step.error["traceback"]


async def test_a_workflow_error_propagates_with_message_and_traceback(e2e: E2E, workflows: ModuleType) -> None:
    run = await e2e.env.start(workflows.workflow_error, "missing")
    with pytest.raises(wf.WorkflowRunFailedError) as caught:
        await run.result_async(timeout=20)
    assert caught.value.error_type == "KeyError" and "missing" in caught.value.error_message
    assert "raise KeyError(message)" in caught.value.error_traceback
    assert await run.status_async() == "failed"


async def test_retry_succeeds_on_attempt_three(e2e: E2E, workflows: ModuleType) -> None:
    run = await e2e.env.start(workflows.retry_until_third)
    assert await run.result_async(timeout=20) == 3
    types = await e2e.env.event_types(run)
    assert types.count("step_started") == 3 and types.count("step_retrying") == 2


async def test_a_fatal_error_fails_the_run_at_attempt_one(e2e: E2E, workflows: ModuleType) -> None:
    run = await e2e.env.start(workflows.fatal)
    with pytest.raises(wf.WorkflowRunFailedError, match="FatalError: no way"):
        await run.result_async(timeout=20)
    (step,) = await e2e.env.steps(run)
    assert (step.status, step.attempt) == ("failed", 1)
    assert "step_retrying" not in await e2e.env.event_types(run)


async def test_a_custom_retry_delay_is_honoured(e2e: E2E, workflows: ModuleType) -> None:
    run = await e2e.env.start(workflows.custom_retry_delay, 0.8)
    assert await run.result_async(timeout=20) == 2
    starts = [e.created_at for e in await e2e.env.events(run) if e.event_type == "step_started"]
    assert len(starts) == 2 and starts[0] is not None and starts[1] is not None
    assert 0.8 <= (starts[1] - starts[0]).total_seconds() < 3


async def test_retries_disabled_fails_after_one_attempt(e2e: E2E, workflows: ModuleType) -> None:
    run = await e2e.env.start(workflows.retries_disabled)
    with pytest.raises(wf.WorkflowRunFailedError, match="ConnectionError: down"):
        await run.result_async(timeout=20)
    (step,) = await e2e.env.steps(run)
    assert (step.status, step.attempt) == ("failed", 1)
