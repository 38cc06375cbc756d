"""The pure parts of flow control: rate-limit strings, decorator checks, priority order keys, schedule slots."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

import wf
from wf.runtime.flow_control import parse_rate_limit
from wf.runtime.ids import _encode_bits, validate_id
from wf.runtime.schedules import last_slot, make_spec, next_slot, slot_run_id
from wf.runtime.starting import with_priority
from wf.runtime.world import PRIORITY_STEP_SECONDS, run_order_key


@pytest.mark.parametrize(("text", "expected"), [
    ("100/1m", (100, 60.0)), ("10/s", (10, 1.0)), ("5/10s", (5, 10.0)), ("1000/1h", (1000, 3600.0)),
    (" 3 / 500ms ", (3, 0.5)), ("7/minute", (7, 60.0)),
])
def test_rate_limits_are_count_slash_window(text: str, expected: tuple[int, float]) -> None:
    assert parse_rate_limit(text) == expected


@pytest.mark.parametrize("text", ["100", "0/1m", "-1/1m", "x/1m", "10/", "10/0s", "10/fortnight"])
def test_a_bad_rate_limit_is_refused_when_the_step_is_declared(text: str) -> None:
    with pytest.raises(ValueError, match="rate limit"):
        wf.step(rate_limit=text)(lambda: None)


def test_bad_limits_are_refused_when_declared() -> None:
    with pytest.raises(ValueError, match="concurrency"):
        wf.step(concurrency=0)(lambda: None)
    with pytest.raises(ValueError, match="concurrency"):
        wf.step(concurrency=True)(lambda: None)
    with pytest.raises(ValueError, match="needs concurrency"):
        wf.step(concurrency_key=lambda x: x)(lambda x: None)
    with pytest.raises(ValueError, match="needs rate_limit"):
        wf.step(rate_limit_key=lambda x: x)(lambda x: None)

    async def flow() -> None:
        return None

    with pytest.raises(ValueError, match="concurrency"):
        wf.workflow(concurrency=-2)(flow)
    assert wf.step(lambda: None).limits is None  # an unlimited step carries nothing to check
    assert wf.workflow(name="tests.units.unlimited")(flow).limits is None


def _run_id(ms: int, tail: str = "0000000000000000") -> str:
    return "wrun_" + _encode_bits(ms, 50) + tail


def test_priority_orders_runs_higher_first_and_by_start_within_a_priority() -> None:
    t = 1_800_000_000_000
    old_low, new_low = _run_id(t), _run_id(t + 1000)
    high_a, high_b = with_priority(_run_id(t + 5000), 3), with_priority(_run_id(t + 6000), 3)
    keys = {r: run_order_key(r) for r in (old_low, new_low, high_a, high_b)}
    assert sorted(keys, key=keys.get) == [high_a, high_b, old_low, new_low]
    assert run_order_key(old_low) == old_low  # priority 0: the run id itself (seed 004's FIFO)
    for run_id in keys:
        validate_id(run_id, "run id")


def test_the_starvation_bound_is_priority_difference_times_the_step() -> None:
    t = 1_800_000_000_000
    low = _run_id(t)
    step_ms = PRIORITY_STEP_SECONDS * 1000
    just_inside = with_priority(_run_id(t + 2 * step_ms - 1), 2)
    just_outside = with_priority(_run_id(t + 2 * step_ms + 1), 2)
    assert run_order_key(just_inside) < run_order_key(low) < run_order_key(just_outside)
    lowest = with_priority(_run_id(t - step_ms + 1), -1)  # a negative priority waits behind
    assert run_order_key(low) < run_order_key(lowest)


@pytest.mark.parametrize("bad", [1001, -1001, 1.5, True, "5"])
def test_a_bad_priority_is_refused(bad: object) -> None:
    with pytest.raises(ValueError, match="priority"):
        with_priority(_run_id(0), bad)  # type: ignore[arg-type]


def test_interval_slots_are_aligned_on_the_epoch() -> None:
    spec = make_spec("w", [], {}, cron=None, every="10s", tz="UTC", catchup="latest")
    at = datetime(2030, 1, 1, 12, 0, 7, 500, tzinfo=UTC)
    assert next_slot(spec, at) == datetime(2030, 1, 1, 12, 0, 10, tzinfo=UTC)
    assert next_slot(spec, datetime(2030, 1, 1, 12, 0, 10, tzinfo=UTC)) == datetime(2030, 1, 1, 12, 0, 20, tzinfo=UTC)
    assert last_slot(spec, at) == datetime(2030, 1, 1, 12, 0, 0, tzinfo=UTC)
    assert last_slot(spec, datetime(2030, 1, 1, 12, 0, 10, tzinfo=UTC)) == datetime(2030, 1, 1, 12, 0, 10, tzinfo=UTC)


def test_cron_slots_follow_the_time_zone_across_a_dst_change() -> None:
    spec = make_spec("w", [], {}, cron="0 2 * * *", every=None, tz="Europe/Paris", catchup="all")
    before = datetime(2030, 3, 29, 12, 0, tzinfo=UTC)  # summer time starts on 31 March 2030
    first = next_slot(spec, before)
    assert first == datetime(2030, 3, 30, 1, 0, tzinfo=UTC)  # 02:00 in Paris, winter time
    later = next_slot(spec, next_slot(spec, first))
    assert later == datetime(2030, 4, 1, 0, 0, tzinfo=UTC)  # 02:00 in Paris, summer time
    assert last_slot(spec, first + timedelta(hours=3)) == first


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"cron": None, "every": None}, "exactly one"),
    ({"cron": "* * * * *", "every": "1s"}, "exactly one"),
    ({"cron": "61 * * * *", "every": None}, "cron"),
    ({"cron": None, "every": "500ms"}, "at least 1 second"),
    ({"cron": None, "every": "1s", "tz": "Mars/Olympus"}, "time zone"),
    ({"cron": None, "every": "1s", "catchup": "some"}, "catchup"),
])
def test_bad_schedules_are_refused(kwargs: dict[str, object], match: str) -> None:
    args = {"tz": "UTC", "catchup": "latest", **kwargs}
    with pytest.raises(ValueError, match=match):
        make_spec("w", [], {}, **args)  # type: ignore[arg-type]


def test_a_slots_run_id_is_the_same_everywhere_valid_and_ordered_by_slot() -> None:
    a = datetime(2030, 1, 1, tzinfo=UTC)
    b = a + timedelta(seconds=1)
    assert slot_run_id("s", a) == slot_run_id("s", a)
    assert slot_run_id("s", a) != slot_run_id("t", a)
    assert slot_run_id("s", a) < slot_run_id("s", b)
    validate_id(slot_run_id("s", a), "run id")
    assert run_order_key(slot_run_id("s", a)) == slot_run_id("s", a)
