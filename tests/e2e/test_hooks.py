"""Hooks: payloads in order with metadata, token reuse after a run ends, token conflicts."""

from __future__ import annotations

import uuid
from types import ModuleType

import pytest

import wf

from .conftest import E2E


def token(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:8]}"  # the subprocess mode shares one data dir between tests


async def test_a_hook_receives_three_payloads_in_order_with_metadata(e2e: E2E, workflows: ModuleType) -> None:
    tok = token("three")
    run = await e2e.env.start(workflows.three_payloads, tok)
    hook = await e2e.env.wait_for_hook(tok)
    assert hook.run_id == run.id
    for payload in ({"n": 1}, "two", [3]):
        await wf.resume_hook_async(tok, payload)
    assert await run.result_async(timeout=20) == {"payloads": [{"n": 1}, "two", [3]],
                                                  "metadata": {"purpose": "e2e", "n": 3}, "token": tok}


async def test_an_unknown_token_is_not_found(e2e: E2E) -> None:
    with pytest.raises(wf.HookNotFoundError):
        await wf.resume_hook_async(token("nobody"), 1)


async def test_a_token_is_reusable_after_its_run_ends(e2e: E2E, workflows: ModuleType) -> None:
    tok = token("reuse")
    first = await e2e.env.start(workflows.hold_token, tok)
    await e2e.env.resume_hook(tok, "first")
    assert await first.result_async(timeout=20) == "first"
    second = await e2e.env.start(workflows.hold_token, tok)
    await e2e.env.resume_hook(tok, "second")
    assert await second.result_async(timeout=20) == "second"


async def test_a_token_held_by_a_live_run_conflicts(e2e: E2E, workflows: ModuleType) -> None:
    tok = token("conflict")
    holder = await e2e.env.start(workflows.hold_token, tok)
    await e2e.env.wait_for_hook(tok)
    other = await e2e.env.start(workflows.try_token, tok)
    assert (await other.result_async(timeout=20)).startswith("conflict: ")
    assert "hook_conflict" in await e2e.env.event_types(other)
    await wf.resume_hook_async(tok, "still mine")
    assert await holder.result_async(timeout=20) == "still mine"
