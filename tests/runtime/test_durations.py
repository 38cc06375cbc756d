"""Durations as users write them, and the deadlines they set."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from wf.runtime.durations import deadline, parse_duration

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (0, timedelta(0)),
        (10, timedelta(seconds=10)),
        (1.5, timedelta(seconds=1.5)),
        (0.1, timedelta(milliseconds=100)),
        ("500ms", timedelta(milliseconds=500)),
        ("10s", timedelta(seconds=10)),
        ("5m", timedelta(minutes=5)),
        ("2h", timedelta(hours=2)),
        ("1d", timedelta(days=1)),
        ("1w", timedelta(weeks=1)),
        ("250us", timedelta(microseconds=250)),
        ("1h30m", timedelta(hours=1, minutes=30)),
        ("1d2h3m4s5ms", timedelta(days=1, hours=2, minutes=3, seconds=4, milliseconds=5)),
        ("1.5s", timedelta(seconds=1.5)),
        (".5s", timedelta(milliseconds=500)),
        ("0.1s", timedelta(milliseconds=100)),
        ("1.5h", timedelta(minutes=90)),
        ("  2 hours 15 minutes ", timedelta(hours=2, minutes=15)),
        ("3 days", timedelta(days=3)),
        ("10sec", timedelta(seconds=10)),
        ("1min", timedelta(minutes=1)),
        ("2H", timedelta(hours=2)),
        ("42", timedelta(seconds=42)),
        ("0s", timedelta(0)),
        (timedelta(minutes=3), timedelta(minutes=3)),
    ],
)
def test_parse_duration(value: Any, expected: timedelta) -> None:
    assert parse_duration(value) == expected


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (-1, "it is negative"),
        (-0.5, "it is negative"),
        ("-5s", "it is negative"),
        (timedelta(seconds=-1), "it is negative"),
        ("", "it is empty"),
        ("   ", "it is empty"),
        ("abc", "cannot read 'abc'"),
        ("10 parsecs", "unknown unit 'parsecs'"),
        ("5x", "unknown unit 'x'"),
        ("1h30", "the number 30 has no unit"),
        ("10s ago", "cannot read 'ago'"),
        ("1..5s", "the number 1 has no unit"),
        (float("nan"), "not a finite number"),
        (float("inf"), "not a finite number"),
        (True, "not bool"),
        (None, "not NoneType"),
        ([10], "not list"),
        (10**30, "too long"),
        ("99999999999d", "too long"),
    ],
)
def test_bad_durations_are_refused_with_a_clear_message(value: Any, message: str) -> None:
    with pytest.raises(ValueError, match="invalid duration") as info:
        parse_duration(value)
    assert message in str(info.value)
    assert '"500ms"' in str(info.value)  # the message shows what would work


def test_deadline_adds_a_duration_to_now() -> None:
    assert deadline("1h30m", NOW) == NOW + timedelta(hours=1, minutes=30)
    assert deadline(5, NOW) == NOW + timedelta(seconds=5)
    assert deadline(timedelta(days=1), NOW) == NOW + timedelta(days=1)


def test_deadline_of_an_aware_datetime_is_that_instant() -> None:
    at = datetime(2030, 1, 1, 9, tzinfo=timezone(timedelta(hours=2)))
    assert deadline(at, NOW) is at


def test_deadline_in_the_past_is_kept_as_is() -> None:
    past = NOW - timedelta(days=1)
    assert deadline(past, NOW) == past


def test_naive_datetime_deadline_is_refused() -> None:
    with pytest.raises(ValueError, match="naive datetime names no instant"):
        deadline(datetime(2030, 1, 1), NOW)


def test_deadline_passes_bad_durations_on() -> None:
    with pytest.raises(ValueError, match="invalid duration '-1s': it is negative"):
        deadline("-1s", NOW)
