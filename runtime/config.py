"""Which World this process uses, and the background loop behind wf's blocking calls.

The runtime never imports a World implementation: `WF_WORLD` (default
`wf.world_local.world:LocalWorld`) names the class, built with the data directory
(`wf.configure(data_dir=...)`, else `WF_DATA_DIR`, else `./.wf`).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import os
import threading
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

from .world import World

T = TypeVar("T")

DEFAULT_WORLD = "wf.world_local.world:LocalWorld"

_lock = threading.Lock()
_world: World | None = None
_started: set[int] = set()
_data_dir: Path | None = None


def configure(*, data_dir: str | Path | None = None, world: World | None = None) -> None:
    """Choose where runs live (`data_dir`) or hand wf a World object to use in this process."""
    global _world, _data_dir
    with _lock:
        old = _world
        _world = world
        _data_dir = Path(data_dir) if data_dir is not None else None
        _started.clear()
    if old is not None and old is not world:
        _close_later(old)


def _close_later(world: World) -> None:
    with contextlib.suppress(Exception):  # closing an abandoned World is best effort
        _portal().call(world.close())


def world_factory() -> type[World]:
    spec = os.environ.get("WF_WORLD", DEFAULT_WORLD)
    module_name, _, attr = spec.partition(":")
    try:
        cls = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise RuntimeError(f"WF_WORLD={spec!r} does not name a World class ({exc})") from exc
    return cls  # type: ignore[no-any-return]


def get_world() -> World:
    """This process's World (created on first use, not yet started)."""
    global _world
    with _lock:
        if _world is None:
            _world = world_factory()(_data_dir) if _data_dir is not None else world_factory()()  # type: ignore[call-arg]
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
