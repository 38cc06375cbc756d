"""`wf ui`: the web UI alone, for any World; and `serving()`, which `wf dev` uses too."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import typer

from ...runtime.loader import import_paths
from ...runtime.registry import REGISTRY
from ...runtime.world import World
from ...web import WebServer, WebSettings, create_app
from ...web.security import WEBHOOK_PREFIX, is_loopback
from ..common import DATA_DIR, WORLD, err_console, fail, handle_errors, open_world, run_async

__all__ = ["WEBHOOK_PREFIX", "register", "serving"]


def register(app: typer.Typer) -> None:
    app.command("ui")(ui)


@handle_errors
def ui(
    port: int = typer.Option(3001, "--port", "-p", help="HTTP port (0 picks a free one)."),
    host: str = typer.Option("127.0.0.1", "--host", help="Interface to bind (loopback by default; any other "
                             "address needs the token printed at start)."),
    path: list[Path] = typer.Option(None, "--path", help="Workflow code to load (replay checks, starting runs)."),
    data_dir: Path = DATA_DIR,
    world_url: str = WORLD,
) -> None:
    """Serve the web UI for the runs of a World; prints its URL and opens nothing."""
    if path:
        import_paths(path)
    world = open_world(data_dir, world_url, create=False)
    run_async(_ui(world, host, port))


async def _ui(world: World, host: str, port: int) -> None:
    from ...runtime.config import started_world

    await started_world(world)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        async with serving(world, host, port) as (_, url):
            err_console.print(f"wf ui: {len(REGISTRY.workflows)} workflow(s) loaded; open {url}", markup=False)
            sys.stderr.flush()
            await stop.wait()
        err_console.print("wf ui: stopped", markup=False)
    finally:
        await world.close()


@contextlib.asynccontextmanager
async def serving(world: World, host: str, port: int) -> AsyncIterator[tuple[WebServer, str]]:
    """Serve the web app on host:port while inside; yields the server and the URL to open.

    A non-loopback host gets a fresh token, carried in the URL (`?token=`).
    """
    token = None if is_loopback(host) else secrets.token_urlsafe(24)
    app = create_app(world, WebSettings(host=host, token=token))
    server = WebServer(app, host, port)
    try:
        await server.start()
    except OSError as exc:
        fail(f"cannot listen on {host}:{port}: {exc.strerror or exc}")
    shown = f"[{host}]" if ":" in host else host
    url = f"http://{shown}:{server.port}/" + (f"?token={token}" if token else "")
    try:
        yield server, url
    finally:
        await app.web.close()  # event streams end first, so the server stops without cutting requests
        await server.stop()
