"""Which workflow a command names: `file.py:fn`, `module:fn`, a full name or an unambiguous short one.

`wf start NAME` resolves names from the loaded code (the paths configured or found in the
current folder) and, only when no code is loaded at all (a bare client), from the names of
recorded runs.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field

from .errors import WorkflowNotFoundError
from .loader import ambiguous, load_code, match_name, resolve_workflow
from .registry import REGISTRY, WorkflowFunction
from .world import World


@dataclass
class Target:
    """A resolved workflow: the loaded function, or only a name recorded runs know (`function` None)."""

    name: str
    function: WorkflowFunction | None
    #: Modules that failed to import while looking (one line each).
    warnings: list[str] = field(default_factory=list)


async def recorded_workflow_names(world: World, pages: int = 20) -> list[str]:
    """Workflow names of recent runs (up to `pages` pages of 500)."""
    names: set[str] = set()
    cursor = None
    for _ in range(pages):
        page = await world.runs.list(limit=500, cursor=cursor, resolve_data=False)
        names.update(r.workflow_name for r in page.data)
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    return sorted(names)


async def resolve_target(world: World, ref: str, *, load: bool = True) -> Target:
    """The workflow `ref` names; WorkflowNotFoundError with suggestions if none (or several) fit.

    A `path:function` reference imports its file. A name is looked up in the loaded code,
    loading the default code first (`load`); a name no loaded code defines is refused when
    code was loaded, and accepted from recorded runs' names when none was.
    """
    if ":" in ref:
        fn = resolve_workflow(ref)
        return Target(fn.name, fn)
    warnings: list[str] = []
    name = match_name(ref, REGISTRY.workflows)
    if name not in REGISTRY.workflows and load:
        loaded = load_code()
        warnings = loaded.warnings
        name = match_name(ref, REGISTRY.workflows)
    if name in REGISTRY.workflows:
        return Target(name, REGISTRY.workflows[name], warnings)
    several = ambiguous(ref, REGISTRY.workflows)
    if several:
        raise WorkflowNotFoundError(f"workflow {ref!r} is ambiguous: {', '.join(several)}")
    if REGISTRY.workflows:
        raise WorkflowNotFoundError(_unknown(ref, sorted(REGISTRY.workflows), "the loaded code defines"))
    recorded = await recorded_workflow_names(world)
    name = match_name(ref, recorded)
    if name in recorded:
        return Target(name, None, warnings)
    several = ambiguous(ref, recorded)
    if several:
        raise WorkflowNotFoundError(f"workflow {ref!r} is ambiguous: {', '.join(several)}")
    raise WorkflowNotFoundError(_unknown(ref, recorded, "recorded runs know"))


def _unknown(ref: str, known: list[str], where: str) -> str:
    close = difflib.get_close_matches(ref, known, n=3, cutoff=0.4)
    if close:
        hint = f"; did you mean {', '.join(close)}?"
    elif known:
        hint = f"; {where}: {', '.join(known[:8])}{' …' if len(known) > 8 else ''}"
    else:
        hint = "; name it as path/to/file.py:function or package.module:function"
    return f"unknown workflow {ref!r}{hint}"
