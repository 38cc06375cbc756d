"""The programming model end to end through `import wf`, against a real on-disk World."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass
from datetime import timedelta

import pytest

import wf
from wf.runtime.entities import EventType

EXECUTIONS: Counter[str] = Counter()


@wf.step
async def add(a: int, b: int) -> int:
    EXECUTIONS["add"] += 1
    return a + b


@wf.step
def double(x: int) -> int:  # a sync step: runs in the worker's thread pool
    EXECUTIONS["double"] += 1
    return x * 2


@wf.workflow
async def add_ten(x: int) -> int:
    a = await add(x, 3)
    b = await add(a, 3)
    return await add(b, 4)


@wf.workflow
async def sync_and_async(x: int) -> int:
    return await double(await add(x, 1))


async def test_add_ten_returns_133(worker):
    run = await wf.start_async(add_ten, 123)
    assert await run.result_async(timeout=10) == 133
    assert await run.status_async() == "completed"


async def test_sync_steps_run_off_the_event_loop(worker):
    run = await wf.start_async(sync_and_async, 4)
    assert await run.result_async(timeout=10) == 10


async def test_a_step_called_outside_a_workflow_is_just_the_function():
    assert await add(1, 2) == 3
    assert double(4) == 8


async def test_event_log_tells_the_story(worker):
    run = await wf.start_async(add_ten, 1)
    await run.result_async(timeout=10)
    types = [e.event_type for e in await run.events_async()]
    assert types[:2] == [EventType.RUN_CREATED, EventType.RUN_STARTED]
    assert types[-1] == EventType.RUN_COMPLETED
    assert types.count(EventType.STEP_CREATED) == 3
    assert types.count(EventType.STEP_COMPLETED) == 3
    seqs = [e.seq for e in await run.events_async()]
    assert seqs == list(range(len(seqs)))


@wf.workflow
async def add_then_wait(x: int, token: str) -> int:
    a = await add(x, 1)
    bonus = await wf.create_hook(token=token)
    return await add(a, bonus)


async def test_completed_steps_are_replayed_not_rerun_after_a_restart(world, start_worker, hook_ready):
    EXECUTIONS.clear()
    run = await wf.start_async(add_then_wait, 1, "restart-bonus")
    first = start_worker()
    await hook_ready("restart-bonus")
    assert EXECUTIONS["add"] == 1
    first.stop()  # the run is suspended mid-way; this worker (and its cached instance) goes away
    start_worker()  # a new worker: it must rebuild the run by replaying its log
    await wf.resume_hook_async("restart-bonus", 40)
    assert await run.result_async(timeout=10) == 42
    assert EXECUTIONS["add"] == 2  # the first `add` came from the log, only the second ran


# --- concurrency inside a workflow ---


@wf.step
async def slow_echo(value: int, delay: float) -> int:
    await asyncio.sleep(delay)
    return value


@wf.workflow
async def gather_keeps_order() -> list[int]:
    return await asyncio.gather(*(slow_echo(i, 0.05 * (5 - i)) for i in range(5)))


@wf.workflow
async def first_completed() -> dict:
    fast = asyncio.ensure_future(slow_echo(1, 0.01))
    slow = asyncio.ensure_future(slow_echo(2, 0.3))
    done, pending = await asyncio.wait([fast, slow], return_when=asyncio.FIRST_COMPLETED)
    winner = done.pop().result()
    await asyncio.gather(*pending)  # let the loser land in the log too
    return {"winner": winner}


@wf.workflow
async def log_order() -> list[int]:
    order = []
    async for value in wf.as_completed([slow_echo(1, 0.2), slow_echo(2, 0.01), slow_echo(3, 0.1)]):
        order.append(value)
    return order


@wf.workflow
async def task_group() -> list[int]:
    async with asyncio.TaskGroup() as tg:
        tasks = [tg.create_task(add(i, i)) for i in range(3)]
    return [t.result() for t in tasks]


async def test_gather_keeps_argument_order(worker):
    assert await (await wf.start_async(gather_keeps_order)).result_async(timeout=10) == [0, 1, 2, 3, 4]


async def test_first_completed_picks_the_fastest_and_the_loser_lands_in_the_log(worker):
    run = await wf.start_async(first_completed)
    assert await run.result_async(timeout=10) == {"winner": 1}
    completed = [e for e in await run.events_async() if e.event_type == EventType.STEP_COMPLETED]
    assert len(completed) == 2


async def test_as_completed_yields_in_log_order(worker):
    assert await (await wf.start_async(log_order)).result_async(timeout=10) == [2, 3, 1]


async def test_task_group_works_in_workflows(worker):
    assert await (await wf.start_async(task_group)).result_async(timeout=10) == [0, 2, 4]


# --- time ---


@wf.workflow
async def sleeper(seconds: float) -> float:
    before = wf.now()
    await wf.sleep(seconds)
    return (wf.now() - before).total_seconds()


@wf.workflow
async def parallel_sleeps(n: int, seconds: float) -> int:
    await asyncio.gather(*(asyncio.sleep(seconds) for _ in range(n)))
    return n


@wf.workflow
async def timeout_race() -> str:
    hook = wf.create_hook()
    try:
        async with asyncio.timeout(0.2):
            await hook
    except TimeoutError:
        return "timed out"
    return "approved"


async def test_sleep_advances_the_workflow_clock_by_at_least_its_duration(worker):
    assert await (await wf.start_async(sleeper, 0.3)).result_async(timeout=10) >= 0.3


async def test_sleep_accepts_duration_strings_and_timedeltas(worker):
    assert await (await wf.start_async(sleeper, "150ms")).result_async(timeout=10) >= 0.15
    assert await (await wf.start_async(sleeper, timedelta(milliseconds=100))).result_async(timeout=10) >= 0.1


async def test_ten_parallel_sleeps_take_about_one_sleep(worker):
    started = time.monotonic()
    assert await (await wf.start_async(parallel_sleeps, 10, 0.5)).result_async(timeout=10) == 10
    assert time.monotonic() - started < 2.0


async def test_asyncio_timeout_races_a_durable_timer(worker):
    assert await (await wf.start_async(timeout_race)).result_async(timeout=10) == "timed out"


# --- deterministic helpers ---


@wf.workflow
async def deterministic_values() -> list:
    values = [wf.random(), str(wf.uuid4()), wf.now().isoformat()]
    await add(1, 1)
    values += [wf.random(), str(wf.uuid4())]
    return values


async def test_random_uuid_and_now_replay_identically(world, start_worker):
    from wf.runtime.debugger import replay_run

    run = await wf.start_async(deterministic_values)
    start_worker(always_replay=True)  # every step of progress replays from the top
    values = await run.result_async(timeout=10)
    assert len(set(values)) == 5
    assert 0 <= values[0] < 1
    info, events = await world.runs.get(run.id), await world.events.list(run.id)
    for _ in range(2):  # fresh replays give back exactly the recorded values
        report = replay_run(deterministic_values, info, events)
        assert report.clean, report.summary()
        assert report.instance is not None and report.instance.outcome.output == info.output


# --- values ---


@dataclass
class Order:
    order_id: str
    cents: int
    tags: tuple[str, ...] = ()


@wf.step
async def bump(order: Order, blob: bytes) -> tuple[Order, bytes]:
    return Order(order.order_id, order.cents + 1, order.tags), blob + b"\x00"


@wf.workflow
async def values_round_trip(order: Order, blob: bytes) -> tuple[Order, bytes]:
    return await bump(order, blob)


async def test_dataclasses_bytes_and_null_bytes_round_trip(worker):
    run = await wf.start_async(values_round_trip, Order("o-1", 100, ("a",)), b"\x00bin\x00")
    order, blob = await run.result_async(timeout=10)
    assert order == Order("o-1", 101, ("a",))
    assert blob == b"\x00bin\x00\x00"


@wf.workflow
async def passes_a_lock() -> None:
    import threading

    await add(threading.Lock(), 1)  # type: ignore[arg-type]


async def test_an_unserializable_argument_fails_the_run_naming_its_type(worker):
    run = await wf.start_async(passes_a_lock)
    with pytest.raises(wf.WorkflowRunFailedError) as err:
        await run.result_async(timeout=10)
    assert err.value.error_type == "SerializationError"
    assert "lock" in err.value.error_message


async def test_start_rejects_an_unserializable_input_at_the_call_site(world):
    with pytest.raises(wf.SerializationError, match="lock"):
        import threading

        await wf.start_async(add_ten, threading.Lock())


# --- starting ---


async def test_same_idempotency_key_gives_the_same_run(worker):
    a = await wf.start_async(add_ten, 1, idempotency_key="order-17")
    b = await wf.start_async(add_ten, 1, idempotency_key="order-17")
    assert a.id == b.id
    assert await a.result_async(timeout=10) == 11


async def test_an_idempotency_key_that_cannot_be_encoded_is_a_typed_error_and_records_nothing(world):
    from wf.runtime.errors import InvalidIdError

    before = await world.run_ids()
    with pytest.raises(InvalidIdError, match="cannot be encoded"):
        await wf.start_async(add_ten, 1, idempotency_key="\ud800")
    assert await world.run_ids() == before


async def test_get_run_of_an_unknown_or_malformed_id_fails_fast(world):
    with pytest.raises(wf.RunNotFoundError):
        await wf.get_run_async("wrun_01HZZZZZZZZZZZZZZZZZZZZZZZ")
    with pytest.raises(wf.RunNotFoundError):
        await wf.get_run_async("../../etc/passwd")


async def test_result_times_out_while_no_worker_runs(world):
    run = await wf.start_async(add_ten, 1)
    with pytest.raises(TimeoutError):
        await run.result_async(timeout=0.2)
    assert await run.status_async() == "pending"


async def test_run_drives_a_workflow_in_process(world):
    assert await wf.run_async(add_ten, 5) == 15


def test_blocking_api_works_from_plain_code(tmp_path):
    wf.configure(data_dir=tmp_path / "data")
    try:
        assert wf.run(add_ten, 7) == 17
        run = wf.start(add_ten, 8)
        assert wf.get_run(run.id).status == "pending"
    finally:
        wf.configure()


@wf.workflow
async def daily(days: int) -> list[str]:
    seen = []
    for _ in range(days):
        await wf.sleep("1d")
        seen.append(wf.now().date().isoformat())
    return seen


async def test_skip_time_fires_long_timers_at_once_and_moves_the_clock(start_worker):
    start_worker(skip_time=True)
    started = time.monotonic()
    run = await wf.start_async(daily, 3)
    days = await run.result_async(timeout=10)
    assert time.monotonic() - started < 5
    assert len(set(days)) == 3  # three different dates: the clock moved a day each time
    events = await run.events_async()
    first = next(e for e in events if e.event_type == EventType.RUN_STARTED).created_at
    last = events[-1].created_at
    assert (last - first).total_seconds() >= 3 * 86400


@wf.workflow
async def blocks_with_time_sleep() -> None:
    time.sleep(0.01)


async def test_time_sleep_in_a_workflow_fails_with_an_explanation(worker):
    run = await wf.start_async(blocks_with_time_sleep)
    with pytest.raises(wf.WorkflowRunFailedError) as err:
        await run.result_async(timeout=10)
    assert err.value.error_type == "NonDeterminismError"
    assert "wf.sleep" in err.value.error_message
    time.sleep(0.001)  # outside workflows it still works
