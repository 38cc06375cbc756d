"""wf.testing on the examples: time skipping, hook helpers, step/event readers and replay checks."""

from __future__ import annotations

import itertools
import time
from datetime import datetime
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

import pytest

import wf
from wf.runtime.loader import import_path

if TYPE_CHECKING:
    from wf.testing import WorkflowEnv

pytest_plugins = ["wf.testing"]  # not needed once wf is installed: its pytest11 entry point loads it

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def example(name: str) -> ModuleType:
    return import_path(EXAMPLES / f"{name}.py")


async def test_hello_in_a_few_lines(wf_env: WorkflowEnv) -> None:
    run = await wf_env.start(example("hello").hello, "kit")
    assert await run.result_async() == "HELLO, KIT!"
    assert [s.short_name for s in await wf_env.steps(run)] == ["greet", "shout"]
    await wf_env.assert_replays(run)


async def test_daily_digest_skips_days_while_the_workflow_clock_moves_a_day_each(wf_env: WorkflowEnv) -> None:
    started = time.monotonic()
    result = await wf_env.run(example("digest").daily_digest, "ana", 4)  # three one-day sleeps
    assert time.monotonic() - started < 5
    stamps = [datetime.strptime(s.split("(")[1].split(")")[0], "%Y-%m-%d %H:%M:%S") for s in result["sent"]]
    gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(stamps)]
    assert len(gaps) == 3 and all(86400 <= g < 86400 + 5 for g in gaps), gaps


async def test_order_retries_finish_at_once_with_attempts_recorded(wf_env: WorkflowEnv) -> None:
    started = time.monotonic()
    run = await wf_env.start(example("order").fulfil_order, "o-1", "4242")
    assert (await run.result_async(timeout=10))["status"] == "shipped"
    assert time.monotonic() - started < 2.5  # real backoff would be 1 s + 2 s
    steps = {s.short_name: s for s in await wf_env.steps(run)}
    assert steps["charge_card"].attempt == 3 and steps["charge_card"].output == "ch_o-1"
    assert (await wf_env.event_types(run)).count("step_retrying") == 2
    await wf_env.assert_replays(run)


async def test_order_declined_card_is_fatal_and_compensated(wf_env: WorkflowEnv) -> None:
    run = await wf_env.start(example("order").fulfil_order, "o-2", "0002")
    assert await run.result_async() == {"order_id": "o-2", "status": "declined",
                                        "reason": "card ending 0002 was declined"}
    steps = {s.short_name: s for s in await wf_env.steps(run)}
    assert steps["charge_card"].attempt == 1 and steps["charge_card"].status == "failed"
    assert steps["release_stock"].status == "completed"
    await wf_env.assert_replays(run)


async def test_order_shipping_failure_refunds_then_fails(wf_env: WorkflowEnv) -> None:
    run = await wf_env.start(example("order").fulfil_order, "o-3", "4242", "Atlantis")
    with pytest.raises(wf.WorkflowRunFailedError, match="no carrier delivers to Atlantis"):
        await run.result_async()
    names = [s.short_name for s in await wf_env.steps(run)]
    assert names == ["reserve_stock", "charge_card", "ship", "refund", "release_stock"]
    await wf_env.assert_replays(run)


async def test_approval_by_hook(wf_env: WorkflowEnv) -> None:
    wf_env.skip_time = False  # the run races the hook against a timer: don't let the timer win at once
    run = await wf_env.start(example("approval").expense_approval, "exp-1", 420)
    hook = await wf_env.wait_for_hook("approve:exp-1")
    assert hook.run_id == run.id
    await wf_env.resume_hook("approve:exp-1", {"approved": True, "by": "ana"})
    assert await run.result_async() == {"request_id": "exp-1", "status": "approved", "by": "ana"}
    await wf_env.assert_replays(run)


async def test_approval_escalates_after_a_day_without_waiting_a_day(wf_env: WorkflowEnv) -> None:
    run = await wf_env.start(example("approval").expense_approval, "exp-2", 99)  # 24 h timeout
    result = await run.result_async(timeout=10)
    assert result == {"request_id": "exp-2", "status": "escalated", "to": "manager@example.com"}
    events = await wf_env.events(run)
    waited = next(e for e in events if e.event_type == "wait_completed").created_at
    created = next(e for e in events if e.event_type == "wait_created").created_at
    assert waited is not None and created is not None and (waited - created).total_seconds() >= 24 * 3600 - 1
    await wf_env.assert_replays(run)


async def test_fanout_keeps_order_and_aggregates(wf_env: WorkflowEnv) -> None:
    run = await wf_env.start(example("fanout").score_documents, 12)  # at most 4 at once: @wf.step(concurrency=4)
    assert await run.result_async() == {"documents": 12, "total_words": 12 * 40 + 5 * 66, "longest": "doc-11"}
    await wf_env.assert_replays(run)


async def test_streaming_tokens_arrive_in_order(wf_env: WorkflowEnv) -> None:
    module = example("streaming")
    run = await wf_env.start(module.chat, "hi")
    tokens = [t async for t in run.stream_async()]
    assert "".join(tokens).strip() == module.REPLY == await run.result_async()
    assert len(tokens) == len(module.REPLY.split(" "))


async def test_children_run_as_child_runs(wf_env: WorkflowEnv) -> None:
    run = await wf_env.start(example("children").ship_batch, ["a", "b"])
    assert await run.result_async() == {"shipped": 2, "labels": ["LABEL-A", "LABEL-B"]}
    runs = (await wf_env.world.runs.list()).data
    children = [r for r in runs if r.attributes.get("parent_run_id") == run.id]
    assert sorted(r.workflow_name for r in children) == ["children.ship_order"] * 2
    await wf_env.assert_replays(run)


async def test_assert_replays_catches_changed_code(wf_env: WorkflowEnv) -> None:
    @wf.workflow(name="kit.changing")
    async def changing(x: int) -> int:
        return await wf.step(name="kit.double")(lambda v: v * 2)(x)

    run = await wf_env.start(changing, 2)
    assert await run.result_async() == 4

    @wf.workflow(name="kit.changing")  # a new version under the same name calls another step
    async def changed(x: int) -> int:
        return await wf.step(name="kit.triple")(lambda v: v * 3)(x)

    with pytest.raises(wf.ReplayDivergenceError, match=r"kit\.double"):
        await wf_env.assert_replays(run)


async def test_env_outside_pytest_fixtures(tmp_path: Path) -> None:
    from wf.testing import WorkflowEnv

    async with WorkflowEnv(tmp_path / "d") as env:
        assert await env.run(example("hello").hello, "x") == "HELLO, X!"
        assert (tmp_path / "d").is_dir()
    with pytest.raises(TimeoutError, match="no run created a hook"):
        async with WorkflowEnv(tmp_path / "e") as env:
            await env.resume_hook("nobody-holds-this", 1, timeout=0.2)
