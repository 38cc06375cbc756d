"""Fixtures of the World conformance suite.

Every test here takes `world` (a started World on a fresh data dir) or `make_world`
(opens more Worlds on the same data dir: restarts, several processes' views). To run the
suite against another World, add its factory to WORLD_FACTORIES.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from wf.runtime.world import World


def _local_world(data_dir: Path) -> World:
    from wf.world_local.world import LocalWorld

    return LocalWorld(data_dir)


WORLD_FACTORIES: dict[str, Callable[[Path], World]] = {"local": _local_world}


@pytest.fixture(params=sorted(WORLD_FACTORIES))
def world_factory(request: pytest.FixtureRequest) -> Callable[[Path], World]:
    return WORLD_FACTORIES[request.param]


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
async def make_world(world_factory: Callable[[Path], World], data_dir: Path) -> AsyncIterator[Callable[[], World]]:
    """Open (and start) another World on the test's data dir; all are closed at the end."""
    opened: list[World] = []

    async def make() -> World:
        world = world_factory(data_dir)
        await world.start()
        opened.append(world)
        return world

    yield make  # type: ignore[misc]
    for world in reversed(opened):
        await world.close()


@pytest.fixture
async def world(make_world) -> World:  # type: ignore[no-untyped-def]
    return await make_world()
