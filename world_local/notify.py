"""Cross-process wake-ups on named channels, without busy polling.

Every Notifier (one per World object) that waits on anything owns one FIFO, its inbox:
`<notify>/inbox/<pid>-<id>.fifo`, read by one thread. Waiting on a channel leaves an empty
marker file `<notify>/subs/<channel>@<pid>-<id>`: it holds no descriptor, so a process may
watch thousands of channels (one per active run) for the cost of a directory entry each,
and a marker stays behind after its last waiter leaves, so that waiting on the same channel
again costs nothing.

`notify(channel)` wakes waiters in this process directly; then, for every other process's
inbox, it checks for that process's marker of the channel and writes the channel's name,
one line, into the inbox. The inbox thread wakes the channel's waiters. An inbox whose
process died is removed by the next notifier that finds nobody reading it; markers left by
dead processes are removed when a Notifier starts. Subscribe *before* checking the
condition you wait for, so that no wake-up can slip between the check and the wait:

    with notifier.subscribe("queue") as sub:
        while not ready():
            await sub.wait(timeout)
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import errno
import fcntl
import functools
import hashlib
import logging
import os
import select
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

log = logging.getLogger("wf.world_local")

#: Channel markers kept after their last waiter left (per Notifier), oldest removed first.
MAX_IDLE_MARKERS = 4096
#: A line in an inbox that wakes every waiter of the process (sent when its inbox was full).
_WAKE_ALL = b"!"
#: How long a notifier waits for a full inbox to have room before it gives up on it.
_FULL_INBOX_SECONDS = 2.0


@functools.lru_cache(maxsize=4096)
def _channel_file_name(channel: str) -> str:
    safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in channel)[:48]
    digest = hashlib.sha256(channel.encode()).hexdigest()[:12]
    return f"{safe}.{digest}"


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

    def close(self) -> None:
        self._stop = True
        with contextlib.suppress(OSError):
            os.write(self._keepalive, b"\n")
        self._thread.join(timeout=2.0)
        with contextlib.suppress(OSError):
            os.unlink(self.path)
        for fd in (self.fd, self._keepalive):
            with contextlib.suppress(OSError):
                os.close(fd)


class Notifier:
    """Wake-ups for waiters in this and other processes sharing one data directory."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self._inbox_dir = f"{self.root}/inbox"
        self._subs_dir = f"{self.root}/subs"
        self._prefix = f"{os.getpid()}-{id(self):x}"
        self._lock = threading.Lock()
        self._local: dict[str, set[Subscription]] = {}
        self._inbox: _Inbox | None = None
        #: channel file name -> channel, for every marker of ours (least recently used first).
        self._marked: collections.OrderedDict[str, str] = collections.OrderedDict()
        #: (inbox folder mtime, prefixes of the other processes' inboxes), for notify().
        self._peers: tuple[int, list[str]] | None = None
        self._send_lock = threading.Lock()
        self._peer_fds: dict[str, int] = {}

    # --- waiting ---

    @contextlib.contextmanager
    def subscribe(self, channel: str) -> Iterator[Subscription]:
        """Register a waiter on `channel` for the duration of the `with` block."""
        sub = Subscription(self, channel)
        name = _channel_file_name(channel)
        with self._lock:
            if name in self._marked:
                self._marked.move_to_end(name)
            else:
                if self._inbox is None:
                    self._open_inbox()
                os.close(os.open(self._marker(name, self._prefix), os.O_CREAT | os.O_WRONLY | os.O_CLOEXEC, 0o600))
                self._marked[name] = channel
                self._forget_idle_markers()
            self._local.setdefault(channel, set()).add(sub)
        try:
            yield sub
        finally:
            with self._lock:
                subs = self._local.get(channel)
                if subs is not None:
                    subs.discard(sub)
                    if not subs:
                        del self._local[channel]

    def _marker(self, name: str, prefix: str) -> str:
        return f"{self._subs_dir}/{name}@{prefix}"

    def _open_inbox(self) -> None:
        # Called with the lock held, on the first subscription.
        os.makedirs(self._inbox_dir, exist_ok=True)
        os.makedirs(self._subs_dir, exist_ok=True)
        self._remove_dead_peers_files()
        self._inbox = _Inbox(self._inbox_dir, self._prefix, self._dispatch)

    def _forget_idle_markers(self) -> None:
        # Called with the lock held: drop the oldest markers nobody here waits on any more.
        excess = len(self._marked) - MAX_IDLE_MARKERS
        if excess <= 0:
            return
        for name, channel in list(self._marked.items()):
            if excess <= 0:
                break
            if channel in self._local:
                continue
            del self._marked[name]
            excess -= 1
            with contextlib.suppress(OSError):
                os.unlink(self._marker(name, self._prefix))

    def _remove_dead_peers_files(self) -> None:
        """Remove inboxes and markers of processes that are gone (they died without closing)."""
        verdicts: dict[str, bool] = {}

        def dead(prefix: str) -> bool:
            if prefix not in verdicts:
                verdicts[prefix] = not _pid_alive(prefix)
            return verdicts[prefix]

        for directory, split in ((self._inbox_dir, lambda n: n.split(".", 1)[0]),
                                 (self._subs_dir, lambda n: n.rpartition("@")[2])):
            try:
                names = os.listdir(directory)
            except OSError:
                continue
            for name in names:
                if dead(split(name)):
                    with contextlib.suppress(OSError):
                        os.unlink(f"{directory}/{name}")

    def _dispatch(self, names: set[bytes]) -> None:
        # In the inbox thread: wake the waiters of every channel named.
        with self._lock:
            if _WAKE_ALL in names:
                subs = [sub for group in self._local.values() for sub in group]
            else:
                subs = []
                for raw in names:
                    channel = self._marked.get(raw.decode("ascii", "replace"))
                    if channel is not None:
                        subs.extend(self._local.get(channel, ()))
        for sub in subs:
            sub._wake()

    # --- waking ---

    def notify(self, channel: str) -> None:
        """Wake every waiter of `channel`, here and in other processes. Never raises."""
        with self._lock:
            local = list(self._local.get(channel, ()))
        for sub in local:
            sub._wake()
        peers = self._peer_prefixes()
        if not peers:
            return
        name = _channel_file_name(channel)
        line = f"{name}\n".encode()
        for prefix in peers:
            try:
                os.stat(self._marker(name, prefix))
            except OSError:
                continue  # that process does not watch this channel
            self._send(prefix, line)

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
        with self._send_lock:
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
            try:
                os.write(fd, line)
            except BlockingIOError:
                self._send_when_room(fd)
            except OSError:  # EPIPE: its reader is gone; look again next time
                del self._peer_fds[prefix]
                with contextlib.suppress(OSError):
                    os.close(fd)

    @staticmethod
    def _send_when_room(fd: int) -> None:
        # The inbox is full (its process is busy): it will wake all its waiters once it drains.
        poller = select.poll()
        poller.register(fd, select.POLLOUT)
        deadline = time.monotonic() + _FULL_INBOX_SECONDS
        while time.monotonic() < deadline:
            try:
                os.write(fd, _WAKE_ALL + b"\n")
                return
            except BlockingIOError:
                poller.poll(10)
            except OSError:
                return
        log.warning("a notification inbox stayed full for %.0f s: its process seems stuck", _FULL_INBOX_SECONDS)

    def close(self) -> None:
        """Stop reading the inbox and remove this process's files."""
        with self._lock:
            inbox, self._inbox = self._inbox, None
            names = list(self._marked)
            self._marked.clear()
            self._local.clear()
        if inbox is not None:
            inbox.close()
        for name in names:
            with contextlib.suppress(OSError):
                os.unlink(self._marker(name, self._prefix))
        with self._send_lock:
            for fd in self._peer_fds.values():
                with contextlib.suppress(OSError):
                    os.close(fd)
            self._peer_fds.clear()
