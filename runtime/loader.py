"""Finding user code: import workflow modules from paths, and resolve `file.py:fn` / `module:fn` / names.

A file is imported under a module name derived from its place in its package tree (its
top-most folder without `__init__.py` goes on `sys.path`), so `wf start`, `wf worker` and
`wf dev` in different processes give its workflows the same names.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import inspect
import os
import re
import sys
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

from .errors import WorkflowNotFoundError
from .registry import REGISTRY, WorkflowFunction

SKIP_DIRS = {".git", ".venv", "venv", "env", "__pycache__", ".wf", "node_modules", ".tox", ".mypy_cache",
             ".pytest_cache", ".ruff_cache", "build", "dist", "site-packages", "__pypackages__"}


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


def defines_workflows(file: Path) -> bool:
    """Whether a file's source looks like it defines workflows (read, never imported)."""
    try:
        text = file.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False
    return "workflow" in text and _IMPORTS_WF.search(text) is not None


_IMPORTS_WF = re.compile(r"^\s*(?:import\s+wf\b|from\s+wf\b)", re.MULTILINE)


def _skipped_dir(part: str) -> bool:
    return part in SKIP_DIRS or part.startswith(".") or part.endswith(".egg-info")


def _is_venv(folder: Path) -> bool:
    return (folder / "pyvenv.cfg").exists()


def python_files(paths: Iterable[str | Path]) -> list[Path]:
    """The workflow modules under the given files and folders.

    A file named is always taken. In a folder, only files whose source defines workflows,
    never `__main__.py`, `setup.py`, tests, virtualenvs, hidden folders or `site-packages`.
    """
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
        found.extend(_walk(p))
    return list(dict.fromkeys(found))


def _walk(root: Path) -> list[Path]:
    found: list[Path] = []
    for folder, dirs, files in os.walk(root):
        here = Path(folder)
        dirs[:] = sorted(d for d in dirs if not _skipped_dir(d) and not _is_venv(here / d))
        for name in sorted(files):
            if not name.endswith(".py") or name in ("__main__.py", "setup.py"):
                continue
            if name.startswith(("test_", "conftest")):
                continue
            file = here / name
            if defines_workflows(file):
                found.append(file.resolve())
    return found


def import_paths(paths: Iterable[str | Path]) -> list[ModuleType]:
    """Import every workflow module found at the paths; returns the modules."""
    return [import_path(f) for f in python_files(paths)]


@dataclass
class Loaded:
    """What `load_code` imported, and the modules that failed (one warning line each)."""

    modules: dict[Path, ModuleType] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    #: The paths the code came from: those named, the configured ones, or the current folder.
    roots: list[Path] = field(default_factory=list)


def configured_paths(folder: Path | None = None) -> list[Path] | None:
    """`[tool.wf] paths` of the pyproject.toml in `folder` (default: the current one), relative to it; else None."""
    folder = folder or Path.cwd()
    pyproject = folder / "pyproject.toml"
    if not pyproject.is_file():
        return None
    try:
        config = tomllib.loads(pyproject.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise LoadError(f"cannot read {pyproject}: {exc}") from exc
    paths = config.get("tool", {}).get("wf", {}).get("paths")
    if paths is None:
        return None
    if not isinstance(paths, list) or not all(isinstance(x, str) for x in paths):
        raise LoadError(f"{pyproject}: [tool.wf] paths must be a list of strings")
    return [folder / x for x in paths]


def load_code(paths: Iterable[str | Path] | None = None) -> Loaded:
    """Import the workflow code of a command: the paths named, else `[tool.wf] paths`, else the current folder.

    A file named (on the command line or in the configuration) that fails to import is a
    LoadError; a module found by looking in a folder that fails is a warning naming it.
    """
    named = [Path(p) for p in paths or []]
    if not named:
        named = configured_paths() or [Path(".")]
    loaded = Loaded(roots=named)
    for raw in named:
        explicit = Path(raw).is_file()
        for file in python_files([raw]):
            if file in loaded.modules:
                continue
            try:
                loaded.modules[file] = import_path(file)
            except LoadError as exc:
                if explicit:
                    raise
                loaded.warnings.append(f"skipped {_shown(file)}: {exc}")
    return loaded


def _shown(file: Path) -> str:
    try:
        return str(file.relative_to(Path.cwd()))
    except ValueError:
        return str(file)


#: The run attribute that records where a run's workflow code came from.
ORIGIN_ATTRIBUTE = "code"


def origin_of(workflow: WorkflowFunction) -> dict[str, str] | None:
    """{"module", "file"} of a workflow function's code, for the run's attributes (None for `__main__`)."""
    module = getattr(workflow.fn, "__module__", None)
    if not module or module == "__main__":
        return None
    origin = {"module": module}
    with contextlib.suppress(TypeError, OSError):
        origin["file"] = str(Path(inspect.getfile(workflow.fn)).resolve())
    return origin


def load_origin(workflow_name: str, attributes: dict[str, object]) -> WorkflowFunction | None:
    """The workflow of a run, importing the code its attributes recorded if it is not loaded yet.

    None if the run recorded no origin or the code there does not define it; LoadError if
    importing the recorded code fails.
    """
    found = REGISTRY.workflows.get(workflow_name)
    if found is not None:
        return found
    origin = attributes.get(ORIGIN_ATTRIBUTE)
    if not isinstance(origin, dict):
        return None
    file, module = origin.get("file"), origin.get("module")
    if isinstance(file, str) and Path(file).is_file():
        import_path(file)
    elif isinstance(module, str):
        import_module(module)
    return REGISTRY.workflows.get(workflow_name)


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
    return REGISTRY.workflow(match_name(ref, REGISTRY.workflows))


def match_name(ref: str, names: Iterable[str]) -> str:
    """The one name of `names` that `ref` names: itself, or its dotted tail (`everything`, `flows.everything`).

    `ref` itself when nothing or several match (the caller says so).
    """
    known = list(names)
    if ref in known:
        return ref
    tails = [n for n in known if n.endswith("." + ref)]
    return tails[0] if len(tails) == 1 else ref


def ambiguous(ref: str, names: Iterable[str]) -> list[str]:
    """The names `ref` could mean when it matches more than one by its dotted tail."""
    tails = sorted(n for n in names if n.endswith("." + ref))
    return tails if len(tails) > 1 and ref not in tails else []
