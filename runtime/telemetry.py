"""OpenTelemetry: a trace per run, a span per step attempt, sleeps, hook waits, child runs, and step metrics.

Everything OpenTelemetry lives here. The runtime calls these hooks only when `ON` is true
(opentelemetry-api is installed and `WF_OTEL` is not 0): one global read, nothing else, when
it is false. The package itself is imported on first use, and wf reports to the *global*
tracer and meter providers (nothing is exported until the application configures them).

Spans are emitted when the event that ends them is *recorded* (`recorded`, called after a
successful write), never when events are fed to the workflow code: a replay emits nothing.
Their ids derive from the run's, step's, wait's and hook's ids, so a run continued by
another process after a crash stays in one trace with one run span:

- trace id: from the run id; a child run's is its parent's (carried in the run's attributes);
- a run's span id: from the run id; its parent is none (a new trace, linked to the span that
  was current at `wf.start`), or for a child run the parent's `wf.start_child` attempt;
- an attempt's span id: from (run, step, attempt); its parent is the run's span. It is
  started when the attempt starts (current inside the step, so the user's own spans nest
  under it) and ended when the attempt's outcome is recorded;
- sleeps and hook waits: from (run, wait) and (run, hook, payload number), children of the run.

Fixed span ids need the SDK's tracer (its `id_generator`); another implementation gets
random ids for the spans themselves, their parents still named by the derived ids.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from .entities import EventType

if TYPE_CHECKING:
    from .entities import Event, Run
    from .world import EventResult, Message, World

log = logging.getLogger("wf.telemetry")
E = EventType

#: Key of a run's attributes carrying its trace context (set by `carry` when the run is recorded).
ATTRIBUTE = "otel"
#: The instrumentation scope wf's spans and metrics are reported under.
SCOPE = "wf"
#: Bounds of the in-memory maps (attempts waiting to be recorded, runs' trace contexts).
MAX_OPEN = 4096
CHILD_TOKEN_PREFIX = "wfchild_"  # children.CHILD_TOKEN_PREFIX (not imported: children imports the world of steps)


def _enabled() -> bool:
    if os.environ.get("WF_OTEL", "").strip().lower() in ("0", "false", "no", "off"):
        return False
    try:
        return importlib.util.find_spec("opentelemetry.trace") is not None
    except (ImportError, ValueError):
        return False


#: Whether wf reports to OpenTelemetry. The runtime checks it before calling any hook below.
ON: bool = _enabled()


class _Api:
    """The OpenTelemetry modules and wf's instruments, loaded on first use."""

    def __init__(self) -> None:
        from opentelemetry import context, metrics, trace
        from opentelemetry.trace import Link, NonRecordingSpan, SpanContext, SpanKind, Status, StatusCode, TraceFlags

        self.context = context
        self.trace = trace
        self.Link = Link
        self.NonRecordingSpan = NonRecordingSpan
        self.SpanContext = SpanContext
        self.SpanKind = SpanKind
        self.Status = Status
        self.StatusCode = StatusCode
        self.sampled = TraceFlags(TraceFlags.SAMPLED)
        self.not_sampled = TraceFlags(TraceFlags.DEFAULT)
        self.empty_context = context.Context()
        self.tracer: Any = None
        self.tracer_provider: Any = None
        self.metrics = metrics
        unset = metrics.get_meter_provider()  # the API's proxy, unless the application set one already
        self.unset_meter_provider = unset if type(unset).__name__.startswith("_Proxy") else None
        meter = metrics.get_meter(SCOPE, _version())  # a proxy until the application sets a provider
        # The step counters are counted here and observed when the reader collects: a step pays
        # an increment, not an SDK measurement (see `_count`).
        for name, description in (("wf.steps.started", "Step attempts started"),
                                  ("wf.steps.completed", "Steps completed"),
                                  ("wf.steps.failed", "Steps failed (no retry left)"),
                                  ("wf.steps.retried", "Step attempts that failed and will be retried")):
            meter.create_observable_counter(name, [_observer(name)], "{step}", description)
        self.step_duration = meter.create_histogram("wf.step.duration", "s", "Duration of step attempts")
        self.queue_wait = meter.create_histogram("wf.step.queue_wait", "s", "Time a queued step waited for a "
                                                 "worker after it was due")
        self.runs_in_progress = meter.create_up_down_counter("wf.runs.in_progress", "{run}", "Runs started and "
                                                             "not yet ended (summed over the processes recording)")
        self.queue_depth = meter.create_observable_gauge("wf.queue.depth", [_observe_queue_depth], "{message}",
                                                         "Messages in the World's queues (sampled by workers)")


_api: _Api | None = None
_api_lock = threading.Lock()


def _load() -> _Api:
    global _api, ON
    if _api is None:
        with _api_lock:
            if _api is None:
                try:
                    _api = _Api()
                except ImportError:
                    ON = False  # a broken install: off from now on (the runtime checks ON first)
                    raise
    return _api


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("wf")
    except Exception:  # noqa: BLE001 - a version is a nicety
        return ""


def _reporting() -> bool:
    """Whether the application set a tracer or a meter provider (until then the API's no-op
    proxies would receive everything, and every hook is skipped)."""
    api = _load()
    return not (isinstance(api.trace.get_tracer_provider(), api.trace.ProxyTracerProvider)
                and api.metrics.get_meter_provider() is api.unset_meter_provider)


def _guarded(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Telemetry never breaks a run: an error in a hook is logged (once per hook) and swallowed."""
    warned: list[bool] = []

    def guarded(*args: Any, **kwargs: Any) -> Any:
        try:
            if not _reporting():
                return None  # nothing would receive it: no hook costs more than this check
            return fn(*args, **kwargs)
        except Exception:
            if not warned:
                warned.append(True)
                log.warning("OpenTelemetry hook %s failed; continuing without it", fn.__name__, exc_info=True)
            return None

    guarded.__name__ = fn.__name__
    guarded.__doc__ = fn.__doc__
    return guarded


# --- ids ---


def _digest(size: int, *parts: str) -> int:
    value = int.from_bytes(hashlib.blake2b("\x1f".join(parts).encode(), digest_size=size).digest(), "big")
    return value or 1  # zero is the invalid id


def run_trace_id(run_id: str) -> int:
    """The trace id of a run that carries none (a top-level run)."""
    return _digest(16, "trace", run_id)


def run_span_id(run_id: str) -> int:
    return _digest(8, "run", run_id)


def attempt_span_id(run_id: str, step_id: str, attempt: int) -> int:
    return _digest(8, "step", run_id, step_id, str(attempt))


def wait_span_id(run_id: str, wait_id: str) -> int:
    return _digest(8, "wait", run_id, wait_id)


def hook_span_id(run_id: str, hook_id: str, number: int) -> int:
    return _digest(8, "hook", run_id, hook_id, str(number))


def hashed_token(token: str) -> str:
    """What `wf.hook.token` shows of a hook token: enough to match, nothing to resume the hook with."""
    return hashlib.sha256(token.encode()).hexdigest()[:16]


class _Preset(threading.local):
    trace_id = 0
    span_id = 0


_preset = _Preset()


class _PresetIds:
    """The SDK tracer's id generator, answering with the ids wf derived while it starts a span."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def generate_span_id(self) -> int:
        return _preset.span_id or self.inner.generate_span_id()

    def generate_trace_id(self) -> int:
        return _preset.trace_id or self.inner.generate_trace_id()

    def is_trace_id_random(self) -> bool:
        if _preset.trace_id:
            return False
        check = getattr(self.inner, "is_trace_id_random", None)
        return bool(check()) if check is not None else False


def _tracer(api: _Api) -> Any:
    """wf's tracer from the global provider; None while the application has set none."""
    provider = api.trace.get_tracer_provider()
    if provider is api.tracer_provider:
        return api.tracer
    if isinstance(provider, api.trace.ProxyTracerProvider):
        return None
    tracer = provider.get_tracer(SCOPE, _version())
    generator = getattr(tracer, "id_generator", None)
    if generator is not None and not isinstance(generator, _PresetIds):
        tracer.id_generator = _PresetIds(generator)
    api.tracer, api.tracer_provider = tracer, provider
    return tracer


def _parent(api: _Api, trace_id: int, parent_id: int | None, sampled: bool = True) -> Any:
    """The context to start a span in: under span `parent_id` of trace `trace_id`, or a root when None."""
    if parent_id is None:
        return api.empty_context
    flags = api.sampled if sampled else api.not_sampled
    parent = api.SpanContext(trace_id, parent_id, is_remote=True, trace_flags=flags)
    return api.trace.set_span_in_context(api.NonRecordingSpan(parent), api.empty_context)


def _root_sampled(api: _Api, tracer: Any, trace_id: int) -> bool:
    """Whether the tracer's sampler keeps a run's trace (asked as for the run's root span: the
    same answer in every process for the usual samplers, which decide by trace id)."""
    sampler = getattr(tracer, "sampler", None)
    if sampler is None:
        return True
    try:
        return bool(sampler.should_sample(api.empty_context, trace_id, "wf.run").decision.is_sampled())
    except Exception:  # noqa: BLE001 - a sampler of its own kind: keep the spans
        return True


def _start_span(api: _Api, tracer: Any, name: str, *, trace_id: int, span_id: int, context: Any,
                start_ns: int, attributes: dict[str, Any], links: Sequence[Any] = ()) -> Any:
    """Start a span with the given ids in `context` (see `_parent`)."""
    _preset.trace_id, _preset.span_id = trace_id, span_id
    try:
        return tracer.start_span(name, context=context, kind=api.SpanKind.INTERNAL, attributes=attributes,
                                 links=links, start_time=start_ns)
    finally:
        _preset.trace_id = _preset.span_id = 0


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _ns(at: datetime | None) -> int:
    if at is None:
        return time.time_ns()
    return (at - _EPOCH) // timedelta(microseconds=1) * 1000


# --- runs' trace contexts ---


class RunTrace:
    """Where a run's spans go: its trace, its span's parent (child runs) and its link (the starter)."""

    __slots__ = ("_inside", "link", "parent_id", "parent_sampled", "span_id", "trace_id")

    def __init__(self, run_id: str, trace_id: int, parent_id: int | None, link: tuple[int, int] | None,
                 parent_sampled: bool = True) -> None:
        self.trace_id = trace_id
        self.span_id = run_span_id(run_id)
        self.parent_id = parent_id
        self.parent_sampled = parent_sampled
        self.link = link
        self._inside: Any = None

    def outside(self, api: _Api) -> Any:
        """The context the run's own span starts in: a root, or under its parent's call."""
        return _parent(api, self.trace_id, self.parent_id, self.parent_sampled)

    def inside(self, api: _Api, tracer: Any) -> Any:
        """The context of spans under the run's span (made once per run), sampled as the run is."""
        if self._inside is None:
            sampled = self.parent_sampled if self.parent_id is not None else _root_sampled(api, tracer, self.trace_id)
            self._inside = _parent(api, self.trace_id, self.span_id, sampled)
        return self._inside


_runs: dict[str, RunTrace] = {}


def _hex(value: Any) -> int | None:
    try:
        number = int(value, 16) if isinstance(value, str) else 0
    except ValueError:
        return None
    return number or None


def _trace_from(run_id: str, attributes: dict[str, Any] | None) -> RunTrace:
    carried = attributes.get(ATTRIBUTE) if attributes else None
    if isinstance(carried, dict):
        trace_id = _hex(carried.get("trace_id"))
        parent_id = _hex(carried.get("parent_span_id"))
        link = None
        link_trace, link_span = _hex(carried.get("link_trace_id")), _hex(carried.get("link_span_id"))
        if link_trace and link_span:
            link = (link_trace, link_span)
        if trace_id and parent_id:
            if attributes.get("parent_token"):  # a child run, nested under its parent's call
                return RunTrace(run_id, trace_id, parent_id, link, carried.get("sampled") is not False)
            link = link or (trace_id, parent_id)  # a fork of a child: its own trace, linked to that call
        return RunTrace(run_id, run_trace_id(run_id), None, link)
    return RunTrace(run_id, run_trace_id(run_id), None, None)


def _remember(run: Run) -> RunTrace:
    trace = _runs.get(run.run_id)
    if trace is None:
        trace = _trace_from(run.run_id, run.attributes)
        if len(_runs) >= MAX_OPEN:
            del _runs[next(iter(_runs))]
        _runs[run.run_id] = trace
    return trace


def _trace_of(run_id: str) -> RunTrace:
    trace = _runs.get(run_id)
    return trace if trace is not None else RunTrace(run_id, run_trace_id(run_id), None, None)


@_guarded
def carry(attributes: dict[str, Any]) -> None:
    """Called by `record_run`: keep the span current at `wf.start` in the new run's attributes.

    A child run (its attributes name a parent token) is nested under that span, in its trace;
    any other run starts a trace of its own, linked to it.
    """
    api = _load()
    current = api.trace.get_current_span().get_span_context()
    if not current.is_valid:
        return
    if attributes.get("parent_token"):
        attributes[ATTRIBUTE] = {"trace_id": f"{current.trace_id:032x}", "parent_span_id": f"{current.span_id:016x}",
                                 "sampled": current.trace_flags.sampled}
    else:
        attributes[ATTRIBUTE] = {"link_trace_id": f"{current.trace_id:032x}",
                                 "link_span_id": f"{current.span_id:016x}"}


# --- step counters ---

#: (counter, workflow name, step name) -> count, read by the observable counters' callbacks.
_counts: dict[tuple[str, str, str], int] = {}
_counts_lock = threading.Lock()
_OUTCOME_COUNTERS = {E.STEP_COMPLETED: "wf.steps.completed", E.STEP_RETRYING: "wf.steps.retried",
                     E.STEP_FAILED: "wf.steps.failed"}


def _count(counter: str, workflow_name: str, step_name: str) -> None:
    key = (counter, workflow_name, step_name)
    with _counts_lock:
        _counts[key] = _counts.get(key, 0) + 1


def _observer(counter: str) -> Callable[[Any], Any]:
    def observe(options: Any) -> Any:
        from opentelemetry.metrics import Observation

        with _counts_lock:
            counts = [(key, value) for key, value in _counts.items() if key[0] == counter]
        return [Observation(value, {"wf.workflow.name": workflow, "wf.step.name": step})
                for (_, workflow, step), value in counts]

    return observe


# --- step attempts ---


class Attempt:
    """One step attempt being run: its span (None without a tracer) and when it ran."""

    __slots__ = ("attributes", "end_ns", "raised", "span", "start_ns", "step_name")

    def __init__(self, span: Any, step_name: str, attributes: dict[str, Any], start_ns: int) -> None:
        self.span = span
        self.step_name = step_name
        self.attributes = attributes
        self.start_ns = start_ns
        self.end_ns = 0
        self.raised = False


#: Attempts run here whose outcome is not recorded yet: (run id, step id, attempt) -> Attempt.
_attempts: dict[tuple[str, str, int], Attempt] = {}


def _start_attempt(run_id: str, step_id: str, step_name: str, attempt: int, workflow_name: str) -> Attempt:
    api = _load()
    metric_attributes = {"wf.workflow.name": workflow_name, "wf.step.name": step_name}
    _count("wf.steps.started", workflow_name, step_name)
    start_ns = time.time_ns()
    span = None
    tracer = _tracer(api)
    if tracer is not None:
        trace = _trace_of(run_id)
        attributes = {"wf.run.id": run_id, "wf.workflow.name": workflow_name, "wf.step.name": step_name,
                      "wf.step.id": step_id, "wf.step.attempt": attempt}
        if attempt > 1:
            attributes["wf.step.retry"] = True
        span = _start_span(api, tracer, f"wf.step {step_name}", trace_id=trace.trace_id,
                           span_id=attempt_span_id(run_id, step_id, attempt), context=trace.inside(api, tracer),
                           start_ns=start_ns, attributes=attributes)
    holder = Attempt(span, step_name, metric_attributes, start_ns)
    if len(_attempts) >= MAX_OPEN:  # outcomes never recorded here (a conflict, a stop): forget the oldest
        del _attempts[next(iter(_attempts))]
    _attempts[(run_id, step_id, attempt)] = holder
    return holder


start_attempt = _guarded(_start_attempt)
start_attempt.__doc__ = """Called by the step executor as an attempt starts: its span and `wf.steps.started`."""


async def run_async(holder: Attempt, fn: Callable[..., Any], args: Any, kwargs: Any) -> Any:
    """Run an async step with its attempt's span current."""
    token = None
    if holder.span is not None:
        api = _load()
        token = api.context.attach(api.trace.set_span_in_context(holder.span))
    try:
        return await fn(*args, **kwargs)
    except Exception as exc:
        _record_exception(holder, exc)
        raise
    finally:
        holder.end_ns = time.time_ns()
        if token is not None:
            _load().context.detach(token)


def in_attempt(holder: Attempt, fn: Callable[..., Any]) -> Callable[..., Any]:
    """A sync step as run in the thread pool, with its attempt's span current."""

    def call(*args: Any, **kwargs: Any) -> Any:
        token = None
        if holder.span is not None:
            api = _load()
            token = api.context.attach(api.trace.set_span_in_context(holder.span))
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            _record_exception(holder, exc)
            raise
        finally:
            holder.end_ns = time.time_ns()
            if token is not None:
                _load().context.detach(token)

    return call


def _record_exception(holder: Attempt, exc: BaseException) -> None:
    if holder.span is not None:
        try:
            holder.span.record_exception(exc)
            holder.raised = True
        except Exception:
            log.debug("could not record an exception on a span", exc_info=True)


def _attempt_recorded(api: _Api, event: Event, result: EventResult) -> None:
    step = result.step
    attempt = step.attempt if step is not None else 0
    holder = _attempts.pop((event.run_id, event.correlation_id or "", attempt), None)
    kind = event.event_type
    if holder is None:  # e.g. a step failed here for attempts exhausted by a crash elsewhere
        _count(_OUTCOME_COUNTERS[kind], result.run.workflow_name, step.step_name if step is not None else "")
        return
    attributes = holder.attributes
    _count(_OUTCOME_COUNTERS[kind], attributes["wf.workflow.name"], holder.step_name)
    end_ns = holder.end_ns or time.time_ns()
    api.step_duration.record(max(end_ns - holder.start_ns, 0) / 1e9, attributes)
    span = holder.span
    if span is None:
        return
    if kind != E.STEP_COMPLETED:  # a completed attempt leaves its status unset (success)
        error = event.data.get("error") or {}
        _error_status(api, span, error, recorded=holder.raised, at_ns=end_ns)
        if kind == E.STEP_RETRYING:
            span.set_attribute("wf.step.outcome", "retrying")
            retry_after = event.data.get("retry_after")
            if isinstance(retry_after, str):
                span.set_attribute("wf.step.retry_after", retry_after)
        else:
            span.set_attribute("wf.step.outcome", "failed")
    span.end(end_time=end_ns)


def _error_status(api: _Api, span: Any, error: dict[str, Any], *, recorded: bool, at_ns: int) -> None:
    """Status ERROR, `error.type`, and the exception as an event unless recorded live."""
    error_type = str(error.get("type") or "Error")
    message = str(error.get("message") or "")
    span.set_attribute("error.type", error_type)
    if not recorded:
        span.add_event("exception", {"exception.type": error_type, "exception.message": message,
                                     "exception.stacktrace": str(error.get("traceback") or "")}, timestamp=at_ns)
    span.set_status(api.Status(api.StatusCode.ERROR, f"{error_type}: {message}" if message else error_type))


# --- what was recorded ---


@_guarded
def recorded(results: Sequence[EventResult]) -> None:
    """Called after events were recorded: emit the spans and metrics they end (once: only the
    writer that recorded an event sees it here)."""
    api = _load()
    for result in results:
        if not result.events:
            continue
        run = result.run
        trace = _remember(run)
        for event in result.events:
            kind = event.event_type
            if kind in (E.STEP_COMPLETED, E.STEP_RETRYING, E.STEP_FAILED):
                _attempt_recorded(api, event, result)
            elif kind == E.RUN_STARTED:
                api.runs_in_progress.add(1, {"wf.workflow.name": run.workflow_name})
            elif kind in (E.RUN_COMPLETED, E.RUN_FAILED, E.RUN_CANCELLED):
                _run_ended(api, trace, event, run)
            elif kind == E.WAIT_COMPLETED:
                _wait_ended(api, trace, event, result)
            elif kind == E.HOOK_RECEIVED:
                _hook_received(api, trace, event, result)


def _run_ended(api: _Api, trace: RunTrace, event: Event, run: Run) -> None:
    if run.started_at is not None:
        api.runs_in_progress.add(-1, {"wf.workflow.name": run.workflow_name})
    _runs.pop(run.run_id, None)
    tracer = _tracer(api)
    if tracer is None:
        return
    links = []
    if trace.link is not None:
        link_context = api.SpanContext(trace.link[0], trace.link[1], is_remote=True, trace_flags=api.sampled)
        links.append(api.Link(link_context, {"wf.link": "started_by"}))
    attributes: dict[str, Any] = {"wf.run.id": run.run_id, "wf.workflow.name": run.workflow_name,
                                  "wf.run.status": str(event.event_type).removeprefix("run_")}
    parent_run = run.attributes.get("parent_run_id")
    if isinstance(parent_run, str):
        attributes["wf.run.parent_id"] = parent_run
    end_ns = _ns(event.created_at)
    span = _start_span(api, tracer, f"wf.run {run.workflow_name}", trace_id=trace.trace_id,
                       span_id=trace.span_id, context=trace.outside(api),
                       start_ns=_ns(run.created_at or event.created_at), attributes=attributes, links=links)
    if event.event_type == E.RUN_FAILED:
        _error_status(api, span, event.data.get("error") or {}, recorded=False, at_ns=end_ns)
    span.end(end_time=end_ns)


def _wait_ended(api: _Api, trace: RunTrace, event: Event, result: EventResult) -> None:
    tracer = _tracer(api)
    if tracer is None:
        return
    run, wait = result.run, result.wait
    wait_id = event.correlation_id or ""
    attributes: dict[str, Any] = {"wf.run.id": run.run_id, "wf.workflow.name": run.workflow_name,
                                  "wf.wait.id": wait_id}
    start = event.created_at
    if wait is not None:
        start = wait.created_at or start
        attributes["wf.wait.resume_at"] = wait.resume_at.isoformat()
    span = _start_span(api, tracer, "wf.sleep", trace_id=trace.trace_id, span_id=wait_span_id(run.run_id, wait_id),
                       context=trace.inside(api, tracer), start_ns=_ns(start), attributes=attributes)
    span.end(end_time=_ns(event.created_at))


def _hook_received(api: _Api, trace: RunTrace, event: Event, result: EventResult) -> None:
    tracer = _tracer(api)
    if tracer is None:
        return
    run, hook = result.run, result.hook
    hook_id = event.correlation_id or ""
    attributes: dict[str, Any] = {"wf.run.id": run.run_id, "wf.workflow.name": run.workflow_name,
                                  "wf.hook.id": hook_id}
    start = event.created_at
    number = 1
    name = "wf.hook"
    if hook is not None:
        start = hook.created_at or start
        number = max(hook.received_count, 1)
        attributes["wf.hook.token"] = hashed_token(hook.token)
        attributes["wf.hook.payload"] = number
        if hook.token.startswith(CHILD_TOKEN_PREFIX) and isinstance(hook.metadata, dict):
            child = hook.metadata.get("child_workflow")
            if isinstance(child, str):
                name = f"wf.child {child}"
                attributes["wf.child.workflow.name"] = child
    links = []
    current = api.trace.get_current_span().get_span_context()
    if current.is_valid:  # whoever resumed the hook (a webhook's request, a child's last step...)
        links.append(api.Link(current, {"wf.link": "resumed_by"}))
    span = _start_span(api, tracer, name, trace_id=trace.trace_id, span_id=hook_span_id(run.run_id, hook_id, number),
                       context=trace.inside(api, tracer), start_ns=_ns(start), attributes=attributes, links=links)
    span.end(end_time=_ns(event.created_at))


@_guarded
def dequeued(message: Message, started: EventResult) -> None:
    """Called by a worker that took a step from the queue and recorded its start: the queue wait."""
    api = _load()
    recorded([started])
    step = started.step
    if step is None or not started.events:
        return
    at = started.events[-1].created_at
    if at is None:
        return
    wait = max((at - message.available_at).total_seconds(), 0.0)
    api.queue_wait.record(wait, {"wf.workflow.name": started.run.workflow_name, "wf.step.name": step.step_name})


# --- queue depth ---

_queue_depth: dict[tuple[str, str], int] = {}


def _observe_queue_depth(options: Any) -> Any:
    from opentelemetry.metrics import Observation

    return [Observation(count, {"wf.queue": queue, "wf.queue.state": state})
            for (queue, state), count in list(_queue_depth.items())]


#: At most one queue-depth sample per this many seconds per process (listing a long queue costs).
QUEUE_DEPTH_SECONDS = 60.0
_sampled_at = [-1e18]


async def sample_queue_depth(world: World) -> None:
    """Count the messages of the World's queues by state (workers' heartbeats call this); never raises."""
    from .world import STEP_QUEUE, WORKFLOW_QUEUE

    now = time.monotonic()
    if now - _sampled_at[0] < QUEUE_DEPTH_SECONDS:
        return
    _sampled_at[0] = now
    try:
        _load()
        counts: dict[tuple[str, str], int] = {}
        for queue in (WORKFLOW_QUEUE, STEP_QUEUE):
            for state in ("ready", "delayed", "leased"):
                counts[(queue, state)] = 0
            for message in await world.queue.list(queue):
                key = (queue, message.state)
                counts[key] = counts.get(key, 0) + 1
    except Exception as exc:  # noqa: BLE001 - a sample is skipped, the worker goes on
        log.debug("queue depth not sampled: %s", exc)
        return
    _queue_depth.clear()
    _queue_depth.update(counts)
