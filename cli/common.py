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
    WfError,
    WorkflowNotFoundError,
    WorldError,
)
from ..runtime.loader import LoadError
from ..runtime.world import World

T = TypeVar("T")

EXIT_OK = 0
EXIT_CHECK_FAILED = 1
EXIT_BAD_INPUT = 2

console = Console(highlight=False, soft_wrap=False)
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
                DataDirError, CorruptDataError, NotFoundError) as exc:
            err_console.print(f"error: {_one_line(exc)}", markup=False)
            raise typer.Exit(EXIT_BAD_INPUT) from None
        except (WorldError, WfError) as exc:
            err_console.print(f"error: {_one_line(exc)}", markup=False)
            raise typer.Exit(EXIT_CHECK_FAILED) from None
        except KeyboardInterrupt:
            err_console.print("interrupted")
            raise typer.Exit(130) from None

    return wrapper


#: The `--data-dir` option every command takes (WF_DATA_DIR, default ./.wf).
DATA_DIR = typer.Option(None, "--data-dir", envvar="WF_DATA_DIR", help="Where runs are stored (default ./.wf).")


def open_world(data_dir: Path | None, *, create: bool = True) -> World:
    """The World for `data_dir` (WF_DATA_DIR, else ./.wf), configured as this process's.

    With create=False a missing data directory is an error (for read-only commands).
    """
    from ..runtime.config import configure, get_world

    path = Path(data_dir) if data_dir is not None else Path(os.environ.get("WF_DATA_DIR", ".wf"))
    from ..world_local.data_dir import MARKER

    if not create and not (path / MARKER).exists():
        if path.is_dir() and any(path.iterdir()):
            fail(f"{path} is not a wf data directory (set --data-dir or WF_DATA_DIR)")
        fail(f"no wf data directory at {path} (nothing has run here yet; set --data-dir or WF_DATA_DIR)")
    if path.exists() and not path.is_dir():
        fail(f"data directory {path} is not a directory")
    configure(data_dir=path)
    return get_world()


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
