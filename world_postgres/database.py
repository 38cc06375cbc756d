"""Connections to PostgreSQL: one pool per event loop, typed errors, retries across outages.

A World may be used from several event loops (wf's blocking calls run on a background
loop; tests call it from threads with their own loops), and an asyncio pool belongs to
one loop: the loop the World was started on gets psycopg_pool's `AsyncConnectionPool`,
any other loop a `LoopPool` (no background tasks, so a loop may end without closing it).

Every failure to reach the server surfaces as StorageUnavailableError. `Database.run`
retries an operation whose connection was lost (server restarted, network cut) with
backoff for up to `WF_PG_RETRY_SECONDS` (default 30), logging one line per outage; the
operation is told the attempt number so a write whose commit may have landed can look
before writing again. Statements run often are prepared on each connection (psycopg's
`prepare_threshold`), unless the URL says `prepare=off` (url.py), which a pooler that cannot
keep them needs (PgBouncer in transaction mode before 1.21).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import orjson
import psycopg
from psycopg import AsyncConnection
from psycopg.pq import TransactionStatus
from psycopg.types.json import set_json_loads
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from ..runtime.errors import (
    DataDirError,
    EntityConflictError,
    InvalidIdError,
    StorageUnavailableError,
    WorldError,
)
from .url import hide_password

log = logging.getLogger("wf.world_postgres")
T = TypeVar("T")

#: SQLSTATEs worth retrying: connection failures, shutdown, serialization failures, deadlocks.
_RETRY_STATES = ("08", "57P01", "57P02", "57P03", "40001", "40P01", "53300")
#: TCP keepalives, so a dead peer is noticed in seconds, not hours.
#: A statement run this many times on one connection is prepared there.
PREPARE_THRESHOLD = 2
CONNECT_OPTIONS: dict[str, Any] = {
    "keepalives": 1, "keepalives_idle": 5, "keepalives_interval": 2, "keepalives_count": 3,
    "connect_timeout": 5, "application_name": "wf",
}


def retryable(exc: BaseException) -> bool:
    """Whether `exc` means the server could not be reached or the transaction should simply be retried."""
    if isinstance(exc, PoolTimeout | psycopg.InterfaceError):
        return True
    if isinstance(exc, psycopg.OperationalError):
        state = exc.sqlstate
        return state is None or state.startswith(_RETRY_STATES)
    return False


def unavailable(exc: BaseException, where: str) -> StorageUnavailableError:
    """The one-line typed error for a lost or refused connection."""
    reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return StorageUnavailableError(f"PostgreSQL at {where} is unavailable: {reason}")


def typed(exc: BaseException, where: str) -> WorldError:
    """The WorldError for a database error that retrying will not fix (the contract allows no other)."""
    line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if isinstance(exc, psycopg.errors.UndefinedTable | psycopg.errors.InvalidSchemaName):
        return DataDirError(f"the wf schema at {where} is missing or incomplete ({line}): run `wf db migrate`")
    if isinstance(exc, psycopg.IntegrityError):
        return EntityConflictError(f"conflicting write: {line}")
    if isinstance(exc, psycopg.DataError):
        return InvalidIdError(f"a value the database refuses: {line}")
    log.warning("unexpected database error at %s: %r", where, exc)
    return StorageUnavailableError(f"PostgreSQL at {where} failed: {line}")


async def _configure(conn: AsyncConnection) -> None:
    set_json_loads(orjson.loads, conn)


class LoopPool:
    """A pool without background tasks, for event loops other than the World's home loop.

    psycopg_pool's AsyncConnectionPool runs tasks on its loop and must be closed on it; a loop
    that ends without that (a thread's `asyncio.run`) would hang at shutdown. This one only
    keeps idle connections: nothing runs between calls, and an abandoned one costs sockets only.
    """

    def __init__(self, conninfo: str, max_size: int, prepare_threshold: int | None) -> None:
        self.conninfo = conninfo
        self.prepare_threshold = prepare_threshold
        self._idle: list[AsyncConnection] = []
        self._slots = asyncio.Semaphore(max_size)

    @contextlib.asynccontextmanager
    async def connection(self, timeout: float | None = None) -> AsyncIterator[AsyncConnection]:
        async with self._slots:
            conn = None
            while self._idle and conn is None:
                conn = self._idle.pop()
                if conn.closed or conn.broken:
                    conn = None
            if conn is None:
                conn = await AsyncConnection.connect(self.conninfo, autocommit=True,
                                                     prepare_threshold=self.prepare_threshold, **CONNECT_OPTIONS)
                await _configure(conn)
            try:
                yield conn
            finally:
                if conn.closed or conn.broken or conn.info.transaction_status != TransactionStatus.IDLE:
                    with contextlib.suppress(Exception):
                        await conn.close()
                else:
                    self._idle.append(conn)

    async def close(self, timeout: float = 1.0) -> None:
        idle, self._idle = self._idle, []
        for conn in idle:
            with contextlib.suppress(Exception):
                await conn.close()


Pool = AsyncConnectionPool | LoopPool


class Database:
    """Pools (one per event loop) on one server, and the retry policy around them."""

    def __init__(self, conninfo: str, *, max_size: int | None = None, prepare: bool = False) -> None:
        self.conninfo = conninfo
        #: psycopg's: a statement run this many times on a connection is prepared there (None: never).
        self.prepare_threshold = PREPARE_THRESHOLD if prepare else None
        self.where = hide_password(conninfo)
        self.max_size = max_size or int(os.environ.get("WF_PG_POOL_SIZE", "10"))
        self.retry_seconds = float(os.environ.get("WF_PG_RETRY_SECONDS", "30"))
        self._pools: dict[asyncio.AbstractEventLoop, Pool] = {}
        self._opening: dict[asyncio.AbstractEventLoop, asyncio.Future[Pool]] = {}
        #: The loop `start()` ran on: it gets psycopg_pool's pool; other loops get a LoopPool.
        self.home_loop: asyncio.AbstractEventLoop | None = None
        self._lock = threading.Lock()
        self._outage_logged = False
        self.closed = False
        #: Run once before the first operation (the World checks or migrates its schema there).
        self.first_use: Callable[[], Awaitable[object]] | None = None
        self._prepared = False

    async def connect(self) -> AsyncConnection:
        """A new connection of our own (not pooled). StorageUnavailableError if the server is unreachable."""
        try:
            conn = await AsyncConnection.connect(self.conninfo, autocommit=True,
                                                 prepare_threshold=self.prepare_threshold, **CONNECT_OPTIONS)
        except psycopg.Error as exc:
            raise unavailable(exc, self.where) from exc
        await _configure(conn)
        return conn

    async def pool(self) -> Pool:
        """This event loop's pool, opened on first use."""
        loop = asyncio.get_running_loop()
        pool = self._pools.get(loop)
        if pool is not None:
            return pool
        if self.closed:
            raise StorageUnavailableError("the Postgres World is closed")
        opening = self._opening.get(loop)
        if opening is not None:
            return await asyncio.shield(opening)
        if loop is not self.home_loop:
            pool = LoopPool(self.conninfo, self.max_size, self.prepare_threshold)
            with self._lock:
                self._drop_dead_loops()
                self._pools[loop] = pool
            return pool
        future: asyncio.Future[Pool] = loop.create_future()
        self._opening[loop] = future
        try:
            pool = AsyncConnectionPool(
                self.conninfo, min_size=1, max_size=self.max_size, open=False, timeout=5.0,
                kwargs={"autocommit": True, "prepare_threshold": self.prepare_threshold, **CONNECT_OPTIONS},
                configure=_configure, name="wf", reconnect_timeout=0,
            )
            await pool.open(wait=False)
            with self._lock:
                self._drop_dead_loops()
                self._pools[loop] = pool
            future.set_result(pool)
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: nobody else may be waiting
            raise
        finally:
            self._opening.pop(loop, None)
        return pool

    def _drop_dead_loops(self) -> None:
        """Forget pools of loops that were closed (their threads ended; their sockets die with them)."""
        for loop in [lp for lp in self._pools if lp.is_closed()]:
            self._pools.pop(loop, None)

    async def run(self, op: Callable[[AsyncConnection, int], Awaitable[T]], *, retry: bool = True) -> T:
        """`op(conn, attempt)` on a pooled connection; retried while the server is unreachable.

        `attempt` is 0 the first time; a retried write may check whether its earlier attempt
        committed after all. Raises StorageUnavailableError once `retry_seconds` have passed.
        """
        if not self._prepared and self.first_use is not None:
            await self.first_use()
            self._prepared = True
        deadline = time.monotonic() + self.retry_seconds
        attempt = 0
        pause = 0.05
        while True:
            try:
                pool = await self.pool()
                async with pool.connection() as conn:
                    result = await op(conn, attempt)
                if self._outage_logged:
                    self._outage_logged = False
                    log.warning("PostgreSQL at %s is reachable again", self.where)
                return result
            except (psycopg.Error, PoolTimeout) as exc:
                if not retryable(exc):
                    raise typed(exc, self.where) from exc
                if not retry or time.monotonic() + pause > deadline or self.closed:
                    raise unavailable(exc, self.where) from exc
                conflict = isinstance(exc, psycopg.Error) and (exc.sqlstate or "").startswith("40")
                if not conflict and not self._outage_logged:
                    self._outage_logged = True
                    log.warning("lost the connection to PostgreSQL at %s (%s); retrying", self.where,
                                str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__)
                await asyncio.sleep(pause * (0.5 + random.random()))
                pause = min(pause * 2, 1.0)
                attempt += 1

    async def close(self) -> None:
        """Close this loop's pool, and ask the pools of other live loops to close."""
        self.closed = True
        with self._lock:
            pools = dict(self._pools)
            self._pools.clear()
        try:
            here = asyncio.get_running_loop()
        except RuntimeError:
            here = None
        for loop, pool in pools.items():
            if loop is here:
                await pool.close(timeout=1.0)
            elif not loop.is_closed() and loop.is_running():
                asyncio.run_coroutine_threadsafe(pool.close(timeout=1.0), loop)
