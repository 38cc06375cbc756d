"""The local World: storage, queue and streams on the file system (`LocalWorld`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .world import LocalWorld

__all__ = ["LocalWorld"]


def __getattr__(name: str) -> Any:
    # Imported lazily so that `wf.world_local.files` & co. load without the whole World.
    if name == "LocalWorld":
        from .world import LocalWorld

        return LocalWorld
    raise AttributeError(name)
