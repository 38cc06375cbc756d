"""Cross-process wake-ups on named channels, without busy polling.

Every Notifier (one per World object) that waits on anything owns one FIFO, its inbox:
`<notify>/inbox/<pid>-<random>.fifo`, read by one thread. Waiting on a channel costs no file
at all: the channel is registered in memory. A channel is known across processes by its bit,
its CRC-32 modulo 65,536. Beside each inbox lies its interest map, `<pid>-<random>.interest`:
65,536 bits shared with `mmap`, where the owner sets the bit of every channel it has waiters
on. `notify(channel)` wakes waiters in this process directly, and writes the channel's bit,
one line, into the inbox of every other process whose map has that bit set (so a worker's
commits do not wake every process on the machine; a write to a FIFO costs microseconds).
The inbox thread wakes the waiters of every channel of that bit (another channel sharing
the bit gets a spurious wake-up, which edge-triggered waiters shrug off).

The owner sets a bit before the waiter checks its condition, and a notifier reads it after
its change is made, so one of the two sees the other. An inbox whose process died is
removed by the next notifier that finds nobody reading it. Subscribe *before* checking the
condition you wait for, so that no wake-up can slip between the check and the wait:

    with notifier.subscribe("queue") as sub:
        while not ready():
            await sub.wait(timeout)

A notifier never blocks on a busy process: if that process's inbox is full, it is sent a
"wake everyone" line as soon as there is room again (waiters look again at least every
second in any case, so even a lost wake-up costs at most that).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import functools
import logging
import mmap
import os
import select
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

log = logging.getLogger("wf.world_local")

#: A line in an inbox that wakes every waiter of the process (sent when its inbox was full).
_WAKE_ALL = b"!"
#: Size in bytes of an interest map (65,536 channel bits).
INTEREST_BYTES = 8192


@functools.lru_cache(maxsize=8192)
def _channel_bit(channel: str) -> int:
    """The channel's bit in interest maps, also the line (in hex) that names it in inboxes."""
    return zlib.crc32(channel.encode()) % (INTEREST_BYTES * 8)


def _pid_alive(prefix: str) -> bool:
    """Whether the process named by a `<pid>-<id>` prefix still runs."""
    try:
        os.kill(int(prefix.split("-", 1)[0]), 0)
    except ProcessLookupError:
        return False
    except (ValueError, PermissionError):
        return True
    return True


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


class _Inbox:
    """This process's FIFO and the thread that reads it, handing each line to `dispatch`."""

    def __init__(self, directory: str, prefix: str, dispatch: Callable[[set[bytes]], None]) -> None:
        self.path = f"{directory}/{prefix}.fifo"
        # The interest map exists before the inbox has its name: a notifier that finds the
        # inbox finds its map (a missing map means "send everything").
        self.interest_path = f"{directory}/{prefix}.interest"
        map_fd = os.open(self.interest_path, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        try:
            os.ftruncate(map_fd, INTEREST_BYTES)
            self.interest = mmap.mmap(map_fd, INTEREST_BYTES)
        finally:
            os.close(map_fd)
        staging = f"{self.path}.new"  # opened before it gets its name: no notifier sees it unread
        with contextlib.suppress(FileNotFoundError):
            os.unlink(staging)
        os.mkfifo(staging, 0o600)
        self.fd = os.open(staging, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        # Our own writer: reads never see EOF, and close() can wake the thread.
        self._keepalive = os.open(staging, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        with contextlib.suppress(OSError, AttributeError):
            fcntl.fcntl(self.fd, fcntl.F_SETPIPE_SZ, 1 << 20)  # room for ~30,000 pending wake-ups
        os.rename(staging, self.path)
        self._dispatch = dispatch
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="wf-notify", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        poller = select.poll()
        poller.register(self.fd, select.POLLIN)
        rest = b""
        while not self._stop:
            try:
                poller.poll()
            except OSError:
                continue
            chunks = [rest]
            try:
                while chunk := os.read(self.fd, 1 << 16):
                    chunks.append(chunk)
            except OSError:  # EAGAIN: drained
                pass
            lines = b"".join(chunks).split(b"\n")
            rest = lines.pop()
            if lines and not self._stop:
                try:
                    self._dispatch(set(lines))
                except Exception:  # never let a waiter's failure stop the wake-ups of the others
                    log.exception("notification dispatch failed")

    def set_bit(self, bit: int, on: bool) -> None:
        """Tell other processes whether this process waits on channels of `bit` (under the notifier's lock)."""
        if on:
            self.interest[bit >> 3] |= 1 << (bit & 7)
        else:
            self.interest[bit >> 3] &= ~(1 << (bit & 7)) & 0xFF

    def close(self) -> None:
        self._stop = True
        with contextlib.suppress(OSError):
            os.write(self._keepalive, b"\n")
        self._thread.join(timeout=2.0)
        with contextlib.suppress(OSError):
            os.unlink(self.path)
        with contextlib.suppress(OSError):
            os.unlink(self.interest_path)
        with contextlib.suppress(BufferError, ValueError):
            self.interest.close()
        for fd in (self.fd, self._keepalive):
            with contextlib.suppress(OSError):
                os.close(fd)


class Notifier:
    """Wake-ups for waiters in this and other processes sharing one data directory."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self._inbox_dir = f"{self.root}/inbox"
        # Unique for good: a name reused by a later inbox would meet descriptors and maps
        # that other notifiers keep for the old one (id(self) is reused after a close).
        self._prefix = f"{os.getpid()}-{os.urandom(6).hex()}"
        self._lock = threading.Lock()
        self._local: dict[str, set[Subscription]] = {}
        #: bit -> the channels of that bit with local waiters.
        self._by_bit: dict[int, set[str]] = {}
        self._inbox: _Inbox | None = None
        #: (inbox folder mtime, prefixes of the other processes' inboxes), for notify().
        self._peers: tuple[int, list[str]] | None = None
        self._send_lock = threading.Lock()
        self._peer_fds: dict[str, int] = {}
        #: Peers' interest maps (None: the peer has none, send it everything).
        self._peer_maps: dict[str, mmap.mmap | None] = {}
        #: The peer listing the cached descriptors and maps were last checked against.
        self._pruned_for: list[str] | None = None
        #: Peers whose inbox was full: they get a "wake everyone" line once it has room.
        self._overflowed: set[str] = set()

    # --- waiting ---

    @contextlib.contextmanager
    def subscribe(self, channel: str) -> Iterator[Subscription]:
        """Register a waiter on `channel` for the duration of the `with` block."""
        sub = Subscription(self, channel)
        bit = _channel_bit(channel)
        with self._lock:
            if self._inbox is None:
                self._open_inbox()
            inbox = self._inbox
            assert inbox is not None
            subs = self._local.get(channel)
            if subs is None:
                subs = self._local[channel] = set()
                channels = self._by_bit.setdefault(bit, set())
                if not channels:
                    inbox.set_bit(bit, True)
                channels.add(channel)
            subs.add(sub)
        try:
            yield sub
        finally:
            with self._lock:
                subs = self._local.get(channel)
                if subs is not None:
                    subs.discard(sub)
                    if not subs:
                        del self._local[channel]
                        channels = self._by_bit.get(bit, set())
                        channels.discard(channel)
                        if not channels:
                            self._by_bit.pop(bit, None)
                            if self._inbox is inbox:
                                inbox.set_bit(bit, False)

    def _open_inbox(self) -> None:
        # Called with the lock held, on the first subscription.
        os.makedirs(self._inbox_dir, exist_ok=True)
        self._remove_dead_inboxes()
        self._inbox = _Inbox(self._inbox_dir, self._prefix, self._dispatch)

    def _remove_dead_inboxes(self) -> None:
        """Remove the inboxes of processes that are gone (they died without closing)."""
        try:
            names = os.listdir(self._inbox_dir)
        except OSError:
            return
        for name in names:
            if not _pid_alive(name.split(".", 1)[0]):
                with contextlib.suppress(OSError):
                    os.unlink(f"{self._inbox_dir}/{name}")

    def _dispatch(self, names: set[bytes]) -> None:
        # In the inbox thread: wake the waiters of every channel named.
        with self._lock:
            if _WAKE_ALL in names:
                subs = [sub for group in self._local.values() for sub in group]
            else:
                subs = []
                for raw in names:
                    try:
                        channels = self._by_bit.get(int(raw, 16), ())
                    except ValueError:  # not a line of ours
                        continue
                    for channel in channels:
                        subs.extend(self._local.get(channel, ()))
        for sub in subs:
            sub._wake()

    # --- waking ---

    def notify(self, channel: str) -> None:
        """Wake every waiter of `channel`, here and in other processes. Never raises, never blocks."""
        with self._lock:
            local = list(self._local.get(channel, ()))
        for sub in local:
            sub._wake()
        peers = self._peer_prefixes()
        if peers is not self._pruned_for:  # the listing changed: let go of processes that left
            with self._send_lock:
                self._forget_departed(peers)
        if not peers:
            return
        # Sent at once, not batched per event-loop turn: a caller that blocks right after
        # notifying (a CLI command, a test harness) must not hold other processes back.
        bit = _channel_bit(channel)
        line = b"%x\n" % bit
        index, mask = bit >> 3, 1 << (bit & 7)
        with self._send_lock:
            for prefix in peers:
                interest = self._peer_maps.get(prefix, False)
                if interest is False:
                    interest = self._open_peer_map(prefix)
                if interest is not None and not interest[index] & mask and prefix not in self._overflowed:
                    continue  # nobody there waits on this channel
                self._send(prefix, line)

    def _forget_departed(self, peers: list[str]) -> None:
        # Called with the send lock held: close what we kept open for inboxes that are gone
        # (every `wf start` is a process with an inbox: a long-lived worker sees thousands).
        present = set(peers)
        for prefix in [p for p in self._peer_fds if p not in present]:
            with contextlib.suppress(OSError):
                os.close(self._peer_fds.pop(prefix))
        for prefix in [p for p in self._peer_maps if p not in present]:
            self._forget_map(prefix)
        self._overflowed &= present
        self._pruned_for = peers

    def _open_peer_map(self, prefix: str) -> mmap.mmap | None:
        # Called with the send lock held.
        found: mmap.mmap | None = None
        try:
            fd = os.open(f"{self._inbox_dir}/{prefix}.interest", os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            pass
        else:
            try:
                found = mmap.mmap(fd, INTEREST_BYTES, prot=mmap.PROT_READ)
            except (OSError, ValueError):  # not a map we know: send everything
                found = None
            finally:
                os.close(fd)
        self._peer_maps[prefix] = found
        return found

    def _peer_prefixes(self) -> list[str]:
        """The other processes with an inbox (the listing is cached while the folder is unchanged)."""
        try:
            mtime = os.stat(self._inbox_dir).st_mtime_ns
        except OSError:
            return []
        cached = self._peers
        # A directory's time is coarse on some kernels: trust the cache only for a settled listing.
        if cached is not None and cached[0] == mtime and time.time_ns() - mtime > 100_000_000:
            return cached[1]
        try:
            names = os.listdir(self._inbox_dir)
        except OSError:
            return []
        prefixes = [n[: -len(".fifo")] for n in names if n.endswith(".fifo")]
        peers = [p for p in prefixes if p != self._prefix]
        self._peers = (mtime, peers)
        return peers

    def _send(self, prefix: str, line: bytes) -> None:
        # Called with the send lock held.
        for _ in range(2):  # a second time if the descriptor we kept was for a reader now gone
            fd = self._peer_fds.get(prefix)
            if fd is None:
                path = f"{self._inbox_dir}/{prefix}.fifo"
                try:
                    fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
                except OSError as exc:
                    if exc.errno == errno.ENXIO and not _pid_alive(prefix):  # nobody reads it: its process is gone
                        with contextlib.suppress(OSError):
                            os.unlink(path)
                    return
                self._peer_fds[prefix] = fd
            if prefix in self._overflowed:
                line = _WAKE_ALL + b"\n"
            try:
                os.write(fd, line)
                self._overflowed.discard(prefix)
            except BlockingIOError:  # its inbox is full (the process is busy or stopped)
                self._overflowed.add(prefix)
            except OSError:  # EPIPE: that reader is gone
                del self._peer_fds[prefix]
                self._overflowed.discard(prefix)
                self._forget_map(prefix)
                with contextlib.suppress(OSError):
                    os.close(fd)
                continue
            return

    def _forget_map(self, prefix: str) -> None:
        found = self._peer_maps.pop(prefix, None)
        if found is not None:
            with contextlib.suppress(BufferError, ValueError):
                found.close()

    def close(self) -> None:
        """Stop reading the inbox and remove it."""
        with self._lock:
            inbox, self._inbox = self._inbox, None
            self._local.clear()
            self._by_bit.clear()
        if inbox is not None:
            inbox.close()
        with self._send_lock:
            for fd in self._peer_fds.values():
                with contextlib.suppress(OSError):
                    os.close(fd)
            self._peer_fds.clear()
            for prefix in list(self._peer_maps):
                self._forget_map(prefix)
