"""A daily digest: a loop that sleeps a day between sends, and survives restarts while it sleeps.

    wf start examples/digest.py:daily_digest '"ana"' 3 '"2s"' --wait
        # three digests two seconds apart (watch it), then prints
        # {"user": "ana", "sent": ["digest for ana, day 1 (...)", "... day 2 ...", "... day 3 ..."]}
    wf start examples/digest.py:daily_digest '"ana"' 7
    wf worker examples/digest.py
        # the real thing: one digest a day for a week. Stop the worker (Ctrl-C), start it again
        # tomorrow: each sleep is a durable timer in the run's log, so nothing is lost or resent.
"""

import wf


@wf.step
async def collect_news(user: str, day: int) -> list[str]:
    return [f"story {day}.{i} for {user}" for i in range(1, 4)]


@wf.step
async def send_digest(user: str, day: int, stamp: str, stories: list[str]) -> str:
    subject = f"digest for {user}, day {day} ({stamp}): {len(stories)} stories"
    print(subject)
    return subject


@wf.workflow
async def daily_digest(user: str, days: int = 7, every: str = "1d") -> dict:
    sent = []
    for day in range(1, days + 1):
        stories = await collect_news(user, day)
        stamp = wf.now().strftime("%Y-%m-%d %H:%M:%S")  # the workflow clock: replays see the same time
        sent.append(await send_digest(user, day, stamp, stories))
        if day < days:
            await wf.sleep(every)
    return {"user": user, "sent": sent}
