"""The conformance suite's fixtures: import them into a World's `conftest.py` (see the package docs).

- `world_store`: the store the test runs on (default: a fresh one per `WF_TEST_WORLD`;
  a World's conftest overrides it to test its own);
- `make_world()`: opens and starts another World on that store (a restart, another
  process's view); all are closed, and the store dropped, at the end;
- `world`: the first such World; `world_url`: the store's URL for child processes.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
import pytest_asyncio

from wf.runtime.config import world_from_url
from wf.runtime.world import World

from .stores import Store, fresh_store

MakeWorld = Callable[[], Awaitable[World]]


def require(world: World, capability: str) -> None:
    """Skip the test unless the World declares `capability` (see `wf.runtime.world.CAPABILITIES`)."""
    if capability not in world.capabilities:
        pytest.skip(f"{type(world).__name__} does not declare the {capability!r} capability")


@pytest.fixture
def world_store(tmp_path: Path) -> Store:
    return fresh_store(tmp_path)


@pytest_asyncio.fixture
async def make_world(world_store: Store) -> AsyncIterator[MakeWorld]:
    opened: list[World] = []

    async def make() -> World:
        world = world_from_url(world_store.url)
        await world.start()
        opened.append(world)
        return world

    yield make
    for world in reversed(opened):
        await world.close()
    await world_store.drop()


@pytest_asyncio.fixture
async def world(make_world: MakeWorld) -> World:
    return await make_world()


@pytest.fixture
def world_url(world: World, world_store: Store) -> str:
    """The store's URL, for tests that open it from other processes ("processes" capability)."""
    require(world, "processes")
    return world_store.url
