"""`wf dev`: worker + web UI and webhook endpoint + reload on change + a live view of recent runs."""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import signal
import sys
from pathlib import Path
from types import ModuleType

import typer
from rich.live import Live

from ...runtime.loader import LoadError, import_path, load_code, module_name_for, python_files
from ...runtime.registry import REGISTRY
from ...runtime.worker import Worker
from ...runtime.world import World
from ..common import DATA_DIR, WORLD, CliError, console, err_console, handle_errors, open_world, run_async
from ..live_view import Messages, logs_into, message_style, render_view
from .ui import WEBHOOK_PREFIX, serving

STATUS_STYLE = {"pending": "dim", "running": "cyan", "completed": "green", "failed": "red", "cancelled": "yellow"}


def register(app: typer.Typer) -> None:
    app.command("dev")(dev)


@handle_errors
def dev(
    paths: list[Path] = typer.Argument(None, help="Workflow files, packages or folders (default: the current folder)."),
    port: int = typer.Option(3000, "--port", "-p", help="HTTP port (0 picks a free one)."),
    host: str = typer.Option("127.0.0.1", "--host", help="Interface to bind (loopback by default; any other "
                             "address needs the token printed at start)."),
    concurrency: int = typer.Option(100, "--concurrency", "-c", min=1),
    reload: bool = typer.Option(True, "--reload/--no-reload", help="Reload changed modules."),
    live: bool = typer.Option(None, "--live/--no-live", help="Live view of runs (default: when on a terminal)."),
    data_dir: Path = DATA_DIR,
    world_url: str = WORLD,
) -> None:
    """The local loop: run workflows, accept webhooks, reload code on change.

    With no PATH: [tool.wf] paths in pyproject.toml, else the modules under the current folder
    whose source defines workflows (never `__main__.py`, tests, virtualenvs or hidden folders).
    """
    found = load_code(paths)
    for warning in found.warnings:
        err_console.print(f"warning: {warning}", markup=False)
    roots, loaded = found.roots, found.modules
    world = open_world(data_dir, world_url)
    show_live = console.is_terminal if live is None else live
    run_async(_dev(world, roots, loaded, host, port, concurrency, reload, show_live))


class Reloader:
    """Re-imports changed workflow modules; runs in flight finish on the code they started."""

    def __init__(self, roots: list[Path], loaded: dict[Path, ModuleType]) -> None:
        self.roots = roots
        self.loaded = loaded

    def apply(self, changed: set[Path]) -> list[str]:
        messages = []
        for path in sorted(changed):
            if path.suffix != ".py":
                continue
            try:
                if not path.exists():
                    continue
                module = self.loaded.get(path)
                if module is None:
                    if path not in python_files(self.roots):
                        continue
                    self.loaded[path] = import_path(path)
                    messages.append(f"loaded {module_name_for(path)[0]}")
                else:
                    self.loaded[path] = _reimport(module)
                    messages.append(f"reloaded {module.__name__}")
            except LoadError as exc:
                messages.append(f"reload failed: {exc}; keeping the old code")
        return messages


def _reimport(module: ModuleType) -> ModuleType:
    try:
        return importlib.reload(module)
    except SyntaxError as exc:
        raise LoadError(f"syntax error in {exc.filename}:{exc.lineno}: {exc.msg}") from exc
    except Exception as exc:
        raise LoadError(f"{module.__name__}: {type(exc).__name__}: {exc}") from exc


async def _watch(reloader: Reloader, stop: asyncio.Event, messages: Messages | None = None) -> None:
    """Reload changed modules; say so on stderr, or in the live view's messages when it is up."""
    from watchfiles import awatch

    async for changes in awatch(*reloader.roots, stop_event=stop, debounce=100, step=20, recursive=True):
        changed = {Path(p).resolve() for _, p in changes}
        for message in reloader.apply(changed):
            if messages is not None:
                messages.add(message, message_style(message))
            else:
                err_console.print(f"[wf dev] {message}", markup=False)


async def _dev(world: World, roots: list[Path], loaded: dict[Path, ModuleType], host: str, port: int,
               concurrency: int, reload: bool, show_live: bool) -> None:
    from ...runtime.config import started_world

    await started_world(world)
    worker = Worker(world, concurrency=concurrency)
    served = False
    try:
        await _serve_and_work(world, roots, loaded, host, port, worker, reload, show_live)
        served = True
    except CliError:  # it could not start (the port is taken): the one line says why
        raise
    except BaseException:
        served = True  # interrupted or failed while serving: it did stop
        raise
    finally:
        await world.close()
        if served:
            err_console.print("wf dev: stopped", markup=False)


async def _serve_and_work(world: World, roots: list[Path], loaded: dict[Path, ModuleType], host: str, port: int,
                          worker: Worker, reload: bool, show_live: bool) -> None:
    async with serving(world, host, port) as (server, url):
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        worker_id = await world.announce_worker({"kind": "dev", "port": server.port,
                                                 "workflows": sorted(REGISTRY.workflows)})
        worker_task = asyncio.create_task(worker.run())
        messages = Messages() if show_live else None
        watcher = asyncio.create_task(_watch(Reloader(roots, loaded), stop, messages)) if reload else None
        err_console.print(
            f"wf dev ready: {len(REGISTRY.workflows)} workflow(s); web UI at {url} "
            f"(webhooks at {WEBHOOK_PREFIX}<token>), runs in {_where(world)}",
            markup=False,
        )
        sys.stderr.flush()
        await _run_until_stopped(world, stop, messages, worker, worker_task, watcher, worker_id)


def _where(world: World) -> str:
    return str(getattr(world, "data_dir", None) or type(world).__name__)


async def _run_until_stopped(world: World, stop: asyncio.Event, messages: Messages | None, worker: Worker,
                             worker_task: asyncio.Task[None], watcher: asyncio.Task[None] | None,
                             worker_id: str) -> None:
    try:
        if messages is not None:
            with logs_into(messages), Live(await render_view(world, messages, console.width), console=console,
                                           refresh_per_second=2) as view:
                while not stop.is_set():
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(0.5):
                            await stop.wait()
                    view.update(await render_view(world, messages, console.width))
        else:
            await stop.wait()
    finally:
        err_console.print("wf dev: draining in-flight work...", markup=False)
        worker.stop()
        await worker_task
        if watcher is not None:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
        await world.retire_worker(worker_id)

