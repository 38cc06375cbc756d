"""A queue consumer in its own process, for the queue tests' crash and cross-process cases.

    python -m wf.world_testing.queue_worker <url> hold <queue> <lease>
        take one message, print it, then sleep until killed
    ... <url> wait <queue> <timeout>
        print "waiting", block in take(timeout), print the message and the hand-off latency;
        again, until a message with {"last": true} or a timeout
    ... <url> consume <queue> <idle> [<hold>]
        take, and ack <hold> seconds later (default 0.001), until nothing comes for <idle>
        seconds; print what was taken

Every line printed is one JSON object. `<url>` is the store's World URL
(`wf.runtime.config.world_from_url`), so the same cases run against every World.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any

from wf.runtime.config import world_from_url
from wf.runtime.world import Message, World


def _say(**fields: Any) -> None:
    print(json.dumps(fields), flush=True)


def _describe(message: Message) -> dict[str, Any]:
    return {"id": message.message_id, "attempts": message.attempts, "payload": message.payload}


async def _hold(world: World, queue: str, lease: float) -> None:
    message = await world.queue.take([queue], lease=lease, timeout=10)
    if message is None:
        _say(event="nothing")
        return
    _say(event="taken", **_describe(message))
    await asyncio.sleep(3600)


async def _wait(world: World, queue: str, timeout: float) -> None:
    while True:
        _say(event="waiting")
        message = await world.queue.take([queue], timeout=timeout)
        received = time.time()
        if message is None:
            _say(event="timeout")
            return
        _say(event="taken", latency=received - message.payload["sent"], **_describe(message))
        await world.queue.ack(message)
        if message.payload.get("last"):
            return


async def _consume(world: World, queue: str, idle: float, hold: float = 0.001) -> None:
    taken: list[dict[str, Any]] = []
    _say(event="ready")
    while True:
        message = await world.queue.take([queue], timeout=idle)
        if message is None:
            break
        taken.append({"id": message.message_id, "attempts": message.attempts, "at": time.time()})
        await asyncio.sleep(hold)  # some work: enqueues may race with the ack
        await world.queue.ack(message)
    _say(event="done", taken=taken)


async def main(argv: list[str]) -> None:
    url, command, queue, *numbers = argv
    world = world_from_url(url)
    await world.start()
    try:
        action = {"hold": _hold, "wait": _wait, "consume": _consume}[command]
        await action(world, queue, *map(float, numbers))
    finally:
        await world.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1:]))
