"""Cross-process wake-ups on named channels, without busy polling.

A process that waits on a channel owns one FIFO for it under `<data>/notify/<channel>/`;
`notify(channel)` wakes waiters in this process directly and writes one byte to each
other process's FIFO. A FIFO whose reader is gone (its process died) is removed by the
next notifier. Subscribe *before* checking the condition you wait for, so that no
wake-up can slip between the check and the wait:

    with notifier.subscribe("queue") as sub:
        while not ready():
            await sub.wait(timeout)
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import errno
import functools
import hashlib
import itertools
import os
import select
import threading
import time
from collections.abc import Iterator
from pathlib import Path


@functools.lru_cache(maxsize=4096)
def _channel_dir_name(channel: str) -> str:
    safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in channel)[:48]
    digest = hashlib.sha256(channel.encode()).hexdigest()[:12]
    return f"{safe}.{digest}"


#: Readers kept open after their last subscriber left (per Notifier).
MAX_IDLE_READERS = 256


class Subscription:
    """Receives wake-ups of one channel for one waiter; `wait()` is edge-triggered."""

    def __init__(self, notifier: Notifier, channel: str) -> None:
        self._notifier = notifier
        self.channel = channel
        self._loop: asyncio.AbstractEventLoop | None = None
        self._event: asyncio.Event | None = None
        self._pending = False

    def _wake(self) -> None:
        self._pending = True
        loop, event = self._loop, self._event
        if loop is not None and event is not None:
            try:
                running = asyncio.get_running_loop()
            except RuntimeError:
                running = None
            if running is loop:
                event.set()
            else:
                with contextlib.suppress(RuntimeError):  # loop closed
                    loop.call_soon_threadsafe(event.set)

    async def wait(self, timeout: float | None = None) -> bool:
        """Wait for a notification since the last wait; True if one came, False on timeout."""
        if self._pending:
            self._pending = False
            return True
        if self._event is None:
            self._loop = asyncio.get_running_loop()
            self._event = asyncio.Event()
        self._event.clear()
        if self._pending:
            self._pending = False
            return True
        try:  # not wait_for: on 3.11 it swallows a cancel that races a wake-up (the caller hangs)
            async with asyncio.timeout(timeout):
                await self._event.wait()
        except TimeoutError:
            return False
        self._pending = False
        return True


class _ChannelReader:
    """This process's FIFO for one channel, dispatching to its local subscriptions."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.subscriptions: set[Subscription] = set()
        os.mkfifo(path, 0o600)
        self.fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        # Keep a writer open on our own FIFO so that reads never see EOF when notifiers close.
        self._keepalive = os.open(path, os.O_WRONLY | os.O_NONBLOCK)

    def drain_and_wake(self) -> None:
        try:
            while os.read(self.fd, 4096):
                pass
        except OSError:
            pass
        for sub in list(self.subscriptions):
            sub._wake()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.unlink(self.path)
        for fd in (self.fd, self._keepalive):
            with contextlib.suppress(OSError):
                os.close(fd)


class _Poller:
    """One thread per Notifier that waits on all of its FIFOs (independent of event loops)."""

    def __init__(self) -> None:
        self._poll = select.poll()
        self._readers: dict[int, _ChannelReader] = {}
        self._lock = threading.Lock()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        self._poll.register(self._wake_r, select.POLLIN)
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="wf-notify", daemon=True)
        self._thread.start()

    def add(self, reader: _ChannelReader) -> None:
        with self._lock:
            self._readers[reader.fd] = reader
            self._poll.register(reader.fd, select.POLLIN)
        self._kick()  # a poll() in progress only sees the fds it started with

    def remove(self, reader: _ChannelReader) -> None:
        with self._lock:
            self._readers.pop(reader.fd, None)
            with contextlib.suppress(KeyError, ValueError):
                self._poll.unregister(reader.fd)
        self._kick()

    def _kick(self) -> None:
        with contextlib.suppress(OSError):
            os.write(self._wake_w, b"x")

    def _run(self) -> None:
        while not self._stop:
            try:
                ready = self._poll.poll(1000)
            except OSError:
                continue
            for fd, _ in ready:
                if fd == self._wake_r:
                    with contextlib.suppress(OSError):
                        os.read(self._wake_r, 4096)
                    continue
                with self._lock:
                    reader = self._readers.get(fd)
                if reader is not None:
                    reader.drain_and_wake()

    def close(self) -> None:
        self._stop = True
        self._kick()
        self._thread.join(timeout=2.0)
        for fd in (self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)


def _owner_alive(fifo_name: str) -> bool:
    """Whether the process named by a FIFO (`<pid>-<id>.<n>.fifo`) still runs."""
    try:
        pid = int(fifo_name.split("-", 1)[0])
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (ValueError, PermissionError):
        return True
    return True


class Notifier:
    """Wake-ups for waiters in this and other processes sharing one data directory."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self._lock = threading.Lock()
        self._local: dict[str, set[Subscription]] = {}
        self._readers: dict[str, _ChannelReader] = {}
        self._prefix = f"{os.getpid()}-{id(self):x}"
        self._poller: _Poller | None = None
        self._counter = itertools.count()
        # Readers with no subscriber left stay open a while: subscribing again is then free.
        self._idle: collections.OrderedDict[str, _ChannelReader] = collections.OrderedDict()
        self._listing: dict[str, tuple[int, list[str]]] = {}

    def _dir(self, channel: str) -> Path:
        return self.root / _channel_dir_name(channel)

    @contextlib.contextmanager
    def subscribe(self, channel: str) -> Iterator[Subscription]:
        """Register a waiter on `channel` for the duration of the `with` block."""
        sub = Subscription(self, channel)
        with self._lock:
            self._local.setdefault(channel, set()).add(sub)
            reader = self._readers.get(channel)
            if reader is None:
                reader = self._idle.pop(channel, None)
                if reader is not None:
                    self._readers[channel] = reader
            if reader is None:
                directory = self._dir(channel)
                directory.mkdir(parents=True, exist_ok=True)
                reader = _ChannelReader(directory / f"{self._prefix}.{next(self._counter)}.fifo")
                self._readers[channel] = reader
                if self._poller is None:
                    self._poller = _Poller()
                self._poller.add(reader)
            reader.subscriptions.add(sub)
        try:
            yield sub
        finally:
            with self._lock:
                subs = self._local.get(channel)
                if subs is not None:
                    subs.discard(sub)
                    if not subs:
                        del self._local[channel]
                reader = self._readers.get(channel)
                if reader is not None:
                    reader.subscriptions.discard(sub)
                    if not reader.subscriptions:
                        del self._readers[channel]
                        self._idle[channel] = reader
                        if len(self._idle) > MAX_IDLE_READERS:
                            _, old = self._idle.popitem(last=False)
                            if self._poller is not None:
                                self._poller.remove(old)
                            old.close()

    def notify(self, channel: str) -> None:
        """Wake every waiter of `channel`, here and in other processes. Never raises."""
        with self._lock:
            local = list(self._local.get(channel, ()))
        for sub in local:
            sub._wake()
        directory = self._dir(channel)
        try:
            mtime = os.stat(directory).st_mtime_ns
        except OSError:
            return
        cached = self._listing.get(channel)
        # A directory time is coarse on some kernels: trust the cache only for a settled listing.
        if cached is not None and cached[0] == mtime and time.time_ns() - mtime > 100_000_000:
            names = cached[1]
        else:
            try:
                names = os.listdir(directory)
            except OSError:
                return
            if len(self._listing) > 4096:
                self._listing.clear()
            self._listing[channel] = (mtime, names)
        for name in names:
            if not name.endswith(".fifo") or name.startswith(self._prefix + "."):
                continue
            path = directory / name
            try:
                fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
            except OSError as exc:
                # Nobody reads it: its process is gone (or has not opened it yet: keep it then).
                if exc.errno == errno.ENXIO and not _owner_alive(name):
                    with contextlib.suppress(OSError):
                        os.unlink(path)
                continue
            try:
                os.write(fd, b"x")
            except OSError:
                pass  # EAGAIN: a wake-up is already pending there
            finally:
                os.close(fd)

    def close(self) -> None:
        """Remove this process's FIFOs."""
        with self._lock:
            readers = list(self._readers.values()) + list(self._idle.values())
            self._readers.clear()
            self._idle.clear()
            self._local.clear()
            poller, self._poller = self._poller, None
        if poller is not None:
            poller.close()
        for reader in readers:
            reader.close()
