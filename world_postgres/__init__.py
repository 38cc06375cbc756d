"""The Postgres World: many workers on many machines share one PostgreSQL (`PostgresWorld`).

`WF_WORLD=postgresql://user:pass@host:5432/db[?schema=NAME]` selects it; everything lives in
one schema (default `wf`, or `WF_PG_SCHEMA`), created and upgraded by `schema.py`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .world import PostgresWorld, drop_schema

__all__ = ["PostgresWorld", "drop_schema"]


def __getattr__(name: str) -> Any:
    # Imported lazily: `wf.world_postgres` loads without psycopg until a World is made.
    if name in __all__:
        from . import world

        return getattr(world, name)
    raise AttributeError(name)
