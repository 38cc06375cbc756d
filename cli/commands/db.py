"""`wf db migrate`: create or upgrade the Postgres World's schema (API.md, "Choosing the World")."""

from __future__ import annotations

import typer

from ..common import WORLD, console, fail, handle_errors, run_async, world_url_for

db_app = typer.Typer(help="The Postgres World's database schema.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    """Add `wf db …` to the app."""
    app.add_typer(db_app, name="db")
    db_app.command("migrate")(migrate)


@handle_errors
def migrate(world_url: str | None = WORLD) -> None:
    """Create or upgrade the schema (safe while workers run; also done on a worker's first start)."""
    url = world_url_for(None, world_url)
    if not url.startswith(("postgresql://", "postgres://")):
        fail(f"wf db migrate needs a PostgreSQL World URL (--world postgresql://… or WF_WORLD), not {url!r}")
    try:
        from ...world_postgres.world import PostgresWorld
    except ImportError:
        fail("the Postgres World is not installed: pip install 'wf[postgres]'")
    world = PostgresWorld(url, create=True)
    version = run_async(world.prepare_schema())
    console.print(f"schema {world.schema} is at version {version} on {world.db.where}", markup=False)
