"""Entities to rows and back: the column lists the storage queries select, and their readers."""

from __future__ import annotations

import hashlib
from typing import Any

import orjson

from ..runtime.entities import (
    Event,
    EventType,
    Hook,
    HookStatus,
    Run,
    RunStatus,
    Step,
    StepStatus,
    Wait,
    WaitStatus,
)
from ..runtime.errors import SerializationError

#: Event data keys holding payload values, left out with resolve_data=False.
PAYLOAD_KEYS = frozenset({"input", "output", "result", "payload", "metadata"})

RUN_COLUMNS = ("run_id, workflow_name, status, {input}, {output}, error, attributes, created_at, started_at, "
               "completed_at, updated_at, event_count")
STEP_COLUMNS = ("run_id, step_id, step_name, status, {input}, {output}, error, attempt, retry_after, created_at, "
                "started_at, completed_at, updated_at")
HOOK_COLUMNS = "run_id, hook_id, token, status, metadata, received_count, created_at, disposed_at"
WAIT_COLUMNS = "run_id, wait_id, resume_at, status, created_at, completed_at"
EVENT_COLUMNS = "run_id, event_type, correlation_id, data, event_id, seq, created_at"


def columns(template: str, resolve_data: bool) -> str:
    """A column list with the payload columns as NULL when `resolve_data` is false."""
    if resolve_data:
        return template.format(input="input", output="output")
    return template.format(input="NULL::json", output="NULL::json")


def to_json(value: Any, what: str) -> str:
    """Compact JSON text for a json column; SerializationError naming `what` if not JSON-compatible."""
    try:
        return orjson.dumps(value).decode()
    except TypeError as exc:
        raise SerializationError(f"{what} is not JSON-compatible ({exc}); serialize it first") from exc


def json_or_null(value: Any, what: str) -> str | None:
    return None if value is None else to_json(value, what)


def token_hash(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()


def run_from_row(row: tuple[Any, ...]) -> Run:
    return Run(run_id=row[0], workflow_name=row[1], status=RunStatus(row[2]), input=row[3], output=row[4],
               error=row[5], attributes=row[6] if row[6] is not None else {}, created_at=row[7], started_at=row[8],
               completed_at=row[9], updated_at=row[10], event_count=row[11])


def step_from_row(row: tuple[Any, ...]) -> Step:
    return Step(run_id=row[0], step_id=row[1], step_name=row[2], status=StepStatus(row[3]), input=row[4],
                output=row[5], error=row[6], attempt=row[7], retry_after=row[8], created_at=row[9],
                started_at=row[10], completed_at=row[11], updated_at=row[12])


def hook_from_row(row: tuple[Any, ...]) -> Hook:
    return Hook(run_id=row[0], hook_id=row[1], token=bytes(row[2]).decode("utf-8", "surrogatepass"),
                status=HookStatus(row[3]), metadata=row[4], received_count=row[5], created_at=row[6],
                disposed_at=row[7])


def wait_from_row(row: tuple[Any, ...]) -> Wait:
    return Wait(run_id=row[0], wait_id=row[1], resume_at=row[2], status=WaitStatus(row[3]), created_at=row[4],
                completed_at=row[5])


def event_from_row(row: tuple[Any, ...], resolve_data: bool = True) -> Event:
    data = row[3]
    if not resolve_data and not PAYLOAD_KEYS.isdisjoint(data):
        data = {k: v for k, v in data.items() if k not in PAYLOAD_KEYS}
    return Event(run_id=row[0], event_type=EventType(row[1]), correlation_id=row[2], data=data, event_id=row[4],
                 seq=row[5], created_at=row[6])


def run_params(run: Run, last_event_id: str) -> tuple[Any, ...]:
    return (run.run_id, run.workflow_name, run.status.value, json_or_null(run.input, "run input"),
            json_or_null(run.output, "run output"), json_or_null(run.error, "run error"),
            to_json(run.attributes, "run attributes"), run.created_at, run.started_at, run.completed_at,
            run.updated_at, run.event_count, last_event_id)


def step_params(step: Step, created_seq: int) -> tuple[Any, ...]:
    return (step.run_id, step.step_id, created_seq, step.step_name, step.status.value,
            json_or_null(step.input, "step input"), json_or_null(step.output, "step output"),
            json_or_null(step.error, "step error"), step.attempt, step.retry_after, step.created_at,
            step.started_at, step.completed_at, step.updated_at)


def hook_params(hook: Hook, created_seq: int) -> tuple[Any, ...]:
    return (hook.run_id, hook.hook_id, created_seq, hook.token.encode("utf-8", "surrogatepass"),
            token_hash(hook.token), hook.status.value, json_or_null(hook.metadata, "hook metadata"),
            hook.received_count, hook.created_at, hook.disposed_at)


def wait_params(wait: Wait, created_seq: int) -> tuple[Any, ...]:
    return (wait.run_id, wait.wait_id, created_seq, wait.resume_at, wait.status.value, wait.created_at,
            wait.completed_at)
