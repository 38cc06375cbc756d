"""The `wf` command line: a typer app."""

from __future__ import annotations

import typer

app = typer.Typer(
    name="wf",
    help="wf: durable workflows for Python. Run, inspect and replay workflows recorded on disk.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


@app.command()
def version() -> None:
    """Print wf's version."""
    from importlib.metadata import version as pkg_version

    typer.echo(pkg_version("wf"))


def main() -> None:
    """Entry point of the `wf` console script."""
    app()
