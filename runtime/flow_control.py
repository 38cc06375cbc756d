"""Concurrency and rate limits of steps and workflows, on the World's slots and rate windows.

`@wf.step(concurrency=N, concurrency_key=f, rate_limit="100/1m", rate_limit_key=g)`: an attempt
of a limited step never runs inline; its "run step" message is handled by `Worker._step_message`,
which asks `FlowControl.admit_step` before recording `step_started`. Admitted, the attempt holds
a slot of `step:<name>[:<key>]` (a lease of SLOT_LEASE seconds, renewed by the worker, freed at
once by the local World when the worker dies) and/or has a start recorded in the rate window
`rate:<name>[:<key>]`, whose time becomes the event's time, so the events show the limit kept.
Refused, the message goes back to the queue: for a slot, the step waits in line (the World
keeps waiters in run order) and whoever frees a slot re-enqueues the first waiters at once;
WAIT_RECHECK seconds is the fallback. For a rate, it comes back when the window allows.

`@wf.workflow(concurrency=N, concurrency_key=f)`: a pending run takes a slot of
`workflow:<name>[:<key>]` before its `run_started`, held (lease None) until the run ends.

A slot whose holder ended without giving it back (a run cancelled by an operator, a release
lost to a storage error) is freed by the next worker refused on that key: it checks holders
and waiters older than STALE_AFTER seconds against the runs' status.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from .calls import split_input
from .entities import Run, StepStatus, utcnow
from .errors import NotFoundError, WorldError
from .flow_contract import SlotEntry
from .world import STEP_QUEUE, WORKFLOW_QUEUE, World, run_order_key, step_message_key, workflow_message_key

log = logging.getLogger("wf.worker")

#: A step's slot is freed this long after its worker stops renewing it (at once on the local World).
SLOT_LEASE = 10.0
#: How often a worker renews the slots its attempts hold.
SLOT_RENEW_EVERY = 3.0
#: A refused attempt or run is looked at again after this long if no release woke it first.
WAIT_RECHECK = 2.0
#: A waiter not seen again for this long loses its place in line.
WAIT_LEASE = 20.0
#: Holders and waiters younger than this are never taken for stale.
STALE_AFTER = 5.0
#: How often one process checks one key's holders for stale ones (only when refused on it).
STALE_CHECK_EVERY = 2.0
_MAX_KEY_PART = 200


def parse_rate_limit(value: str) -> tuple[int, float]:
    """`"100/1m"` -> (100, 60.0): a count and a window (`"10/s"`, `"5/10s"`, `"1000/1h"`). ValueError otherwise."""
    from .durations import parse_duration

    if not isinstance(value, str) or "/" not in value:
        raise ValueError(f"invalid rate limit {value!r}: write COUNT/WINDOW, e.g. '100/1m', '10/s', '5/10s'")
    count_text, _, window_text = value.partition("/")
    window_text = window_text.strip()
    if window_text and not window_text[0].isdigit() and window_text[0] != ".":
        window_text = "1" + window_text
    try:
        count = int(count_text.strip())
        window = parse_duration(window_text).total_seconds()
    except ValueError as exc:
        raise ValueError(f"invalid rate limit {value!r}: {exc}") from None
    if count < 1 or window <= 0:
        raise ValueError(f"invalid rate limit {value!r}: the count and the window must be positive")
    return count, window


def _limit(value: Any, what: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{what} must be an int >= 1, got {value!r}")
    return value


def _key(base: str, fn: Callable[..., Any] | None, args: list[Any], kwargs: dict[str, Any]) -> str:
    """`base`, or `base:<fn(*args, **kwargs)>` (hashed when long); a failing key function is logged and
    the step limited under `base:?`."""
    if fn is None:
        return base
    try:
        part = str(fn(*args, **kwargs))
    except Exception:
        log.exception("the key function of %s failed; limiting under %s:?", base, base)
        part = "?"
    if len(part) > _MAX_KEY_PART:
        part = "sha256-" + hashlib.sha256(part.encode()).hexdigest()
    return f"{base}:{part}"


@dataclass(frozen=True, slots=True)
class StepLimits:
    """What `@wf.step(concurrency=, concurrency_key=, rate_limit=, rate_limit_key=)` asked for."""

    name: str
    concurrency: int | None
    concurrency_key: Callable[..., Any] | None
    rate: tuple[int, float] | None
    rate_key: Callable[..., Any] | None

    @classmethod
    def make(cls, name: str, concurrency: int | None, concurrency_key: Callable[..., Any] | None,
             rate_limit: str | None, rate_limit_key: Callable[..., Any] | None) -> StepLimits | None:
        """The limits, or None for an unlimited step; ValueError for a bad value."""
        concurrency = _limit(concurrency, "concurrency")
        rate = None if rate_limit is None else parse_rate_limit(rate_limit)
        if concurrency_key is not None and concurrency is None:
            raise ValueError("concurrency_key= needs concurrency=")
        if rate_limit_key is not None and rate is None:
            raise ValueError("rate_limit_key= needs rate_limit=")
        if concurrency is None and rate is None:
            return None
        return cls(name, concurrency, concurrency_key, rate, rate_limit_key)


@dataclass(frozen=True, slots=True)
class RunLimits:
    """What `@wf.workflow(concurrency=, concurrency_key=)` asked for."""

    name: str
    concurrency: int
    concurrency_key: Callable[..., Any] | None

    @classmethod
    def make(cls, name: str, concurrency: int | None, concurrency_key: Callable[..., Any] | None) -> RunLimits | None:
        concurrency = _limit(concurrency, "concurrency")
        if concurrency_key is not None and concurrency is None:
            raise ValueError("concurrency_key= needs concurrency=")
        return None if concurrency is None else cls(name, concurrency, concurrency_key)

    def slot_key(self, run_input: Any) -> str:
        args, kwargs = split_input(run_input) if self.concurrency_key is not None else ([], {})
        return _key(f"workflow:{self.name}", self.concurrency_key, args, kwargs)


def who(entry: SlotEntry) -> dict[str, Any]:
    """The run (and step) a holder or waiter is: from its name (`step:RUN:STEP`, `run:RUN`), and its info."""
    kind, _, rest = entry.holder.partition(":")
    if kind == "step":
        run_id, _, step_id = rest.partition(":")
        return {**entry.info, "run_id": run_id, "step_id": step_id}
    if kind == "run":
        return {**entry.info, "run_id": rest}
    return entry.info


@dataclass(slots=True)
class Grant:
    """An admitted attempt: the slot it holds (key, holder), and the time its rate window recorded."""

    slot: tuple[str, str] | None = None
    started_at: datetime | None = None


class FlowControl:
    """One worker's side of the limits: admission, release, renewal and waking waiters."""

    def __init__(self, world: World) -> None:
        self.world = world
        #: Step slots this process holds (renewed every SLOT_RENEW_EVERY seconds).
        self.held: set[tuple[str, str]] = set()
        self._checked: dict[str, float] = {}

    def _require(self) -> None:
        if "limits" not in self.world.capabilities:
            raise WorldError(f"{type(self.world).__name__} has no concurrency or rate limits (the 'limits' "
                             "capability): a limited step or workflow cannot run on it")

    # --- steps ---

    async def admit_step(self, limits: StepLimits, run_id: str, step_id: str, step_input: Any,
                         payload: dict[str, Any]) -> Grant | float:
        """Admit one attempt (a Grant, to `release_step` after its result is recorded), or the
        seconds after which to ask again."""
        self._require()
        world = self.world
        needs_args = limits.concurrency_key is not None or limits.rate_key is not None
        args, kwargs = split_input(step_input) if needs_args else ([], {})
        grant = Grant()
        if limits.concurrency is not None:
            key = _key(f"step:{limits.name}", limits.concurrency_key, args, kwargs)
            holder = f"step:{run_id}:{step_id}"
            info: dict[str, Any] | None = {"restart": True} if payload.get("restart") else None  # run, step: in holder
            order = f"{run_order_key(run_id)}:{step_id}"
            acquire = functools.partial(world.limits.acquire, key, limits.concurrency, holder=holder,
                                        lease=SLOT_LEASE, order=order, info=info, wait_lease=WAIT_LEASE)
            if not await acquire() and not (await self._free_stale(key) and await acquire()):
                return WAIT_RECHECK
            grant.slot = (key, holder)
            self.held.add(grant.slot)
        if limits.rate is not None:
            count, window = limits.rate
            decision = await world.limits.rate(_key(f"rate:{limits.name}", limits.rate_key, args, kwargs),
                                               count, window)
            if not decision.admitted:
                await self.release_step(grant)
                return max((decision.at - utcnow()).total_seconds(), 0.001)
            grant.started_at = decision.at
        return grant

    async def release_step(self, grant: Grant) -> None:
        """Give back the attempt's slot and wake the first waiters (a failure only logs: the lease runs out)."""
        if grant.slot is None:
            return
        self.held.discard(grant.slot)
        key, holder = grant.slot
        grant.slot = None
        try:
            await self._wake(await self.world.limits.release(key, holder))
        except WorldError as exc:
            log.warning("could not give back a slot of %s (freed when its lease runs out): %s", key, exc)

    async def renew(self) -> None:
        """Renew the leases of the slots this process holds."""
        for key, holder in list(self.held):
            try:
                if not await self.world.limits.extend(key, holder, lease=SLOT_LEASE):
                    log.warning("a slot of %s held by %s ran out before it was renewed", key, holder)
                    self.held.discard((key, holder))
            except WorldError as exc:
                log.warning("could not renew a slot of %s: %s", key, exc)

    async def renew_forever(self) -> None:
        while True:
            await asyncio.sleep(SLOT_RENEW_EVERY)
            await self.renew()

    # --- runs ---

    async def admit_run(self, limits: RunLimits, run: Run) -> float | None:
        """Take a slot for a pending run before it starts: None when it holds one, else seconds to wait."""
        self._require()
        world = self.world
        run_input = run.input
        if limits.concurrency_key is not None and run_input is None:
            run_input = (await world.runs.get(run.run_id)).input
        key = limits.slot_key(run_input)
        run_id = run.run_id
        info = None  # the run is in the holder's name
        for attempt in range(2):
            if await world.limits.acquire(key, limits.concurrency, holder=f"run:{run_id}", lease=None,
                                          order=run_order_key(run_id), info=info, wait_lease=WAIT_LEASE):
                return None
            if attempt == 0 and not await self._free_stale(key):
                break
        return WAIT_RECHECK

    async def run_ended(self, workflow_limits: RunLimits | None, run: Run) -> None:
        """After a limited run's end: give back its slot and wake the next runs in line."""
        if workflow_limits is None:
            return
        key = workflow_limits.slot_key(run.input)
        try:
            await self._wake(await self.world.limits.release(key, f"run:{run.run_id}"))
        except WorldError as exc:
            log.warning("could not give back the slot of run %s (%s): %s", run.run_id, key, exc)

    # --- waking and stale holders ---

    async def _wake(self, waiters: list[SlotEntry]) -> None:
        """Make the waiters' messages available now (coalesced with the delayed ones they wait in)."""
        for entry in waiters:
            info = who(entry)
            run_id, step_id = info.get("run_id"), info.get("step_id")
            if not isinstance(run_id, str):
                continue
            try:
                if isinstance(step_id, str):
                    payload: dict[str, Any] = {"run_id": run_id, "step_id": step_id}
                    if info.get("restart"):
                        payload["restart"] = True
                    await self.world.queue.enqueue(STEP_QUEUE, payload,
                                                   idempotency_key=step_message_key(run_id, step_id),
                                                   order_key=run_order_key(run_id))
                else:
                    await self.world.queue.enqueue(WORKFLOW_QUEUE, {"run_id": run_id},
                                                   idempotency_key=workflow_message_key(run_id),
                                                   order_key=run_order_key(run_id))
            except (TypeError, ValueError):
                continue
            except WorldError as exc:
                log.warning("could not wake a waiter for a slot: %s", exc)

    async def _free_stale(self, key: str) -> bool:
        """Free the slots (and places in line) of runs and steps that have ended; whether any was."""
        now = time.monotonic()
        if now - self._checked.get(key, 0.0) < STALE_CHECK_EVERY:
            return False
        self._checked[key] = now
        if len(self._checked) > 10_000:
            self._checked.clear()
        freed = False
        cutoff = utcnow().timestamp() - STALE_AFTER
        for state in await self.world.limits.slots(key):
            for entry, holding in [(e, True) for e in state.holders] + [(e, False) for e in state.waiters]:
                if entry.since.timestamp() > cutoff:
                    continue
                if await self._ended(who(entry), holding):
                    log.info("freeing a slot of %s that %s no longer needs", key, entry.holder)
                    await self._wake(await self.world.limits.release(key, entry.holder))
                    freed = True
        return freed

    async def _ended(self, info: dict[str, Any], holding: bool) -> bool:
        run_id, step_id = info.get("run_id"), info.get("step_id")
        if not isinstance(run_id, str):
            return False
        try:
            run = await self.world.runs.get(run_id, resolve_data=False)
            if run.status.terminal:
                return True
            if not isinstance(step_id, str):
                return False
            step = await self.world.steps.get(run_id, step_id, resolve_data=False)
        except NotFoundError:
            return True
        return step.status != StepStatus.RUNNING if holding else step.status.terminal


async def waiting_for_slots(world: World, run_id: str) -> list[str]:
    """What the run waits for, one line each: "waiting for a slot of step app.charge:cus_1 (3/3 taken)"."""
    if "limits" not in world.capabilities:
        return []
    lines = []
    with contextlib.suppress(WorldError):
        for state in await world.limits.slots():
            for place, entry in enumerate(state.waiters, 1):
                info = who(entry)
                if info.get("run_id") != run_id:
                    continue
                what = state.key.replace(":", " ", 1)
                step = f" ({info['step_id']})" if info.get("step_id") else ""
                lines.append(f"waiting for a slot of {what}{step}: {len(state.holders)}/{state.limit} taken, "
                             f"{place} in line")
    return lines
