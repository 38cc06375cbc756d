"""The event loop workflow code runs on: no I/O, no wall clock, one thread, fully deterministic.

Workflow coroutines are ordinary asyncio code (`gather`, `wait`, `TaskGroup`, `sleep`,
`timeout`, `wait_for` all work) because this class implements the parts of
`asyncio.AbstractEventLoop` those need. It differs from a real loop in two ways:

- `time()` is the workflow clock, which moves only when the replay engine says so
  (to the timestamp of the event it feeds in), never with the wall clock.
- `call_at` / `call_later` with a positive delay do not schedule anything by
  themselves: they create a `DurableTimer` the engine records as a wait, and fires
  only when the log says the wait completed. So `asyncio.sleep(60)` is a durable timer.

The engine drives the loop with `run_until_quiescent()`: run every ready callback until
none is left, i.e. until all workflow tasks are blocked on something recorded in the log.
"""

from __future__ import annotations

import asyncio
import collections
import contextvars
import time
from collections.abc import Callable, Coroutine
from typing import Any

from .errors import NonDeterminismError

#: Called when workflow code creates a timer: (timer) -> None. Set by the engine.
TimerListener = Callable[["DurableTimer"], None]


class DurableTimer(asyncio.TimerHandle):
    """A timer of workflow code; fires when the engine feeds its `wait_completed`."""

    __slots__ = ("fired", "wait_id")

    def __init__(
        self,
        when: float,
        callback: Callable[..., object],
        args: tuple[Any, ...],
        loop: DeterministicLoop,
        context: contextvars.Context | None,
    ) -> None:
        super().__init__(when, callback, args, loop, context=context)
        self.wait_id: str | None = None
        self.fired = False


class DeterministicLoop(asyncio.AbstractEventLoop):
    """A single-threaded, clock-less asyncio loop for replaying workflow code."""

    def __init__(self, clock: float, on_timer: TimerListener) -> None:
        guard_blocking_calls()
        self._clock = clock
        self._ready: collections.deque[asyncio.Handle] = collections.deque()
        self._on_timer = on_timer
        self._closed = False
        self._running = False
        self._exception: BaseException | None = None
        self._task_factory = None

    # --- what the replay engine uses ---

    def advance_clock(self, to: float) -> None:
        """Move the workflow clock forward (never backward)."""
        if to > self._clock:
            self._clock = to

    def fire(self, timer: DurableTimer) -> None:
        """Run a durable timer's callback (its wait completed in the log)."""
        if timer.cancelled() or timer.fired:
            return
        timer.fired = True
        self._ready.append(timer)

    def run_until_quiescent(self) -> None:
        """Run ready callbacks until every task is blocked. Re-raises an error the loop could not route."""
        previous = asyncio.events._get_running_loop()
        asyncio.events._set_running_loop(self)
        self._running = True
        try:
            ready = self._ready
            while ready:
                handle = ready.popleft()
                if not handle._cancelled:
                    handle._run()
                if self._exception is not None:
                    exc, self._exception = self._exception, None
                    raise exc
        finally:
            self._running = False
            asyncio.events._set_running_loop(previous)

    # --- asyncio.AbstractEventLoop surface used by tasks, futures, sleep, timeout, gather ---

    def time(self) -> float:
        return self._clock

    def call_soon(
        self, callback: Callable[..., object], *args: Any, context: contextvars.Context | None = None
    ) -> asyncio.Handle:
        handle = asyncio.Handle(callback, args, self, context=context)
        self._ready.append(handle)
        return handle

    def call_soon_threadsafe(
        self, callback: Callable[..., object], *args: Any, context: contextvars.Context | None = None
    ) -> asyncio.Handle:
        raise RuntimeError("workflow code cannot receive callbacks from other threads; use a step")

    def call_later(
        self, delay: float, callback: Callable[..., object], *args: Any, context: contextvars.Context | None = None
    ) -> asyncio.TimerHandle:
        return self.call_at(self._clock + delay, callback, *args, context=context)

    def call_at(
        self, when: float, callback: Callable[..., object], *args: Any, context: contextvars.Context | None = None
    ) -> asyncio.TimerHandle:
        timer = DurableTimer(when, callback, args, self, context)
        if when <= self._clock:
            timer.fired = True
            self._ready.append(timer)
        else:
            self._on_timer(timer)
        return timer

    def _timer_handle_cancelled(self, handle: asyncio.TimerHandle) -> None:
        pass  # a cancelled durable timer simply never fires; its wait stays in the log

    def create_future(self) -> asyncio.Future[Any]:
        return asyncio.Future(loop=self)

    def create_task(
        self, coro: Coroutine[Any, Any, Any], *, name: str | None = None, context: contextvars.Context | None = None
    ) -> asyncio.Task[Any]:
        return asyncio.Task(coro, loop=self, name=name, context=context)

    def set_task_factory(self, factory: Any) -> None:
        raise RuntimeError("workflow code cannot change the task factory")

    def get_task_factory(self) -> Any:
        return None

    def get_debug(self) -> bool:
        return False

    def set_debug(self, enabled: bool) -> None:
        pass

    def is_running(self) -> bool:
        return self._running

    def is_closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        self._closed = True
        self._ready.clear()

    def default_exception_handler(self, context: dict[str, Any]) -> None:
        pass

    def call_exception_handler(self, context: dict[str, Any]) -> None:
        # Unretrieved task exceptions etc. are routed by the engine through task results; an
        # exception raised inside a loop callback itself is a bug to surface, not to swallow.
        exc = context.get("exception")
        if isinstance(exc, BaseException) and context.get("handle") is not None:
            self._exception = exc

    def run_in_executor(self, executor: Any, func: Callable[..., Any], *args: Any) -> asyncio.Future[Any]:
        raise RuntimeError(
            "workflow code cannot run threads (run_in_executor / asyncio.to_thread): "
            "move blocking work into a @wf.step"
        )

    def _not_in_workflow(self, what: str) -> RuntimeError:
        return RuntimeError(f"workflow code cannot {what}: do I/O in a @wf.step")

    def run_forever(self) -> None:
        raise self._not_in_workflow("run the loop")

    def run_until_complete(self, future: Any) -> Any:
        raise self._not_in_workflow("run the loop")

    def stop(self) -> None:
        pass

    async def shutdown_asyncgens(self) -> None:
        pass

    async def shutdown_default_executor(self) -> None:
        pass

    def add_reader(self, *args: Any, **kwargs: Any) -> None:
        raise self._not_in_workflow("wait on file descriptors")

    add_writer = add_reader

    async def getaddrinfo(self, *args: Any, **kwargs: Any) -> Any:
        raise self._not_in_workflow("resolve host names")

    async def create_connection(self, *args: Any, **kwargs: Any) -> Any:
        raise self._not_in_workflow("open network connections")

    async def subprocess_exec(self, *args: Any, **kwargs: Any) -> Any:
        raise self._not_in_workflow("start subprocesses")

    subprocess_shell = subprocess_exec


_real_sleep = time.sleep


def _guarded_sleep(seconds: float) -> None:
    """time.sleep, refused inside workflow code (it would block every run of the worker)."""
    if isinstance(asyncio.events._get_running_loop(), DeterministicLoop):
        raise NonDeterminismError(
            "time.sleep() inside a workflow blocks the worker and is not durable: "
            "use `await wf.sleep(...)` (or asyncio.sleep) instead"
        )
    _real_sleep(seconds)


def guard_blocking_calls() -> None:
    """Install the guards that explain blocking calls made from workflow code (idempotent)."""
    if time.sleep is not _guarded_sleep:
        time.sleep = _guarded_sleep
