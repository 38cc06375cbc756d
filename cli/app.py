"""The `wf` command line: a typer app assembled from one module per command group."""

from __future__ import annotations

import logging
import os

import typer

from .commands import db as db_cmd
from .commands import dev as dev_cmd
from .commands import inspect as inspect_cmd
from .commands import ops, replay_cmds, run_cmds
from .commands import prune as prune_cmd
from .commands import schedule as schedule_cmd
from .commands import ui as ui_cmd

app = typer.Typer(
    name="wf",
    help="wf: durable workflows for Python. Start, watch, inspect and replay runs recorded on disk.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=True,
    rich_markup_mode="rich",
)

run_cmds.register(app)
dev_cmd.register(app)
replay_cmds.register(app)
inspect_cmd.register(app)
ops.register(app)
ui_cmd.register(app)
db_cmd.register(app)
schedule_cmd.register(app)
prune_cmd.register(app)


@app.command()
def version() -> None:
    """Print wf's version."""
    from importlib.metadata import version as pkg_version

    typer.echo(pkg_version("wf"))


def main() -> None:
    """Entry point of the `wf` console script."""
    logging.basicConfig(
        level=os.environ.get("WF_LOG_LEVEL", "WARNING").upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    app()
