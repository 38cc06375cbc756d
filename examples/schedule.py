"""Schedules: a heartbeat every 5 seconds and a nightly report, fired by whichever workers run.

    python examples/schedule.py        # records both (at every deploy: unchanged, they keep their place)
    wf worker examples/schedule.py     # fires them: exactly one run per slot, however many workers run
    wf schedule ls                     # what is scheduled, and when each fires next
    wf start examples/schedule.py:heartbeat '"payments-api"' --wait   # the same workflow, once, by hand

A schedule lives in the World, not in a process: start three workers and each slot still gives
one run (the slot is the run's idempotency key). After downtime, `catchup` decides what happens
to the slots missed: "latest" (the default) fires the most recent one, "all" every one, "skip"
none. `wf schedule pause|resume|trigger|rm ID` manage them.
"""

import wf


@wf.step
async def check(service: str) -> str:
    return f"{service} ok"


@wf.step
async def build_report(day: str) -> dict:
    return {"day": day, "orders": 42}


# Named explicitly: `python examples/schedule.py` runs this file as __main__, the worker imports it as
# `schedule`; a schedule names its workflow, and both must agree on the name.
@wf.workflow(name="schedule.heartbeat")
async def heartbeat(service: str) -> str:
    return await check(service)


@wf.workflow(name="schedule.nightly_report")
async def nightly_report() -> dict:
    today = wf.now()  # durable: the same on every replay (the run's attribute scheduled_for holds its slot)
    return await build_report(f"{today:%Y-%m-%d}")


if __name__ == "__main__":
    for record in (
        wf.schedule(heartbeat, "payments-api", every="5s", schedule_id="heartbeat"),
        wf.schedule(nightly_report, cron="0 2 * * *", tz="Europe/Paris", schedule_id="nightly-report",
                    catchup="all"),
    ):
        print(f"{record.schedule_id}: next at {record.next_at:%Y-%m-%d %H:%M:%S} UTC")
