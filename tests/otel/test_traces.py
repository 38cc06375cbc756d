"""One trace per run: a run span, a span per step attempt under it, sleeps, hook waits and child runs
(issue 18), checked with the SDK's in-memory exporter on in-process workers."""

from __future__ import annotations

import asyncio
import hashlib
import itertools
from collections import Counter
from collections.abc import Callable
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import StatusCode

import wf
from wf.runtime import telemetry
from wf.runtime.errors import NotFoundError
from wf.runtime.world import World

from .conftest import Otel


async def run_to_end(workflow: Any, *args: Any) -> tuple[str, Any]:
    run = await wf.start_async(workflow, *args)
    try:
        result = await run.result_async(timeout=30)
    except wf.WorkflowRunFailedError as exc:
        result = exc
    return run.id, result


async def spans_until(otel: Otel, done: Callable[[list[ReadableSpan]], bool], timeout: float = 10.0
                      ) -> list[ReadableSpan]:
    """The finished spans once `done` holds for them (a span may end just after the run's result is seen)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        spans = otel.spans()
        if done(spans):
            await asyncio.sleep(0.1)  # anything emitted twice would show now
            return otel.spans()
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"spans never complete: {[s.name for s in spans]}")
        await asyncio.sleep(0.02)


def in_trace(spans: list[ReadableSpan], trace_id: int) -> list[ReadableSpan]:
    return [s for s in spans if s.context.trace_id == trace_id]


def named(spans: list[ReadableSpan], prefix: str) -> list[ReadableSpan]:
    return [s for s in spans if s.name.startswith(prefix)]


def has_run_span(run_id: str) -> Callable[[list[ReadableSpan]], bool]:
    return lambda spans: any(s.attributes.get("wf.run.id") == run_id and s.name.startswith("wf.run ")
                             for s in spans)


def parent_id(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent is not None else None


def run_shape(spans: list[ReadableSpan], run_id: str) -> tuple[ReadableSpan, list[ReadableSpan]]:
    """The run's one run span (a root) and its step attempt spans, all in the run's trace, children of it."""
    trace_id = telemetry.run_trace_id(run_id)
    mine = [s for s in in_trace(spans, trace_id) if s.name.startswith("wf.")]
    assert len([s for s in mine if s.attributes.get("wf.run.id") == run_id]) == len(
        [s for s in spans if s.attributes.get("wf.run.id") == run_id])
    mine = [s for s in mine if s.attributes.get("wf.run.id") == run_id]
    runs = named(mine, "wf.run ")
    assert len(runs) == 1, [s.name for s in mine]
    root = runs[0]
    assert parent_id(root) is None
    assert root.context.span_id == telemetry.run_span_id(run_id)
    assert root.attributes["wf.run.id"] == run_id
    steps = sorted(named(mine, "wf.step "), key=lambda s: s.start_time or 0)
    for step in steps:
        assert parent_id(step) == root.context.span_id
        assert step.start_time >= root.start_time and step.end_time <= root.end_time
    ids = [s.context.span_id for s in mine]
    assert len(ids) == len(set(ids)), "a span was emitted twice"
    return root, steps


async def test_sequential_steps_one_trace_one_span_per_attempt(otel: Otel, flows: Any, start_worker: Any) -> None:
    start_worker()
    run_id, result = await run_to_end(flows.sequential, 3)
    assert result == 3
    spans = await spans_until(otel, has_run_span(run_id))
    root, steps = run_shape(spans, run_id)
    assert root.name == f"wf.run {flows.sequential.name}"
    assert root.attributes["wf.workflow.name"] == flows.sequential.name
    assert root.status.status_code != StatusCode.ERROR
    assert [s.attributes["wf.step.id"] for s in steps] == ["step_1", "step_2", "step_3"]
    for step in steps:
        assert step.name == f"wf.step {flows.add.name}"
        assert step.attributes["wf.step.name"] == flows.add.name
        assert step.attributes["wf.step.attempt"] == 1
        assert "wf.step.retry" not in step.attributes
        assert step.attributes["wf.run.id"] == run_id
        assert step.attributes["wf.workflow.name"] == flows.sequential.name
        assert step.context.span_id == telemetry.attempt_span_id(run_id, step.attributes["wf.step.id"], 1)
    for before, after in itertools.pairwise(steps):  # sequential: one after the other
        assert before.end_time <= after.start_time


async def test_gather_steps_are_siblings(otel: Otel, flows: Any, start_worker: Any) -> None:
    start_worker()
    run_id, result = await run_to_end(flows.fanout, 5)
    assert result == 15
    spans = await spans_until(otel, has_run_span(run_id))
    _, steps = run_shape(spans, run_id)
    assert sorted(s.attributes["wf.step.id"] for s in steps) == [f"step_{i}" for i in range(1, 6)]


async def test_retries_are_attempt_spans_with_error_status(otel: Otel, flows: Any, start_worker: Any) -> None:
    before_started = sum(otel.metric("wf.steps.started").values())
    before_retried = sum(otel.metric("wf.steps.retried").values())
    before_waits = sum(otel.metric("wf.step.queue_wait").values())
    start_worker()
    run_id, result = await run_to_end(flows.retried, 2)
    assert result == "ok after 3"
    spans = await spans_until(otel, has_run_span(run_id))
    _, steps = run_shape(spans, run_id)
    assert [(s.attributes["wf.step.id"], s.attributes["wf.step.attempt"]) for s in steps] == [
        ("step_1", 1), ("step_1", 2), ("step_1", 3)]
    assert [s.attributes.get("wf.step.retry", False) for s in steps] == [False, True, True]
    for failed in steps[:2]:
        assert failed.status.status_code == StatusCode.ERROR
        assert failed.attributes["wf.step.outcome"] == "retrying"
        assert failed.attributes["error.type"] == "ValueError"
        (exception,) = [e for e in failed.events if e.name == "exception"]
        assert exception.attributes["exception.type"] == "ValueError"
        assert "fails" in exception.attributes["exception.message"]
    assert steps[2].status.status_code == StatusCode.UNSET
    assert "wf.step.outcome" not in steps[2].attributes
    assert not [e for e in steps[2].events if e.name == "exception"]
    assert sum(otel.metric("wf.steps.started").values()) - before_started == 3
    assert sum(otel.metric("wf.steps.retried").values()) - before_retried == 2
    # The retries went through the queue: their wait for a worker is measured.
    assert sum(otel.metric("wf.step.queue_wait").values()) - before_waits == 2


async def test_a_failed_step_and_run_have_error_status(otel: Otel, flows: Any, start_worker: Any) -> None:
    before = sum(otel.metric("wf.steps.failed").values())
    start_worker()
    run_id, result = await run_to_end(flows.failing)
    assert isinstance(result, wf.WorkflowRunFailedError)
    spans = await spans_until(otel, has_run_span(run_id))
    root, (step,) = run_shape(spans, run_id)
    assert step.status.status_code == StatusCode.ERROR
    assert step.attributes["wf.step.outcome"] == "failed"
    assert step.attributes["error.type"] == "FatalError"
    assert root.status.status_code == StatusCode.ERROR
    assert root.attributes["wf.run.status"] == "failed"
    assert [e for e in root.events if e.name == "exception"]
    assert sum(otel.metric("wf.steps.failed").values()) - before == 1


async def test_a_sleep_is_a_span_of_its_length(otel: Otel, flows: Any, start_worker: Any) -> None:
    start_worker(skip_time=False)
    run_id, result = await run_to_end(flows.sleeper, 0.3)
    assert result == 3
    spans = await spans_until(otel, has_run_span(run_id))
    root, steps = run_shape(spans, run_id)
    (sleep,) = [s for s in in_trace(spans, root.context.trace_id) if s.name == "wf.sleep"]
    assert parent_id(sleep) == root.context.span_id
    assert sleep.attributes["wf.wait.id"] == "wait_1"
    assert 0.29 <= (sleep.end_time - sleep.start_time) / 1e9 < 5
    assert sleep.end_time <= steps[0].start_time  # the step came after the sleep


async def test_a_hook_wait_is_a_span_with_a_hashed_token_linked_to_the_resumer(
    otel: Otel, flows: Any, start_worker: Any, world: World
) -> None:
    start_worker()
    tracer = trace.get_tracer("test")
    token = "order-42-approval"
    with tracer.start_as_current_span("starter") as starter:
        run = await wf.start_async(flows.hooked, token)
    await hook_ready(world, token)
    assert sum(otel.metric("wf.runs.in_progress").get(frozenset({("wf.workflow.name", flows.hooked.name)}), 0)
               for _ in [0]) >= 1
    with tracer.start_as_current_span("resumer") as resumer:
        await wf.resume_hook_async(token, {"ok": True})
    assert await run.result_async(timeout=30) == len(str({"ok": True}))
    spans = await spans_until(otel, has_run_span(run.id))
    root, _ = run_shape(spans, run.id)
    (hook,) = [s for s in in_trace(spans, root.context.trace_id) if s.name == "wf.hook"]
    assert parent_id(hook) == root.context.span_id
    assert hook.attributes["wf.hook.token"] == hashlib.sha256(token.encode()).hexdigest()[:16]
    assert token not in str(dict(hook.attributes))
    assert [link.context.span_id for link in hook.links] == [resumer.get_span_context().span_id]
    # The run is a trace of its own, linked to the span current at wf.start.
    assert root.context.trace_id != starter.get_span_context().trace_id
    assert [link.context.span_id for link in root.links] == [starter.get_span_context().span_id]
    assert otel.metric("wf.runs.in_progress").get(frozenset({("wf.workflow.name", flows.hooked.name)})) == 0


async def hook_ready(world: World, token: str, timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        try:
            await world.hooks.get_by_token(token)
            return
        except NotFoundError:
            assert asyncio.get_running_loop().time() < deadline, f"no hook {token}"
            await asyncio.sleep(0.01)


async def test_a_child_run_nests_under_the_parents_call(otel: Otel, flows: Any, start_worker: Any) -> None:
    start_worker()
    run_id, result = await run_to_end(flows.parent, 4)
    assert result == 9
    trace_id = telemetry.run_trace_id(run_id)

    def complete(spans: list[ReadableSpan]) -> bool:
        return len(named(in_trace(spans, trace_id), "wf.run ")) == 2 and any(
            s.name.startswith("wf.child ") for s in spans)

    spans = in_trace(await spans_until(otel, complete), trace_id)
    (parent_run,) = [s for s in spans if s.name == f"wf.run {flows.parent.name}"]
    (child_run,) = [s for s in spans if s.name == f"wf.run {flows.child.name}"]
    (start_child,) = [s for s in spans if s.name == "wf.step wf.start_child"]
    (wait,) = [s for s in spans if s.name == f"wf.child {flows.child.name}"]
    assert parent_id(parent_run) is None
    assert parent_id(start_child) == parent_run.context.span_id
    assert parent_id(child_run) == start_child.context.span_id
    assert parent_id(wait) == parent_run.context.span_id
    child_steps = [s for s in spans if s.attributes.get("wf.run.id") == child_run.attributes["wf.run.id"]
                   and s.name.startswith("wf.step ")]
    assert sorted(s.attributes["wf.step.name"] for s in child_steps) == sorted([flows.add.name,
                                                                                flows.sync_double.name])
    assert all(parent_id(s) == child_run.context.span_id for s in child_steps)
    assert child_run.attributes["wf.run.parent_id"] == run_id
    ids = [s.context.span_id for s in spans]
    assert len(ids) == len(set(ids))


async def test_user_spans_in_sync_and_async_steps_nest_under_the_step(otel: Otel, flows: Any,
                                                                      start_worker: Any) -> None:
    start_worker()
    run_id, (async_id, sync_id) = await run_to_end(flows.user_spans)
    spans = await spans_until(otel, has_run_span(run_id))
    _, steps = run_shape(spans, run_id)
    by_name = {s.attributes["wf.step.name"]: s for s in steps}
    (user_async,) = [s for s in spans if s.name == "user-async"]
    (user_sync,) = [s for s in spans if s.name == "user-sync"]
    assert format(user_async.context.span_id, "016x") == async_id
    assert format(user_sync.context.span_id, "016x") == sync_id
    assert parent_id(user_async) == by_name[flows.async_user_span.name].context.span_id
    assert parent_id(user_sync) == by_name[flows.sync_user_span.name].context.span_id
    assert user_async.context.trace_id == user_sync.context.trace_id == telemetry.run_trace_id(run_id)


async def test_always_replay_emits_each_span_once(otel: Otel, flows: Any, start_worker: Any, world: World) -> None:
    """Every step of progress replays the code from the top of its log: nothing is emitted twice."""
    start_worker(always_replay=True)
    runs = [await wf.start_async(flows.sequential, 4), await wf.start_async(flows.retried, 1),
            await wf.start_async(flows.sleeper, 0.05), await wf.start_async(flows.parent, 2)]
    token = "replayed-hook"
    hooked = await wf.start_async(flows.hooked, token)
    await hook_ready(world, token)
    await wf.resume_hook_async(token, "x")
    for run in [*runs, hooked]:
        await run.result_async(timeout=30)
    ids = [run.id for run in [*runs, hooked]]
    spans = await spans_until(otel, lambda spans: all(has_run_span(i)(spans) for i in ids)
                              and sum(s.name.startswith("wf.run ") for s in spans) == 6)
    for run_id in ids:
        run_shape(spans, run_id)
    seen = Counter((s.context.trace_id, s.context.span_id) for s in spans)
    assert max(seen.values()) == 1
    names = Counter(s.name for s in spans if not s.name.startswith("wf.step wf."))
    assert names[f"wf.step {flows.add.name}"] == 4 + 1 + 1 + 1  # sequential, sleeper, child, hooked
    assert names[f"wf.step {flows.flaky.name}"] == 2
    assert names["wf.sleep"] == 1 and names["wf.hook"] == 1 and names[f"wf.child {flows.child.name}"] == 1


async def test_nothing_is_emitted_when_telemetry_is_off(otel: Otel, flows: Any, start_worker: Any,
                                                        monkeypatch: Any, world: World) -> None:
    monkeypatch.setattr(telemetry, "ON", False)
    before = sum(otel.metric("wf.steps.started").values())
    start_worker()
    with trace.get_tracer("test").start_as_current_span("starter"):
        run_id, _result = await run_to_end(flows.user_spans)
    await asyncio.sleep(0.1)
    assert [s.name for s in otel.spans()] == ["user-async", "user-sync", "starter"]
    assert all(parent_id(s) is None or s.name == "starter" for s in otel.spans())
    assert sum(otel.metric("wf.steps.started").values()) == before
    assert telemetry.ATTRIBUTE not in (await world.runs.get(run_id)).attributes


async def test_a_fork_of_a_child_run_is_a_trace_of_its_own(otel: Otel, flows: Any, start_worker: Any,
                                                           world: World) -> None:
    from wf.runtime.operations import fork_run

    start_worker()
    await run_to_end(flows.parent, 1)
    spans = await spans_until(otel, lambda spans: any(s.name == f"wf.run {flows.child.name}" for s in spans))
    (child_run,) = [s for s in spans if s.name == f"wf.run {flows.child.name}"]
    child_id = child_run.attributes["wf.run.id"]
    (start_child,) = [s for s in spans if s.name == "wf.step wf.start_child"]
    fork = await fork_run(world, child_id, at=2)
    assert await (await wf.get_run_async(fork.run_id)).result_async(timeout=30) == 2
    spans = await spans_until(otel, has_run_span(fork.run_id))
    root, _ = run_shape(spans, fork.run_id)  # a root in a trace derived from its own id
    assert [link.context.span_id for link in root.links] == [start_child.context.span_id]


async def test_a_run_sampled_out_emits_nothing_not_even_its_steps_and_user_spans(
    otel: Otel, flows: Any, start_worker: Any, monkeypatch: Any
) -> None:
    from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

    tracer = telemetry._tracer(telemetry._load())
    monkeypatch.setattr(tracer, "sampler", ParentBased(TraceIdRatioBased(0.0)))  # wf's tracer keeps no trace
    start_worker()
    await run_to_end(flows.user_spans)
    await run_to_end(flows.parent, 2)  # a child run follows its parent's decision
    await asyncio.sleep(0.2)
    assert otel.spans() == [], [s.name for s in otel.spans()]
    monkeypatch.setattr(tracer, "sampler", ParentBased(TraceIdRatioBased(1.0)))
    run_id, _ = await run_to_end(flows.user_spans)
    spans = await spans_until(otel, has_run_span(run_id))
    assert sorted(s.name for s in spans) == sorted([f"wf.run {flows.user_spans.name}",
                                                    f"wf.step {flows.async_user_span.name}",
                                                    f"wf.step {flows.sync_user_span.name}", "user-async", "user-sync"])


async def test_the_blocking_wf_start_links_the_run_to_the_callers_span(
    otel: Otel, flows: Any, start_worker: Any
) -> None:
    """wf.start runs on wf's background loop thread: the caller's current span must still reach it."""
    start_worker()
    tracer = trace.get_tracer("test")

    def start_blocking() -> tuple[str, Any]:
        with tracer.start_as_current_span("sync-caller") as caller:
            run = wf.start(flows.sequential, 1)
        return run.id, caller

    run_id, caller = await asyncio.to_thread(start_blocking)
    spans = await spans_until(otel, has_run_span(run_id))
    root, _ = run_shape(spans, run_id)
    assert [link.context.span_id for link in root.links] == [caller.get_span_context().span_id]
