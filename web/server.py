"""Running the app with uvicorn inside the caller's event loop (no signal handlers of its own)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Generator
from typing import Any

import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from .limits import READ_TIMEOUT

#: Connections (and requests in progress) beyond this many are answered 503.
MAX_CONNECTIONS = 1000


class HeadTimeoutProtocol(H11Protocol):
    """uvicorn's HTTP/1.1 protocol, closing a connection whose first request head is not in within `head_timeout`."""

    head_timeout = READ_TIMEOUT

    def connection_made(self, transport: Any) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._head_timer = self.loop.call_later(self.head_timeout, self._head_timeout)

    def _head_timeout(self) -> None:
        if self.cycle is None and not self.transport.is_closing():
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self._head_timer.cancel()
        super().connection_lost(exc)


class _QuietServer(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield  # the caller (wf dev / wf ui) owns SIGINT and SIGTERM


class WebServer:
    """`await start()` binds and serves in a task; `port` tells the bound port; `await stop()` ends it."""

    def __init__(self, app: Any, host: str, port: int, *, head_timeout: float = READ_TIMEOUT) -> None:
        protocol = type("HeadTimeout", (HeadTimeoutProtocol,), {"head_timeout": head_timeout})
        config = uvicorn.Config(
            app, host=host, port=port, lifespan="off", log_level=logging.WARNING, access_log=False,
            http=protocol, ws="none", limit_concurrency=MAX_CONNECTIONS, timeout_keep_alive=5,
            timeout_graceful_shutdown=2, server_header=False,
        )
        self.host = host
        self._port = port
        self._socket: socket.socket
        self._server = _QuietServer(config)
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Bind (OSError if the address is taken or not ours) and serve in a task."""
        self._socket = bind_socket(self.host, self._port)
        self._task = asyncio.create_task(self._server.serve(sockets=[self._socket]))
        while not self._server.started:
            if self._task.done():
                self._task.result()
                raise OSError(f"could not serve on {self.host}")
            await asyncio.sleep(0.01)

    @property
    def port(self) -> int:
        return int(self._socket.getsockname()[1])

    async def stop(self) -> None:
        self._server.should_exit = True
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket on host:port (IPv6 when the host is an IPv6 address)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host.strip("[]"), port))
        sock.listen(512)
        sock.set_inheritable(True)
    except OSError:
        sock.close()
        raise
    return sock
