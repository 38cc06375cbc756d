"""Everything recorded about one run, read once from the World: what `wf inspect RUN_ID` shows."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

from ..runtime.children import CHILD_TOKEN_PREFIX
from ..runtime.entities import Event, Hook, Run, Step, Wait, utcnow
from ..runtime.errors import InvalidIdError, NotFoundError, RunNotFoundError
from ..runtime.flow_control import waiting_for_slots
from ..runtime.ids import validate_id
from ..runtime.operations import START_CHILD_STEP, all_pages
from ..runtime.serialization import deserialize
from ..runtime.state_paths import state_paths
from ..runtime.world import StreamInfo, World
from .render import between, call_json, payload_json

T = TypeVar("T")


@dataclass(slots=True)
class RunStory:
    run: Run
    steps: list[Step]
    hooks: list[Hook]
    waits: list[Wait]
    streams: list[StreamInfo]
    events: list[Event]
    #: When it was read: the right end of the timeline of a run still going.
    now: datetime
    #: The child runs it started, in the order it started them.
    children: list[Run] = field(default_factory=list)
    #: "waiting for a slot of step ...": concurrency slots it waits in line for (flow_control.py).
    waiting: list[str] = field(default_factory=list)

    @property
    def own_steps(self) -> list[Step]:
        """Its steps without the built-in ones that start child runs (shown as children)."""
        return [s for s in self.steps if s.step_name != START_CHILD_STEP]

    @property
    def own_hooks(self) -> list[Hook]:
        """Its hooks without those a child's end is delivered to (shown as children)."""
        return [h for h in self.hooks if not h.token.startswith(CHILD_TOKEN_PREFIX)]

    def duration(self) -> float | None:
        """Seconds from creation to the end (or to now, for a run still going)."""
        return between(self.run.created_at, self.run.completed_at or (None if self.run.status.terminal else self.now))


def checked_run_id(run_id: str) -> str:
    """`run_id` if it could name a run; RunNotFoundError (one line) otherwise."""
    try:
        return validate_id(run_id, "run id")
    except InvalidIdError:
        raise RunNotFoundError(f"no run with id {run_id!r} (a run id looks like wrun_01J...)") from None


async def load_story(world: World, run_id: str) -> RunStory:
    """Read the run, its entities, streams and event log. RunNotFoundError for an unknown id."""
    checked_run_id(run_id)
    try:
        run = await world.runs.get(run_id)
    except NotFoundError:
        raise RunNotFoundError(f"no run with id {run_id!r}") from None
    steps = await all_pages(lambda c: world.steps.list(run_id, cursor=c))
    hooks = await all_pages(lambda c: world.hooks.list(run_id=run_id, cursor=c))
    waits = await all_pages(lambda c: world.waits.list(run_id=run_id, cursor=c))
    streams = await world.streams.list(run_id)
    events = await world.events.list(run_id)
    children = []
    for step in steps:
        if step.step_name == START_CHILD_STEP and step.status == "completed" and isinstance(step.output, str):
            with contextlib.suppress(NotFoundError, InvalidIdError):
                children.append(await world.runs.get(deserialize(step.output), resolve_data=False))
    waiting = [] if run.status.terminal else await waiting_for_slots(world, run_id)
    return RunStory(run, steps, hooks, waits, streams, events, utcnow(), children, waiting)


def story_json(story: RunStory) -> dict[str, Any]:
    """The story as JSON-friendly data: payloads deserialized, events as recorded."""
    run = story.run
    out = run.to_dict()
    out["input"] = call_json(run.input)
    out["output"] = payload_json(run.output) if run.output is not None else None
    out["duration_seconds"] = story.duration()
    steps = []
    for step in story.steps:
        item = step.to_dict()
        item["input"] = call_json(step.input)
        item["output"] = payload_json(step.output) if step.output is not None else None
        item["duration_seconds"] = between(step.started_at, step.completed_at)
        steps.append(item)
    paths = {f"{p.kind}:{p.entity_id}" if p.kind != "run" else "run": p.states for p in state_paths(story.events)}
    return {
        "run": out,
        "steps": steps,
        "hooks": [{**h.to_dict(), "metadata": payload_json(h.metadata)} for h in story.hooks],
        "waits": [w.to_dict() for w in story.waits],
        "waiting_for_slots": story.waiting,
        "children": [{"run_id": c.run_id, "workflow_name": c.workflow_name, "status": str(c.status)}
                     for c in story.children],
        "streams": [{"name": s.name, "chunks": s.chunks, "closed": s.closed} for s in story.streams],
        "state_paths": paths,
        "events": [e.to_dict() for e in story.events],
    }
