"""What every command shares: opening the World, loading user code, output, and the error edge.

Exit codes: 0 success; 1 when the thing checked is wrong (a failed run waited on, a replay
divergence, doctor findings); 2 bad input (one clear line on stderr, never a traceback).
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import typer
from rich.console import Console

from ..runtime.errors import (
    CorruptDataError,
    DataDirError,
    InvalidIdError,
    NotFoundError,
    RunNotFoundError,
    SerializationError,
    StorageUnavailableError,
    WfError,
    WorkflowNotFoundError,
    WorldConfigError,
    WorldError,
)
from ..runtime.loader import LoadError
from ..runtime.world import World

T = TypeVar("T")

EXIT_OK = 0
EXIT_CHECK_FAILED = 1
EXIT_BAD_INPUT = 2

#: Width of piped output when no terminal tells one: wide enough that no table cuts an id.
PIPED_WIDTH = 200


def output_width() -> int | None:
    """The width to draw stdout at: rich's own choice on a terminal or with COLUMNS set; piped, the
    terminal's width if stderr or stdin is one (at least 120), else PIPED_WIDTH. Never rich's 80."""
    if "COLUMNS" in os.environ or sys.stdout.isatty():
        return None
    for fd in (2, 0):
        try:
            return max(120, os.get_terminal_size(fd).columns)
        except OSError:
            continue
    return PIPED_WIDTH


console = Console(highlight=False, soft_wrap=False, width=output_width())
err_console = Console(stderr=True, highlight=False, soft_wrap=True)


class CliError(Exception):
    """A user-facing failure: printed as one line on stderr, then exit with `code`."""

    def __init__(self, message: str, code: int = EXIT_BAD_INPUT) -> None:
        super().__init__(message)
        self.code = code


def fail(message: str, code: int = EXIT_BAD_INPUT) -> NoReturn:
    raise CliError(message, code)


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0] if "\n" in text else text


def handle_errors(fn: Callable[..., T]) -> Callable[..., T]:
    """Turn wf's typed errors into one line on stderr and exit 2 (or the CliError's code)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> T:
        try:
            return fn(*args, **kwargs)
        except CliError as exc:
            err_console.print(f"error: {exc}", markup=False)
            raise typer.Exit(exc.code) from None
        except (RunNotFoundError, WorkflowNotFoundError, InvalidIdError, LoadError, SerializationError,
                DataDirError, CorruptDataError, NotFoundError, WorldConfigError,
                StorageUnavailableError) as exc:
            err_console.print(f"error: {_one_line(exc)}", markup=False)
            raise typer.Exit(EXIT_BAD_INPUT) from None
        except (WorldError, WfError) as exc:
            err_console.print(f"error: {_one_line(exc)}", markup=False)
            raise typer.Exit(EXIT_CHECK_FAILED) from None
        except KeyboardInterrupt:
            err_console.print("interrupted")
            raise typer.Exit(130) from None

    return wrapper


#: The `--data-dir` option every command that touches runs takes: the local World's shorthand.
DATA_DIR = typer.Option(
    None, "--data-dir", help="The local World's data directory (default: WF_WORLD, else WF_DATA_DIR, else ./.wf)."
)
#: The `--world` option: where runs live, as a URL (API.md, "Choosing the World").
WORLD = typer.Option(
    None, "--world", help="Where runs live: postgresql://…, a path, file:PATH or module:factory (default WF_WORLD)."
)


def world_url_for(data_dir: Path | None, world_url: str | None) -> str:
    """The World URL a command uses: --world, else --data-dir, else WF_WORLD / WF_DATA_DIR / ./.wf."""
    from ..runtime.config import default_world_url

    if world_url and data_dir is not None:
        fail("give --world or --data-dir, not both")
    if world_url:
        return world_url
    if data_dir is not None:
        return f"file:{data_dir}"
    return default_world_url()


def open_world(data_dir: Path | None = None, world_url: str | None = None, *, create: bool = True) -> World:
    """The World the command's options name, configured as this process's.

    With create=False a store that does not exist yet is an error (read-only commands).
    """
    from ..runtime.config import configure, world_from_url

    world = world_from_url(world_url_for(data_dir, world_url), create=create)
    configure(world=world)
    return world


def run_async(coro: Coroutine[Any, Any, T]) -> T:
    """Run a command's coroutine on a fresh event loop."""
    return asyncio.run(coro)


def print_json(value: Any) -> None:
    """Machine-readable output: one JSON document on stdout."""
    sys.stdout.write(json.dumps(value, indent=2, default=str, ensure_ascii=False) + "\n")


def parse_json_arg(text: str, what: str) -> Any:
    """A JSON value given on the command line; CliError naming `what` if it is not JSON."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        fail(f"{what} is not valid JSON ({exc.msg} at column {exc.colno}): {text!r}")
