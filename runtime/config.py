"""Which World this process uses, and the background loop behind wf's blocking calls.

A World is named by one string, the same for the library, the CLI and workers (API.md,
"Choosing the World"):

- `postgresql://…` / `postgres://…`: the Postgres World (`pip install 'wf[postgres]'`);
- a path, or `file:PATH`: the local World on that data directory;
- `module:factory`: a World of the user's own; `factory()` takes no argument.

`wf.configure(world=...)` takes such a string or a World object; otherwise `WF_WORLD`, else
`WF_DATA_DIR` (the local World's shorthand), else the local World in `./.wf`. The runtime
never imports a World implementation: the known schemes map to module paths imported by name.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import inspect
import os
import re
import threading
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

from .errors import WorldConfigError
from .world import World

T = TypeVar("T")

#: The local World's class, by name: the default, and what a path or `file:` URL opens.
LOCAL_WORLD = "wf.world_local.world:LocalWorld"
#: URL schemes of the Worlds wf ships, and the extra that installs each.
SCHEMES: dict[str, tuple[str, str]] = {
    "postgresql": ("wf.world_postgres.world:PostgresWorld", "postgres"),
    "postgres": ("wf.world_postgres.world:PostgresWorld", "postgres"),
}
_FACTORY_SPEC = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")
_URL_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")

_lock = threading.Lock()
_world: World | None = None
_world_url: str | None = None
_started: set[int] = set()


def configure(*, world: World | str | Path | None = None, data_dir: str | Path | None = None) -> None:
    """Choose where runs live in this process: a World URL or object (`world`), or a local `data_dir`.

    With neither, wf goes back to `WF_WORLD` / `WF_DATA_DIR` / `./.wf`.
    """
    global _world, _world_url
    if world is not None and data_dir is not None:
        raise WorldConfigError("configure() takes world= or data_dir=, not both")
    with _lock:
        old = _world
        if isinstance(world, World):
            _world, _world_url = world, None
        else:
            _world = None
            _world_url = str(world) if world is not None else (f"file:{data_dir}" if data_dir is not None else None)
        _started.clear()
    if old is not None and old is not _world:
        _close_later(old)


def _close_later(world: World) -> None:
    with contextlib.suppress(Exception):  # closing an abandoned World is best effort
        _portal().call(world.close())


def default_world_url() -> str:
    """`WF_WORLD`, else `WF_DATA_DIR` as a `file:` URL, else `file:.wf`."""
    url = os.environ.get("WF_WORLD", "").strip()
    if url:
        return url
    return f"file:{os.environ.get('WF_DATA_DIR') or '.wf'}"


def describe_world_url(url: str) -> str:
    """The URL with any password hidden, for messages and logs."""
    return re.sub(r"(://[^:/@]*:)[^@/]*@", r"\1***@", url)


def local_path(url: str) -> Path | None:
    """The data directory a URL names when it is the local World's, else None."""
    if url.startswith("file:"):
        rest = url[len("file:"):]
        return Path(rest[2:] if rest.startswith("//") else rest)
    if _URL_SCHEME.match(url) or _FACTORY_SPEC.match(url):
        return None
    return Path(url)


def _import(spec: str, what: str) -> Callable[..., Any]:
    module_name, _, attr = spec.partition(":")
    try:
        target: Any = importlib.import_module(module_name)
        for part in attr.split("."):
            target = getattr(target, part)
    except ImportError as exc:
        raise WorldConfigError(f"{what}: cannot import {module_name!r} ({exc})") from exc
    except AttributeError:
        raise WorldConfigError(f"{what}: {module_name!r} has no {attr!r}") from None
    if not callable(target):
        raise WorldConfigError(f"{what}: {spec!r} is not callable")
    return target  # type: ignore[no-any-return]


def _accepts(factory: Callable[..., Any], name: str) -> bool:
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        return False
    return name in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


def world_from_url(url: str, *, create: bool = True, fsync: bool | None = None) -> World:
    """A new (not started) World for `url` (see the module docs).

    `create=False` refuses to make a new store (read-only commands: a missing data dir or an
    unmigrated database is an error). WorldConfigError for a URL that names no World; the
    World itself raises DataDirError / StorageUnavailableError for a store it cannot use.
    """
    url = url.strip()
    if not url:
        raise WorldConfigError("the World URL is empty")
    shown = describe_world_url(url)
    scheme = _URL_SCHEME.match(url)
    if scheme:
        name = scheme.group(1).lower()
        if name == "file":
            return _local(Path(url[len("file://"):]), create, fsync)
        if name not in SCHEMES:
            known = ", ".join(sorted({*SCHEMES, "file"}))
            raise WorldConfigError(f"unknown World URL scheme {name!r} in {shown} (known: {known}, or module:factory)")
        spec, extra = SCHEMES[name]
        try:
            cls = _import(spec, f"World {shown}")
        except WorldConfigError:
            raise WorldConfigError(f"the {name} World is not installed: pip install 'wf[{extra}]'") from None
        return cls(url, create=create)  # type: ignore[no-any-return]
    path = local_path(url)
    if path is not None:
        return _local(path, create, fsync)
    factory = _import(url, f"WF_WORLD={url}")
    kwargs = {"create": create} if _accepts(factory, "create") else {}
    world = factory(**kwargs)
    if not isinstance(world, World):
        raise WorldConfigError(f"WF_WORLD={url}: {url} returned {type(world).__name__}, not a World")
    return world


def _local(path: Path, create: bool, fsync: bool | None) -> World:
    cls = _import(LOCAL_WORLD, "the local World")
    return cls(path, create=create, fsync=fsync)  # type: ignore[no-any-return]


def get_world() -> World:
    """This process's World (created on first use, not yet started)."""
    global _world
    with _lock:
        if _world is None:
            _world = world_from_url(_world_url or default_world_url())
        return _world


async def started_world(world: World | None = None) -> World:
    """`world` (default: this process's), started once."""
    world = world or get_world()
    with _lock:
        if id(world) in _started:
            return world
        _started.add(id(world))
    await world.start()
    return world


class _Portal:
    """A background event loop thread that runs wf's coroutines for blocking callers."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="wf-portal", daemon=True)
        self.thread.start()

    def call(self, coro: Coroutine[Any, Any, T]) -> T:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            pass
        else:
            coro.close()
            raise RuntimeError(
                "this wf call blocks; inside async code use its async twin "
                "(e.g. `await wf.start_async(...)`, `await run.result_async()`)"
            )
        # run_coroutine_threadsafe schedules from this thread, so the task starts in a copy of the
        # caller's context: its context variables (an OpenTelemetry span, say) go with the coroutine.
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()


_portal_instance: _Portal | None = None


def _portal() -> _Portal:
    global _portal_instance
    with _lock:
        if _portal_instance is None:
            _portal_instance = _Portal()
        return _portal_instance


def blocking(coro: Coroutine[Any, Any, T]) -> T:
    """Run one of wf's coroutines to completion from synchronous code."""
    return _portal().call(coro)
