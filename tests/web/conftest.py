"""Fixtures for the web app's tests: the app served in-process on a real socket over a `wf_env` World."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest

from wf.web import WebServer, WebSettings, create_app
from wf.web.limits import Limits


@dataclass
class Served:
    port: int
    app: Any
    env: Any


@pytest.fixture
async def serve(wf_env: Any) -> AsyncIterator[Any]:
    """`await serve(token=None, limits=None, head_timeout=10)` -> Served; every server is stopped after the test."""
    servers: list[tuple[WebServer, Any]] = []

    async def start(*, token: str | None = None, limits: Limits | None = None, head_timeout: float = 10.0,
                    host: str = "127.0.0.1") -> Served:
        app = create_app(wf_env.world, WebSettings(host=host, token=token, limits=limits or Limits()))
        server = WebServer(app, "127.0.0.1", 0, head_timeout=head_timeout)
        await server.start()
        servers.append((server, app))
        return Served(server.port, app, wf_env)

    yield start
    for server, app in servers:
        await app.web.close()
        await server.stop()
