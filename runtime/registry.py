"""`@workflow` and `@step`: the decorated functions and the registry that names them."""

from __future__ import annotations

import functools
import inspect
import threading
from collections.abc import Callable
from typing import Any, TypeVar, overload

from .errors import WorkflowNotFoundError

F = TypeVar("F", bound=Callable[..., Any])

DEFAULT_MAX_RETRIES = 3


def default_name(fn: Callable[..., Any]) -> str:
    """`<module>.<qualname>`: two functions of the same name in different modules differ."""
    return f"{fn.__module__}.{fn.__qualname__}"


class StepFunction:
    """A function whose calls inside a workflow are recorded durably and run by a worker."""

    def __init__(self, fn: Callable[..., Any], name: str, max_retries: int, *, concurrency: int | None = None,
                 concurrency_key: Callable[..., Any] | None = None, rate_limit: str | None = None,
                 rate_limit_key: Callable[..., Any] | None = None) -> None:
        if max_retries < 0:
            raise ValueError("max_retries must be >= 0")
        from .flow_control import StepLimits

        self.fn = fn
        self.name = name
        self.max_retries = max_retries
        self.is_async = inspect.iscoroutinefunction(fn)
        #: Concurrency and rate limits (`flow_control.py`); None for an unlimited step, which runs inline.
        self.limits = StepLimits.make(name, concurrency, concurrency_key, rate_limit, rate_limit_key)
        functools.update_wrapper(self, fn)

    @property
    def max_attempts(self) -> int:
        return self.max_retries + 1

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        from .workflow_context import current_instance

        instance = current_instance()
        if instance is None:  # outside a workflow a step is just the function
            return self.fn(*args, **kwargs)
        return instance.call_step(self, args, kwargs)

    def __repr__(self) -> str:
        return f"<wf step {self.name}>"


class WorkflowFunction:
    """An async function whose runs are durable: recorded in an event log and replayed."""

    def __init__(self, fn: Callable[..., Any], name: str, *, concurrency: int | None = None,
                 concurrency_key: Callable[..., Any] | None = None) -> None:
        if not inspect.iscoroutinefunction(fn):
            raise TypeError(f"@wf.workflow needs an `async def` function, got {fn!r}")
        from .flow_control import RunLimits

        self.fn = fn
        self.name = name
        #: At most `concurrency` runs in progress (per key); None when unlimited.
        self.limits = RunLimits.make(name, concurrency, concurrency_key)
        functools.update_wrapper(self, fn)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        from .workflow_context import current_instance

        instance = current_instance()
        if instance is None:
            return self.fn(*args, **kwargs)
        return instance.call_child(self, args, kwargs)

    def __repr__(self) -> str:
        return f"<wf workflow {self.name}>"


class Registry:
    """Workflows and steps by name. Re-registering a name (a module reload) replaces it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.workflows: dict[str, WorkflowFunction] = {}
        self.steps: dict[str, StepFunction] = {}

    def add_workflow(self, wf_fn: WorkflowFunction) -> None:
        with self._lock:
            self.workflows[wf_fn.name] = wf_fn

    def add_step(self, step_fn: StepFunction) -> None:
        with self._lock:
            self.steps[step_fn.name] = step_fn

    def workflow(self, name: str) -> WorkflowFunction:
        try:
            return self.workflows[name]
        except KeyError:
            raise WorkflowNotFoundError(self._not_found(name, self.workflows, "workflow")) from None

    def step(self, name: str) -> StepFunction:
        try:
            return self.steps[name]
        except KeyError:
            raise WorkflowNotFoundError(self._not_found(name, self.steps, "step")) from None

    @staticmethod
    def _not_found(name: str, known: dict[str, Any], kind: str) -> str:
        import difflib

        close = difflib.get_close_matches(name, list(known), n=3, cutoff=0.5)
        short = [k for k in known if k.rsplit(".", 1)[-1] == name.rsplit(".", 1)[-1] and k != name]
        hints = list(dict.fromkeys(short + close))
        msg = f"unknown {kind} {name!r}"
        if hints:
            msg += "; did you mean " + ", ".join(repr(h) for h in hints) + "?"
        elif not known:
            msg += f" (no {kind}s are loaded: import the module that defines it)"
        return msg


REGISTRY = Registry()


@overload
def step(fn: F, /) -> F: ...
@overload
def step(*, name: str | None = None, max_retries: int = DEFAULT_MAX_RETRIES, concurrency: int | None = None,
         concurrency_key: Callable[..., Any] | None = None, rate_limit: str | None = None,
         rate_limit_key: Callable[..., Any] | None = None) -> Callable[[F], F]: ...


def step(fn: Any = None, /, *, name: str | None = None, max_retries: int = DEFAULT_MAX_RETRIES,
         concurrency: int | None = None, concurrency_key: Callable[..., Any] | None = None,
         rate_limit: str | None = None, rate_limit_key: Callable[..., Any] | None = None) -> Any:
    """Mark a function (async or sync) as a step: `@wf.step` or `@wf.step(name=..., max_retries=...)`.

    `concurrency=N`: at most N attempts at once across every worker (per `concurrency_key(*args,
    **kwargs)` if given); `rate_limit="100/1m"`: at most that many attempts start in any window of
    that length (per `rate_limit_key(...)` if given). See `flow_control.py`.
    """

    def wrap(f: Callable[..., Any]) -> StepFunction:
        s = StepFunction(f, name or default_name(f), max_retries, concurrency=concurrency,
                         concurrency_key=concurrency_key, rate_limit=rate_limit, rate_limit_key=rate_limit_key)
        REGISTRY.add_step(s)
        return s

    return wrap(fn) if fn is not None else wrap


@overload
def workflow(fn: F, /) -> F: ...
@overload
def workflow(*, name: str | None = None, concurrency: int | None = None,
             concurrency_key: Callable[..., Any] | None = None) -> Callable[[F], F]: ...


def workflow(fn: Any = None, /, *, name: str | None = None, concurrency: int | None = None,
             concurrency_key: Callable[..., Any] | None = None) -> Any:
    """Mark an `async def` as a durable workflow: `@wf.workflow` or `@wf.workflow(name=...)`.

    `concurrency=N`: at most N runs of it in progress (per `concurrency_key(*args, **kwargs)`);
    the others wait, in priority then start order, before their first event `run_started`.
    """

    def wrap(f: Callable[..., Any]) -> WorkflowFunction:
        w = WorkflowFunction(f, name or default_name(f), concurrency=concurrency, concurrency_key=concurrency_key)
        REGISTRY.add_workflow(w)
        return w

    return wrap(fn) if fn is not None else wrap
