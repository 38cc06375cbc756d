"""Cross-process wake-ups (local World): a notification reaches the processes that wait on
its channel, and only those (two Notifiers stand for two processes: each has its own inbox)."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from wf.world_local.notify import INTEREST_BYTES, Notifier, _channel_bit


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[tuple[Notifier, Notifier]]:
    a, b = Notifier(tmp_path / "notify"), Notifier(tmp_path / "notify")
    yield a, b
    a.close()
    b.close()


def _bit_set(path: Path, channel: str) -> bool:
    bit = _channel_bit(channel)
    return bool(path.read_bytes()[bit >> 3] & (1 << (bit & 7)))


def _lines_seen(notifier: Notifier) -> list[set[bytes]]:
    seen: list[set[bytes]] = []
    inbox = notifier._inbox
    assert inbox is not None
    inner = inbox._dispatch

    def record(names: set[bytes]) -> None:
        seen.append(names)
        inner(names)

    inbox._dispatch = record
    return seen


async def test_a_notification_wakes_a_waiter_in_another_process_at_once(pair: tuple[Notifier, Notifier]) -> None:
    a, b = pair
    with b.subscribe("run:r1") as sub:
        t0 = time.monotonic()
        a.notify("run:r1")
        assert await sub.wait(2.0) is True
        assert time.monotonic() - t0 < 0.5


async def test_a_process_waiting_on_other_channels_is_not_sent_the_line(
        pair: tuple[Notifier, Notifier], tmp_path: Path) -> None:
    a, b = pair
    watched, other = "run:watched", "run:other"
    assert _channel_bit(watched) != _channel_bit(other)
    with b.subscribe(watched) as sub:
        seen = _lines_seen(b)
        interest = next((tmp_path / "notify" / "inbox").glob("*.interest"))
        assert interest.stat().st_size == INTEREST_BYTES
        assert _bit_set(interest, watched) and not _bit_set(interest, other)
        for _ in range(50):
            a.notify(other)
        a.notify(watched)
        assert await sub.wait(2.0) is True
        await asyncio.sleep(0.05)
        assert seen and all(names == {b"%x" % _channel_bit(watched)} for names in seen)
    assert not _bit_set(interest, watched)  # nobody waits on it any more


async def test_a_bit_shared_by_two_channels_stays_set_while_either_has_a_waiter(
        pair: tuple[Notifier, Notifier], tmp_path: Path) -> None:
    a, b = pair
    first = "run:x0"
    bit = _channel_bit(first)
    second = next(f"run:x{i}" for i in range(1, 10**6) if _channel_bit(f"run:x{i}") == bit)
    with b.subscribe(first):
        interest = next((tmp_path / "notify" / "inbox").glob("*.interest"))
        with b.subscribe(second) as sub:
            pass
        assert _bit_set(interest, first)  # `second` left, `first` still waits
        with b.subscribe(second) as sub:
            a.notify(second)
            assert await sub.wait(2.0) is True
    assert not _bit_set(interest, first)


async def test_a_peer_without_an_interest_map_is_sent_every_line(
        pair: tuple[Notifier, Notifier], tmp_path: Path) -> None:
    a, b = pair
    with b.subscribe("run:r2") as sub:
        next((tmp_path / "notify" / "inbox").glob("*.interest")).unlink()  # as an older wf would have it
        a.notify("run:r2")
        assert await sub.wait(2.0) is True


def test_closing_removes_the_inbox_and_its_map(tmp_path: Path) -> None:
    n = Notifier(tmp_path / "notify")
    with n.subscribe("c"):
        assert len(list((tmp_path / "notify" / "inbox").iterdir())) == 2
    n.close()
    assert list((tmp_path / "notify" / "inbox").iterdir()) == []


def test_the_inbox_and_map_of_a_dead_process_are_removed(tmp_path: Path) -> None:
    inbox = tmp_path / "notify" / "inbox"
    inbox.mkdir(parents=True)
    dead = 2**22 + 12345  # above pid_max's default: no such process
    for suffix in (".fifo", ".interest"):
        (inbox / f"{dead}-abc{suffix}").write_bytes(b"")
    n = Notifier(tmp_path / "notify")
    with n.subscribe("c"):
        assert sorted(p.name.split(".")[-1] for p in inbox.iterdir()) == ["fifo", "interest"]
        assert not any(p.name.startswith(str(dead)) for p in inbox.iterdir())
    n.close()


async def test_a_long_lived_notifier_keeps_nothing_open_for_processes_that_left(tmp_path: Path) -> None:
    worker = Notifier(tmp_path / "notify")
    fds_before = len(os.listdir("/proc/self/fd"))
    for i in range(40):  # forty short-lived clients, each waiting on its run while the worker notifies
        client = Notifier(tmp_path / "notify")
        with client.subscribe(f"run:r{i}") as sub:
            worker.notify(f"run:r{i}")
            assert await sub.wait(2.0) is True
        client.close()
        await asyncio.sleep(0.11)  # the inbox folder's time settles: the worker trusts a fresh listing
    worker.notify("run:last")  # the next notification looks at the listing again
    assert len(os.listdir("/proc/self/fd")) <= fds_before + 1
    worker.close()
