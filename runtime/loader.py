"""Finding user code: import workflow modules from paths, and resolve `file.py:fn` / `module:fn` / names.

A file is imported under a module name derived from its place in its package tree (its
top-most folder without `__init__.py` goes on `sys.path`), so `wf start`, `wf worker` and
`wf dev` in different processes give its workflows the same names.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Iterable
from pathlib import Path
from types import ModuleType

from .errors import WorkflowNotFoundError
from .registry import REGISTRY, WorkflowFunction

SKIP_DIRS = {".git", ".venv", "venv", "__pycache__", ".wf", "node_modules", ".tox", ".mypy_cache",
             ".pytest_cache", ".ruff_cache", "build", "dist", "site-packages"}


class LoadError(Exception):
    """User code could not be found or imported; the message says which and why."""


def module_name_for(path: Path) -> tuple[str, Path]:
    """(dotted module name, folder to put on sys.path) for a .py file or a package folder."""
    path = path.resolve()
    parts = [path.stem if path.is_file() else path.name]
    if path.is_file() and path.name == "__init__.py":
        parts = []
    parent = path.parent
    while (parent / "__init__.py").exists():
        parts.insert(0, parent.name)
        parent = parent.parent
    if not parts:  # an __init__.py given directly
        return module_name_for(path.parent)
    return ".".join(parts), parent


def import_path(path: str | Path) -> ModuleType:
    """Import a .py file or a package folder by path; LoadError with a clear reason if it fails."""
    p = Path(path)
    if not p.exists():
        raise LoadError(f"no such file or folder: {path}")
    if p.is_file() and p.suffix != ".py":
        raise LoadError(f"not a Python file: {path}")
    if p.is_dir() and not (p / "__init__.py").exists():
        raise LoadError(f"{path} is a folder, not a package (use import_paths to load the files in it)")
    name, root = module_name_for(p)
    root_str = str(root)
    if root_str not in sys.path:
        sys.path.insert(0, root_str)
    return import_module(name)


def import_module(name: str) -> ModuleType:
    """importlib.import_module with user-facing errors."""
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name == name or (exc.name and name.startswith(exc.name + ".")):
            raise LoadError(f"no module named {name!r}") from exc
        raise LoadError(f"importing {name} failed: {exc}") from exc
    except SyntaxError as exc:
        raise LoadError(f"syntax error in {exc.filename}:{exc.lineno}: {exc.msg}") from exc
    except Exception as exc:
        raise LoadError(f"importing {name} failed: {type(exc).__name__}: {exc}") from exc


def python_files(paths: Iterable[str | Path]) -> list[Path]:
    """Every .py file under the given files and folders (skipping venvs, caches, data dirs)."""
    found: list[Path] = []
    for raw in paths:
        p = Path(raw)
        if not p.exists():
            raise LoadError(f"no such file or folder: {raw}")
        if p.is_file():
            if p.suffix != ".py":
                raise LoadError(f"not a Python file: {raw}")
            found.append(p.resolve())
            continue
        for file in sorted(p.rglob("*.py")):
            rel = file.relative_to(p).parts
            if any(part in SKIP_DIRS or part.startswith(".") for part in rel[:-1]):
                continue
            if file.name.startswith(("test_", "conftest")) or file.name == "setup.py":
                continue
            found.append(file.resolve())
    return found


def import_paths(paths: Iterable[str | Path]) -> list[ModuleType]:
    """Import every workflow module found at the paths; returns the modules."""
    return [import_path(f) for f in python_files(paths)]


def resolve_workflow(ref: str) -> WorkflowFunction:
    """A workflow from `path/to/file.py:function`, `package.module:function`, or a registered name."""
    if ":" in ref:
        target, _, attr = ref.rpartition(":")
        module = import_path(target) if target.endswith(".py") or "/" in target else import_module(target)
        obj = module
        for part in attr.split("."):
            obj = getattr(obj, part, None)
            if obj is None:
                candidates = [n for n, v in vars(module).items() if isinstance(v, WorkflowFunction)]
                hint = f"; workflows there: {', '.join(candidates)}" if candidates else ""
                raise WorkflowNotFoundError(f"{target} has no {attr!r}{hint}")
        if not isinstance(obj, WorkflowFunction):
            raise WorkflowNotFoundError(f"{ref} is not a @wf.workflow function")
        return obj
    return REGISTRY.workflow(ref)
