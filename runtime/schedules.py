"""`wf.schedule`: runs started on a cron expression or a fixed interval, fired by the workers.

A schedule is a record in the World (`world.schedules`): what to start (workflow name and
arguments), when (`cron=` in time zone `tz`, or `every=` seconds, aligned on the epoch), what
to do with slots missed while no worker ran (`catchup`), and a cursor: the next slot to fire.

Every worker looks at the schedules (`fire_due`) whenever the first one is due, and at least
every POLL_SECONDS. For a due schedule it starts one run per chosen slot, with the slot as
the run's idempotency key and a run id derived from (schedule, slot): however many workers
fire the same slot at once, the World records that run once (`run_created` conflicts
otherwise). Then it moves the cursor past `now` with a compare-and-set, so a slot is never
skipped, and a crash between the two only fires that slot again, idempotently.

catchup: "latest" (default) fires only the most recent missed slot; "all" fires every missed
slot (at most MAX_CATCHUP per look, oldest first, until caught up); "skip" fires a slot only if
a worker sees it at most SKIP_GRACE after its time (missed slots are not made up).
"""

from __future__ import annotations

import hashlib
import logging
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from .calls import serialize_call_input, split_input
from .config import blocking, started_world
from .durations import parse_duration
from .entities import utcnow
from .errors import WorldError
from .flow_contract import ScheduleRecord
from .ids import _encode_bits
from .registry import WorkflowFunction
from .starting import record_run, workflow_name_of
from .world import World

log = logging.getLogger("wf.schedules")

CATCHUP = ("latest", "all", "skip")
#: A worker looks at the schedules at least this often (a new or changed schedule is seen this late).
POLL_SECONDS = 1.0
#: "all" fires at most this many missed slots per look.
MAX_CATCHUP = 1000
#: "skip" fires a slot seen at most this late.
SKIP_GRACE = timedelta(seconds=5)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _zone(tz: str) -> ZoneInfo:
    try:
        return ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {tz!r} (an IANA name such as 'UTC' or 'Europe/Paris')") from None


def make_spec(workflow_name: str, args: tuple[Any, ...] | list[Any], kwargs: dict[str, Any], *, cron: str | None,
              every: Any, tz: str, catchup: str) -> dict[str, Any]:
    """The schedule's spec as stored; ValueError for a bad cron, interval, zone or catchup."""
    if (cron is None) == (every is None):
        raise ValueError("give exactly one of cron= (e.g. '*/5 * * * *') or every= (e.g. '10s')")
    if catchup not in CATCHUP:
        raise ValueError(f"catchup must be one of {', '.join(CATCHUP)}, got {catchup!r}")
    _zone(tz)
    spec: dict[str, Any] = {
        "workflow_name": workflow_name,
        "input": serialize_call_input(args, kwargs, where=f"the arguments of scheduled workflow {workflow_name}"),
        "tz": tz, "catchup": catchup,
    }
    if cron is not None:
        from croniter import croniter

        if not isinstance(cron, str) or not croniter.is_valid(cron):
            raise ValueError(f"invalid cron expression {cron!r} (five fields: minute hour day month weekday)")
        spec["cron"] = cron
    else:
        seconds = parse_duration(every).total_seconds()
        if seconds < 1:
            raise ValueError(f"every= must be at least 1 second, got {every!r}")
        spec["every_us"] = round(seconds * 1_000_000)
    return spec


def next_slot(spec: dict[str, Any], after: datetime) -> datetime:
    """The first slot strictly after `after`."""
    if "every_us" in spec:
        step = int(spec["every_us"])
        us = (after - _EPOCH) // timedelta(microseconds=1)
        return _EPOCH + timedelta(microseconds=(us // step + 1) * step)
    from croniter import croniter

    local = after.astimezone(_zone(spec.get("tz", "UTC")))
    return croniter(spec["cron"], local).get_next(datetime).astimezone(UTC)


def last_slot(spec: dict[str, Any], at: datetime) -> datetime:
    """The last slot at or before `at`."""
    if "every_us" in spec:
        step = int(spec["every_us"])
        us = (at - _EPOCH) // timedelta(microseconds=1)
        return _EPOCH + timedelta(microseconds=(us // step) * step)
    from croniter import croniter

    local = (at + timedelta(microseconds=1)).astimezone(_zone(spec.get("tz", "UTC")))
    return croniter(spec["cron"], local).get_prev(datetime).astimezone(UTC)


def slot_run_id(schedule_id: str, slot: datetime) -> str:
    """The run id of a slot: time-ordered like any run id (its slot's time), the same for every worker."""
    ms = (slot - _EPOCH) // timedelta(milliseconds=1)
    digest = int.from_bytes(hashlib.sha256(f"{schedule_id}\x00{slot.isoformat()}".encode()).digest()[:10], "big")
    return "wrun_" + _encode_bits(ms, 50) + _encode_bits(digest, 80)


async def fire_slot(world: World, record: ScheduleRecord, slot: datetime | None) -> str:
    """Start the run of one slot (None: a manual trigger, a run of its own); its run id."""
    spec = record.spec
    args, kwargs = split_input(spec.get("input"))
    attributes = {"schedule_id": record.schedule_id,
                  "scheduled_for": slot.isoformat() if slot is not None else None}
    if slot is None:
        run_id, _ = await record_run(world, spec["workflow_name"], args, kwargs, attributes=attributes)
        return run_id
    run_id, _ = await record_run(
        world, spec["workflow_name"], args, kwargs, attributes=attributes,
        idempotency_key=f"schedule:{record.schedule_id}:{slot.isoformat()}",
        run_id=slot_run_id(record.schedule_id, slot),
    )
    return run_id


def _chosen(spec: dict[str, Any], first: datetime, now: datetime) -> tuple[list[datetime], datetime]:
    """The slots to fire among those due (from `first` to `now`), and the new cursor."""
    catchup = spec.get("catchup", "latest")
    if catchup == "all":
        slots = [first]
        while len(slots) < MAX_CATCHUP:
            following = next_slot(spec, slots[-1])
            if following > now:
                return slots, following
            slots.append(following)
        return slots, next_slot(spec, slots[-1])
    latest = max(last_slot(spec, now), first)
    following = next_slot(spec, latest)
    if catchup == "skip" and now - latest > SKIP_GRACE:
        return [], following
    return [latest], following


async def fire_due(world: World, *, now: datetime | None = None) -> float:
    """Fire every due slot of every active schedule; the seconds until the next is due (≤ POLL_SECONDS)."""
    now = now or utcnow()
    wait = POLL_SECONDS
    for record in await world.schedules.list():
        if record.paused:
            continue
        if record.next_at > now:
            wait = min(wait, (record.next_at - now).total_seconds())
            continue
        try:
            slots, cursor = _chosen(record.spec, record.next_at, now)
            for slot in slots:
                await fire_slot(world, record, slot)
        except (ValueError, KeyError, TypeError) as exc:
            log.error("schedule %s cannot fire: %s", record.schedule_id, exc)
            continue
        await world.schedules.advance(record.schedule_id, expected=record.next_at, to=cursor)
        wait = min(wait, max((cursor - utcnow()).total_seconds(), 0.0))
    return max(wait, 0.001)


def _require(world: World) -> None:
    if "schedules" not in world.capabilities:
        raise WorldError(f"{type(world).__name__} has no schedules (the 'schedules' capability)")


async def put_schedule(world: World, workflow: WorkflowFunction | str, args: tuple[Any, ...] | list[Any],
                       kwargs: dict[str, Any], *, cron: str | None = None, every: Any = None,
                       schedule_id: str | None = None, tz: str = "UTC", catchup: str = "latest") -> ScheduleRecord:
    """Record (or update) a schedule; declaring the same schedule again changes nothing (its cursor is kept)."""
    _require(world)
    name = workflow_name_of(workflow)
    spec = make_spec(name, args, kwargs, cron=cron, every=every, tz=tz, catchup=catchup)
    schedule_id = schedule_id or name
    try:
        existing = await world.schedules.get(schedule_id)
    except WorldError:
        existing = None
    if existing is not None and existing.spec == spec:
        return existing
    return await world.schedules.put(schedule_id, spec, next_at=next_slot(spec, utcnow()))


async def schedule_async(workflow: WorkflowFunction | str, *args: Any, cron: str | None = None, every: Any = None,
                         schedule_id: str | None = None, tz: str = "UTC", catchup: str = "latest",
                         **kwargs: Any) -> ScheduleRecord:
    """Record a schedule that workers fire: `cron="*/5 * * * *"` (in `tz`) or `every="10s"`.

    Exactly one run per slot however many workers run; `schedule_id` (default: the workflow's
    name) names it for `wf schedule ls|pause|resume|trigger|rm`; `catchup` says what happens to
    slots missed while no worker ran: "latest" (fire the last one), "all", or "skip".
    Declaring it again unchanged (at every start of a program) keeps its place.
    """
    world = await started_world()
    return await put_schedule(world, workflow, args, kwargs, cron=cron, every=every, schedule_id=schedule_id, tz=tz,
                              catchup=catchup)


def schedule(workflow: WorkflowFunction | str, *args: Any, cron: str | None = None, every: Any = None,
             schedule_id: str | None = None, tz: str = "UTC", catchup: str = "latest", **kwargs: Any) -> ScheduleRecord:
    """Blocking twin of `schedule_async`."""
    return blocking(schedule_async(workflow, *args, cron=cron, every=every, schedule_id=schedule_id, tz=tz,
                                   catchup=catchup, **kwargs))


def describe(record: ScheduleRecord) -> str:
    """"every 10s" or "cron */5 * * * * (UTC)"."""
    spec = record.spec
    if "every_us" in spec:
        return f"every {timedelta(microseconds=int(spec['every_us'])).total_seconds():g}s"
    return f"cron {spec.get('cron')} ({spec.get('tz', 'UTC')})"
