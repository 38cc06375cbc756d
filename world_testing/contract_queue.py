"""The durable queue: order, delays, idempotency coalescing, leases, crashes, restarts, speed."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from wf.runtime.errors import InvalidIdError, NotFoundError
from wf.runtime.world import Message, Queue, World

from .stores import Store

WORKER_MODULE = "wf.world_testing.queue_worker"
Q = "jobs"


@pytest.fixture
def queue(world: World) -> Queue:
    return world.queue


class Worker:
    """A queue_worker subprocess (on the store at `url`) whose JSON lines are read as they come."""

    def __init__(self, url: str, *args: object) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", WORKER_MODULE, url, *map(str, args)],
            stdout=subprocess.PIPE,
            text=True,
        )

    async def line(self, timeout: float = 15.0) -> dict[str, Any]:
        assert self.proc.stdout is not None
        text = await asyncio.wait_for(asyncio.to_thread(self.proc.stdout.readline), timeout)
        assert text, f"worker exited with {self.proc.wait()} before answering"
        return json.loads(text)

    def line_now(self) -> dict[str, Any]:
        """The next line, read without letting the event loop run meanwhile."""
        assert self.proc.stdout is not None
        text = self.proc.stdout.readline()
        assert text, f"worker exited with {self.proc.wait()} before answering"
        return json.loads(text)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


@pytest.fixture
def workers() -> Iterator[Callable[..., Worker]]:
    started: list[Worker] = []

    def start(url: str, *args: object) -> Worker:
        worker = Worker(url, *args)
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.kill()


async def _drain(queue: Queue, queues: list[str] | None = None) -> list[Message]:
    taken = []
    while (message := await queue.take(queues or [Q])) is not None:
        taken.append(message)
        await queue.ack(message)
    return taken


# --- order ---------------------------------------------------------------------------


async def test_ready_messages_are_delivered_smallest_order_key_first(queue: Queue) -> None:
    await queue.enqueue(Q, {"n": "c"}, order_key="wrun_3")
    await queue.enqueue(Q, {"n": "a"}, order_key="wrun_1")
    await queue.enqueue(Q, {"n": "b1"}, order_key="wrun_2")
    await queue.enqueue(Q, {"n": "b2"}, order_key="wrun_2")  # a tie: enqueue order decides

    taken = [m.payload["n"] for m in await _drain(queue)]

    assert taken == ["a", "b1", "b2", "c"]


async def test_without_order_key_messages_come_in_enqueue_order(queue: Queue) -> None:
    for n in range(20):
        await queue.enqueue(Q, {"n": n})

    assert [m.payload["n"] for m in await _drain(queue)] == list(range(20))


async def test_take_picks_the_smallest_order_key_across_the_named_queues_only(queue: Queue) -> None:
    await queue.enqueue("step", {"n": "step-old-run"}, order_key="wrun_1")
    await queue.enqueue("workflow", {"n": "wf-new-run"}, order_key="wrun_2")
    await queue.enqueue("other", {"n": "elsewhere"}, order_key="wrun_0")

    taken = [m.payload["n"] for m in await _drain(queue, ["workflow", "step"])]

    assert taken == ["step-old-run", "wf-new-run"]
    assert [m.payload["n"] for m in await queue.list()] == ["elsewhere"]


# --- delays --------------------------------------------------------------------------


async def test_delayed_message_is_not_delivered_early_and_a_waiting_take_gets_it_on_time(queue: Queue) -> None:
    await queue.enqueue(Q, {"n": 1}, delay=0.4)
    start = time.monotonic()

    assert await queue.take([Q]) is None
    assert [m.state for m in await queue.list()] == ["delayed"]
    message = await queue.take([Q], timeout=3)
    waited = time.monotonic() - start

    assert message is not None and message.payload == {"n": 1}
    assert 0.38 <= waited < 0.6, waited


async def test_take_with_timeout_returns_none_when_nothing_comes(queue: Queue) -> None:
    start = time.monotonic()

    assert await queue.take([Q], timeout=0.2) is None
    assert 0.19 <= time.monotonic() - start < 0.5


async def test_a_ready_message_goes_before_a_delayed_one_whatever_their_order_keys(queue: Queue) -> None:
    await queue.enqueue(Q, {"n": "later"}, order_key="a", delay=30)
    await queue.enqueue(Q, {"n": "now"}, order_key="z")

    message = await queue.take([Q])

    assert message is not None and message.payload == {"n": "now"}


# --- idempotency coalescing --------------------------------------------------------------


async def test_enqueue_with_the_key_of_a_waiting_message_makes_no_second_message(queue: Queue) -> None:
    first = await queue.enqueue(Q, {"run_id": "r1"}, idempotency_key="run:r1")
    second = await queue.enqueue(Q, {"run_id": "r1"}, idempotency_key="run:r1")

    assert second == first
    assert [m.message_id for m in await queue.list()] == [first]


async def test_enqueue_with_the_key_of_a_delayed_message_makes_it_available_sooner_never_later(
    queue: Queue,
) -> None:
    message_id = await queue.enqueue(Q, {"run_id": "r1"}, idempotency_key="run:r1", delay=86400)
    await queue.enqueue(Q, {"run_id": "r1"}, idempotency_key="run:r1", delay=100000)  # later: no effect
    (waiting,) = await queue.list()
    assert waiting.state == "delayed"
    assert waiting.available_at.timestamp() < time.time() + 86401

    await queue.enqueue(Q, {"run_id": "r1"}, idempotency_key="run:r1")  # e.g. a webhook arrived
    message = await queue.take([Q])

    assert message is not None and message.message_id == message_id


async def test_enqueue_with_the_key_of_a_leased_message_delivers_it_once_more_after_ack(queue: Queue) -> None:
    message_id = await queue.enqueue(Q, {"run_id": "r1"}, idempotency_key="run:r1")
    leased = await queue.take([Q])
    assert leased is not None

    assert await queue.enqueue(Q, {"run_id": "r1"}, idempotency_key="run:r1") == message_id
    assert await queue.enqueue(Q, {"run_id": "r1"}, idempotency_key="run:r1") == message_id
    assert await queue.take([Q]) is None  # still leased: not delivered twice at once
    await queue.ack(leased)
    again = await queue.take([Q])
    assert again is not None and again.message_id == message_id
    await queue.ack(again)

    assert await queue.take([Q]) is None
    assert await queue.list() == []


async def test_redelivery_after_ack_honours_the_earliest_requested_time(queue: Queue) -> None:
    await queue.enqueue(Q, {"run_id": "r1"}, idempotency_key="run:r1")
    leased = await queue.take([Q])
    assert leased is not None
    await queue.enqueue(Q, {"run_id": "r1"}, idempotency_key="run:r1", delay=0.3)  # a timer
    await queue.enqueue(Q, {"run_id": "r1"}, idempotency_key="run:r1", delay=3600)  # a later one

    await queue.ack(leased)

    assert await queue.take([Q]) is None
    again = await queue.take([Q], timeout=3)
    assert again is not None and again.idempotency_key == "run:r1"


async def test_a_key_is_free_again_once_its_message_is_acked(queue: Queue) -> None:
    first = await queue.enqueue(Q, {"n": 1}, idempotency_key="k")
    message = await queue.take([Q])
    assert message is not None
    await queue.ack(message)

    second = await queue.enqueue(Q, {"n": 2}, idempotency_key="k")

    assert second != first
    assert [m.payload for m in await queue.list()] == [{"n": 2}]


async def test_concurrent_enqueues_with_one_key_make_one_message(make_world: Callable[..., Any]) -> None:
    worlds = [await make_world(), await make_world()]

    ids = await asyncio.gather(
        *(w.queue.enqueue(Q, {"run_id": "r1"}, idempotency_key="run:r1") for w in worlds for _ in range(10))
    )

    assert len(set(ids)) == 1
    assert len(await worlds[0].queue.list()) == 1


# --- leases --------------------------------------------------------------------------


async def test_a_leased_message_is_invisible_to_other_consumers(make_world: Callable[..., Any]) -> None:
    mine, other = await make_world(), await make_world()
    await mine.queue.enqueue(Q, {"n": 1})

    taken = await mine.queue.take([Q])

    assert taken is not None and taken.state == "leased" and taken.attempts == 1
    assert await other.queue.take([Q]) is None
    assert [m.state for m in await other.queue.list()] == ["leased"]


async def test_nack_with_delay_delivers_the_message_again_after_the_delay(queue: Queue) -> None:
    await queue.enqueue(Q, {"n": 1})
    first = await queue.take([Q])
    assert first is not None

    await queue.nack(first, delay=0.3)

    assert await queue.take([Q]) is None
    assert [m.state for m in await queue.list()] == ["delayed"]
    start = time.monotonic()
    again = await queue.take([Q], timeout=3)
    assert again is not None and again.message_id == first.message_id
    assert again.attempts == 2
    assert time.monotonic() - start >= 0.2


async def test_an_expired_lease_is_delivered_again_with_attempts_incremented(queue: Queue) -> None:
    await queue.enqueue(Q, {"n": 1})
    first = await queue.take([Q], lease=0.2)
    assert first is not None and first.attempts == 1
    assert await queue.take([Q]) is None

    again = await queue.take([Q], timeout=3)

    assert again is not None and again.message_id == first.message_id
    assert again.attempts == 2


async def test_extend_keeps_the_lease_past_its_first_deadline(queue: Queue) -> None:
    await queue.enqueue(Q, {"n": 1})
    message = await queue.take([Q], lease=0.3)
    assert message is not None

    extended = await queue.extend(message, lease=30)

    assert extended.lease_until is not None and extended.lease_until > datetime.now(UTC)
    assert await queue.take([Q], timeout=0.6) is None
    await queue.ack(extended)
    assert await queue.list() == []


async def test_ack_after_the_lease_was_lost_is_not_found(queue: Queue) -> None:
    await queue.enqueue(Q, {"n": 1})
    slow = await queue.take([Q], lease=0.1)
    assert slow is not None
    fast = await queue.take([Q], timeout=2)
    assert fast is not None and fast.message_id == slow.message_id

    with pytest.raises(NotFoundError):
        await queue.ack(slow)
    with pytest.raises(NotFoundError):
        await queue.extend(slow, lease=10)
    with pytest.raises(NotFoundError):
        await queue.nack(slow)
    await queue.ack(fast)  # the new holder is unaffected
    assert await queue.list() == []


async def test_a_cancelled_take_leases_nothing(queue: Queue) -> None:
    waiting = asyncio.create_task(queue.take([Q], timeout=10))
    await asyncio.sleep(0.05)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting

    await queue.enqueue(Q, {"n": 1})

    assert [m.state for m in await queue.list()] == ["ready"]


async def test_a_killed_workers_message_is_delivered_again_promptly(
    world: World, world_url: str, workers: Callable[..., Worker]
) -> None:
    await world.queue.enqueue(Q, {"n": 1})
    worker = workers(world_url, "hold", Q, 600)
    taken = await worker.line()
    assert taken["event"] == "taken" and taken["attempts"] == 1
    assert await world.queue.take([Q]) is None

    os.kill(worker.proc.pid, signal.SIGKILL)  # not reaped yet: a zombie must count as dead too
    killed = time.monotonic()
    again = await world.queue.take([Q], timeout=5)
    delay = time.monotonic() - killed
    worker.proc.wait()

    print(f"\nmessage of a kill -9'ed worker redelivered after {delay * 1000:.0f} ms (lease was 600 s)")
    assert again is not None and again.message_id == taken["id"]
    assert again.attempts == 2
    assert delay < 1.5


# --- restart -------------------------------------------------------------------------


async def test_messages_delays_and_order_survive_a_restart(make_world: Callable[..., Any]) -> None:
    before = await make_world()
    await before.queue.enqueue(Q, {"n": "b"}, order_key="2")
    await before.queue.enqueue(Q, {"n": "a"}, order_key="1")
    await before.queue.enqueue(Q, {"n": "late"}, order_key="0", delay=0.6, idempotency_key="late")
    leased_id = await before.queue.enqueue("other", {"n": "leased"})
    leased = await before.queue.take(["other"], lease=60)
    listed = await before.queue.list()
    await before.close()

    after = await make_world()

    relisted = await after.queue.list()
    assert [(m.message_id, m.payload, m.state, m.available_at) for m in relisted] == [
        (m.message_id, m.payload, m.state, m.available_at) for m in listed
    ]
    assert leased is not None and leased.message_id == leased_id
    assert await after.queue.take(["other"]) is None  # our own lease is still held
    assert [m.payload["n"] for m in await _drain(after.queue)] == ["a", "b"]
    late = await after.queue.take([Q], timeout=3)
    assert late is not None and late.payload == {"n": "late"}
    assert await after.queue.enqueue(Q, {"n": "late"}, idempotency_key="late") == late.message_id


# --- across processes and threads ----------------------------------------------------------


async def test_a_take_blocked_in_another_process_wakes_on_enqueue(
    world: World, world_url: str, workers: Callable[..., Worker]
) -> None:
    latencies = []
    worker = workers(world_url, "wait", Q, 5)
    for n in range(5):
        assert (await worker.line())["event"] == "waiting"
        await asyncio.sleep(0.1)  # let it block in take
        await world.queue.enqueue(Q, {"sent": time.time(), "last": n == 4})
        taken = await worker.line()
        assert taken["event"] == "taken"
        latencies.append(taken["latency"])
    worker.proc.wait(timeout=10)

    print(f"\ncross-process enqueue -> take: {', '.join(f'{x * 1000:.1f}' for x in latencies)} ms")
    assert statistics.median(latencies) < 0.5


async def test_a_process_that_blocks_right_after_enqueueing_still_wakes_the_taker_at_once(
    world: World, world_url: str, workers: Callable[..., Worker]
) -> None:
    # The enqueuer does not return to its event loop before it hears back (a CLI command that
    # exits, a harness reading a pipe): its wake-up must already be on its way.
    worker = workers(world_url, "wait", Q, 5)
    latencies = []
    for n in range(8):
        assert worker.line_now()["event"] == "waiting"
        time.sleep(0.05)  # let it block in take
        await world.queue.enqueue(Q, {"sent": time.time(), "last": n == 7})
        taken = worker.line_now()  # our event loop does not run meanwhile
        assert taken["event"] == "taken"
        latencies.append(taken["latency"])
    assert worker.proc.wait(timeout=10) == 0
    assert max(latencies) < 0.5, latencies


async def test_in_process_hand_off_is_fast(queue: Queue) -> None:
    totals, hand_offs = [], []

    async def consume() -> tuple[Message | None, float]:
        message = await queue.take([Q], timeout=5)
        return message, time.perf_counter()

    for n in range(100):
        waiting = asyncio.create_task(consume())
        await asyncio.sleep(0.002)
        called = time.perf_counter()
        await queue.enqueue(Q, {"n": n})
        durable = time.perf_counter()
        message, taken = await waiting
        totals.append(taken - called)
        hand_offs.append(taken - durable)
        assert message is not None and message.payload == {"n": n}
        await queue.ack(message)

    print(
        f"\nin-process enqueue returned -> take returned: p50 {statistics.median(hand_offs) * 1e6:.0f} us; "
        f"enqueue called -> take returned: p50 {statistics.median(totals) * 1e6:.0f} us"
    )
    assert statistics.median(hand_offs) < 0.002


async def test_threads_and_processes_deliver_each_message_exactly_once(
    make_world: Callable[..., Any], world_url: str, workers: Callable[..., Worker],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("WF_FSYNC", "0")  # for speed, here and in the worker processes
    world = await make_world()
    enqueued = {await world.queue.enqueue(Q, {"n": n}) for n in range(500)}
    procs = [workers(world_url, "consume", Q, 0.5) for _ in range(2)]
    taken_by_threads: list[tuple[str, int]] = []
    lock = threading.Lock()

    async def consume() -> None:
        while (message := await world.queue.take([Q], timeout=0.5)) is not None:
            with lock:
                taken_by_threads.append((message.message_id, message.attempts))
            await world.queue.ack(message)

    for worker in procs:
        assert (await worker.line())["event"] == "ready"
    threads = [threading.Thread(target=asyncio.run, args=(consume(),)) for _ in range(4)]
    for thread in threads:
        thread.start()
    results = [await worker.line(timeout=60) for worker in procs]
    for thread in threads:
        await asyncio.to_thread(thread.join)

    taken = taken_by_threads + [(t["id"], t["attempts"]) for r in results for t in r["taken"]]
    ids = [message_id for message_id, _ in taken]
    print(f"\nthreads took {len(taken_by_threads)}, processes took {[len(r['taken']) for r in results]}")
    assert len(ids) == len(set(ids)), "a message was delivered twice"
    assert set(ids) == enqueued, "a message was lost"
    assert {attempts for _, attempts in taken} == {1}
    assert await world.queue.list() == []


async def test_no_wake_up_is_lost_when_enqueues_race_with_acks(
    world: World, world_url: str, workers: Callable[..., Worker]
) -> None:
    consumer = workers(world_url, "consume", Q, 0.5, 0.01)  # holds each message 10 ms
    assert (await consumer.line())["event"] == "ready"
    for n in range(100):  # most land while the one coalesced message is leased
        await world.queue.enqueue(Q, {"n": n}, idempotency_key="run:1")
        await asyncio.sleep(0.001 * (n % 4))
    while [m.state for m in await world.queue.list()] != ["leased"]:
        await world.queue.enqueue(Q, {"n": "more"}, idempotency_key="run:1")
        await asyncio.sleep(0.001)
    last_enqueue = time.time()
    await world.queue.enqueue(Q, {"n": "last"}, idempotency_key="run:1")  # while it is leased

    result = await consumer.line(timeout=30)

    deliveries = [t["at"] for t in result["taken"]]
    print(f"\n100 coalescing enqueues woke the consumer {len(deliveries)} times")
    assert deliveries and max(deliveries) > last_enqueue, "the last enqueue was not followed by a delivery"
    assert await world.queue.list() == []


# --- scale ----------------------------------------------------------------------------


async def _take_ack_seconds(taker: World, queue: str, count: int) -> float:
    """Mean seconds of one take + ack, over `count` messages of `queue`."""
    start = time.perf_counter()
    for _ in range(count):
        message = await taker.queue.take([queue])
        assert message is not None
        await taker.queue.ack(message)
    return (time.perf_counter() - start) / count


async def test_take_does_not_slow_down_with_5000_queued_messages(
    make_world: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A scale check, not a stopwatch: take + ack with 5000 messages queued costs about what it
    costs with 60 (a World that lists or scans its queue per take would be ~50x slower)."""
    monkeypatch.setenv("WF_FSYNC", "0")
    world = await make_world()
    for n in range(60):
        await world.queue.enqueue("few", {"n": n})
    few = await _take_ack_seconds(world, "few", 60)
    for n in range(5000):
        await world.queue.enqueue(Q, {"n": n})
    reopened = await make_world()  # also: an index built from 5000 stored messages
    first = await reopened.queue.take([Q])
    assert first is not None and first.payload == {"n": 0}  # still in order
    await reopened.queue.ack(first)
    many = await _take_ack_seconds(reopened, Q, 200)
    other_view = await _take_ack_seconds(world, Q, 200)  # a consumer that sees the changes only when it takes

    print(f"\ntake+ack: {few * 1e6:.0f} us with 60 queued, {many * 1e6:.0f} us with 5000, "
          f"{other_view * 1e6:.0f} us from a second view")
    assert many < 5 * few + 0.0005 and other_view < 5 * few + 0.0005


# --- bad data and bad input -----------------------------------------------------------------


async def test_hostile_queue_names_and_keys_stay_inside_the_store(
    queue: Queue, world_store: Store, tmp_path: Path
) -> None:
    hostile = ["../../escape", "/etc/passwd", "..", "a/../../b", "x" * 150 + "/..", "\\..\\..\\win"]
    for name in hostile:
        message_id = await queue.enqueue(name, {"n": name}, idempotency_key=f"../{name}", order_key=f"../{name}")
        message = await queue.take([name])
        assert message is not None and message.message_id == message_id and message.payload == {"n": name}
        assert message.idempotency_key == f"../{name}"

    data_dir = world_store.data_dir  # a local store: nothing may appear outside its directory
    if data_dir is not None:
        outside = [p for p in tmp_path.rglob("*") if data_dir not in p.parents and p != data_dir]
        assert outside == []
    for bad in ["", "nul\x00byte", "new\nline", "x" * 5000]:
        with pytest.raises(InvalidIdError):
            await queue.enqueue(bad, {"n": 1})
        with pytest.raises(InvalidIdError):
            await queue.enqueue(Q, {"n": 1}, idempotency_key=bad)
    with pytest.raises(InvalidIdError):
        await queue.delete("../../etc/passwd")


async def test_a_payload_that_is_not_json_is_refused_and_nothing_is_queued(queue: Queue) -> None:
    with pytest.raises(TypeError):
        await queue.enqueue(Q, {"when": object()})
    with pytest.raises(TypeError):
        await queue.enqueue(Q, ["not", "a", "dict"])  # type: ignore[arg-type]

    assert await queue.list() == []


# --- list and delete ------------------------------------------------------------------


async def test_list_shows_each_message_state_by_order_key(queue: Queue) -> None:
    await queue.enqueue(Q, {"n": "delayed"}, order_key="3", delay=60)
    await queue.enqueue(Q, {"n": "leased"}, order_key="1")
    await queue.enqueue(Q, {"n": "ready"}, order_key="2")
    await queue.enqueue("other", {"n": "elsewhere"}, order_key="0")
    taken = await queue.take([Q])
    assert taken is not None and taken.payload == {"n": "leased"}

    listed = await queue.list(Q)

    assert [(m.payload["n"], m.state) for m in listed] == [("leased", "leased"), ("ready", "ready"),
                                                           ("delayed", "delayed")]
    assert listed[0].attempts == 1 and listed[0].lease_until is not None
    assert len(await queue.list()) == 4


async def test_delete_removes_a_message_whatever_its_state_and_unknown_ids_are_not_found(queue: Queue) -> None:
    waiting = await queue.enqueue(Q, {"n": 1}, delay=60)
    await queue.enqueue(Q, {"n": 2})
    leased = await queue.take([Q])
    assert leased is not None

    await queue.delete(waiting)
    await queue.delete(leased.message_id)

    assert await queue.list() == []
    with pytest.raises(NotFoundError):
        await queue.delete(waiting)
    with pytest.raises(NotFoundError):
        await queue.ack(leased)


# --- the local World's machinery: lease holders, change log, safety rescan -----------------


