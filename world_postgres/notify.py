"""Wake-ups across processes: one LISTEN connection per World, in a thread of its own.

Writers send `pg_notify(channel, key)` in the transaction that changes something (keys:
`q` the queue, `e:<run>` a run's end, `s:<run>:<hash>` a stream, `x` nothing: used to stop
or nudge the thread); the server delivers it at commit. A run's log changing (`r:<run>`,
every commit) goes to a channel of its own (`<channel>_r`), which a process LISTENs to only
once something in it waits on a run's log (`Listener.watch_runs`): a worker driving its runs
itself then never wakes for the other workers' writes. The listener
thread blocks on its connection and wakes this process's waiters (`Hub`), whatever event
loop they wait on. Notifications are hints: a lost one costs latency, never correctness
(every waiter also looks again after a jittered pause), and after a reconnect every
waiter is woken to look again.

The same connection holds this process's *session lock*: a session-level advisory lock
(schema's lock space, session number). Its session number marks the queue leases this
process takes; the lock vanishes the moment the process dies (the server sees its socket
close), which is how other processes tell a dead holder's leases within a fraction of a second.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import threading
import time
import zlib
from collections.abc import Iterator

import psycopg
from psycopg import sql

from .database import CONNECT_OPTIONS

log = logging.getLogger("wf.world_postgres")


def channel_name(schema: str, suffix: str = "") -> str:
    """The schema's notification channel (`suffix` "_r": its runs' logs), at most 63 bytes."""
    name = f"wf_{schema}{suffix}"
    return name if len(name) <= 63 else f"wf_{zlib.crc32(schema.encode()):08x}{suffix}"


class Waiter:
    """One pending wait on a key, woken from any thread."""

    __slots__ = ("_event", "_loop")

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._event = asyncio.Event()

    def wake(self) -> None:
        with contextlib.suppress(RuntimeError):  # its loop is closed: nobody waits any more
            self._loop.call_soon_threadsafe(self._event.set)

    async def wait(self, timeout: float | None) -> bool:
        """Until woken (True) or `timeout` seconds (False); clears the wake-up."""
        try:
            if timeout is None:
                await self._event.wait()
            else:
                await asyncio.wait_for(self._event.wait(), max(timeout, 0.0))
        except TimeoutError:
            return False
        self._event.clear()
        return True


class Hub:
    """Waiters by key; `fire` wakes those of one key, `fire_all` every one."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiters: dict[str, set[Waiter]] = {}

    @contextlib.contextmanager
    def subscribe(self, key: str) -> Iterator[Waiter]:
        waiter = Waiter()
        with self._lock:
            self._waiters.setdefault(key, set()).add(waiter)
        try:
            yield waiter
        finally:
            with self._lock:
                group = self._waiters.get(key)
                if group is not None:
                    group.discard(waiter)
                    if not group:
                        del self._waiters[key]

    def fire(self, key: str) -> None:
        with self._lock:
            group = list(self._waiters.get(key, ()))
        for waiter in group:
            waiter.wake()

    def fire_all(self) -> None:
        with self._lock:
            groups = [w for group in self._waiters.values() for w in group]
        for waiter in groups:
            waiter.wake()


class Listener:
    """The thread that LISTENs for the schema's channel and holds this process's session lock."""

    def __init__(self, conninfo: str, schema: str, lock_space: int, hub: Hub) -> None:
        self.conninfo = conninfo
        self.schema = schema
        self.channel = channel_name(schema)
        self.runs_channel = channel_name(schema, "_r")
        self.lock_space = lock_space
        #: Whether this process wants the runs channel, and whether the live connection LISTENs to it.
        self._runs_wanted = False
        self.runs_listening = threading.Event()
        self.hub = hub
        #: This process's session number (0 until first connected).
        self.session_no = 0
        self.ready = threading.Event()
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._start_lock = threading.Lock()
        self._started = False
        #: worker_id -> info JSON of the workers this process announced (put back after a reconnect,
        #: in case another process removed them while our session lock was gone).
        self.announced: dict[str, str] = {}
        self._conn: psycopg.Connection | None = None
        self._thread = threading.Thread(target=self._main, name=f"wf-pg-listen-{schema}", daemon=True)

    def start(self) -> None:
        """Start the thread (once; later calls do nothing)."""
        with self._start_lock:
            if not self._started:
                self._started = True
                self._thread.start()

    async def ensure_started(self, timeout: float) -> int:
        """Start the thread if needed and wait for its first connection; the session number.

        Raises the connection's error if it never connected.
        """
        self.start()
        if not self.ready.is_set():
            await asyncio.to_thread(self.ready.wait, timeout)
        if self.error is not None:
            raise self.error
        if not self.session_no:
            raise TimeoutError(f"the listener did not connect within {timeout:.0f} s")
        return self.session_no

    def stop(self) -> None:
        """Ask the thread to end (it does within a fraction of a second)."""
        self._stop.set()

    def join(self, timeout: float) -> None:
        if self._started:
            self._thread.join(timeout)

    def _connect(self) -> psycopg.Connection:
        conn = psycopg.connect(self.conninfo, autocommit=True, prepare_threshold=None, **CONNECT_OPTIONS)
        try:
            if not self.session_no:
                row = conn.execute(sql.SQL("SELECT nextval({})").format(
                    sql.Literal(f'"{self.schema}".sessions'))).fetchone()
                assert row is not None
                self.session_no = int(row[0])
            row = conn.execute("SELECT pg_try_advisory_lock(%s, %s)", (self.lock_space, self.session_no)).fetchone()
            if not row or not row[0]:
                raise RuntimeError(f"session lock {self.session_no} is held by another process")
            conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self.channel)))
            if self._runs_wanted:
                conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self.runs_channel)))
                self.runs_listening.set()
            for worker_id, info in list(self.announced.items()):
                conn.execute(sql.SQL("INSERT INTO {}.workers (worker_id, session_no, info) VALUES (%s, %s, %s::json) "
                                     "ON CONFLICT (worker_id) DO NOTHING").format(sql.Identifier(self.schema)),
                             (worker_id, self.session_no, info))
        except BaseException:
            conn.close()
            raise
        return conn

    def _main(self) -> None:
        pause = 0.05
        lost_at: float | None = None
        while not self._stop.is_set():
            try:
                conn = self._connect()
            except (psycopg.Error, RuntimeError) as exc:
                if not self.ready.is_set() and self.session_no == 0:
                    self.error = exc  # never connected: the World's start reports it
                    self.ready.set()
                    return
                if lost_at is None:
                    lost_at = time.monotonic()
                self._stop.wait(pause * (0.5 + random.random()))
                pause = min(pause * 2, 2.0)
                continue
            self._conn = conn
            pause = 0.05
            if lost_at is not None:
                log.warning("listener reconnected to PostgreSQL after %.1f s", time.monotonic() - lost_at)
                lost_at = None
            self.ready.set()
            self.hub.fire_all()  # whatever was notified meanwhile is looked at again
            try:
                self._listen(conn)
            except psycopg.Error as exc:
                if not self._stop.is_set():
                    log.warning("listener lost its PostgreSQL connection (%s); reconnecting",
                                str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__)
                    lost_at = time.monotonic()
            finally:
                self._conn = None
                self.runs_listening.clear()
                with contextlib.suppress(Exception):
                    conn.close()

    def want_runs(self) -> None:
        """Ask the thread to LISTEN to the runs channel too (`runs_listening` is set once it does)."""
        self._runs_wanted = True

    def _listen(self, conn: psycopg.Connection) -> None:
        fire = self.hub.fire
        while not self._stop.is_set():
            if self._runs_wanted and not self.runs_listening.is_set():
                conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self.runs_channel)))
                self.runs_listening.set()
                self.hub.fire_all()  # a log may have grown before we listened: look again
            for note in conn.notifies(timeout=0.5):
                fire(note.payload)
                if self._stop.is_set():
                    return
                if self._runs_wanted and not self.runs_listening.is_set():
                    break  # LISTEN to the runs channel now (the nudge that asked for it arrived)
