"""wf: durable workflows for Python.

Write ordinary `async def` workflows that call steps, sleep, wait for hooks and stream
output; wf records every effect in an event log on disk and replays the code against it,
so a run survives crashes, restarts and code reloads.

    import wf

    @wf.step
    async def greet(name: str) -> str:
        return f"hello {name}"

    @wf.workflow
    async def hello(name: str) -> str:
        return await greet(name)

    print(wf.run(hello, "world"))
"""

from __future__ import annotations

from wf.runtime.client import (
    Run,
    get_run,
    get_run_async,
    resume_hook,
    resume_hook_async,
    run,
    run_async,
    start,
    start_async,
)
from wf.runtime.config import configure
from wf.runtime.errors import (
    FatalError,
    HookConflictError,
    HookNotFoundError,
    ReplayDivergenceError,
    RetryableError,
    RunNotFoundError,
    SerializationError,
    StepFailedError,
    WfError,
    WorkflowError,
    WorkflowNotFoundError,
    WorkflowRunCancelledError,
    WorkflowRunFailedError,
)
from wf.runtime.hooks import Hook
from wf.runtime.ordering import as_completed, wait
from wf.runtime.registry import step, workflow
from wf.runtime.schedules import schedule, schedule_async
from wf.runtime.step_context import get_step_metadata, get_writable
from wf.runtime.workflow_context import (
    create_hook,
    get_workflow_metadata,
    now,
    patched,
    random,
    sleep,
    uuid4,
)

__all__ = [
    "FatalError",
    "Hook",
    "HookConflictError",
    "HookNotFoundError",
    "ReplayDivergenceError",
    "RetryableError",
    "Run",
    "RunNotFoundError",
    "SerializationError",
    "StepFailedError",
    "WfError",
    "WorkflowError",
    "WorkflowNotFoundError",
    "WorkflowRunCancelledError",
    "WorkflowRunFailedError",
    "as_completed",
    "configure",
    "create_hook",
    "get_run",
    "get_run_async",
    "get_step_metadata",
    "get_workflow_metadata",
    "get_writable",
    "now",
    "patched",
    "random",
    "resume_hook",
    "resume_hook_async",
    "run",
    "run_async",
    "schedule",
    "schedule_async",
    "sleep",
    "start",
    "start_async",
    "step",
    "uuid4",
    "wait",
    "workflow",
]
